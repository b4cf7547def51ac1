"""Likelihoods of a mouse study under the model.

* Residual burden: log-normal around the model's solitary residual tumour cells D + R at the
  sampling day (the cells not in a proliferating clone: dormant D and reactivating R),
  ``log y ~ Normal(log(f * residual(t)), sigma)`` with the sampled fraction f; a count below the
  detection limit L contributes ``P(y < L) = Phi((log L - log(f residual)) / sigma)`` (censoring).
  Proliferating cells P are not in the count: in an animal they sit in a few clones (none in
  most mice under the drugs, thousands of cells in a few), whose MEAN the mean field's P (and
  its marrow part) is, so a log-normal law centred on a mean with P in it is far above the
  typical mouse (measured with the agents, `scripts/make_synthetic_study.py`: at day 56 of HCQ
  120 mg/kg the median of D + R + marrow P is 1/50 of its mean; of D + R, 1/1). Count the
  single RTCs (dormant and Ki67-positive single cells) in `residual_cells` and clones and
  lesions apart (the study format's `clone_cells` and `lesion_cells` columns, not fitted).
* Relapse: right-censored event times from the model's cumulative hazard
  ``Lambda(t) = p_found E_L[E(t - L)]`` (`Trajectory.hazard`) and its rate
  ``h(t) = p_found E_L[k_RP g(M(t - L)) R(t - L)]`` (the escape flux from `rates.cell_rates`,
  at the lagged times), the expectation over the relapse-lag law L of a surviving clone as a
  fixed Gauss rule (`observables.lag_reads`, the switch size `observables.SWITCH_SIZE`), the
  lesions on the growth clock of the arm's EVE course (`model.clock`; h gets its chain-rule
  factor). A
  relapse at t contributes ``log h(t) - Lambda(t)``, a censored mouse ``-Lambda(t)``.
* Drug concentrations (optional pk.csv): log-normal (proportional error) around the model's
  concentration of the drug at the sampling day in the sample's matrix (the parameter set's
  matrix, `[meta] hcq_matrix` / `eve_matrix`, converted by the drug's blood/plasma ratio when
  the sample's differs), one sd per drug, ``log c ~ Normal(log C(t), s)``;
  a value below the LLOQ contributes ``Phi((log LLOQ - log C(t)) / s)`` (M3, Beal 2001).
  Closed-form PK: no ODE solve (`pk_log_median`, `pk_loglik_unit`).
* Draws from both laws (`sample_burden_unit`, `sample_relapse_unit`) for simulated replicate
  studies (visual predictive checks, `fitting.vpc`), next to the log-likelihoods they mirror.
* Joint: the sum. Optional priors from the parameter table: Normal in each parameter's scale
  (log, logit or lin) centred on the table value with sd = a quarter of the bounds' width.

All functions are pure and jittable; per-arm predictions are vmapped over the arm axis.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from dormancy_model import status as S
from dormancy_model.fitting.study import StudyArrays
from dormancy_model.model import clock as C
from dormancy_model.model import observables as O
from dormancy_model.model import rates as R
from dormancy_model.model.integrate import FixedSteps, SolverOptions, finite_status
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import Dosing

LOG_2PI = float(jnp.log(2.0 * jnp.pi))
TINY = 1e-300


class ArmPrediction(eqx.Module):
    """Model outputs of one arm on the study grid (G,)."""

    residual: jax.Array  # cells: solitary RTCs D + R (the burden count's observable)
    cum_hazard: jax.Array  # Lambda(t)
    hazard_rate: jax.Array  # h(t), 1/day
    status: jax.Array  # a code of dormancy_model.status (0 ok)


def arm_prediction(model: DormancyModel, params: Parameters, dosing: Dosing, grid,
                   options: SolverOptions | FixedSteps, t1=None,
                   signals=None, clock=None) -> ArmPrediction:
    """Solve one arm once and read it at the grid days and at the grid days minus each node of
    the relapse-lag law, with the step strategy `options` (`integrate.SolverOptions`: adaptive,
    dense output, the same equations, controller and initial state as `simulate`; dense output
    instead of `SaveAt(ts)` because reading a few thousand days from the interpolant is much
    cheaper than saving them inside the solver loop. `integrate.FixedSteps`: the fixed step
    grid). The solve runs from grid[0] to `t1` (default grid[-1]): one animal of the
    population fit reads its own few days (non-decreasing, `grid[0]` = 0) from a solve to the
    end of the study, the same solve as its arm's in the pooled fit. `signals`: (step grid,
    drug signals at its stage times) of this arm from `FixedSteps.stage_times` (the population
    fit's animals share their arm's, `population.animals`), read instead of computed; `clock`
    likewise the arm's lesion growth clock (`model.clock.course_clock` from grid[0] to t1)."""
    course = model.drug_course(params, dosing)
    t0, t1 = grid[0], (grid[-1] if t1 is None else t1)
    if signals is None:
        at, status = options.dense(model, params, course, dosing, t0, t1)
    else:
        at, status = options.dense_tabulated(model, params, *signals)
    p_found = O.founding_probability(params)
    # lesions grow on the growth clock of the arm's EVE course (`model.clock`; the identity,
    # to the bit, for an arm without EVE)
    if clock is None:
        clock = C.course_clock(course, params, t0, t1)
    reads = O.lag_reads(grid, params, t0, clock=clock)  # (G, K) lagged times of the law
    y = jax.vmap(at)(grid)
    yl = jax.vmap(jax.vmap(at))(reads.times)  # (G, K, 4)
    ex = jax.vmap(jax.vmap(course.exposure))(reads.times)
    rates = R.cell_rates(ex.eve, ex.hcq_effect, params)
    return ArmPrediction(
        # the burden observable: the solitary RTCs D + R (module docstring); the ODE's P (all
        # proliferating cells, clones and lesions) is not counted
        residual=y[:, 0] + y[:, 1],
        cum_hazard=O.cumulative_hazard(yl[..., 3], reads, p_found, None if reads.founding
                                       is None else jax.vmap(at)(jnp.minimum(
                                           reads.founding.saves(t0), t1))[:, 3]),
        hazard_rate=O.hazard_rate(rates.commitment, yl[..., 1], reads, p_found),
        status=finite_status(status, y, yl))


def study_prediction(model, params, arrays: StudyArrays, options) -> ArmPrediction:
    """Predictions of every arm, (A, G) arrays: one vmapped solve per arm."""
    return jax.vmap(arm_prediction, in_axes=(None, None, 0, None, None))(
        model, params, arrays.dosing, arrays.grid, options)


# vmap axes of a `StudyArrays` over its units: the rows carry the unit axis, the dosing and the
# grid do not need to (they are not read by the per-unit laws)
ROW_AXES = StudyArrays(dosing=None, grid=None, **{k: 0 for k in (
    "burden_idx", "burden_log_y", "burden_log_lod", "burden_log_fraction", "burden_censored",
    "burden_mask", "surv_idx", "surv_event", "surv_mask", "body_weight_kg", "pk_day",
    "pk_log_y", "pk_log_lloq", "pk_drug", "pk_plasma", "pk_censored", "pk_mask")})


def pk_log_median(model: DormancyModel, params: Parameters, dosing: Dosing, rows):
    """log of the predicted concentration (ng/mL, in the row's matrix) of each of a unit's
    (Np,) PK rows: the drug's concentration from the closed-form course of `dosing` (one
    unit's schedule) at the row's day, in the matrix the parameter set describes
    (`Parameters.concentration_matrix`: whole blood for the human set, plasma for the mouse
    HCQ), converted by the blood/plasma ratio when the row's matrix differs (divided for a
    plasma row of a whole-blood set, multiplied for a whole-blood row of a plasma set).
    `rows`: `pk_day`, `pk_drug`, `pk_plasma` of a `StudyArrays` unit."""
    course = model.drug_course(params, dosing)
    ex = jax.vmap(course.exposure)(rows.pk_day)
    hcq = rows.pk_drug == 0
    conc = jnp.where(hcq, ex.hcq, ex.eve)
    ratio = jnp.where(hcq, params["hcq_blood_plasma_ratio"], params["eve_blood_plasma_ratio"])
    set_plasma = jnp.where(hcq, params.concentration_matrix("hcq") == "plasma",
                           params.concentration_matrix("eve") == "plasma")
    shift = set_plasma.astype(float) - rows.pk_plasma.astype(float)  # +1, 0 or -1
    return jnp.log(jnp.maximum(conc, TINY)) + shift * jnp.log(ratio)


def pk_loglik_unit(mu, rows, sigma_hcq, sigma_eve):
    """Log-likelihood of one unit's PK rows (scalar): log-normal with sd `sigma_hcq` or
    `sigma_eve` around `mu` = `pk_log_median` (proportional error), a row below the LLOQ
    censored (M3: log Phi((log LLOQ - mu) / sd))."""
    sigma = jnp.where(rows.pk_drug == 0, sigma_hcq, sigma_eve)
    z = (rows.pk_log_y - mu) / sigma
    dens = -rows.pk_log_y - jnp.log(sigma) - 0.5 * LOG_2PI - 0.5 * z**2
    cens = norm.logcdf((rows.pk_log_lloq - mu) / sigma)
    ll = jnp.where(rows.pk_censored, cens, dens)
    return jnp.sum(jnp.where(rows.pk_mask, ll, 0.0))


def pk_loglik(model, params, arrays: StudyArrays, sigma_hcq, sigma_eve):
    """Log-likelihood of the PK rows of every unit (scalar; 0.0 without PK rows). The units'
    schedules are `arrays.dosing` (leading unit axis)."""
    if arrays.pk_mask is None:
        return jnp.zeros(())

    def unit(dosing, rows):
        return pk_loglik_unit(pk_log_median(model, params, dosing, rows), rows, sigma_hcq,
                              sigma_eve)
    return jnp.sum(jax.vmap(unit, in_axes=(0, ROW_AXES))(arrays.dosing, arrays))


def burden_log_median(pred: ArmPrediction, rows):
    """log(f * residual(t)) of each of a unit's (Nb,) burden rows: the centre of the
    log-normal count law (the log of its median), in the unit of the count."""
    res = pred.residual[rows.burden_idx]
    return jnp.log(jnp.maximum(res, TINY)) + rows.burden_log_fraction


def burden_loglik_unit(pred: ArmPrediction, rows, sigma):
    """Log-likelihood of one unit's residual-burden rows (scalar): log-normal with censoring.

    A unit is an arm (pooled fit: every mouse of the arm shares the prediction) or one animal
    (population fit). `pred` holds (G,) arrays, `rows` the unit's (Nb,) rows of a `StudyArrays`
    (`burden_idx`, `burden_log_y`, `burden_log_lod`, `burden_log_fraction`, `burden_censored`,
    `burden_mask`)."""
    mu = burden_log_median(pred, rows)
    z = (rows.burden_log_y - mu) / sigma
    dens = -rows.burden_log_y - jnp.log(sigma) - 0.5 * LOG_2PI - 0.5 * z**2
    cens = norm.logcdf((rows.burden_log_lod - mu) / sigma)
    ll = jnp.where(rows.burden_censored, cens, dens)
    return jnp.sum(jnp.where(rows.burden_mask, ll, 0.0))


def relapse_loglik_unit(pred: ArmPrediction, rows):
    """Log-likelihood of one unit's right-censored relapse days (scalar); `rows`: the unit's
    (Ns,) `surv_idx`, `surv_event`, `surv_mask`."""
    # padded rows and censored mice read a safe rate of 1 (a padded row points at day 0, where
    # the rate is 0: its log would make second derivatives NaN even though it is masked)
    used = rows.surv_mask & (rows.surv_event > 0)
    lam = jnp.where(rows.surv_mask, pred.cum_hazard[rows.surv_idx], 0.0)
    rate = jnp.where(used, pred.hazard_rate[rows.surv_idx], 1.0)
    ll = jnp.where(used, jnp.log(jnp.maximum(rate, TINY)), 0.0) - lam
    return jnp.sum(jnp.where(rows.surv_mask, ll, 0.0))


def sample_burden_unit(key, pred: ArmPrediction, rows, sigma):
    """One draw of a unit's (Nb,) burden rows from the law `burden_loglik_unit` scores:
    (latent log count ``log y = burden_log_median + sigma z``, censored: log y below the row's
    log detection limit). Padded rows are drawn too (mask them with `rows.burden_mask`)."""
    mu = burden_log_median(pred, rows)
    log_y = mu + sigma * jax.random.normal(key, mu.shape, mu.dtype)
    return log_y, log_y < rows.burden_log_lod


def sample_relapse_unit(key, pred: ArmPrediction, grid, censor_day):
    """One draw of relapse days from the law `relapse_loglik_unit` scores (the first event of
    a Poisson process with cumulative hazard Lambda = `pred.cum_hazard` on `grid` (G,),
    increasing days): T = Lambda^-1(E), E ~ Exponential(1), by linear interpolation of Lambda
    between grid days (inf when Lambda(grid[-1]) < E). `censor_day` (Ns,): each animal's
    censoring day. Returns (day = min(T, censor_day), event = T <= censor_day), (Ns,) each."""
    lam = jax.lax.cummax(pred.cum_hazard)  # non-decreasing (the interpolant may wiggle)
    e = jax.random.exponential(key, jnp.shape(censor_day), lam.dtype)
    k = jnp.clip(jnp.searchsorted(lam, e, side="left"), 1, grid.shape[0] - 1)
    lo, hi = lam[k - 1], lam[k]
    frac = jnp.clip((e - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    t = jnp.where(e <= lam[-1], grid[k - 1] + frac * (grid[k] - grid[k - 1]), jnp.inf)
    return jnp.minimum(t, censor_day), t <= censor_day


def burden_loglik(pred: ArmPrediction, arrays: StudyArrays, sigma):
    """Log-likelihood of the residual-burden rows of every unit (scalar): the sum of
    `burden_loglik_unit` over the leading (arm or animal) axis."""
    return jnp.sum(jax.vmap(burden_loglik_unit, in_axes=(0, ROW_AXES, None))(
        pred, arrays, sigma))


def relapse_loglik(pred: ArmPrediction, arrays: StudyArrays):
    """Log-likelihood of the right-censored relapse days of every unit (scalar)."""
    return jnp.sum(jax.vmap(relapse_loglik_unit, in_axes=(0, ROW_AXES))(pred, arrays))


def joint_loglik(model, params, arrays, sigma, options, weights=(1.0, 1.0), pk_sigma=None):
    """(joint log-likelihood, burden part, relapse part, solver status: the arms' statuses
    combined by `status.reduce`). With PK rows in `arrays` (and `pk_sigma` = (sd of HCQ, sd
    of EVE)) the joint value also holds `pk_loglik` (not in the burden or relapse part); a
    study without PK rows gives exactly the value it gave before PK rows existed."""
    pred = study_prediction(model, params, arrays, options)
    lb = burden_loglik(pred, arrays, sigma)
    lr = relapse_loglik(pred, arrays)
    ll = weights[0] * lb + weights[1] * lr
    if arrays.pk_mask is not None:
        ll = ll + pk_loglik(model, params, arrays, *pk_sigma)
    return ll, lb, lr, S.reduce(pred.status)


def log_prior(scaled_values, centre, width):
    """Independent Normal priors in scale space: sd = width / 4 (width of the bounds)."""
    sd = width / 4.0
    z = (scaled_values - centre) / sd
    return jnp.sum(-0.5 * z**2 - jnp.log(sd) - 0.5 * LOG_2PI)


def predict_arms(study, params: Parameters, days, options: SolverOptions | None = None,
                 model: DormancyModel | None = None):
    """Fitted curves for figures: (residual (A, G) cells: the solitary RTCs D + R, the burden
    count's observable; relapse-free probability (A, G)) of
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
