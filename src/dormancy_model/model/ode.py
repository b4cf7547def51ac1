"""The deterministic dormancy model: closed-form linear PK driving an ODE in (D, R, P, E).

States integrated numerically (cells): dormant D, reactivating R, proliferating P and the
cumulative escape E = integral of the flux into P. The PK is not integrated (see `pk.py`), so
the ODE is small and non-stiff. The relapse hazard is Lambda(t) = p_found * E_L[E(t - L)] over
the growth-lag law L of a surviving clone, read from E at a fixed set of lagged times
(`observables.lag_reads`; under EVE the lesions' part of the lag runs on the growth clock of
`model.clock`, precomputed from the closed-form PK).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from dormancy_model.model import observables as O
from dormancy_model.model import rates as R
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import Dosing, PKSolution, drug_system, solve_pk

STATE_NAMES = ("dormant", "reactivating", "proliferating", "escaped")


class Exposure(eqx.Module):
    """Drug exposure at one time (ng/mL)."""

    eve: object
    hcq: object
    hcq_effect: object


class DrugCourse(eqx.Module):
    """Closed-form PK of both drugs for one parameter set and one dosing."""

    hcq: PKSolution
    eve: PKSolution

    def exposure(self, t) -> Exposure:
        h = self.hcq.observe(t)
        e = self.eve.observe(t)
        return Exposure(eve=e[0], hcq=h[0], hcq_effect=h[1])

    def exposure_sorted(self, ts) -> Exposure:
        """`exposure` at each of the sorted times ts (T,): fields of shape (T,)."""
        h, e = self.hcq.observe_sorted(ts), self.eve.observe_sorted(ts)
        return Exposure(eve=e[:, 0], hcq=h[:, 0], hcq_effect=h[:, 1])

    def jump_times(self):
        """Sorted effective dose times of both drugs (kinks in the concentrations)."""
        return jnp.sort(jnp.concatenate([self.hcq.tau, self.eve.tau]))

    @property
    def min_eigen_gap(self):
        return jnp.minimum(self.hcq.sys.min_gap, self.eve.sys.min_gap)


class DormancyModel(eqx.Module):
    """Mechanistic DTC dormancy model (MODEL.md sections 1-4). Structure only; numbers live in
    `Parameters`."""

    def drug_course(self, params: Parameters, dosing: Dosing) -> DrugCourse:
        bw = params["body_weight"]
        return DrugCourse(hcq=solve_pk(drug_system(params, "hcq"), dosing.hcq, bw),
                          eve=solve_pk(drug_system(params, "eve"), dosing.eve, bw))

    def rates_at(self, t, params: Parameters, course: DrugCourse) -> R.CellRates:
        ex = course.exposure(t)
        return R.cell_rates(ex.eve, ex.hcq_effect, params)

    def vector_field(self, t, y, args):
        params, course = args
        return self.derivatives(y, self.rates_at(t, params, course), params)

    def derivatives(self, y, rates: R.CellRates, params: Parameters):
        """d(D, R, P, E)/dt (4,) at the state y (4,) under the per-cell `rates`."""
        dd, dr, dp, esc = R.cell_derivatives(y[0], y[1], y[2], rates, params["detection_size"])
        return jnp.stack([dd, dr, dp, esc])

    def drug_signals_at(self, ts, params: Parameters, course: DrugCourse) -> R.DrugSignals:
        """`rates.DrugSignals` at the sorted times ts (T,): fields (T,)."""
        ex = course.exposure_sorted(ts)
        return R.drug_signals(ex.eve, ex.hcq_effect, params)

    def initial_state(self, params: Parameters):
        d, r, pr = O.initial_cells(params)  # with the untreated history's reactivating cells
        return jnp.stack([d, r, pr, jnp.zeros_like(d)])
