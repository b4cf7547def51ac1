"""Virtual patients: log-normal IIV with the documented CVs, screening positivity, selection."""

import jax
import numpy as np
import pytest
from scipy import integrate, stats

from dormancy_model import load_model_parameters
from dormancy_model.trials.population import (
    DEFAULT_CV,
    Population,
    load_median_for_positivity,
    sample_patients,
    screening_positivity,
)


@pytest.fixture(scope="module")
def params():
    return load_model_parameters("human")


def test_screening_positivity_quadrature_vs_integral_and_root():
    f, med, sig = 3.6e-3, 80.0, 1.0
    ref, _ = integrate.quad(lambda z: stats.norm.pdf(z) * -np.expm1(-f * med * np.exp(sig * z)),
                            -12, 12, epsabs=1e-12)
    assert screening_positivity(med, sig, f) == pytest.approx(ref, abs=1e-9)
    m = load_median_for_positivity(0.3, sig, f)
    assert screening_positivity(m, sig, f) == pytest.approx(0.3, abs=1e-10)
    # fixed load (sigma -> 0): 1 - exp(-f N) = 0.3
    assert load_median_for_positivity(0.3, 1e-9, f) == pytest.approx(-np.log(0.7) / f, rel=1e-6)


def test_iiv_cvs_and_medians_unscreened(params):
    n = 20000
    s = sample_patients(jax.random.key(0), n, Population(), params, screen=False)
    checked = 0
    for name, cv in DEFAULT_CV.items():
        x = np.log(np.asarray(s.params[name]))
        lo, hi = np.log(params.spec[name].bounds)
        inside = (x > lo + 1e-9) & (x < hi - 1e-9)
        if inside.mean() < 0.99:  # clipped to bounds: skip the SD check, median still holds
            continue
        omega = np.sqrt(np.log1p(cv ** 2))
        # SD of log values within 3% (n = 20000: relative SE of an SD ~0.5%)
        assert np.std(x) == pytest.approx(omega, rel=0.03), name
        assert np.median(x) == pytest.approx(np.log(float(params[name])), abs=0.03 * omega + 0.02)
        checked += 1
    assert checked >= 5  # eve_v1 (CV 86%) is clipped at its 5 L lower bound in ~1.4%
    # non-varied parameters stay at the file value
    assert np.all(np.asarray(s.params["lambda_p"]) == float(params["lambda_p"]))


def test_screening_selects_dtc_positive_at_30_percent(params):
    pop = Population()
    s = sample_patients(jax.random.key(1), 3000, pop, params)
    assert (s.baseline_count >= 1).all()
    frac = 3000 / s.n_screened
    se = np.sqrt(0.3 * 0.7 / s.n_screened)
    assert abs(frac - pop.positivity) < 4 * se
    # enrolled loads are larger than screened ones (size-biased selection)
    u = sample_patients(jax.random.key(1), 3000, pop, params, screen=False)
    assert np.median(s.load) > 1.5 * np.median(u.load)
    np.testing.assert_array_equal(np.asarray(s.params["dormant_initial"]), s.load)
