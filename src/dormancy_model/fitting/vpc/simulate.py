"""Replicate studies drawn from a fitted model, with the study's own design.

    sims = simulate_replicates(fitted, study, params, replicates=200, key=jax.random.key(0))

Each replicate has the study's arms, animals, sampling days, sampled fractions, detection
limits and censoring days, and draws its data from the laws the likelihood scores
(`likelihood.sample_burden_unit`, `likelihood.sample_relapse_unit`, on `arm_prediction`):

* parameters: a pooled fit's estimates for every animal; a population fit's animals each get
  phi_i = typical + X_i beta + E eta_i, eta_i ~ Normal(0, Omega) (transform scale), new
  animals in every replicate, X_i beta the covariate effects of a fit with covariates (each
  animal's own covariates, `model.covariate_shift`; zero otherwise); with `uncertainty`, each
  replicate first draws its typical values from
  Normal(estimate, covariance of the estimates) on the transform scale, clipped to the bounds;
* burden rows: log-normal counts around f x residual(day), censored below the row's
  detection limit (the latent log count is kept for the NPDE);
* survival rows: a relapse day from the model's cumulative hazard (linear interpolation on a
  grid of `SURVIVAL_GRID` even steps to the end of the study), censored at the
  animal's own censoring day (a censored mouse) or at its arm's last follow-up day (a mouse
  whose relapse was observed: when it would have been censored is not in the data).

Units: arms for a pooled fit without uncertainty (one solve per arm, every replicate reuses
it), otherwise (replicate, arm) or (replicate, animal). Replicates are simulated in chunks of
at most `CHUNK_SOLVES` solves (memory); keys are split per replicate first, so a replicate's
data do not depend on the chunking. The solver is the fit's default fixed step grid
(`estimate.fit_solver_options`).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.fitting.likelihood import (
    ROW_AXES,
    arm_prediction,
    burden_log_median,
    sample_burden_unit,
    sample_relapse_unit,
)
from dormancy_model.fitting.study import (
    Study,
    StudyArrays,
    pad_rows,
    stacked_dosing,
    unit_arrays,
)
from dormancy_model.fitting.vpc.model import FittedModel, covariate_shift, psd_factor
from dormancy_model.model.integrate import FixedSteps
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import from_scale_codes_jnp

SURVIVAL_GRID = 256  # even days from 0 to the end of the study for the relapse-day inversion
CHUNK_SOLVES = 2048  # ODE solves per compiled chunk


@dataclass(frozen=True)
class Replicates:
    """Simulated studies, rows in the study's order (numpy): `burden_log_y` (R, Nb) latent log
    count (unit of the count), `burden_censored` (R, Nb), `relapse_day` (R, Ns),
    `relapse_event` (R, Ns) bool; `pred_log` (Nb,) the typical animal's log median count
    (population prediction); `ipred_log` (Nb,) each animal's with its own estimates (EBEs), or
    None (a pooled fit); `censor_day` (Ns,) the censoring day each survival row was given."""

    burden_log_y: np.ndarray
    burden_censored: np.ndarray
    relapse_day: np.ndarray
    relapse_event: np.ndarray
    pred_log: np.ndarray
    ipred_log: np.ndarray | None
    censor_day: np.ndarray

    @property
    def n(self) -> int:
        return self.burden_log_y.shape[0]


class UnitModel(eqx.Module):
    """The model of one unit (arm or animal) at parameters phi (d,) on the transform scale."""

    base: Parameters
    codes: jax.Array
    names: tuple = eqx.field(static=True)
    options: FixedSteps = eqx.field(static=True)
    model: DormancyModel = eqx.field(static=True)

    def prediction(self, phi, dosing, grid):
        x = from_scale_codes_jnp(phi, self.codes)
        p = self.base.replace(**dict(zip(self.names, list(x), strict=True)))
        return arm_prediction(self.model, p, dosing, grid, self.options)


@eqx.filter_jit
def _draw(um: UnitModel, phi, arrays: StudyArrays, censor, sigma, keys):
    """Data of a chunk of replicates, each from its key (P,), at phi (P, U, d): (latent log
    counts (P, U, Nb), censored (P, U, Nb), relapse days (P, U, Ns), events (P, U, Ns), log
    median counts (P, U, Nb)). One compiled function for every chunk and for the
    predictions (phi at the typical values or the EBEs: the draws are then not used)."""
    per_unit = jax.vmap(um.prediction, in_axes=(0, 0, None))

    def one(phi_r, key):
        pred = per_unit(phi_r, arrays.dosing, arrays.grid)
        median = jax.vmap(burden_log_median, in_axes=(0, ROW_AXES))(pred, arrays)
        return (*_sample(pred, arrays, censor, sigma, key, phi.shape[1]), median)

    return jax.vmap(one)(phi, keys)


def _sample(pred, arrays: StudyArrays, censor, sigma, key, n_units: int):
    """One replicate's (latent log counts, censored, relapse days, events) of every unit from
    its predictions `pred`, with the key split per unit (burden and relapse apart)."""
    kb, ks = jax.random.split(key)
    kb, ks = jax.random.split(kb, n_units), jax.random.split(ks, n_units)
    log_y, cens = jax.vmap(sample_burden_unit, in_axes=(0, 0, ROW_AXES, None))(
        kb, pred, arrays, sigma)
    day, event = jax.vmap(sample_relapse_unit, in_axes=(0, 0, None, 0))(
        ks, pred, arrays.grid, censor)
    return log_y, cens, day, event


@eqx.filter_jit
def _draw_shared(um: UnitModel, phi, arrays: StudyArrays, censor, sigma, keys):
    """`_draw` with one phi (U, d) shared by every replicate: solved once."""
    pred = jax.vmap(um.prediction, in_axes=(0, 0, None))(phi, arrays.dosing, arrays.grid)
    draws = jax.vmap(lambda key: _sample(pred, arrays, censor, sigma, key, phi.shape[0]))(keys)
    median = jax.vmap(burden_log_median, in_axes=(0, ROW_AXES))(pred, arrays)
    return (*draws, median)


def _slots(owner: np.ndarray) -> np.ndarray:
    """Position of each row among its owner's rows (the order `study.pad_rows` keeps)."""
    slot = np.zeros(owner.size, int)
    for u in np.unique(owner):
        sel = np.flatnonzero(owner == u)
        slot[sel] = np.arange(sel.size)
    return slot


def censor_days(study: Study) -> np.ndarray:
    """Censoring day of each survival row: its day for a censored mouse, its arm's last
    follow-up day for a mouse with an observed relapse."""
    s = study.survival
    last = np.zeros(len(study.arms))
    np.maximum.at(last, s.arm, s.day)
    return np.where(s.event > 0, last[s.arm], s.day)


def simulation_grid(study: Study) -> np.ndarray:
    """Days the model is read at: `SURVIVAL_GRID` + 1 even days from 0 to the study's last
    day and every burden sampling day (the survival days are not needed: relapse days are
    drawn by interpolation; so studies of one design share one compiled function)."""
    b, s = study.burden, study.survival
    t_end = float(max(np.max(b.day, initial=0.0), np.max(s.day, initial=0.0)))
    return np.unique(np.concatenate([b.day, np.linspace(0.0, t_end, SURVIVAL_GRID + 1)]))


def simulate_replicates(fitted: FittedModel, study: Study, params: Parameters, *,
                        replicates: int, key, uncertainty: bool = False,
                        solver: FixedSteps | None = None,
                        model: DormancyModel | None = None) -> Replicates:
    """`replicates` studies drawn from `fitted` with `study`'s design (module docstring);
    `params`: the parameter set of the fit (values of the parameters not fitted); `key`: a JAX
    PRNG key; `uncertainty`: draw each replicate's typical values from the estimates'
    covariance (`fitted.covariance`)."""
    from dormancy_model.fitting.estimate import fit_solver_options
    from dormancy_model.fitting.population.animals import animal_table

    if uncertainty and fitted.covariance is None:
        raise ValueError("uncertainty needs the covariance of the estimates (fitted_model("
                         "..., uncertainty=True))")
    grid = simulation_grid(study)
    b, s = study.burden, study.survival
    arm_dosing = stacked_dosing([a.schedule for a in study.arms])
    ids, animal_arm, b_of, s_of = animal_table(study)
    if fitted.population:
        n_units, b_own, s_own = len(ids), b_of, s_of
        dosing = jax.tree.map(lambda x: x[jnp.asarray(animal_arm)], arm_dosing)
        shift = covariate_shift(fitted, study, ids, animal_arm)  # (U, d)
    else:
        n_units, b_own, s_own = len(study.arms), b.arm, s.arm
        dosing = arm_dosing
    censor = censor_days(study)
    # survival rows index the grid only for the likelihood (unused here): any valid index
    arrays = unit_arrays(study, b_own, s_own, n_units, np.searchsorted(grid, b.day),
                         np.zeros(s.day.size, int), dosing, grid)
    censor_pad, _ = pad_rows(s_own, censor, n_units, 0.0)
    um = UnitModel(base=params.replace(body_weight=study.body_weight_kg),
                   codes=jnp.asarray(fitted.codes), names=fitted.names,
                   options=solver or fit_solver_options(), model=model or DormancyModel())

    # parameters of every (replicate, unit), drawn per replicate from its own key
    keys = jax.random.split(key, replicates)
    k_theta, k_eta, k_data = (jnp.stack(k) for k in zip(*[jax.random.split(k, 3) for k in keys],
                                                          strict=True))
    d, q = len(fitted.names), len(fitted.random)
    theta = np.broadcast_to(fitted.typical, (replicates, d))
    if uncertainty:
        z = np.stack([np.asarray(jax.random.normal(k, (d,))) for k in k_theta])
        theta = np.clip(fitted.typical + z @ psd_factor(fitted.covariance).T,
                        fitted.lower, fitted.upper)
    shared = not uncertainty and not fitted.population
    if fitted.population:
        z = np.stack([np.asarray(jax.random.normal(k, (n_units, q))) for k in k_eta])
        eta = z @ psd_factor(fitted.omega).T  # (R, U, q)
        phi = theta[:, None, :] + shift + eta @ fitted.selection().T
    else:
        phi = np.broadcast_to(theta[:, None, :], (replicates, n_units, d))

    censor_j = jnp.asarray(censor_pad)
    sigma = jnp.asarray(fitted.sigma)
    bs, ss = _slots(b_own), _slots(s_own)
    if shared:  # a pooled fit at its estimates: one solve per arm for every replicate
        log_y, cens, day, event, median = (np.asarray(x) for x in _draw_shared(
            um, jnp.asarray(phi[0]), arrays, censor_j, sigma, k_data))
        pred, ipred = median[b_own, bs], None
    else:
        # the predictions (typical values; each animal's EBEs) ride along as extra rows
        typical = fitted.typical + (shift if fitted.population else 0.0)
        extra = [np.broadcast_to(typical, (n_units, d))]
        ebe = None
        if fitted.population and fitted.ebe:
            ebe = np.array([fitted.ebe.get(a, np.full(q, np.nan)) for a in ids])
            extra.append(typical + np.nan_to_num(ebe) @ fitted.selection().T)
        phi = np.concatenate([phi, np.stack(extra)])
        kd_all = jnp.concatenate([k_data, k_data[:len(extra)]])
        total = phi.shape[0]
        chunk = min(total, max(1, CHUNK_SOLVES // n_units))
        out = []
        for r0 in range(0, total, chunk):
            r1 = min(r0 + chunk, total)
            ph, kd = phi[r0:r1], kd_all[r0:r1]
            pad = chunk - (r1 - r0)  # pad the last chunk to the compiled size
            if pad:
                ph = np.concatenate([ph, np.repeat(ph[-1:], pad, axis=0)])
                kd = jnp.concatenate([kd, jnp.repeat(kd[-1:], pad, axis=0)])
            res = _draw(um, jnp.asarray(ph), arrays, censor_j, sigma, kd)
            out.append([np.asarray(x)[:r1 - r0] for x in res])
        log_y, cens, day, event, median = (np.concatenate(x)[:replicates] if i < 4
                                           else np.concatenate(x)[replicates:]
                                           for i, x in enumerate(zip(*out, strict=True)))
        pred = median[0][b_own, bs]
        ipred = None
        if ebe is not None:
            ipred = np.where(np.isnan(ebe).any(axis=1)[b_own], np.nan, median[1][b_own, bs])
    return Replicates(burden_log_y=log_y[:, b_own, bs], burden_censored=cens[:, b_own, bs],
                      relapse_day=day[:, s_own, ss], relapse_event=event[:, s_own, ss],
                      pred_log=pred, ipred_log=ipred, censor_day=censor)
