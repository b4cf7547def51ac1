"""`fit_laplace`: maximum likelihood of the Laplace marginal likelihood, multistart.

    result = fit_laplace(problem, options=LaplaceOptions(starts=4, seed=0))

1. starts: scrambled Sobol typical values inside the bounds (10%-90% of each range) or the
   given `theta0`, random-effect sds at `sd0`, no correlation, covariate effects 0;
2. from each start, the pooled fit's optimiser (`fitting.estimate.LBFGS`: two-loop recursion,
   backtracking Armijo line search) on the outer vector in bounded coordinates: each bounded
   component (typical values, log sds, covariate effects) is ``lo + (hi - lo) sigmoid(z)``,
   the correlation factors are unbounded (z itself), so no iterate leaves the bounds or is
   clipped onto them;
   the gradient is exact (implicit differentiation through the inner modes,
   `laplace.laplace_value_and_grad`) and the inner modes are warm-started from the previous
   evaluation's;
3. at the best start: the outer Hessian by central differences of the exact gradient, its
   inverse as the covariance (RSE%, Wald CIs), the EBEs and their conditional sds, shrinkage.

Deterministic: the same problem, options and seed give the same result.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from dormancy_model.fitting.estimate import LBFGS
from dormancy_model.fitting.population.covariates import effect_rows
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
    sds starting at `sd0` (not much below 0.1: near sd = 0 the marginal likelihood is flat in
    log sd, so a start there stays there and reports convergence), at most `iterations` L-BFGS
    iterations (`fitting.estimate.LBFGS`) with gradient tolerance `gtol` (max |d nll / d z| in
    the bounded coordinates); `inner`: the per-animal Newton settings; `hessian_step`:
    central-difference step of the outer Hessian."""

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
    """The compiled objective with warm-started modes (host side), at outer vectors theta."""

    def __init__(self, problem, inner):
        self.problem, self.inner = problem, inner
        self.eta = np.zeros((problem.n_animals, problem.q))
        self.last_conv = np.ones(problem.n_animals, bool)
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
            return float("inf"), np.zeros_like(g)
        return f, g


class BoundedCoordinates:
    """theta <-> z: ``theta = lo + (hi - lo) sigmoid(z)`` on bounded components, theta = z on
    unbounded ones (`PopulationProblem.theta_bounds`)."""

    def __init__(self, bounds):
        self.bounded = np.array([lo is not None and hi is not None for lo, hi in bounds])
        self.lo = np.array([lo if b else 0.0 for (lo, _), b in zip(bounds, self.bounded,
                                                                   strict=True)], float)
        self.hi = np.array([hi if b else 1.0 for (_, hi), b in zip(bounds, self.bounded,
                                                                   strict=True)], float)

    def theta(self, z):
        z = np.asarray(z, float)
        return np.where(self.bounded, self.lo + (self.hi - self.lo) / (1.0 + np.exp(-z)), z)

    def z(self, theta):
        theta = np.asarray(theta, float)
        u = np.clip((theta - self.lo) / (self.hi - self.lo), 1e-12, 1 - 1e-12)
        return np.where(self.bounded, np.log(u / (1.0 - u)), theta)

    def dtheta_dz(self, z):
        u = 1.0 / (1.0 + np.exp(-np.asarray(z, float)))
        return np.where(self.bounded, (self.hi - self.lo) * u * (1.0 - u), 1.0)


class _ZObjective:
    """The Laplace objective in bounded coordinates, in the interface `LBFGS.minimise` expects
    (`evaluate(Z) -> (f, grad z, _, _)` over rows; one start at a time, so the warm-started
    modes are that start's)."""

    def __init__(self, ev: _Evaluator, coords: BoundedCoordinates):
        self.ev, self.coords = ev, coords

    def evaluate(self, Z):
        Z = np.atleast_2d(np.asarray(Z, float))
        f, g = np.empty(Z.shape[0]), np.empty_like(Z)
        for i, z in enumerate(Z):
            fi, gi = self.ev(self.coords.theta(z))
            f[i], g[i] = fi, gi * self.coords.dtheta_dz(z)
        nan = np.full(Z.shape[0], np.nan)
        return f, np.where(np.isfinite(g), g, 0.0), nan, nan


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
                theta0=None, progress=None, method_name: str = "laplace",
                on_iteration=None) -> PopulationResult:
    """Fit `problem` by the Laplace marginal likelihood. `theta0`: start rows (n, n_theta)
    replacing the Sobol starts. `progress(i, n, best)`: after every start;
    `on_iteration(start, iteration, objective)`: after every L-BFGS iteration."""
    t_start = time.perf_counter()
    ev = _Evaluator(problem, options.inner)
    coords = BoundedCoordinates(problem.theta_bounds())
    zobj = _ZObjective(ev, coords)
    opt = LBFGS(steps=options.iterations, gtol=options.gtol)
    T0 = np.atleast_2d(theta0) if theta0 is not None else start_thetas(problem, options)
    starts = []
    best = None
    for i, t0 in enumerate(T0):
        ev.eta = np.zeros((problem.n_animals, problem.q))
        z0 = coords.z(np.asarray(t0, float))[None]
        tick = ((lambda it, total, fz, i=i: on_iteration(i, it, float(fz[0])))
                if on_iteration else (lambda *a: None))
        Z, f, _, conv, iters = opt.minimise(zobj, z0, np.ones_like(z0, bool), tick)
        theta, f = coords.theta(Z[0]), float(f[0])
        ok = bool(conv[0] and np.isfinite(f))
        msg = "converged" if ok else ("objective not finite" if not np.isfinite(f)
                                      else "line search stalled or iteration limit")
        starts.append(PopulationStart(i, list(map(float, t0)), list(map(float, theta)), f, ok,
                                      int(iters[0]), msg))
        if best is None or f < best[0]:
            best = (f, theta.copy(), ev.eta.copy())
        if progress:
            progress(i + 1, len(T0), best[0])
    starts.sort(key=lambda s: (not np.isfinite(s.objective), s.objective))
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
    return _result(problem, options, method_name, theta, se, cov, f_best, eta, conv,
                   hessian_pd, starts, time.perf_counter() - t_start)


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
    beta_at = d + q + problem.n_offdiag
    covariates = (effect_rows(problem.covariates.effects, theta[beta_at:], se[beta_at:])
                  if problem.p else [])
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
        settings=dict(method=method, optimizer="lbfgs (sigmoid-bounded coordinates)",
                      starts=len(starts), seed=options.seed, sd0=options.sd0,
                      iterations=options.iterations, gtol=options.gtol,
                      inner_iterations=options.inner.iterations,
                      covariance=problem.covariance, random=list(problem.random),
                      covariates=[e.label for e in problem.covariates.effects]
                      if problem.p else []),
        seed=options.seed, wall_time_s=wall, covariates=covariates)
