"""The regimen-design problem on a virtual population: relaxed dosing, objective, constraints.

Relaxation (smooth in every decision variable): the dose grid of each drug is every dosing
interval of the longest allowed course (`cycles.hi` cycles); a dose on day d (1-based) of
cycle c has the amount

    a * s(days_on - d + 1/2) * s(cycles - c + 1/2),   s(u) = 1 / (1 + exp(-u / SMOOTH)),

a logistic on/off profile: at whole days_on and cycles the days and cycles named are on (weight
>= 0.92 at SMOOTH = 0.2) and the others off (<= 0.08), and in between the profile moves
smoothly. A piecewise-linear profile (exact at whole values) has kinks exactly where the optima
lie (a cap on days_on x cycles binds at whole values), where L-BFGS-B stalls; the smooth one
converges, and the projection step evaluates the exact whole-day schedules. The PK is linear in
the amounts and the ODE smooth in the exposure, so the objective is differentiable; the
derivatives are forward-mode (`jax.jacfwd` through `diffrax.ForwardMode`: a handful of
directions).

Constraints, each g(x) <= 0 as a relative margin (g = value / limit - 1):

* trough: the steady-state trough of continuous dosing (every day, `cycles.hi` cycles) per mg,
  u_i for patient i (closed-form PK), is linear in the amount, so "a share `fraction` of the
  patients below the limit" is a * Q_fraction(u) <= limit (Q: the empirical quantile without
  interpolation, so the share holds exactly on the patients), exact and smooth in a. It bounds the
  trough of any allowed regimen from above (fewer on-days or cycles lower it);
* daily dose: a * doses per day <= limit (mg), or <= limit * Q_{1-fraction}(body weight) (mg/kg);
* treatment days: days_on * cycles <= limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.model.integrate import SolverOptions
from dormancy_model.model.ode import DormancyModel
from dormancy_model.model.simulate import simulate
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import DoseEvents, Dosing
from dormancy_model.pk.schedule import DRUGS, FREQUENCIES, DoseLine, Schedule
from dormancy_model.regimens.spec import Constraint, DesignSpec

# solver options while searching (the step points after each dose off, rtol 1e-5: about 2.5x
# fewer steps; the mean relapse-free probability moves by ~2e-4) and for the final evaluation
SEARCH_OPTIONS = SolverOptions(rtol=1e-5, atol=1e-6, settle_hours=(), adjoint="forward")
FINAL_OPTIONS = SolverOptions()
SMOOTH = 0.2  # width (days or cycles) of the logistic on/off step of the relaxation


@dataclass(frozen=True)
class Regimen:
    """A regimen in the design's variables: mg per administration and frequency per drug,
    on-days per cycle (days 1..days_on), number of cycles, cycle length."""

    amounts: dict
    frequencies: dict
    days_on: float
    cycles: float
    cycle_days: int

    def schedule(self, name: str, description: str = "") -> Schedule:
        """The regimen as a schedule (whole days_on and cycles)."""
        lines = []
        for drug in DRUGS:
            if drug not in self.amounts:
                continue
            lines.append(DoseLine(drug, float(self.amounts[drug]), "mg", "oral",
                                  FREQUENCIES[self.frequencies[drug]],
                                  tuple(range(1, int(round(self.days_on)) + 1)),
                                  int(self.cycle_days), int(round(self.cycles))))
        return Schedule(name, tuple(lines), description)

    def describe(self) -> str:
        parts = [f"{d.upper()} {self.amounts[d]:g} mg {self.frequencies[d]}"
                 for d in DRUGS if d in self.amounts]
        return (" + ".join(parts) + f", days 1-{self.days_on:g} of {self.cycle_days}-day "
                f"cycles x{self.cycles:g}")


def clever_regimen() -> Regimen:
    """The CLEVER regimen (`pk.presets.CLEVER_REGIMEN`) in the design's variables."""
    from dormancy_model.pk.presets import CLEVER_CYCLE_DAYS, CLEVER_CYCLES, CLEVER_REGIMEN

    lines = CLEVER_REGIMEN.values()
    days_on = {len(ln.days_on) for ln in lines}
    assert len(days_on) == 1  # one on-day block for both drugs, as the design's variables
    return Regimen({ln.drug: ln.amount for ln in lines}, {ln.drug: ln.frequency for ln in lines},
                   float(days_on.pop()), float(CLEVER_CYCLES), CLEVER_CYCLE_DAYS)


class Problem:
    """The design problem for one choice of frequencies: variables x = (amount per drug...,
    days_on, cycles) in design units; `objective(x)` is to be maximised (percentage points:
    mean relapse-free or clearance probability x 100, or minus the mean residual DTCs)."""

    def __init__(self, spec: DesignSpec, params: Parameters, frequencies: dict, *,
                 model: DormancyModel | None = None):
        self.spec = spec
        self.params = params  # leading patient axis on every value
        self.frequencies = dict(frequencies)
        self.model = model or DormancyModel()
        self.drugs = tuple(d.drug for d in spec.drugs)
        self.names = tuple(f"{d}_mg" for d in self.drugs) + ("days_on", "cycles")
        lo = [spec.drug(d).amount.lo for d in self.drugs] + [spec.days_on.lo, spec.cycles.lo]
        hi = [spec.drug(d).amount.hi for d in self.drugs] + [spec.days_on.hi, spec.cycles.hi]
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.horizon = float(spec.cycles.hi * spec.cycle_days)
        self.grid = {}
        for drug in DRUGS:
            step = FREQUENCIES[self.frequencies[drug]] / 24.0 if drug in self.drugs else None
            self.grid[drug] = (np.arange(0.0, self.horizon - 1e-9, step) if step
                               else np.zeros(1))
        self.n = int(np.shape(params["k_dr"])[0])
        self._unit_trough = {}

    # ---------------------------------------------------------------- dosing and regimens
    def dosing(self, x, exact: bool = False) -> Dosing:
        """Relaxed dose events at x; `exact`: the whole-day schedule (days_on and cycles
        rounded: each day and cycle on or off)."""
        x = jnp.asarray(x)
        k = len(self.drugs)
        days_on, cycles = x[k], x[k + 1]
        cd = float(self.spec.cycle_days)

        def events(drug):
            t = jnp.asarray(self.grid[drug])
            if drug not in self.drugs:
                a = jnp.zeros_like(t)
            else:
                day = jnp.floor(jnp.mod(t, cd) + 1e-9) + 1.0
                cyc = jnp.floor(t / cd + 1e-9) + 1.0
                if exact:
                    w = ((day <= jnp.round(days_on)) & (cyc <= jnp.round(cycles))).astype(
                        t.dtype)
                else:
                    w = (jax.nn.sigmoid((days_on - day + 0.5) / SMOOTH)
                         * jax.nn.sigmoid((cycles - cyc + 0.5) / SMOOTH))
                a = x[self.drugs.index(drug)] * w
            return DoseEvents(t, a, jnp.zeros(t.shape, bool), jnp.ones(t.shape, bool))

        return Dosing(hcq=events("hcq"), eve=events("eve"))

    def regimen(self, x) -> Regimen:
        x = np.asarray(x, float)
        k = len(self.drugs)
        return Regimen({d: float(x[i]) for i, d in enumerate(self.drugs)},
                       {d: self.frequencies[d] for d in self.drugs}, float(x[k]),
                       float(x[k + 1]), self.spec.cycle_days)

    # ---------------------------------------------------------------- objective
    def per_patient(self, x, params: Parameters | None = None,
                    options: SolverOptions = SEARCH_OPTIONS, exact: bool = False):
        """(value per patient, status per patient): relapse-free probability at the objective
        day, clearance probability exp(-N(day)), or residual DTCs N(day)."""
        params = self.params if params is None else params
        ts = jnp.asarray([0.0, self.spec.objective_day])
        dosing = self.dosing(x, exact)

        def one(p):
            tr = simulate(self.model, p, dosing, ts=ts, options=options)
            if self.spec.objective == "rfs":
                v = jnp.exp(-tr.hazard[-1])
            elif self.spec.objective == "clearance":
                v = jnp.exp(-tr.residual[-1])
            else:
                v = tr.residual[-1]
            return v, tr.status

        return jax.vmap(one)(params)

    def score(self, values):
        """Objective (to maximise) from per-patient values."""
        m = jnp.mean(values)
        return -m if self.spec.objective == "residual" else 100.0 * m

    # ---------------------------------------------------------------- constraints
    def unit_trough(self, drug: str) -> np.ndarray:
        """Per-patient steady-state trough (ng/mL per mg per administration) of continuous
        dosing at the drug's frequency over the longest allowed course: the concentration
        just before the last dose."""
        if drug not in self._unit_trough:
            t = self.grid[drug]
            ev = DoseEvents(jnp.asarray(t), jnp.ones(t.shape), jnp.zeros(t.shape, bool),
                            jnp.ones(t.shape, bool))
            none = DoseEvents(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1, bool), jnp.ones(1, bool))
            dosing = Dosing(hcq=ev if drug == "hcq" else none, eve=ev if drug == "eve" else none)
            t_last = float(t[-1])

            def one(p):
                course = self.model.drug_course(p, dosing)
                sol = course.hcq if drug == "hcq" else course.eve
                return sol.observe(jnp.asarray(t_last))[0]

            self._unit_trough[drug] = np.asarray(jax.jit(jax.vmap(one))(
                self.params.astype(jnp.float64)), float)
        return self._unit_trough[drug]

    def constraint_values(self, x) -> np.ndarray:
        """g_j(x) (relative margins, feasible when <= 0) in the spec's order (numpy)."""
        return np.asarray([self._g(c, np.asarray(x, float)) for c in self.spec.constraints])

    def _g(self, c: Constraint, x) -> float:
        k = len(self.drugs)
        if c.kind == "treatment_days":
            return float(x[k] * x[k + 1] / c.limit - 1.0)
        a = x[self.drugs.index(c.drug)]
        if c.kind == "trough":
            q = _share_at_most(self.unit_trough(c.drug), c.fraction)
            return float(a * q / c.limit - 1.0)
        per_day = 24.0 / FREQUENCIES[self.frequencies[c.drug]]
        cap = c.limit
        if c.per_kg:
            bw = np.broadcast_to(np.asarray(self.params["body_weight"], float), (self.n,))
            cap = c.limit * -_share_at_most(-bw, c.fraction)
        return float(a * per_day / cap - 1.0)

    def constraint_jacobian(self, x) -> np.ndarray:
        """dg/dx (n_constraints, n_vars): every constraint is linear or bilinear in x."""
        x = np.asarray(x, float)
        k = len(self.drugs)
        J = np.zeros((len(self.spec.constraints), x.size))
        for j, c in enumerate(self.spec.constraints):
            if c.kind == "treatment_days":
                J[j, k], J[j, k + 1] = x[k + 1] / c.limit, x[k] / c.limit
            else:
                i = self.drugs.index(c.drug)
                J[j, i] = (self._g(c, np.where(np.arange(x.size) == i, 1.0, x)) + 1.0)
        return J

    def exposure(self, x) -> dict:
        """Per-patient steady-state troughs (ng/mL) of each designed drug at x."""
        return {d: self.unit_trough(d) * float(np.asarray(x)[i])
                for i, d in enumerate(self.drugs)}


def _share_at_most(values, fraction: float) -> float:
    """The smallest v with at least `fraction` of the values <= v (empirical quantile without
    interpolation), so `a * v <= limit` means exactly: that share of patients within the limit."""
    v = np.sort(np.asarray(values, float).ravel())
    return float(v[max(int(np.ceil(fraction * v.size - 1e-9)), 1) - 1])
