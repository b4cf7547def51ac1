"""`simulate`: model + parameters + schedule + horizon -> Trajectory."""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.model import clock as C
from dormancy_model.model import observables as O
from dormancy_model.model import rates as R
from dormancy_model.model.integrate import (
    SolverOptions,
    finite_status,
    integrate,
    solver_status,
    start_status,
)
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import Dosing
from dormancy_model.pk.schedule import Schedule
from dormancy_model.units import DAYS_PER_YEAR

# `Trajectory.to_dataframe` / trajectory.csv columns: unit and meaning (also in summary.json)
COLUMNS = {
    "time_day": "day: time from day 0 (the first dose of a treated arm)",
    "dormant": "cells: expected dormant DTCs D in the marrow",
    "reactivating": "cells: expected reactivating DTCs R in the marrow",
    "marrow_proliferating": "cells: expected proliferating DTCs in the marrow (clones below "
                            "the switch size, 1e4 cells)",
    "residual": "cells: expected marrow DTCs D + R + marrow proliferating (what an aspirate "
                "samples; lesions excluded)",
    "lesion_cells": "cells: expected cells in undetected lesions (clones past the switch size, "
                    "not yet detected), a mean over patients, most of whom have none",
    "ode_proliferating_all": "cells: the ODE's state P, all proliferating cells (marrow clones "
                             "and lesions, detected ones included); not a marrow count",
    "hcq_ng_ml": "ng/mL: HCQ in the parameter set's sample matrix ([meta] hcq_matrix: whole "
                 "blood for the human set, plasma for the mouse set)",
    "hcq_effect_ng_ml": "ng/mL: HCQ at its effect site",
    "eve_ng_ml": "ng/mL: everolimus in the parameter set's sample matrix ([meta] eve_matrix: "
                 "whole blood in both shipped sets)",
    "mtor_activity": "1: mTORC1 activity relative to untreated",
    "autophagy_demand": "1: autophagy demand relative to untreated",
    "autophagy_flux": "1: autophagy flux relative to untreated",
    "autophagy_deficit": "1: autophagy deficit (demand above capacity)",
    "escaped": "cells: cumulative escape of reactivating cells into proliferation since day 0",
    "cumulative_hazard": "1: cumulative relapse hazard since day 0",
    "relapse_free": "1: relapse-free probability",
    "p_dtc_positive": "1: probability that one marrow aspirate shows >= 1 DTC (of the marrow "
                      "DTCs in residual)",
}


class SolveError(RuntimeError):
    """A solve that did not succeed, with its reason."""


class Trajectory(eqx.Module):
    """Result of `simulate`. Arrays have shape (T,) over `times` (days); cells are counts
    (expected over patients), concentrations ng/mL; `hazard` is the cumulative relapse hazard
    Lambda(t) = p_found E_L[E(t - L)] over the relapse-lag law L of a surviving clone
    (`model.observables`).

    Cells: `dormant` D, `reactivating` R and `marrow_proliferating` (proliferating cells in
    clones below the switch size) are the marrow DTCs (`marrow`, = `residual`);
    `lesion_cells` are the expected cells in undetected lesions (clones past the switch size,
    not yet detected: a mean over patients, most of whom have none; `model.observables`).
    `proliferating` is the ODE's state P: all proliferating cells, marrow clones and lesions
    (detected ones too, logistically capped at the detection size), kept for the record."""

    times: jax.Array
    dormant: jax.Array
    reactivating: jax.Array
    proliferating: jax.Array
    marrow_proliferating: jax.Array
    lesion_cells: jax.Array
    escaped: jax.Array
    hazard: jax.Array
    p_dtc_positive: jax.Array
    hcq_ng_ml: jax.Array
    hcq_effect_ng_ml: jax.Array
    eve_ng_ml: jax.Array
    mtor_activity: jax.Array
    autophagy_demand: jax.Array
    autophagy_flux: jax.Array
    autophagy_deficit: jax.Array
    status: jax.Array  # a code of dormancy_model.status (0 ok)
    num_steps: jax.Array

    @property
    def marrow(self):
        """Marrow DTCs D + R + marrow P (cells; what an aspirate samples)."""
        return self.dormant + self.reactivating + self.marrow_proliferating

    @property
    def residual(self):
        """Residual burden: the marrow DTCs D + R + marrow P (cells), = `marrow`; lesions are
        apart (`lesion_cells`)."""
        return self.marrow

    @property
    def relapse_free(self):
        return jnp.exp(-self.hazard)

    @property
    def ok(self) -> bool:
        return bool(np.all(np.asarray(self.status) == S.OK))

    @property
    def message(self) -> str:
        return S.message(self.status)

    def raise_if_failed(self) -> Trajectory:
        if not self.ok:
            raise SolveError(self.message)
        return self

    def at(self, day: float, name: str = "residual") -> float:
        """Linear interpolation of an output at a day."""
        return float(np.interp(day, np.asarray(self.times), np.asarray(getattr(self, name))))

    def to_dataframe(self):
        """One row per saved time (columns and units: `COLUMNS`); raises SolveError for a
        failed solve (never NaN rows)."""
        import pandas as pd

        self.raise_if_failed()
        cols = dict(
            time_day=self.times, dormant=self.dormant, reactivating=self.reactivating,
            marrow_proliferating=self.marrow_proliferating, residual=self.residual,
            lesion_cells=self.lesion_cells, ode_proliferating_all=self.proliferating,
            hcq_ng_ml=self.hcq_ng_ml,
            hcq_effect_ng_ml=self.hcq_effect_ng_ml, eve_ng_ml=self.eve_ng_ml,
            mtor_activity=self.mtor_activity, autophagy_demand=self.autophagy_demand,
            autophagy_flux=self.autophagy_flux, autophagy_deficit=self.autophagy_deficit,
            escaped=self.escaped, cumulative_hazard=self.hazard,
            relapse_free=self.relapse_free, p_dtc_positive=self.p_dtc_positive)
        assert tuple(cols) == tuple(COLUMNS)
        return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in cols.items()})


def save_grid(t1: float, save_every_hours: float = 24.0) -> np.ndarray:
    """Times 0, h, 2h, ... up to and including t1 (days)."""
    step = save_every_hours / 24.0
    n = int(np.floor(t1 / step + 1e-9))
    ts = step * np.arange(n + 1)
    if ts[-1] < t1 - 1e-9:
        ts = np.append(ts, t1)
    return ts


@eqx.filter_jit
def _solve(model: DormancyModel, params: Parameters, dosing: Dosing, ts, options: SolverOptions,
           switch_size, with_clock: bool = True):
    course = model.drug_course(params, dosing)
    n = ts.shape[0]
    p_found = O.founding_probability(params)
    # the lesions' growth clock (EVE slows them; `model.clock`): None without EVE (identity)
    clock = C.course_clock(course, params, ts[0], ts[-1]) if with_clock else None
    reads = O.lag_reads(ts, params, ts[0], switch_size, clock=clock)  # (n, K) lagged times
    k = reads.times.shape[-1]
    mreads = O.marrow_reads(ts, params, ts[0], switch_size)  # (n, J) clone-age reads
    j = mreads.times.shape[-1]
    grid = O.marrow_grid(ts[0], ts[-1], params, switch_size)  # (M + 1,) lesion reads
    # under a clock, E on the founding grid of the clone clock (`model.founding`)
    fsaves = (jnp.zeros((0,), ts.dtype) if reads.founding is None
              else jnp.clip(reads.founding.saves(ts[0]), ts[0], ts[-1]))
    # save at the output times, at the K lagged times of each, at the J marrow reads of each,
    # at the grid and at the founding grid, merged in order
    all_ts = jnp.concatenate([ts, reads.times.reshape(-1), mreads.times.reshape(-1),
                              jnp.clip(grid, ts[0], ts[-1]), fsaves])
    order = jnp.argsort(all_ts)
    inverse = jnp.argsort(order)
    sol = integrate(model, params, course, ts[0], ts[-1], options,
                    dfx.SaveAt(ts=all_ts[order]))
    ys = sol.ys[inverse]
    y, y_lag = ys[:n], ys[n:n + n * k].reshape(n, k, ys.shape[-1])
    y_mar = ys[n + n * k:n + n * k + n * j, 3].reshape(n, j)
    n_grid = grid.shape[0]
    y_grid = ys[n + n * k + n * j:n + n * k + n * j + n_grid]
    y_found = ys[n + n * k + n * j + n_grid:, 3]
    hazard = O.cumulative_hazard(y_lag[..., 3], reads, p_found,
                                 None if reads.founding is None else y_found)
    # E on the grid: the solve's from t0, the history's closed form before it
    esc_g = jnp.where(grid < ts[0], O.grid_history(grid, ts[0], params), y_grid[:, 3])
    marrow_p = O.marrow_proliferating(y[:, 3], y_mar, mreads, params["proliferating_initial"])
    lesions = O.lesion_cells(ts, grid, esc_g, params, switch_size, clock=clock)
    ex = jax.vmap(course.exposure)(ts)
    m = R.mtor_activity(ex.eve, params)
    aut = R.autophagy(m, R.lysosomal_block(ex.hcq_effect, params), params)
    marrow = y[:, 0] + y[:, 1] + marrow_p  # what an aspirate samples (lesions are apart)
    status = S.combine(finite_status(solver_status(sol.result), y, marrow_p, lesions),
                       start_status(model, params, course, ts[0]))
    status = S.combine(status, jnp.where(course.min_eigen_gap < 1e-6, S.DEGENERATE_PK, S.OK))
    return Trajectory(
        times=ts, dormant=y[:, 0], reactivating=y[:, 1], proliferating=y[:, 2],
        marrow_proliferating=marrow_p, lesion_cells=lesions, escaped=y[:, 3], hazard=hazard,
        p_dtc_positive=O.p_dtc_positive(marrow, params["aspirate_fraction"],
                                        params["aspirate_dispersion"]),
        hcq_ng_ml=ex.hcq, hcq_effect_ng_ml=ex.hcq_effect, eve_ng_ml=ex.eve, mtor_activity=m,
        autophagy_demand=aut.demand, autophagy_flux=aut.flux, autophagy_deficit=aut.deficit,
        status=status, num_steps=sol.stats["num_steps"])


def simulate(model: DormancyModel, params: Parameters, schedule: Schedule | Dosing, *,
             years: float | None = None, t1: float | None = None, ts=None,
             save_every_hours: float = 24.0, options: SolverOptions | None = None,
             switch_size: float = O.SWITCH_SIZE) -> Trajectory:
    """Simulate one individual.

    Horizon: `ts` (days, increasing, starting at 0) or `t1` (days) or `years`; outputs are saved
    every `save_every_hours` unless `ts` is given. Works under `jax.vmap` over parameter values
    or dose amounts when `ts` is given. A failed solve is reported in `Trajectory.status` and
    `Trajectory.message`, never as silent NaN.

    Relapse (`Trajectory.hazard`): Lambda(t) = p_found E_L[E(t - L)], the escape flux E read at
    the `observables.LAG_NODES` lagged times t - L_q of the relapse-lag law of a surviving clone
    (birth-death growth to `switch_size` cells, the agents' `AgentOptions.switch_size`, then
    deterministic growth to the detection size; `model.observables`). Lesions grow on the
    growth clock of the EVE course (`model.clock`: net growth slowed by the mTOR gate), built
    from the closed-form PK before the solve; without EVE it is the identity (skipped).
    """
    options = options or SolverOptions()
    if options.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 needs jax_enable_x64 (set before any JAX computation)")
    dtype = jnp.float64 if options.dtype == "float64" else jnp.float32
    if ts is None:
        if t1 is None:
            if years is None:
                raise ValueError("give years, t1 or ts")
            t1 = float(years) * DAYS_PER_YEAR
        ts = save_grid(float(t1), save_every_hours)
    ts = jnp.asarray(ts, dtype=dtype)
    dosing = schedule if isinstance(schedule, Dosing) else Dosing.from_schedule(schedule, dtype)
    dosing = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, dosing)
    params = params.astype(dtype)
    return _solve(model, params, dosing, ts, options, jnp.asarray(switch_size, dtype),
                  C.has_eve(dosing))
