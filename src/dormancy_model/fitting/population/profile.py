"""Profile-likelihood intervals for the between-animal sds (and so the CVs) of a Laplace fit.

The Wald interval of a variance component (`result.cv_ci_low/high`: normal on log sd from the
inverse outer Hessian) is poor exactly where it matters: near sd = 0 the marginal likelihood is
flat in log sd, so an estimate at the lower bound gets an interval of 1e-100 .. 1e150 or none.
The profile interval is the set of sds whose profile -log-likelihood,
nll_p(s) = min over the other outer components of nll(theta | log sd_j = s), lies within
chi2_1(level) / 2 of the optimum (likelihood-ratio test inversion; 1.92 at 95%).

`profile_sd` walks from the estimate in log sd, one side at a time, in steps of `step` (default:
the Wald se of log sd, kept in [0.1, 0.7]), re-optimising every other component from the last
point's optimum (the fit's own L-BFGS in sigmoid-bounded coordinates, warm-started modes), and
once a step crosses, refines the crossing by regula falsi in the signed root sqrt(2 delta nll)
(nearly linear in log sd where the likelihood is near-quadratic) until delta nll is within
`tol` of chi2_1(level) / 2 (at most `refine` more fits). The walk's last allowed step
(`max_steps`) goes straight to the sd bound (`PopulationProblem.sd_bounds`), so a side always
ends: a side that reaches the bound without crossing reports the bound and says so (the data
do not exclude it), a crossing between the last step and the bound is refined as above. Each
point is a full outer fit, so a profile costs several fits; it is opt-in (`dormancy fit
--method laplace --profile`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dormancy_model.fitting.estimate import LBFGS
from dormancy_model.fitting.population.estimate import (
    BoundedCoordinates,
    LaplaceOptions,
    _Evaluator,
    _ZObjective,
)
from dormancy_model.fitting.population.problem import PopulationProblem
from dormancy_model.fitting.population.result import PopulationResult, cv_of

STEP_RANGE = (0.1, 0.7)  # log-sd steps of the walk


def _crossing(s0, d0, s1, d1, crit):
    """Where the signed root r(s) = sqrt(2 max(d, 0)) reaches sqrt(2 crit), linear between two
    points of the walk."""
    r0, r1, rc = math.sqrt(2 * max(d0, 0.0)), math.sqrt(2 * max(d1, 0.0)), math.sqrt(2 * crit)
    if r1 == r0:
        return s1
    return s0 + (rc - r0) * (s1 - s0) / (r1 - r0)


def profile_sd(problem: PopulationProblem, result: PopulationResult, name: str, *,
               options: LaplaceOptions = LaplaceOptions(), level: float = 0.95,
               step: float | None = None, max_steps: int = 12, refine: int = 4,
               tol: float = 0.01) -> dict:
    """Profile-likelihood interval of the between-animal sd of random effect `name` (see the
    module doc). Returns sd and CV limits, whether each side stopped at the sd bound, and the
    walk's points (sd, profile nll - optimum)."""
    if name not in problem.random:
        raise ValueError(f"{name!r} is not a random effect of this fit: {list(problem.random)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    j = problem.random.index(name)
    k = problem.d + j
    theta_hat = np.asarray(result.theta, float)
    f_hat = float(result.objective)
    crit = float(stats.chi2.ppf(level, 1)) / 2
    lo_b, hi_b = np.log(problem.sd_bounds[0]), np.log(problem.sd_bounds[1])
    if step is None:
        cov = np.asarray(result.covariance, float)
        se = math.sqrt(cov[k, k]) if np.isfinite(cov[k, k]) and cov[k, k] > 0 else STEP_RANGE[1]
        step = float(np.clip(se, *STEP_RANGE))
    coords = BoundedCoordinates(problem.theta_bounds())
    ev = _Evaluator(problem, options.inner)
    ids = problem.animal_ids or tuple(str(i) for i in range(problem.n_animals))
    eta_hat = np.array([result.eta[a] for a in ids], float).reshape(problem.n_animals, problem.q)
    opt = LBFGS(steps=options.iterations, gtol=options.gtol)
    zobj = _ZObjective(ev, coords)
    free = np.ones((1, theta_hat.size), bool)
    free[0, k] = False
    points = [(float(math.exp(theta_hat[k])), 0.0)]
    limits, at_bound, fits_ok = {}, {}, True
    margin = 1e-6  # stay inside the open sigmoid interval

    def at(s_val, theta_start):
        t0 = theta_start.copy()
        t0[k] = s_val
        Z, f, _, conv, _ = opt.minimise(zobj, coords.z(t0)[None], free, lambda *a: None)
        d = float(f[0]) - f_hat
        points.append((float(math.exp(s_val)), d))
        return d, coords.theta(Z[0]), bool(conv[0])

    for side, bound in ((-1, lo_b + margin), (1, hi_b - margin)):
        theta, s, d_prev = theta_hat.copy(), theta_hat[k], 0.0
        ev.eta = eta_hat.copy()
        found = None
        for i in range(max_steps):
            s_new = s + side * step
            # the last allowed step goes to the bound: a profile still below the criterion
            # there reports the bound, one above it brackets the crossing (never undetermined)
            last = ((s_new <= bound) if side < 0 else (s_new >= bound)) or i == max_steps - 1
            if last:
                s_new = bound
            d, theta_new, ok = at(s_new, theta)
            fits_ok &= ok
            if d >= crit:
                # bracket (s, d_prev) .. (s_new, d): regula falsi in the signed root
                a, da, b, db = s, d_prev, s_new, d
                found = _crossing(a, da, b, db, crit)
                for _ in range(refine):
                    dc, theta_c, ok = at(found, theta)
                    fits_ok &= ok
                    if abs(dc - crit) < tol:
                        break
                    if dc < crit:
                        a, da, theta = found, dc, theta_c
                    else:
                        b, db = found, dc
                    found = _crossing(a, da, b, db, crit)
                break
            theta = theta_new
            s, d_prev = s_new, d
            if last:
                break
        key = "low" if side < 0 else "high"
        if found is not None:
            limits[key], at_bound[key] = float(math.exp(found)), False
        else:  # the walk reached the bound without crossing
            limits[key], at_bound[key] = float(math.exp(bound)), True
    scale = problem.scales[problem.random_index[j]]
    points.sort()
    return {"random": name, "level": level, "sd": float(math.exp(theta_hat[k])),
            "sd_low": limits["low"], "sd_high": limits["high"],
            "cv_low": float(cv_of(limits["low"], scale)),
            "cv_high": float(cv_of(limits["high"], scale)),
            "low_at_bound": at_bound["low"], "high_at_bound": at_bound["high"],
            "all_fits_converged": bool(fits_ok), "step_log_sd": step,
            "points": [{"sd": s_, "delta_nll": d_} for s_, d_ in points]}


def profile_all(problem: PopulationProblem, result: PopulationResult, *,
                options: LaplaceOptions = LaplaceOptions(), level: float = 0.95,
                progress=None) -> dict:
    """`profile_sd` for every random effect: {name: profile}."""
    out = {}
    for i, r in enumerate(problem.random):
        out[r] = profile_sd(problem, result, r, options=options, level=level)
        if progress:
            progress(i + 1, len(problem.random), r)
    return out
