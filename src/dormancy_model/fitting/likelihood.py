"""Likelihoods of a mouse study under the model.

* Residual burden: log-normal around the model's residual burden D + R + P at the sampling day,
  ``log y ~ Normal(log(f * residual(t)), sigma)`` with the sampled fraction f; a count below the
  detection limit L contributes ``P(y < L) = Phi((log L - log(f residual)) / sigma)`` (censoring).
* Relapse: right-censored event times from the model's cumulative hazard
  ``Lambda(t) = p_found E(t - tau)`` (`Trajectory.hazard`) and its rate
  ``h(t) = p_found k_RP g(M(t - tau)) R(t - tau)`` (the escape flux from `rates.cell_rates`, at
  the lagged time). A relapse at t contributes ``log h(t) - Lambda(t)``, a censored mouse
  ``-Lambda(t)``.
* Joint: the sum. Optional priors from the parameter table: Normal in each parameter's scale
  (log, logit or lin) centred on the table value with sd = a quarter of the bounds' width.

All functions are pure and jittable; per-arm predictions are vmapped over the arm axis.
"""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from dormancy_model.fitting.study import StudyArrays
from dormancy_model.model import rates as R
from dormancy_model.model.ode import DormancyModel
from dormancy_model.model.simulate import SolverOptions
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import Dosing

LOG_2PI = float(jnp.log(2.0 * jnp.pi))
TINY = 1e-300


class ArmPrediction(eqx.Module):
    """Model outputs of one arm on the study grid (G,)."""

    residual: jax.Array  # cells
    cum_hazard: jax.Array  # Lambda(t)
    hazard_rate: jax.Array  # h(t), 1/day
    status: jax.Array  # 0 ok (max over the solve)


def arm_prediction(model: DormancyModel, params: Parameters, dosing: Dosing, grid,
                   options: SolverOptions) -> ArmPrediction:
    """Solve one arm once (dense output) and read it at the grid days and at the grid days
    minus the relapse lag. Same equations, controller (steps to every dose) and initial state as
    `simulate`; dense output instead of `SaveAt(ts)` because reading a few hundred days from
    the interpolant is much cheaper than saving them inside the solver loop."""
    course = model.drug_course(params, dosing)
    y0 = model.initial_state(params)
    t0, t1 = grid[0], grid[-1]
    jumps = course.jump_times()
    jumps = jnp.where((jumps > t0) & (jumps < t1), jumps, t1)
    controller = dfx.PIDController(rtol=options.rtol, atol=options.atol, jump_ts=jumps)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(model.vector_field), options.solver, t0, t1, None, y0,
        args=(params, course), saveat=dfx.SaveAt(dense=True), stepsize_controller=controller,
        max_steps=options.max_steps, throw=False)
    lag = R.relapse_lag(params)
    lagged_t = jnp.maximum(grid - lag, t0)
    y = jax.vmap(sol.evaluate)(grid)
    yl = jax.vmap(sol.evaluate)(lagged_t)
    ex = jax.vmap(course.exposure)(lagged_t)
    rates = R.cell_rates(ex.eve, ex.hcq_effect, params)
    p_found = R.founding_probability(params)
    rate = jnp.where(grid > lag, p_found * rates.commitment * yl[:, 1], 0.0)
    cum = jnp.where(grid > lag, p_found * yl[:, 3], 0.0)
    ok = (sol.result == dfx.RESULTS.successful) & jnp.all(jnp.isfinite(y)) & jnp.all(
        jnp.isfinite(yl))
    return ArmPrediction(residual=y[:, 0] + y[:, 1] + y[:, 2], cum_hazard=cum,
                         hazard_rate=rate, status=jnp.where(ok, 0, 1))


class FixedSteps(eqx.Module):
    """Fixed-step Tsit5 for fitting: a step grid made of every dose time (kinks of the
    concentrations), `fine` equal steps from day 0 to `washout` days after the arm's last dose
    and `coarse` equal steps from there to the end of the study. Outputs between step points are
    read from the cubic Hermite interpolant (values and derivatives at the step ends).

    Why: with an adaptive controller the objective is only piecewise smooth (the step sequence
    changes with the parameters), so its exact gradient disagrees with its finite differences
    by more than a converged optimiser's gradient tolerance and line searches stall on the
    noise. On a fixed grid the objective is a smooth function of the parameters, every arm and
    start costs the same number of steps (no lane waits for a slower one), and the
    discretisation error is a smooth bias, checked against a tight adaptive solve in
    tests/test_fit.py."""

    fine: int = eqx.field(static=True, default=256)
    coarse: int = eqx.field(static=True, default=96)
    washout: float = eqx.field(static=True, default=14.0)

    def describe(self) -> dict:
        return dict(method="fixed-step Tsit5", fine_steps=self.fine, coarse_steps=self.coarse,
                    washout_days=self.washout, plus="every dose time")


def _hermite(t, ta, tb, ya, yb, fa, fb):
    """Cubic Hermite interpolant on [ta, tb] at t (ya, yb values; fa, fb derivatives)."""
    h = tb - ta
    th = jnp.where(h > 0, (t - ta) / jnp.where(h > 0, h, 1.0), 0.0)
    th2, th3 = th * th, th * th * th
    return ((2 * th3 - 3 * th2 + 1) * ya + (th3 - 2 * th2 + th) * h * fa
            + (3 * th2 - 2 * th3) * yb + (th3 - th2) * h * fb)


def arm_prediction_fixed(model: DormancyModel, params: Parameters, dosing: Dosing, grid,
                         steps: FixedSteps) -> ArmPrediction:
    """`arm_prediction` on the fixed step grid of `steps` (see `FixedSteps`)."""
    course = model.drug_course(params, dosing)
    y0 = model.initial_state(params)
    t0, t1 = grid[0], grid[-1]
    amounts = jnp.concatenate([dosing.hcq.amount, dosing.eve.amount])
    times = jnp.concatenate([dosing.hcq.times, dosing.eve.times])
    last = jnp.max(jnp.where(amounts > 0, times, t0))
    t_mid = jnp.clip(last + steps.washout, t0, t1)
    jumps = jnp.clip(course.jump_times(), t0, t1)
    fine = t0 + (t_mid - t0) * jnp.arange(steps.fine) / steps.fine
    coarse = t_mid + (t1 - t_mid) * jnp.arange(steps.coarse + 1) / steps.coarse
    ts = jnp.sort(jnp.concatenate([fine, coarse, jumps]))
    term = dfx.ODETerm(model.vector_field)
    solver = dfx.Tsit5()
    args = (params, course)

    def step(carry, tt):
        y, state = carry
        ta, tb = tt
        # made_jump: the first stage is re-evaluated at every step (an IV dose makes the
        # vector field jump at a step point, so the previous step's last stage is not reused)
        y1, _, dense, state, _ = solver.step(term, ta, tb, y, args, state, made_jump=True)
        k = dense["k"]
        return (y1, state), (y1, k[0], k[-1])

    state0 = solver.init(term, ts[0], ts[1], y0, args)
    _, (ys, fa, fb) = jax.lax.scan(step, (y0, state0), (ts[:-1], ts[1:]))
    ya = jnp.concatenate([y0[None], ys[:-1]])

    def at(t):
        i = jnp.clip(jnp.searchsorted(ts, t, side="right") - 1, 0, ts.shape[0] - 2)
        return _hermite(t, ts[i], ts[i + 1], ya[i], ys[i], fa[i], fb[i])

    lag = R.relapse_lag(params)
    lagged_t = jnp.maximum(grid - lag, t0)
    y = jax.vmap(at)(grid)
    yl = jax.vmap(at)(lagged_t)
    ex = jax.vmap(course.exposure)(lagged_t)
    rates = R.cell_rates(ex.eve, ex.hcq_effect, params)
    p_found = R.founding_probability(params)
    rate = jnp.where(grid > lag, p_found * rates.commitment * yl[:, 1], 0.0)
    cum = jnp.where(grid > lag, p_found * yl[:, 3], 0.0)
    ok = jnp.all(jnp.isfinite(ys)) & jnp.all(jnp.isfinite(y)) & jnp.all(jnp.isfinite(yl))
    return ArmPrediction(residual=y[:, 0] + y[:, 1] + y[:, 2], cum_hazard=cum,
                         hazard_rate=rate, status=jnp.where(ok, 0, 1))


def study_prediction(model, params, arrays: StudyArrays, options) -> ArmPrediction:
    """Predictions of every arm, (A, G) arrays: one vmapped solve per arm (adaptive for
    `SolverOptions`, fixed grid for `FixedSteps`)."""
    fn = arm_prediction_fixed if isinstance(options, FixedSteps) else arm_prediction
    return jax.vmap(fn, in_axes=(None, None, 0, None, None))(
        model, params, arrays.dosing, arrays.grid, options)


def burden_loglik(pred: ArmPrediction, arrays: StudyArrays, sigma):
    """Log-likelihood of the residual-burden rows (scalar): log-normal with censoring."""
    res = jnp.take_along_axis(pred.residual, arrays.burden_idx, axis=1)
    mu = jnp.log(jnp.maximum(res, TINY)) + arrays.burden_log_fraction
    z = (arrays.burden_log_y - mu) / sigma
    dens = -arrays.burden_log_y - jnp.log(sigma) - 0.5 * LOG_2PI - 0.5 * z**2
    cens = norm.logcdf((arrays.burden_log_lod - mu) / sigma)
    ll = jnp.where(arrays.burden_censored, cens, dens)
    return jnp.sum(jnp.where(arrays.burden_mask, ll, 0.0))


def relapse_loglik(pred: ArmPrediction, arrays: StudyArrays):
    """Log-likelihood of the right-censored relapse days (scalar)."""
    lam = jnp.take_along_axis(pred.cum_hazard, arrays.surv_idx, axis=1)
    rate = jnp.take_along_axis(pred.hazard_rate, arrays.surv_idx, axis=1)
    ll = arrays.surv_event * jnp.log(jnp.maximum(rate, TINY)) - lam
    return jnp.sum(jnp.where(arrays.surv_mask, ll, 0.0))


def joint_loglik(model, params, arrays, sigma, options, weights=(1.0, 1.0)):
    """(joint log-likelihood, burden part, relapse part, solver status)."""
    pred = study_prediction(model, params, arrays, options)
    lb = burden_loglik(pred, arrays, sigma)
    lr = relapse_loglik(pred, arrays)
    return weights[0] * lb + weights[1] * lr, lb, lr, jnp.max(pred.status)


def log_prior(scaled_values, centre, width):
    """Independent Normal priors in scale space: sd = width / 4 (width of the bounds)."""
    sd = width / 4.0
    z = (scaled_values - centre) / sd
    return jnp.sum(-0.5 * z**2 - jnp.log(sd) - 0.5 * LOG_2PI)


def predict_arms(study, params: Parameters, days, options: SolverOptions | None = None,
                 model: DormancyModel | None = None):
    """Fitted curves for figures: (residual (A, G) cells, relapse-free probability (A, G)) of
    every arm of `study` on `days` (increasing, starting at 0), as numpy arrays."""
    import numpy as np

    from dormancy_model.fitting.study import stacked_dosing

    options = options or SolverOptions(rtol=1e-6, atol=1e-6, max_steps=4096)
    model = model or DormancyModel()
    p = params.replace(body_weight=study.body_weight_kg)
    dosing = stacked_dosing([a.schedule for a in study.arms])
    grid = jnp.asarray(np.asarray(days, float))
    pred = eqx.filter_jit(jax.vmap(arm_prediction, in_axes=(None, None, 0, None, None)))(
        model, p, dosing, grid, options)
    return np.asarray(pred.residual), np.exp(-np.asarray(pred.cum_hazard))
