"""Trial analysis on hand-built cohorts with known answers."""

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from scipy import integrate, optimize, stats

from dormancy_model.trials import analysis as TA
from tied_samples import tied_samples


def test_poisson_glm_binary_covariate_equals_closed_form():
    base = np.array([1, 3, 2, 5, 1, 1, 2])
    post = np.array([0, 1, 0, 2, 0, 0, 1])
    y = np.r_[base, post]
    X = np.column_stack([np.ones(y.size), np.r_[np.zeros(7), np.ones(7)]])
    fit = TA.poisson_glm(X, y)
    assert fit.converged
    np.testing.assert_allclose(np.exp(fit.coef[0]), base.mean(), rtol=1e-10)
    np.testing.assert_allclose(np.exp(fit.coef[1]), post.sum() / base.sum(), rtol=1e-10)
    # Wald SE of log rate ratio: sqrt(1/sum(base) + 1/sum(post))
    np.testing.assert_allclose(fit.se[1], np.sqrt(1 / base.sum() + 1 / post.sum()), rtol=1e-8)
    assert TA.dtc_reduction(base, post) == pytest.approx(1 - post.sum() / base.sum(), rel=1e-10)


def test_poisson_glm_continuous_covariate_matches_scipy_and_offset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    expo = rng.uniform(0.5, 2.0, size=200)
    y = rng.poisson(expo * np.exp(0.3 - 0.7 * x))
    X = np.column_stack([np.ones(200), x])
    fit = TA.poisson_glm(X, y, offset=np.log(expo))

    def nll(b):
        eta = X @ b + np.log(expo)
        return -np.sum(y * eta - np.exp(eta))

    ref = optimize.minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(fit.coef, ref, atol=1e-6)


def test_dtc_reduction_edge_cases():
    assert TA.dtc_reduction([2, 1], [0, 0]) == 1.0
    assert np.isnan(TA.dtc_reduction([], []))
    assert TA.dtc_reduction([1, 1], [1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_posterior_probability_matches_numerical_integration():
    arm, obs = [0, 1, 0, 0, 2], [1, 2, 0, 3, 1, 1]
    a1, b1 = TA.gamma_posterior(arm)
    a2, b2 = TA.gamma_posterior(obs)
    assert (a1, b1) == (TA.DEFAULT_PRIOR[0] + 3, TA.DEFAULT_PRIOR[1] + 5)
    for r in (0.0, 0.8):
        # P(l1 < (1 - r) l2) = int f2(x) F1((1 - r) x) dx
        val, _ = integrate.quad(lambda x, r=r: stats.gamma.pdf(x, a2, scale=1 / b2)
                                * stats.gamma.cdf((1 - r) * x, a1, scale=1 / b1), 0, np.inf)
        assert TA.posterior_prob_reduction(arm, obs, min_reduction=r) == pytest.approx(val,
                                                                                       abs=1e-8)
    # symmetric data -> exactly 1/2
    assert TA.posterior_prob_reduction([1, 2], [1, 2]) == pytest.approx(0.5, abs=1e-12)


def test_cox_hr_matches_lifelines_and_closed_form_exponential():
    rng = np.random.default_rng(3)
    n = 400
    g = rng.integers(0, 2, n)
    t = rng.exponential(1 / np.where(g == 1, 0.25, 1.0))
    c = rng.uniform(0, 3, n)
    d, e = np.minimum(t, c), t <= c
    res = TA.cox_hazard_ratio(d, e, g)
    ref = CoxPHFitter().fit(pd.DataFrame({"T": d, "E": e, "g": g}), "T", "E")
    assert res.estimable
    assert res.hr == pytest.approx(float(np.exp(ref.params_["g"])), rel=1e-6)
    assert res.lower95 < 0.25 < res.upper95
    # no events -> not estimable; all events in one group -> not estimable without penalizer
    assert not TA.cox_hazard_ratio(d, np.zeros(n, bool), g).estimable
    sep = e & (g == 0)
    assert not TA.cox_hazard_ratio(d, sep, g).estimable
    assert TA.cox_hazard_ratio(d, sep, g, penalizer=0.1).hr < 1


def test_fast_cox_equals_lifelines_with_ties():
    for d, e, g in tied_samples():
        fast, ref = TA.cox_binary(d, e, g), TA.cox_hazard_ratio(d, e, g)
        assert fast.estimable and ref.estimable
        np.testing.assert_allclose([fast.hr, fast.lower95, fast.upper95],
                                   [ref.hr, ref.lower95, ref.upper95], rtol=5e-5)
        # (lifelines stops its Newton at a looser step tolerance than cox_binary's 1e-10)
    assert not TA.cox_binary(d, e & (g == 1), g).estimable
