"""Log-normal between-patient factors: independent draws unchanged, correlation as asked."""

import numpy as np
import pytest

from dormancy_model.params.transforms import lognormal_sigma
from dormancy_model.params.variability import correlation_matrix, lognormal_factors

CV = {"delta_max": 0.5, "k_dr": 0.76, "eve_ic50": 0.5}


@pytest.mark.parametrize("by", ["patient", "parameter"])
def test_no_correlation_gives_the_independent_draws(by):
    a = lognormal_factors(np.random.default_rng(4), CV, 100, by=by)
    b = lognormal_factors(np.random.default_rng(4), CV, 100, by=by, correlation={})
    for k in CV:
        np.testing.assert_array_equal(a[k], b[k])


def test_correlation_and_marginals_are_as_asked():
    # n = 40,000: the sample correlation's sd is (1 - rho^2)/sqrt(n) ~ 0.004, so +-0.02 is ~5 sd;
    # a sign error or an ignored pair (rho 0) is ~100 sd away
    n, rho = 40_000, -0.6
    f = lognormal_factors(np.random.default_rng(11), CV, n, by="parameter",
                          correlation={("k_dr", "delta_max"): rho})
    eta = {k: np.log(v) / lognormal_sigma(CV[k]) for k, v in f.items()}
    r = np.corrcoef(eta["k_dr"], eta["delta_max"])[0, 1]
    assert abs(r - rho) < 0.02
    assert abs(np.corrcoef(eta["k_dr"], eta["eve_ic50"])[0, 1]) < 0.02
    for k in CV:  # marginals stay standard normal in log space (median-1 factors)
        assert abs(eta[k].mean()) < 0.02 and abs(eta[k].std() - 1) < 0.02


def test_bad_correlations_are_refused():
    names = sorted(CV)
    with pytest.raises(ValueError, match="distinct"):
        correlation_matrix(names, {("k_dr", "unknown"): 0.3})
    with pytest.raises(ValueError, match="not in"):
        correlation_matrix(names, {("k_dr", "delta_max"): 1.0})
    with pytest.raises(ValueError, match="positive definite"):
        correlation_matrix(names, {("k_dr", "delta_max"): 0.9, ("k_dr", "eve_ic50"): 0.9,
                                   ("delta_max", "eve_ic50"): -0.9})
