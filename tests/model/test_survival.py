"""Kaplan-Meier (model/survival.py): hand-computed values and equality with lifelines."""

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from dormancy_model.model.survival import kaplan_meier, survival_at
from tied_samples import tied_samples


def _lifelines_at(d, e, at):
    return float(KaplanMeierFitter().fit(d, e).survival_function_at_times(at).iloc[0])


def test_kaplan_meier_hand_computed_and_lifelines():
    # times 1..6, events at 2, 3, 5; censored 1, 4, 6
    t = np.array([1, 2, 3, 4, 5, 6.0])
    e = np.array([0, 1, 1, 0, 1, 0])
    # S = (4/5)(3/4)(1/2) after t=5
    assert survival_at(t, e, 5.5) == pytest.approx(4 / 5 * 3 / 4 * 1 / 2, abs=1e-12)
    assert survival_at(t, e, 2.5) == pytest.approx(4 / 5, abs=1e-12)
    assert survival_at(t, e, 3.0) == pytest.approx(_lifelines_at(t, e, 3.0))
    assert survival_at(t, e, 1.5) == 1.0 and np.isnan(survival_at([], [], 1.0))
    km = kaplan_meier(t, e)
    np.testing.assert_array_equal(km.times, [0, 2, 3, 5, 6])
    np.testing.assert_allclose(km.survival, [1, 4 / 5, 3 / 5, 3 / 10, 3 / 10], rtol=1e-15)


def test_survival_at_equals_lifelines_with_ties():
    for d, e, _ in tied_samples():
        for at in (0.5, 1.0, 2.0, 5.0):
            assert survival_at(d, e, at) == pytest.approx(_lifelines_at(d, e, at), abs=1e-12)


def test_step_function_and_band_equal_lifelines():
    samples = [(d, e) for d, e, _ in tied_samples()]
    # and a sample whose last subject has the event (S reaches 0; Greenwood term inf -> 0)
    samples.append((np.array([1.0, 2.0, 2.0, 3.0]), np.array([True, False, True, True])))
    for d, e in samples:
        kmf = KaplanMeierFitter().fit(d, e)
        km = kaplan_meier(d, e)
        sf = kmf.survival_function_.iloc[:, 0]
        ci = kmf.confidence_interval_
        for t in np.unique(km.times):  # a step at 0 when events fall at 0: S there is the last
            i = np.searchsorted(km.times, t, side="right") - 1
            assert km.survival[i] == pytest.approx(float(sf.loc[t]), abs=1e-12)
            assert km.lower[i] == pytest.approx(float(ci.iloc[:, 0].loc[t]), abs=1e-12)
            assert km.upper[i] == pytest.approx(float(ci.iloc[:, 1].loc[t]), abs=1e-12)
        assert km.times[-1] == d.max()
