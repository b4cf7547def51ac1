"""`fit`: maximum-likelihood estimates of chosen parameters from a mouse study.

    result = fit(study, params, free=("hcq_ic50", "delta_max", ...),
                 options=FitOptions(starts=16, seed=0, adam_steps=30, optimizer=LBFGS(steps=60)))

Pipeline (all starts at once, batched with `jax.vmap` through one compiled objective+gradient,
see `fit_objective.Objective`; by default each arm is solved on a fixed step grid,
`integrate.FixedSteps`, so the objective is smooth in the parameters):

1. starts: scrambled Sobol (or Latin-hypercube) points inside the bounds, in each parameter's
   scale (log/logit/lin), mapped to the unconstrained space z;
2. optax Adam for `adam_steps` steps (robust first descent from far-away starts);
3. the optimiser of `FitOptions.optimizer`, by default `LBFGS` (two-loop recursion, memory 8,
   a backtracking Armijo line search, batched over starts) until the gradient is small
   (converged) or the line search stalls;
4. at the best start: the Hessian in scale space by central differences of the exact (autodiff)
   gradient, standard errors and Wald 95% CIs (back-transformed, so log-scale CIs are
   asymmetric); profile likelihoods for requested parameters (the other free parameters
   re-optimised at each fixed value); AIC = 2 k + 2 nll.

Deterministic: the same study, options and seed give the same result. The optimiser and
solver settings are one immutable value, `FitOptions`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dormancy_model import status as S
from dormancy_model.fitting.objective import NUISANCE, PK_SIGMAS, Objective
from dormancy_model.fitting.study import Study
from dormancy_model.model.integrate import FixedSteps, SolverOptions
from dormancy_model.params.table import Parameters

Z95 = 1.959963984540054
PROFILE_DROP = 0.5 * 3.841458820694124  # 95% likelihood-ratio threshold (chi2_1)


def fit_batch(starts: int) -> int:
    """Points per compiled objective call: on the CPU 4 (line searches then evaluate only the
    starts still searching, and a vmapped solve waits for its slowest lane), on an
    accelerator all starts at once. Speed only: the estimates do not depend on it
    (`objective.MIN_LANES`)."""
    return min(starts, 4) if jax.default_backend() == "cpu" else starts


def fit_solver_options() -> FixedSteps:
    """Default solver for fitting: fixed-step Tsit5 (`integrate.FixedSteps`: every dose time,
    512 steps to two weeks after the last dose, 192 to the end of the study). On the shipped
    study its objective is within 0.01 nll units of an adaptive solve at rtol 1e-10 near the
    optimum (the adaptive rtol 1e-4 default it replaced was off by 0.2), costs less than half
    as much per evaluation and, being smooth in the parameters, lets L-BFGS meet its gradient
    tolerance. `SolverOptions` (adaptive) is still accepted."""
    return FixedSteps(fine=512, coarse=192)


@dataclass
class StartResult:
    start: int
    initial: dict  # natural units (internal)
    estimate: dict
    objective: float
    converged: bool
    grad_norm: float  # max |d nll / d scale| at the end
    iterations: int
    status: int = S.OK  # a code of dormancy_model.status: why the objective is not finite

    @property
    def status_name(self) -> str:
        return S.name(self.status)


@dataclass
class Profile:
    name: str
    scale_values: list  # grid in scale space
    values: list  # natural units
    objective: list  # re-optimised nll at each value
    ci_low: float | None  # likelihood-ratio 95% CI (natural), None where not reached
    ci_high: float | None


@dataclass
class FitResult:
    names: tuple
    scales: tuple
    units: tuple  # file units of each parameter
    unit_factors: tuple  # file value = internal / factor
    estimate: dict  # natural (internal units)
    scale_estimate: dict
    se: dict  # standard errors in scale space (nan where the Hessian is singular)
    ci_low: dict  # Wald 95% CI, natural units
    ci_high: dict
    identifiable: dict  # finite SE and CI inside the bounds' span
    objective: float  # best nll
    loglik_burden: float
    loglik_relapse: float
    aic: float
    n_obs: int
    starts: list  # StartResult, sorted by objective
    hessian: list
    covariance: list
    profiles: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seed: int = 0
    wall_time_s: float = 0.0
    n_evaluations: int = 0
    # population fit (`population.study_fit`): the fit file's population block; empty: pooled
    population: dict = field(default_factory=dict)
    n_pk: int = 0  # drug concentrations (pk.csv rows) among n_obs

    @property
    def n_converged(self) -> int:
        return sum(s.converged for s in self.starts)

    @property
    def status(self) -> int:
        """The status of the best start (`OK` when its objective is finite; `MISSING` without
        starts): a code of `dormancy_model.status`."""
        return self.starts[0].status if self.starts else S.MISSING

    def apply(self, params: Parameters) -> Parameters:
        """`params` with the fitted model parameters replaced (nuisance ones ignored)."""
        upd = {k: v for k, v in self.estimate.items() if k in params.spec}
        return params.replace(**upd)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["names"], d["scales"], d["units"] = list(self.names), list(self.scales), list(self.units)
        d["unit_factors"] = list(self.unit_factors)
        return d

    def summary(self) -> str:
        pop = self.population
        head = f"nll {self.objective:.3f}  AIC {self.aic:.2f}  "
        if pop and pop["method"] == "nuts":
            dg = pop["diagnostics"]
            head = (f"nuts: R-hat max {dg['rhat_max']:.3f}, bulk ESS min "
                    f"{dg['ess_bulk_min']:.0f}, {dg['divergences']} divergences: "
                    + ("diagnostics ok" if dg["ok"] else "FAILED " + "; ".join(dg["failed"]))
                    + f" (pooled start nll {self.objective:.3f})  ")
        elif pop:
            o = pop["objective"]
            head = (f"{pop['method']}: -loglik {self.objective:.3f}  AIC {self.aic:.2f}  BIC "
                    f"{o['bic']:.2f}  {o['n_animals']} animals  "
                    f"{'converged' if pop['converged'] else 'NOT CONVERGED'}  ")
        rows = [head + f"{self.n_converged}/{len(self.starts)} starts converged"]
        if self.n_pk:
            fixed = {k: v for k, v in (self.settings.get("pk_sigma_fixed") or {}).items()
                     if k not in self.names}
            rows.append(f"  PK: {self.n_pk} concentrations" + "".join(
                f"; {k} fixed at {v:.4g}" for k, v in fixed.items()))
        for n in self.names:
            rows.append(f"  {n:<20} {self.estimate[n]:.4g}  95% CI [{self.ci_low[n]:.4g}, "
                        f"{self.ci_high[n]:.4g}]")
        for r, v in (pop.get("random") or {}).items():
            pct = lambda x: "nan" if x is None else f"{100 * x:.1f}"  # noqa: E731
            ci = ("" if v.get("cv_ci95_low") is None else
                  f" [{pct(v['cv_ci95_low'])}, {pct(v['cv_ci95_high'])}]")
            prof = ""
            if "cv_profile95_low" in v:
                lo_mark = "<=" if v.get("profile_low_at_bound") else ""
                prof = (f"  profile 95% [{lo_mark}{pct(v['cv_profile95_low'])}, "
                        f"{pct(v['cv_profile95_high'])}]"
                        + ("" if v.get("profile_fits_converged", True) else " (not all profile "
                           "fits converged)"))
            rows.append(f"  omega({r}) CV {pct(v['cv'])}%{ci}{prof}"
                        + (f"  shrinkage {pct(v['shrinkage'])}%" if "shrinkage" in v else "")
                        + ("  (sd at its bound: no Wald CI)" if v.get("sd_at_bound") else ""))
        rows += covariate_lines(pop.get("covariates") or [])
        return "\n".join(rows)


def covariate_lines(rows) -> list[str]:
    """One summary line per covariate effect of a population fit (`population.covariates.
    effect_rows`: its beta, 95% CI, RSE% and model)."""
    out = []
    for r in rows:
        ci = ("" if r.get("ci95_low") is None else
              f"  95% CI [{r['ci95_low']:.3g}, {r['ci95_high']:.3g}]")
        rse = "" if r.get("rse_percent") is None else f"  RSE {r['rse_percent']:.1f}%"
        fold = ("" if r.get("fold_change") is None else
                f"  fold change {r['fold_change']:.3g}")
        out.append(f"  beta({r['label']}) {r['estimate']:.4g}{ci}{rse}{fold}  [{r['model']}: "
                   f"{r['formula']}]")
    return out


def start_points(obj: Objective, starts: int, seed: int, method: str = "sobol") -> np.ndarray:
    """(starts, d) points in scale space inside the bounds (2%-98% of each range)."""
    from scipy.stats import qmc

    d = len(obj.names)
    if method == "sobol":
        u = qmc.Sobol(d, scramble=True, seed=seed).random(starts)
    elif method == "lhs":
        u = qmc.LatinHypercube(d, seed=seed).random(starts)
    else:
        raise ValueError(f"unknown start method {method!r} (sobol, lhs)")
    u = 0.02 + 0.96 * u
    return obj.s_lo + u * (obj.s_hi - obj.s_lo)


def _lbfgs_direction(g, S_hist, Y_hist):
    """Two-loop recursion for one point; histories are lists (oldest first)."""
    q = g.copy()
    alphas = []
    for s, y in zip(reversed(S_hist), reversed(Y_hist), strict=True):
        rho = 1.0 / (y @ s)
        a = rho * (s @ q)
        alphas.append((rho, a, s, y))
        q = q - a * y
    if S_hist:
        s, y = S_hist[-1], Y_hist[-1]
        q = q * (s @ y) / (y @ y)
    for rho, a, s, y in reversed(alphas):
        b = rho * (y @ q)
        q = q + (a - b) * s
    return -q


class LBFGS(eqx.Module):
    """L-BFGS batched over points on the host: two-loop recursion with `memory` pairs, a
    backtracking Armijo line search (at most 12 trials, the step divided by 4 each time) in
    which only the points still searching are evaluated, at most `steps` iterations. A point
    has converged when max |grad| < `gtol` (z space), or the predicted decrease is below 1e-7,
    or the relative decrease below 1e-10; it stops when its line search stalls.

    Kept in place of `optax.lbfgs` (zoom line search): measured in benchmarks/RESULTS.md."""

    steps: int = eqx.field(static=True, default=60)
    gtol: float = eqx.field(static=True, default=1e-3)
    memory: int = eqx.field(static=True, default=8)

    def __check_init__(self):
        if self.steps < 1 or self.memory < 1 or not self.gtol > 0:
            raise ValueError("LBFGS needs steps >= 1, memory >= 1 and gtol > 0")

    def describe(self) -> dict:
        return dict(optimizer="lbfgs", lbfgs_steps=self.steps, gtol=self.gtol,
                    memory=self.memory)

    def minimise(self, obj: Objective, Z, free, tick, done_steps: int = 0):
        """From rows of Z (unconstrained); components where `free` is False stay put.
        Returns (Z, f, g, converged, iterations)."""
        Z = np.array(Z, float)
        n = Z.shape[0]
        f, g, _, _ = obj.evaluate(Z)
        g = g * free
        hist = [([], []) for _ in range(n)]
        done = np.zeros(n, bool)
        converged = np.zeros(n, bool)
        iters = np.zeros(n, int)
        total = done_steps + self.steps
        for it in range(self.steps):
            gmax = np.max(np.abs(g), axis=1)
            converged |= np.isfinite(f) & (gmax < self.gtol)
            done |= converged | ~np.isfinite(f)
            if done.all():
                break
            D = np.zeros_like(Z)
            for i in np.flatnonzero(~done):
                di = _lbfgs_direction(g[i], *hist[i]) * free[i]
                if not di @ g[i] < 0:
                    di = -g[i]
                D[i] = di
            slope = np.sum(D * g, axis=1)
            step = np.minimum(1.0, 2.0 / np.maximum(np.max(np.abs(D), axis=1), 1e-300))
            accepted = done.copy()
            newZ, newf, newg = Z.copy(), f.copy(), g.copy()
            for _ in range(12):
                trial = Z + step[:, None] * D
                # only the starts still searching are evaluated (the others keep their values)
                todo = np.flatnonzero(~accepted)
                ft, gt = f.copy(), g.copy()
                ft[todo], gt[todo], _, _ = obj.evaluate(trial[todo])
                gt = gt * free
                ok = ~accepted & np.isfinite(ft) & (ft <= f + 1e-4 * step * slope)
                newZ[ok], newf[ok], newg[ok] = trial[ok], ft[ok], gt[ok]
                accepted |= ok
                if accepted.all():
                    break
                step = np.where(accepted, step, 0.25 * step)
            stalled = ~accepted
            for i in np.flatnonzero(accepted & ~done):
                s, y = newZ[i] - Z[i], newg[i] - g[i]
                if s @ y > 1e-12 * np.sqrt((s @ s) * (y @ y)):
                    hist[i][0].append(s)
                    hist[i][1].append(y)
                    if len(hist[i][0]) > self.memory:
                        hist[i][0].pop(0)
                        hist[i][1].pop(0)
            # converged: predicted decrease (-g.d) below 1e-7 or a relative decrease below 1e-10
            tiny = accepted & ~done & ((-slope < 1e-7) | (
                np.abs(f - newf) <= 1e-10 * np.maximum(1.0, np.abs(f))))
            iters[~done] += 1
            Z, f, g = newZ, newf, newg
            converged |= tiny
            done |= stalled | tiny
            tick(done_steps + it + 1, total, f)
        return Z, f, g, converged, iters


def _names(names) -> tuple:
    """Parameter names as a tuple of stripped, non-empty strings (a comma-separated string or
    a sequence)."""
    if isinstance(names, str):
        names = names.split(",")
    return tuple(n.strip() for n in names if n.strip())


class FitOptions(eqx.Module):
    """How `fit` searches (an immutable value; `replace(...)` or a new one to change it).

    `starts` start points from `seed` (`start_method`: "sobol" (scrambled) or "lhs");
    `adam_steps` optax Adam steps at learning rate `adam_lr` first (0: none); `optimizer`: the
    local optimiser that follows (`LBFGS`); `prior`: add the parameter table's weak prior;
    `profile`: free parameters to profile, `profile_points` grid points per profile likelihood;
    `solver`: the ODE solver of the objective (`fit_solver_options()`, or an adaptive
    `SolverOptions`)."""

    starts: int = eqx.field(static=True, default=16)
    seed: int = eqx.field(static=True, default=0)
    start_method: str = eqx.field(static=True, default="sobol")
    adam_steps: int = eqx.field(static=True, default=30)
    adam_lr: float = eqx.field(static=True, default=0.1)
    optimizer: LBFGS = LBFGS()
    prior: bool = eqx.field(static=True, default=False)
    profile: tuple = eqx.field(static=True, default=(), converter=_names)
    profile_points: int = eqx.field(static=True, default=7)
    solver: FixedSteps | SolverOptions = eqx.field(default_factory=fit_solver_options)

    def __check_init__(self):
        if self.start_method not in ("sobol", "lhs"):
            raise ValueError(f"unknown start method {self.start_method!r} (sobol, lhs)")
        if self.starts < 1 or self.seed < 0:
            raise ValueError("FitOptions needs starts >= 1 and seed >= 0")
        if self.adam_steps < 0 or self.profile_points < 2:
            raise ValueError("FitOptions needs adam_steps >= 0 and profile_points >= 2")

    def replace(self, **changes) -> FitOptions:
        """A copy with the given fields changed (e.g. `options.replace(starts=4)`)."""
        return dataclasses.replace(self, **changes)

    @property
    def steps(self) -> int:
        """Iterations reported to `progress` (Adam, then the optimiser's at most)."""
        return self.adam_steps + self.optimizer.steps


def minimise(obj: Objective, Z0, options: FitOptions, *, fixed=None, progress=None):
    """Batched minimisation from rows of Z0 (unconstrained): `options.adam_steps` of optax Adam
    (vmapped over points), then `options.optimizer` from each point's best Adam iterate.
    `fixed` (n, d) bool keeps components at their initial value (profiles). Returns a dict of
    arrays (`status`: each point's code of `dormancy_model.status`)."""
    Z = np.array(Z0, float)
    n, d = Z.shape
    fixed = np.zeros((n, d), bool) if fixed is None else np.asarray(fixed, bool)
    free = ~fixed
    f, g, _, _, st = obj.evaluate_status(Z)
    g = g * free
    best_f, best_Z, best_st = f.copy(), Z.copy(), st
    total = options.steps
    tick = progress or (lambda i, total, f: None)
    # ---- Adam (optax), vmapped over points
    opt = optax.adam(options.adam_lr)
    state = jax.vmap(opt.init)(jnp.asarray(Z))
    update = jax.jit(jax.vmap(opt.update))
    for it in range(options.adam_steps):
        ok = np.isfinite(f)
        u, state = update(jnp.asarray(np.where(ok[:, None], g, 0.0)), state, jnp.asarray(Z))
        Z = np.where(free, Z + np.asarray(u), Z)
        f, g, _, _, st = obj.evaluate_status(Z)
        g = g * free
        better = f < best_f
        best_f = np.where(better, f, best_f)
        best_Z = np.where(better[:, None], Z, best_Z)
        best_st = np.where(better, st, best_st)
        tick(it + 1, total, best_f)
    # ---- the local optimiser from the best Adam point
    Z, f, g, converged, iters = options.optimizer.minimise(
        obj, best_Z, free, lambda i, t, fz: tick(i, t, np.minimum(best_f, fz)),
        options.adam_steps)
    gmax_scale = np.max(np.abs(g * obj.dz_ds(Z)) * free, axis=1)
    # a point whose best Adam value is not finite never moves in the optimiser (it only takes
    # finite steps), so the status of its best Adam point is its final status
    status = np.where(np.isfinite(f), S.OK, np.where(best_st == S.OK, S.NONFINITE, best_st))
    return dict(Z=Z, f=f, converged=converged & np.isfinite(f), grad=gmax_scale,
                iterations=iters + options.adam_steps, status=status)


def hessian_scale(obj: Objective, s, h: float = 1e-4) -> np.ndarray:
    """Hessian of the nll in scale space at s (central differences of the exact gradient)."""
    d = s.size
    pts = np.concatenate([s + h * np.eye(d), s - h * np.eye(d)])
    _, G = obj.evaluate_scale(pts)
    H = (G[:d] - G[d:]) / (2 * h)
    return 0.5 * (H + H.T)


def profiles_for(obj: Objective, names, s_best, se, options: FitOptions, *,
                 span: float = 3.0) -> dict:
    """Profile likelihoods: each requested parameter fixed on a grid of
    `options.profile_points` values +-span SE around the estimate (a tenth of the bounds' width
    when the SE is unknown); the other free parameters re-optimised from the best estimate by
    `options.optimizer` (no Adam). All points in one batch."""
    rows, fixed, meta = [], [], []
    for name in names:
        j = obj.names.index(name)
        width = span * se[j] if np.isfinite(se[j]) and se[j] > 0 else 0.1 * (
            obj.s_hi[j] - obj.s_lo[j])
        grid = np.clip(s_best[j] + np.linspace(-width, width, options.profile_points),
                       obj.s_lo[j] + 1e-9,
                       obj.s_hi[j] - 1e-9)
        for v in grid:
            s = s_best.copy()
            s[j] = v
            rows.append(s)
            m = np.zeros(s.size, bool)
            m[j] = True
            fixed.append(m)
            meta.append((name, v))
    if not rows:
        return {}
    res = minimise(obj, obj.scale_to_z(np.array(rows)), options.replace(adam_steps=0),
                   fixed=np.array(fixed))
    out = {}
    f_best = None
    for name in names:
        idx = [i for i, (nm, _) in enumerate(meta) if nm == name]
        sv = np.array([meta[i][1] for i in idx])
        fv = res["f"][idx]
        out[name] = (sv, fv)
        f_best = fv.min() if f_best is None else min(f_best, fv.min())
    return out


def _lr_interval(sv, fv, f_min, code):
    """Likelihood-ratio CI from a profile grid by linear interpolation; None if not reached."""
    thr = f_min + PROFILE_DROP
    k = int(np.nanargmin(fv))
    lo = hi = None
    for i in range(k, 0, -1):
        if fv[i - 1] >= thr > fv[i] or (np.isfinite(fv[i - 1]) and fv[i - 1] >= thr):
            lo = np.interp(thr, [fv[i], fv[i - 1]], [sv[i], sv[i - 1]])
            break
    for i in range(k, len(sv) - 1):
        if np.isfinite(fv[i + 1]) and fv[i + 1] >= thr:
            hi = np.interp(thr, [fv[i], fv[i + 1]], [sv[i], sv[i + 1]])
            break
    conv = lambda v: None if v is None else float(from_codes(v, code))  # noqa: E731
    return conv(lo), conv(hi)


def fit(study: Study, params: Parameters, free, *, options: FitOptions = FitOptions(),
        starts: int | None = None, seed: int | None = None, prior: bool | None = None,
        profile=None, sigma: float = 0.5, objective: Objective | None = None,
        progress=None) -> FitResult:
    """Fit `free` parameters (names; `burden_sigma` is the log-normal noise sd) to `study`.

    `params`: the full parameter set supplying every fixed value. `options`: how to search
    (`FitOptions`: starts and seed, start method, Adam, the optimiser, prior, profiles, ODE
    solver); `starts`, `seed`, `prior`, `profile` given here replace those of `options`
    (`fit(..., starts=4)` is `fit(..., options=options.replace(starts=4))`). `sigma`: the noise
    sd when `burden_sigma` is not free. `objective`: reuse an `Objective` built for the same
    study/free/batch/solver/prior (skips recompiling). `progress(i, n, f)`: called after every
    iteration with the best objective per start.
    """
    given = dict(starts=starts, seed=seed, prior=prior, profile=profile)
    options = options.replace(**{k: v for k, v in given.items() if v is not None})
    starts, seed, prior, profile = options.starts, options.seed, options.prior, options.profile
    t0 = time.perf_counter()
    obj = objective or Objective(study, params, free, batch=fit_batch(starts),
                                 options=options.solver, prior=prior, sigma=sigma)
    n0 = obj.n_evaluations
    S0 = start_points(obj, starts, seed, options.start_method)
    res = minimise(obj, obj.scale_to_z(S0), options, progress=progress)
    S = obj.z_to_scale(res["Z"])
    order = np.argsort(np.where(np.isfinite(res["f"]), res["f"], np.inf), kind="stable")
    nat = lambda s: dict(zip(obj.names, map(float, obj.natural(s)), strict=True))  # noqa: E731
    start_rows = [StartResult(int(i), nat(S0[i]), nat(S[i]), float(res["f"][i]),
                              bool(res["converged"][i]), float(res["grad"][i]),
                              int(res["iterations"][i]), int(res["status"][i])) for i in order]
    best = S[order[0]]
    f_best, _, lb, lr = obj.evaluate(obj.scale_to_z(best[None]))
    H = hessian_scale(obj, best)
    try:
        cov = np.linalg.inv(H)
        se = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
        if not np.all(np.linalg.eigvalsh(H) > 0):
            se = np.where(np.diag(cov) > 0, se, np.nan)
    except np.linalg.LinAlgError:
        cov = np.full_like(H, np.nan)
        se = np.full(best.size, np.nan)
    lo_s, hi_s = best - Z95 * se, best + Z95 * se
    ci_lo, ci_hi = obj.natural(lo_s), obj.natural(hi_s)
    est = nat(best)
    span = obj.s_hi - obj.s_lo
    identifiable = {n: bool(np.isfinite(se[j]) and (hi_s[j] - lo_s[j]) < span[j])
                    for j, n in enumerate(obj.names)}
    prof = {}
    if profile:
        for name in profile:
            if name not in obj.names:
                from dormancy_model.errors import InputError

                raise InputError("--profile", "profile", f"{name!r} is not a free parameter")
        raw = profiles_for(obj, list(profile), best, se, options)
        f_min = float(min(f_best[0], *(np.nanmin(fv) for _, fv in raw.values())))
        for name, (sv, fv) in raw.items():
            j = obj.names.index(name)
            lo, hi = _lr_interval(sv, fv, f_min, obj.codes[j])
            prof[name] = Profile(name, [float(x) for x in sv],
                                 [float(x) for x in from_codes(sv, obj.codes[j])],
                                 [float(x) for x in fv], lo, hi)
    k = len(obj.names)
    settings = dict(free=list(obj.names), starts=starts, start_method=options.start_method,
                    adam_steps=options.adam_steps, adam_lr=options.adam_lr,
                    **options.optimizer.describe(),
                    prior=prior, sigma_fixed=None if "burden_sigma" in obj.names else sigma,
                    **({} if not obj.n_pk else {"pk_sigma_fixed": {
                        n: NUISANCE[n]["value"] for n in PK_SIGMAS if n not in obj.names}}),
                    solver=_solver_settings(obj.options), profile=list(profile),
                    profile_points=options.profile_points)
    return FitResult(
        names=obj.names, scales=tuple(f.scale for f in obj.free),
        units=tuple(f.unit for f in obj.free), unit_factors=tuple(f.factor for f in obj.free),
        estimate=est, scale_estimate=dict(zip(obj.names, map(float, best), strict=True)),
        se=dict(zip(obj.names, map(float, se), strict=True)),
        ci_low=dict(zip(obj.names, map(float, ci_lo), strict=True)),
        ci_high=dict(zip(obj.names, map(float, ci_hi), strict=True)),
        identifiable=identifiable, objective=float(f_best[0]), loglik_burden=float(lb[0]),
        loglik_relapse=float(lr[0]), aic=2 * k + 2 * float(f_best[0]), n_obs=obj.n_obs,
        n_pk=obj.n_pk,
        starts=start_rows, hessian=H.tolist(), covariance=np.asarray(cov).tolist(),
        profiles=prof, settings=settings, seed=int(seed),
        wall_time_s=time.perf_counter() - t0, n_evaluations=obj.n_evaluations - n0)


def _solver_settings(options) -> dict:
    return options.describe()


def from_codes(sv, code):
    from dormancy_model.params.transforms import from_scale_codes

    return from_scale_codes(np.asarray(sv), np.full(np.shape(sv), code))
