"""Population fit, Laplace marginal likelihood: per-animal values against an independent
NumPy Laplace and against quadrature, the implicit gradient against finite differences, a
linear-Gaussian model against statsmodels MixedLM, and recovery of typical values and CVs."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special

from dormancy_model.fitting.population.estimate import LaplaceOptions, fit_laplace
from dormancy_model.fitting.population.laplace import (
    InnerOptions,
    animal_laplace,
    find_mode,
    laplace_value_and_grad,
)
from population_models import LinearGaussian, PoissonLogLinear, problem


def poisson_data(n_animals, n_obs, a, b, sd, seed):
    rng = np.random.default_rng(seed)
    x = np.tile(np.linspace(-1, 1, n_obs), (n_animals, 1))
    eta = rng.normal(0, 1, (n_animals, len(sd))) * np.asarray(sd)
    ai = a + eta[:, 0]
    bi = b + (eta[:, 1] if len(sd) > 1 else np.zeros(n_animals))
    k = rng.poisson(np.exp(ai[:, None] + bi[:, None] * x)).astype(float)
    return x, k, np.ones_like(k, bool)


@eqx.filter_jit
def per_animal_laplace(prob, theta):
    eta0 = jnp.zeros((prob.n_animals, prob.q))
    modes = jax.vmap(find_mode, in_axes=(None, None, 0, 0, None))(
        prob, theta, eta0, prob.animals, InnerOptions())
    nll, _, _ = jax.vmap(animal_laplace, in_axes=(None, None, 0, 0))(
        prob, theta, modes[0], prob.animals)
    return nll, modes[0], modes[1]


def _numpy_reference(a, b, sd, x, k):
    """(mode, Laplace nll, exact marginal nll by quadrature) of one Poisson animal with a
    random intercept of sd `sd`."""
    def g(e):
        lam = np.exp(a + e + b * x)
        return -np.sum(k * np.log(lam) - lam - special.gammaln(k + 1)) + 0.5 * e**2 / sd**2

    e_hat = optimize.minimize_scalar(g, bracket=(-1, 1), tol=1e-12).x
    h = np.sum(np.exp(a + e_hat + b * x)) + 1 / sd**2
    laplace = g(e_hat) + np.log(sd) + 0.5 * np.log(h)
    s = 1 / np.sqrt(h)
    val, _ = integrate.quad(lambda e: np.exp(-(g(e) - g(e_hat))) / np.sqrt(2 * np.pi * sd**2),
                            e_hat - 12 * s, e_hat + 12 * s, epsabs=0, epsrel=1e-12, limit=200)
    return e_hat, laplace, g(e_hat) - np.log(val)


def test_laplace_equals_numpy_laplace_and_approaches_quadrature():
    """One random effect (log rate), 4 animals: the Laplace nll of each animal equals a NumPy
    Laplace (scipy mode, analytic second derivative) to 1e-8, and is within 2e-3 of the exact
    marginal by adaptive quadrature (scipy.integrate.quad) with ~40 counts per animal of ~20
    each; with counts of ~0.5 its error is larger than 1e-3 (the test sees the approximation)."""
    sd = 0.5
    for a, tol_lo, tol_hi in ((3.0, 0.0, 2e-3), (-0.7, 1e-3, 0.1)):
        x, k, m = poisson_data(4, 40, a, 0.2, [sd], seed=1)
        prob = problem(PoissonLogLinear(), (x, k, m), ("a", "b"), ("lin", "lin"), ("a",),
                       [-5, -5], [5, 5])
        theta = prob.theta0([a, 0.2], [sd])
        nll, modes, conv = map(np.asarray, per_animal_laplace(prob, jnp.asarray(theta)))
        assert conv.all()
        for i in range(4):
            e_hat, ref_laplace, exact = _numpy_reference(a, 0.2, sd, x[i], k[i])
            np.testing.assert_allclose(modes[i, 0], e_hat, atol=1e-6)
            np.testing.assert_allclose(nll[i], ref_laplace, rtol=0, atol=1e-8)
            assert tol_lo <= abs(nll[i] - exact) <= tol_hi, (a, i, nll[i] - exact)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_implicit_gradient_matches_finite_differences(covariance):
    """The outer gradient (implicit differentiation through the modes, including log det H)
    equals central differences of the marginal nll (modes re-solved at every point)."""
    x, k, m = poisson_data(6, 10, 1.0, 0.4, [0.4, 0.3], seed=2)
    prob = problem(PoissonLogLinear(), (x, k, m), ("a", "b"), ("lin", "lin"), ("a", "b"),
                   [-5, -5], [5, 5], covariance=covariance)
    theta = prob.theta0([0.9, 0.3], [0.5, 0.25])
    if covariance == "full":
        theta[-1] = 0.4
    eta0 = jnp.zeros((6, 2))
    f, g, *_ = laplace_value_and_grad(prob, jnp.asarray(theta), eta0)
    h = 1e-5
    fd = []
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        fp = laplace_value_and_grad(prob, jnp.asarray(theta + e), eta0)[0]
        fm = laplace_value_and_grad(prob, jnp.asarray(theta - e), eta0)[0]
        fd.append((float(fp) - float(fm)) / (2 * h))
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-7)


def test_linear_gaussian_matches_statsmodels_mixedlm():
    """Random intercept and slope with full covariance, ML (not REML): the Laplace fit is
    exact here, so its estimates and log-likelihood equal statsmodels MixedLM's."""
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(3)
    n, J = 12, 6
    x = np.tile(np.linspace(0, 1, J), (n, 1)) + rng.uniform(0, 0.2, (n, J))
    L = np.array([[0.8, 0.0], [0.3, 0.5]])
    b = rng.normal(size=(n, 2)) @ L.T
    y = 1.0 + b[:, :1] + (2.0 + b[:, 1:]) * x + rng.normal(0, 0.3, (n, J))
    df = pd.DataFrame(dict(y=y.ravel(), x=x.ravel(), g=np.repeat(np.arange(n), J)))
    ref = smf.mixedlm("y ~ x", df, groups="g", re_formula="~x").fit(reml=False, method="lbfgs")
    prob = problem(LinearGaussian(), (x, y, np.ones_like(y, bool)), ("a", "b", "log_sigma"),
                   ("lin", "lin", "log"), ("a", "b"), [-10, -10, np.log(0.01)],
                   [10, 10, np.log(10)], covariance="full")
    res = fit_laplace(prob, options=LaplaceOptions(starts=2, seed=0, gtol=1e-8))
    assert res.converged
    np.testing.assert_allclose(-res.objective, ref.llf, rtol=0, atol=1e-5)
    np.testing.assert_allclose([res.typical["a"], res.typical["b"]], ref.fe_params.values,
                               atol=1e-4)
    np.testing.assert_allclose(res.typical["log_sigma"], np.sqrt(ref.scale), rtol=1e-4)
    np.testing.assert_allclose(res.omega, np.asarray(ref.cov_re), atol=1e-4)
    # fixed-effect standard errors: the inverse outer Hessian's block equals MixedLM's
    se = np.sqrt(np.diag(np.asarray(res.covariance))[:2])
    np.testing.assert_allclose(se, ref.bse_fe.values, rtol=2e-3)


def test_recovery_of_typical_values_and_cvs():
    """60 animals simulated with known typical values and between-animal sds (Poisson
    log-linear, random intercept and slope): every true value inside its 95% CI, the EBEs
    correlate with the true random effects, shrinkage between 0 and 1."""
    rng = np.random.default_rng(11)
    n, J, a, b, sd = 60, 8, 1.5, 0.5, np.array([0.4, 0.3])
    x = np.tile(np.linspace(-1, 1, J), (n, 1))
    eta = rng.normal(size=(n, 2)) * sd
    k = rng.poisson(np.exp(a + eta[:, :1] + (b + eta[:, 1:]) * x)).astype(float)
    prob = problem(PoissonLogLinear(), (x, k, np.ones_like(k, bool)), ("a", "b"),
                   ("lin", "lin"), ("a", "b"), [-5, -5], [5, 5])
    res = fit_laplace(prob, options=LaplaceOptions(starts=2, seed=0))
    assert res.converged and res.hessian_pd
    for name, true in (("a", a), ("b", b)):
        assert res.typical_ci_low[name] < true < res.typical_ci_high[name], name
    for j, r in enumerate(("a", "b")):
        lo = np.exp(np.log(res.sd[r]) - 1.96 * res.omega_rse[r] / 200)
        hi = np.exp(np.log(res.sd[r]) + 1.96 * res.omega_rse[r] / 200)
        assert lo < sd[j] < hi, (r, lo, sd[j], hi)
        ebe = np.array([res.eta[str(i)][j] for i in range(n)])
        assert np.corrcoef(ebe, eta[:, j])[0, 1] > 0.6
        assert 0.0 < res.shrinkage[r] < 1.0
    assert res.aic == pytest.approx(2 * 4 + 2 * res.objective)
    assert res.bic == pytest.approx(4 * np.log(n * J) + 2 * res.objective)


@pytest.mark.slow
def test_nuts_agrees_with_laplace_on_a_near_gaussian_model(tmp_path):
    """Linear-Gaussian random-intercept model (20 animals x 10 observations, weak priors): the
    NUTS posterior means of the fixed effects lie within 0.3 Laplace standard errors of the
    maximum-likelihood estimates and the posterior sds within 25% of those standard errors
    (Bernstein-von Mises); diagnostics pass and are flagged honestly; the NetCDF file reads
    back with the same draws."""
    import arviz as az

    from dormancy_model.fitting.population.nuts import NutsOptions, fit_nuts, save_netcdf

    rng = np.random.default_rng(4)
    n, J = 20, 10
    x = np.tile(np.linspace(0, 1, J), (n, 1))
    y = 1.0 + rng.normal(0, 0.6, (n, 1)) + 2.0 * x + rng.normal(0, 0.3, (n, J))
    prob = problem(LinearGaussian(), (x, y, np.ones_like(y, bool)), ("a", "b", "log_sigma"),
                   ("lin", "lin", "log"), ("a",), [-10, -10, np.log(0.01)],
                   [10, 10, np.log(10)])
    lap = fit_laplace(prob, options=LaplaceOptions(starts=1, seed=0, gtol=1e-7))
    idata, summ = fit_nuts(prob, options=NutsOptions(chains=4, warmup=500, draws=500, seed=1,
                                                     ess_min=100, target_accept=0.9),
                           theta0=np.asarray(lap.theta))
    assert summ.ok, summ.text()
    se = np.sqrt(np.diag(np.asarray(lap.covariance)))
    for j, name in enumerate(("a", "b")):
        draws = np.asarray(idata.posterior[name]).ravel()
        assert abs(draws.mean() - lap.typical[name]) < 0.3 * se[j], (name, draws.mean())
        assert 0.75 < draws.std() / se[j] < 1.25, (name, draws.std(), se[j])
    assert summ.divergences == int(np.asarray(idata.sample_stats["diverging"]).sum())
    path = tmp_path / "post.nc"
    save_netcdf(idata, path)
    back = az.from_netcdf(path)
    np.testing.assert_array_equal(np.asarray(back.posterior["a"]), np.asarray(idata.posterior["a"]))
    # a failed diagnostic is flagged, not hidden
    from dormancy_model.fitting.population.nuts import summarise

    strict = summarise(idata, NutsOptions(ess_min=1e9))
    assert not strict.ok and any("ESS" in f for f in strict.failed)


def test_starts_near_the_bounds_reach_the_interior_optimum():
    """The optimiser works in sigmoid-bounded coordinates: a start with its typical values 0.5%
    inside a corner of their bounds and one in the middle reach the same interior optimum; no
    start is clipped onto a bound (the failure of the L-BFGS-B version it replaced). (Both
    start at sd 0.3: near sd = 0 the marginal likelihood is flat in log sd, so a start there
    barely moves in any coordinates; `LaplaceOptions.sd0`.)"""
    x, k, m = poisson_data(30, 8, 1.0, 0.4, [0.4], seed=7)
    prob = problem(PoissonLogLinear(), (x, k, m), ("a", "b"), ("lin", "lin"), ("a",),
                   [-3, -3], [3, 3])
    lo, hi = np.log(0.01), np.log(3.0)
    corner = np.array([-3 + 0.03, 3 - 0.03, np.log(0.3)])
    middle = prob.theta0([0.0, 0.0], [0.3])
    res = fit_laplace(prob, options=LaplaceOptions(gtol=1e-6), theta0=np.stack([corner, middle]))
    t = np.array([s.theta for s in res.starts])
    assert all(s.converged for s in res.starts), [s.message for s in res.starts]
    np.testing.assert_allclose(t[0], t[1], atol=1e-3)
    bounds = np.array([[-3, 3], [-3, 3], [lo, hi]])
    assert np.all(np.abs(t[:, :, None] - bounds[None]) > 0.05)
    assert abs(res.starts[0].objective - res.starts[1].objective) < 1e-6
