"""`fit_laplace`: maximum likelihood of the Laplace marginal likelihood, multistart.

    result = fit_laplace(problem, options=LaplaceOptions(starts=4, seed=0))

1. starts: scrambled Sobol typical values inside the bounds (10%-90% of each range) or the
   given `theta0`, random-effect sds at `sd0`, no correlation;
2. from each start, L-BFGS-B (scipy) on the outer vector (typical values on the transform
   scale, log sds, correlation factors) with the exact gradient (implicit differentiation
   through the inner modes, `laplace.laplace_value_and_grad`); the inner modes are warm-started
   from the previous evaluation's;
3. at the best start: the outer Hessian by central differences of the exact gradient, its
   inverse as the covariance (RSE%, Wald CIs), the EBEs and their conditional sds, shrinkage.

Deterministic: the same problem, options and seed give the same result.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from dormancy_model.fitting.population.laplace import (
    InnerOptions,
    laplace_value_and_grad,
    mode_hessians,
)
from dormancy_model.fitting.population.problem import PopulationProblem
from dormancy_model.fitting.population.result import (
    Z95,
    PopulationResult,
    PopulationStart,
    cv_of,
)
from dormancy_model.params.transforms import SCALE_CODE, from_scale_codes


class LaplaceOptions(eqx.Module):
    """How `fit_laplace` searches: `starts` from `seed` (or the rows of `theta0`), random-effect
    sds starting at `sd0`, at most `iterations` L-BFGS-B iterations with gradient tolerance
    `gtol`; `inner`: the per-animal Newton settings; `hessian_step`: central-difference step of
    the outer Hessian."""

    starts: int = eqx.field(static=True, default=4)
    seed: int = eqx.field(static=True, default=0)
    sd0: float = eqx.field(static=True, default=0.3)
    iterations: int = eqx.field(static=True, default=200)
    gtol: float = eqx.field(static=True, default=1e-5)
    hessian_step: float = eqx.field(static=True, default=1e-4)
    inner: InnerOptions = InnerOptions()

    def __check_init__(self):
        if self.starts < 1 or self.seed < 0 or self.iterations < 1 or not self.sd0 > 0:
            raise ValueError("LaplaceOptions needs starts >= 1, seed >= 0, iterations >= 1 "
                             "and sd0 > 0")


class _Evaluator:
    """The compiled objective with warm-started modes (host side)."""

    def __init__(self, problem, inner):
        self.problem, self.inner = problem, inner
        self.eta = np.zeros((problem.n_animals, problem.q))
        self.n = 0

    def __call__(self, theta):
        f, g, eta, conv, _, _ = laplace_value_and_grad(
            self.problem, jnp.asarray(theta, float), jnp.asarray(self.eta), self.inner)
        self.n += 1
        f, g, eta = float(f), np.asarray(g), np.asarray(eta)
        if np.isfinite(f):
            self.eta = eta
        else:
            self.eta = np.zeros_like(self.eta)
        self.last_conv = np.asarray(conv)
        if not np.isfinite(f) or not np.all(np.isfinite(g)):
            return 1e300, np.zeros_like(g)
        return f, g


def start_thetas(problem: PopulationProblem, options: LaplaceOptions) -> np.ndarray:
    from scipy.stats import qmc

    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    u = qmc.Sobol(problem.d, scramble=True, seed=options.seed).random(options.starts)
    typ = lo + (0.1 + 0.8 * u) * (hi - lo)
    return np.stack([problem.theta0(t, np.full(problem.q, options.sd0)) for t in typ])


def outer_hessian(ev: _Evaluator, theta, h: float) -> np.ndarray:
    n = theta.size
    G = []
    eta_best = ev.eta.copy()
    for k in range(n):
        for sgn in (1.0, -1.0):
            ev.eta = eta_best.copy()
            t = theta.copy()
            t[k] += sgn * h
            G.append(ev(t)[1])
    ev.eta = eta_best
    G = np.array(G).reshape(n, 2, n)
    H = (G[:, 0] - G[:, 1]) / (2 * h)
    return 0.5 * (H + H.T)


def fit_laplace(problem: PopulationProblem, *, options: LaplaceOptions = LaplaceOptions(),
                theta0=None, progress=None, method_name: str = "laplace") -> PopulationResult:
    """Fit `problem` by the Laplace marginal likelihood. `theta0`: start rows (n, n_theta)
    replacing the Sobol starts. `progress(i, n, best)`: after every start."""
    t_start = time.perf_counter()
    ev = _Evaluator(problem, options.inner)
    T0 = np.atleast_2d(theta0) if theta0 is not None else start_thetas(problem, options)
    bounds = problem.theta_bounds()
    starts = []
    best = None
    for i, t0 in enumerate(T0):
        ev.eta = np.zeros((problem.n_animals, problem.q))
        res = minimize(ev, np.asarray(t0, float), jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(maxiter=options.iterations, gtol=options.gtol))
        f = float(res.fun) if res.fun < 1e299 else float("inf")
        starts.append((PopulationStart(i, list(map(float, t0)), list(map(float, res.x)), f,
                                       bool(res.success and np.isfinite(f)), int(res.nit),
                                       str(res.message)), ev.eta.copy()))
        if best is None or f < best[0]:
            best = (f, res.x.copy(), ev.eta.copy())
        if progress:
            progress(i + 1, len(T0), best[0])
    starts.sort(key=lambda s: (not np.isfinite(s[0].objective), s[0].objective))
    f_best, theta, eta0 = best
    ev.eta = eta0
    f_best, _ = ev(theta)
    eta, conv = ev.eta.copy(), ev.last_conv.copy()
    H = outer_hessian(ev, theta, options.hessian_step)
    try:
        cov = np.linalg.inv(H)
        hessian_pd = bool(np.all(np.linalg.eigvalsh(H) > 0))
    except np.linalg.LinAlgError:
        cov, hessian_pd = np.full_like(H, np.nan), False
    var = np.diag(cov)
    se = np.sqrt(np.where(var > 0, var, np.nan))
    if not hessian_pd:
        se = np.where(var > 0, se, np.nan)
    return _result(problem, options, method_name, theta, se, cov, f_best, eta, conv,
                   hessian_pd, [s for s, _ in starts], time.perf_counter() - t_start)


def _result(problem, options, method, theta, se, cov, f_best, eta, conv, hessian_pd, starts,
            wall):
    d, q = problem.d, problem.q
    typ_s = theta[:d]
    codes = np.array([SCALE_CODE[s] for s in problem.scales])
    nat = from_scale_codes(typ_s, codes)
    lo = from_scale_codes(typ_s - Z95 * se[:d], codes)
    hi = from_scale_codes(typ_s + Z95 * se[:d], codes)
    # delta method: d natural / d scale = x (log), x (1 - x) (logit), 1 (lin)
    dnat = np.where(codes == 1, nat, np.where(codes == 2, nat * (1 - nat), 1.0))
    rse = 100 * se[:d] * np.abs(dnat) / np.maximum(np.abs(nat), 1e-300)
    omega = np.asarray(problem.omega(jnp.asarray(theta)))
    sd = np.sqrt(np.diag(omega)) if q else np.zeros(0)
    se_lsd = se[d:d + q]
    rscales = [problem.scales[j] for j in problem.random_index]
    Hs = np.asarray(mode_hessians(problem, jnp.asarray(theta), jnp.asarray(eta))) if q else None
    ids = problem.animal_ids or tuple(str(i) for i in range(problem.n_animals))
    eta_sd = {}
    if q:
        for i, a in enumerate(ids):
            try:
                eta_sd[a] = list(map(float, np.sqrt(np.diag(np.linalg.inv(Hs[i])))))
            except np.linalg.LinAlgError:
                eta_sd[a] = [float("nan")] * q
    shrink = {r: float(1.0 - np.std(eta[:, k], ddof=0) / sd[k]) for k, r in
              enumerate(problem.random)}
    k = problem.n_theta
    n_obs = problem.n_obs or problem.n_animals
    names = problem.names
    dct = lambda v: dict(zip(names, map(float, v), strict=True))  # noqa: E731
    rct = lambda v: dict(zip(problem.random, map(float, v), strict=True))  # noqa: E731
    cv = [float(cv_of(sd[j], rscales[j])) for j in range(q)]
    cv_lo = [float(cv_of(sd[j] * np.exp(-Z95 * se_lsd[j]), rscales[j])) for j in range(q)]
    cv_hi = [float(cv_of(sd[j] * np.exp(Z95 * se_lsd[j]), rscales[j])) for j in range(q)]
    outer_ok = bool(starts and starts[0].converged)
    return PopulationResult(
        method=method, names=names, scales=problem.scales, random=problem.random,
        covariance_structure=problem.covariance, typical_scale=dct(typ_s), typical=dct(nat),
        typical_ci_low=dct(lo), typical_ci_high=dct(hi), typical_rse=dct(rse),
        omega=omega.tolist(), sd=rct(sd), cv=rct(cv), cv_ci_low=rct(cv_lo), cv_ci_high=rct(cv_hi),
        omega_rse=rct(200 * se_lsd), theta=list(map(float, theta)),
        theta_names=problem.theta_names(), covariance=np.asarray(cov).tolist(),
        eta={a: list(map(float, eta[i])) for i, a in enumerate(ids)}, eta_sd=eta_sd,
        shrinkage=shrink, objective=float(f_best), aic=2 * k + 2 * float(f_best),
        bic=k * float(np.log(n_obs)) + 2 * float(f_best), n_obs=int(n_obs),
        n_animals=problem.n_animals,
        converged=outer_ok and hessian_pd and bool(np.all(conv)),
        inner_converged=int(np.sum(conv)), hessian_pd=hessian_pd, starts=starts,
        settings=dict(method=method, starts=len(starts), seed=options.seed, sd0=options.sd0,
                      iterations=options.iterations, gtol=options.gtol,
                      inner_iterations=options.inner.iterations,
                      covariance=problem.covariance, random=list(problem.random)),
        seed=options.seed, wall_time_s=wall)
