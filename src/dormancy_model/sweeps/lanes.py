"""The dormancy model as a lane problem for the lock-step engine (`engine.py`).

Only the cell states (D, R, P, E) are integrated. Drug exposure comes from the closed-form PK of
`pk.py`: between doses each observed concentration is a sum of exponentials,
c(t + s) = sum_j a_j exp(lambda_j s), so each lane carries the mode amplitudes a_j of EVE in
plasma (3 modes) and HCQ at its effect site (4 modes). A step advances them exactly
(a_j <- a_j exp(lambda_j h)); a dose adds amount * obs P_j u (u = F e_depot when oral, e_central
when IV), the same spectral projectors `simulate` uses. Steps are clipped to every dose time of
the lane, so no step crosses a kink of the concentrations. Cell rates come from
`rates.cell_rates`, the single source of the biology.

Outputs per lane: residual burden (the marrow DTCs D + R + marrow P, as `simulate`:
`observables.marrow_proliferating` on E read at the clone ages of `observables.marrow_reads`)
at `residual_days`, relapse-free probability exp(-p_found E_L[E(t - L)]) at
`rfs_days` (E read at the lagged times t - L_q of the relapse-lag law, `observables.lag_reads`,
with each lane's lesion growth clock of its EVE course, `model.clock`, as `simulate` does)
and P(DTC+) = 1 - (1 + a f marrow)^(-1/a) (negative binomial, a = aspirate_dispersion;
1 - exp(-f marrow) at a = 0; `observables.p_dtc_positive`) at `assessment_days`.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.engine.pallas import take_rows
from dormancy_model.engine.rk import AbstractLaneProblem, EngineOptions, solve_sharded
from dormancy_model.model import clock as C
from dormancy_model.model import observables as O
from dormancy_model.model import rates as R
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import HIGHEST, DoseEvents, drug_system
from dormancy_model.pk.schedule import Schedule

DRUG_MODES = {"eve": 3, "hcq": 4}
DRUG_OBS_ROW = {"eve": 0, "hcq": 1}  # EVE plasma, HCQ effect site


class ScheduleTable(eqx.Module):
    """Dose events of several schedules, padded to a common length (per drug): arrays (S, K+1)
    of times (day, +inf padding), amounts (mg or mg/kg), per_kg and oral flags."""

    times: dict
    amount: dict
    per_kg: dict
    oral: dict
    all_oral: bool = eqx.field(static=True)

    @staticmethod
    def build(schedules: list[Schedule], min_len: dict | None = None) -> ScheduleTable:
        times, amount, per_kg, oral = {}, {}, {}, {}
        all_oral = True
        for drug in DRUG_MODES:
            ev = [s.events(drug) for s in schedules]
            k = max(max(e[0].size for e in ev), (min_len or {}).get(drug, 0)) + 1
            T = np.full((len(ev), k), np.inf)
            A = np.zeros((len(ev), k))
            PK = np.zeros((len(ev), k), bool)
            O = np.ones((len(ev), k), bool)
            for i, (t, a, pk, o) in enumerate(ev):
                T[i, :t.size], A[i, :t.size], PK[i, :t.size], O[i, :t.size] = t, a, pk, o
                all_oral &= bool(np.all(o[a > 0])) if a.size else True
            times[drug], amount[drug], per_kg[drug], oral[drug] = T, A, PK, O
        return ScheduleTable(times, amount, per_kg, oral, all_oral)

    def event_counts(self, t_end: float) -> np.ndarray:
        """(S,) number of dose events before t_end (both drugs): the step-count driver."""
        return sum(np.sum((np.asarray(self.times[d]) < t_end) & (np.asarray(self.amount[d]) > 0),
                          axis=1) for d in DRUG_MODES)

    def astype(self, dtype) -> ScheduleTable:
        f = lambda d: {k: jnp.asarray(v, dtype) for k, v in d.items()}  # noqa: E731
        b = lambda d: {k: jnp.asarray(v) for k, v in d.items()}  # noqa: E731
        return ScheduleTable(f(self.times), f(self.amount), b(self.per_kg), b(self.oral),
                             self.all_oral)


class OutputDays(NamedTuple):
    residual_days: tuple
    rfs_days: tuple
    assessment_days: tuple


class _Lane(NamedTuple):
    params: dict  # per-lane parameter values (N,)
    sid: jax.Array  # schedule index
    lam: dict  # drug -> (N, n) eigenvalues
    coef_oral: dict  # drug -> (N, n) concentration per mg given orally, by mode
    coef_iv: dict
    tlag: dict  # drug -> (N,)
    body_weight: jax.Array  # (N,) kg
    tau_oral: dict  # drug -> (N,) time scale of a dose's concentration transient (days)
    tau_iv: dict


class DormancyLanes(AbstractLaneProblem):
    all_oral: bool = eqx.field(static=True)

    @property
    def rhs_continuous_at_events(self) -> bool:
        return self.all_oral

    def rhs(self, t, y, x, s, lane: _Lane, shared):
        return self.apply(self.coefficients(t, x, s, lane, shared), y, lane, shared)

    # rk4: the cell rates depend on time only (through the drugs); the derivatives are linear
    # in the cells but for the logistic factor, so the rates are the coefficients
    @staticmethod
    def _rates(x, factors, lane, shared):
        p = {**shared["params"], **lane.params}
        conc = {}
        for drug in DRUG_MODES:  # structure of arrays: one (N,) array per mode
            conc[drug] = sum(a * f for a, f in zip(x[drug], factors[drug], strict=True))
        return R.cell_rates(jnp.maximum(conc["eve"], 0.0), jnp.maximum(conc["hcq"], 0.0), p)

    def coefficients(self, t, x, s, lane: _Lane, shared):
        f = {d: tuple(jnp.exp(lm * s) for lm in lane.lam[d]) for d in DRUG_MODES}
        return self._rates(x, f, lane, shared)

    def apply(self, coef, y, lane, shared):
        p = {**shared["params"], **lane.params}
        return R.cell_derivatives(y[0], y[1], y[2], coef, p["detection_size"])

    def node_coefficients(self, t, x, h, lane, shared):
        half = {d: tuple(jnp.exp(lm * (0.5 * h)) for lm in lane.lam[d]) for d in DRUG_MODES}
        full = {d: tuple(e * e for e in half[d]) for d in DRUG_MODES}
        x_new = {d: tuple(a * e for a, e in zip(x[d], full[d], strict=True)) for d in DRUG_MODES}
        return (self._rates(x, half, lane, shared), self._rates(x, full, lane, shared), x_new)

    def advance(self, x, s, lane, shared):
        return {d: tuple(a * jnp.exp(lm * s) for a, lm in zip(x[d], lane.lam[d], strict=True))
                for d in DRUG_MODES}

    def event_time_scale(self, t, ev, lane, shared):
        """The fastest transient among the doses given at t: each dose adds
        c(s) = sum_j a_j exp(lambda_j s) to its drug's concentration, on the amplitude-weighted
        time scale sum |a_j| / sum |a_j lambda_j| (`transient_time`): ~2/ka for EVE in plasma,
        days for HCQ at its slow effect site (which therefore needs no small first step)."""
        scale = None
        for drug in DRUG_MODES:
            e = ev[drug]
            s = jnp.where(t >= e["tau"], jnp.where(e["oral"], lane.tau_oral[drug],
                                                   lane.tau_iv[drug]), jnp.inf)
            scale = s if scale is None else jnp.minimum(scale, s)
        return scale

    def next_event(self, ev, lane, shared):
        return jnp.minimum(ev["hcq"]["tau"], ev["eve"]["tau"])

    def apply_events(self, t, x, ev, lane, shared):
        x, ev = dict(x), dict(ev)
        for drug in DRUG_MODES:
            e = ev[drug]
            hit = t >= e["tau"]
            add = jnp.where(hit, e["amt"], 0.0)
            x[drug] = tuple(a + add * jnp.where(e["oral"], co, ci) for a, co, ci in
                            zip(x[drug], lane.coef_oral[drug], lane.coef_iv[drug], strict=True))
            ev[drug] = next_dose(e["k"] + hit.astype(jnp.int32), drug, lane, shared)
        return x, ev


def next_dose(k, drug, lane, shared):
    """Cached record of dose k of each lane: effective time (lag added when oral), amount in mg
    (per-kg amounts times body weight), oral flag. One packed-row gather per drug."""
    tab = shared["packed"][drug]  # (S * K, 4): time, amount, per_kg, oral
    kk = shared["per_schedule"][drug]
    time, amount, per_kg, oral = take_rows(tab, lane.sid * kk + jnp.minimum(k, kk - 1))
    oral = oral > 0.5
    bw = lane.body_weight
    amt = amount * jnp.where(per_kg > 0.5, bw, 1.0)
    tau = time + jnp.where(oral, lane.tlag[drug], 0.0)
    return {"k": k, "tau": tau, "amt": amt, "oral": oral}


def transient_time(lam, coef):
    """sum |a_j| / sum |a_j lambda_j| over the modes (last axis); inf without any transient."""
    num = jnp.sum(jnp.abs(coef), axis=-1)
    den = jnp.sum(jnp.abs(coef * lam), axis=-1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.inf)


def _pk_lane(values: dict, base: Parameters, drug: str):
    """Eigenvalues, per-mg mode coefficients (oral and IV) and lag of one drug for one lane."""
    sys = drug_system(base.with_values(values), drug)
    obs = sys.obs[DRUG_OBS_ROW[drug]]
    per_mode = jnp.einsum("a,jab->jb", obs, sys.proj, precision=HIGHEST)  # (modes, states)
    return sys.lam, sys.f_oral * per_mode[:, 0], per_mode[:, 1], sys.tlag, sys.min_gap


def solve_outputs_impl(varying: dict, base: Parameters, table: ScheduleTable, sid, days: OutputDays,
                       opts: EngineOptions, expected_steps=None):
    """Outputs of N lanes. `varying`: name -> (N,) internal-unit values (the other parameters
    are taken from `base`); `sid`: (N,) schedule index into `table`. Traceable."""
    dt = opts.jnp_dtype
    n = sid.shape[0]
    base = base.astype(dt)
    varying = {k: jnp.asarray(v, dt) for k, v in varying.items()}
    shared_params = {k: v for k, v in base.values.items() if k not in varying}
    full = {k: jnp.broadcast_to(varying.get(k, v), (n,)) for k, v in base.values.items()}
    lam, co, ci, tlag, gap = {}, {}, {}, {}, {}
    for drug in DRUG_MODES:
        lam[drug], co[drug], ci[drug], tlag[drug], gap[drug] = jax.vmap(
            lambda v, d=drug: _pk_lane(v, base, d))(full)
    tau_oral = {d: transient_time(lam[d], co[d]) for d in DRUG_MODES}
    tau_iv = {d: transient_time(lam[d], ci[d]) for d in DRUG_MODES}
    cols = lambda a: tuple(a[:, j] for j in range(a.shape[1]))  # noqa: E731
    lam, co, ci = ({d: cols(v[d]) for d in DRUG_MODES} for v in (lam, co, ci))
    lane = _Lane(varying, sid.astype(jnp.int32), lam, co, ci, tlag, full["body_weight"],
                 tau_oral, tau_iv)
    tab = table.astype(dt)
    packed = {d: jnp.stack([tab.times[d], tab.amount[d], tab.per_kg[d].astype(dt),
                            tab.oral[d].astype(dt)], axis=-1).reshape(-1, 4) for d in DRUG_MODES}
    shared = {"params": shared_params, "packed": packed,
              "per_schedule": {d: tab.times[d].shape[1] for d in DRUG_MODES}}
    p_found = O.founding_probability(full)
    t0 = jnp.zeros((), dt)
    out_days = jnp.asarray(sorted(set(days.residual_days) | set(days.assessment_days)), dt)
    rfs_days = jnp.asarray(days.rfs_days, dt)
    clock = _lane_clocks(full, base, tab, sid, t0, rfs_days) if rfs_days.size else None
    reads = O.lag_reads(rfs_days, full, t0, clock=clock)  # (N, T, K) lagged times
    lagged = reads.times.reshape(n, -1)
    mreads = O.marrow_reads(jnp.broadcast_to(out_days, (n, out_days.size)), full, t0)
    # under a clock, E on each lane's founding grid (`model.founding`), up to the last RFS day
    fsaves = (jnp.zeros((n, 0), dt) if reads.founding is None
              else jnp.minimum(reads.founding.saves(t0), jnp.max(rfs_days)))
    saves = jnp.concatenate([jnp.broadcast_to(out_days, (n, out_days.size)), lagged,
                             mreads.times.reshape(n, -1), fsaves], axis=1)
    order = jnp.argsort(saves, axis=1)
    saves_sorted = jnp.take_along_axis(saves, order, axis=1)
    y0 = (*O.initial_cells(full), jnp.zeros((n,), dt))
    x0 = {d: tuple(jnp.zeros((n,), dt) for _ in range(m)) for d, m in DRUG_MODES.items()}
    ev0 = {d: next_dose(jnp.zeros((n,), jnp.int32), d, lane, shared) for d in DRUG_MODES}
    problem = DormancyLanes(table.all_oral)
    sol = solve_sharded(problem, y0, x0, ev0, t0, saves_sorted, lane, shared, opts,
                        expected_steps)
    inv = jnp.argsort(order, axis=1)
    ys = [jnp.take_along_axis(v, inv, axis=1) for v in sol.ys]
    n_out, n_lag, n_mar = out_days.size, lagged.shape[1], mreads.times[0].size
    # marrow DTCs D + R + marrow P (clones below the switch size; `observables`), as `simulate`
    marrow_p = O.marrow_proliferating(ys[3][:, :n_out], ys[3][:, n_out + n_lag:n_out + n_lag
                                      + n_mar].reshape(mreads.times.shape), mreads,
                                      full["proliferating_initial"][:, None])
    e_found = ys[3][:, n_out + n_lag + n_mar:]
    cells = ys[0][:, :n_out] + ys[1][:, :n_out] + marrow_p
    pos = {d: i for i, d in enumerate(sorted(set(days.residual_days) | set(days.assessment_days)))}
    ridx = jnp.asarray([pos[d] for d in days.residual_days], jnp.int32)
    aidx = jnp.asarray([pos[d] for d in days.assessment_days], jnp.int32)
    e_lag = ys[3][:, n_out:n_out + n_lag].reshape(reads.times.shape)
    degenerate = (gap["eve"] < 1e-6) | (gap["hcq"] < 1e-6)
    status = S.combine(sol.status, jnp.where(degenerate, S.DEGENERATE_PK, S.OK)).astype(jnp.int8)
    return dict(
        residual=cells[:, ridx],
        relapse_free=O.relapse_free(O.cumulative_hazard(
            e_lag, reads, p_found[:, None], None if reads.founding is None else e_found)),
        p_dtc_positive=O.p_dtc_positive(cells[:, aidx], full["aspirate_fraction"][:, None],
                                        full["aspirate_dispersion"][:, None]),
        status=status, steps=sol.accepted, rejected=sol.rejected)


def _lane_clocks(full: dict, base: Parameters, tab: ScheduleTable, sid, t0, rfs_days):
    """The lesions' growth clock of every lane (`model.clock`, arrays (N, nodes)) from its EVE
    schedule (a row of `tab`) and its PK and EVE-effect parameters, to the last RFS day;
    the identity (no lost days) for a schedule without EVE, so untreated lanes read exactly
    today's law."""
    t1 = jnp.max(rfs_days)
    far = t1 + 1e6  # padded events (time +inf, amount 0) moved to a finite day after t1

    def one(values, k):
        times = tab.times["eve"][k]
        ev = DoseEvents(jnp.where(jnp.isfinite(times), times, far), tab.amount["eve"][k],
                        tab.per_kg["eve"][k], tab.oral["eve"][k])
        return C.dosing_clock(base.with_values(values), ev, t0, t1)

    return jax.vmap(one)(full, sid.astype(jnp.int32))


_solve_outputs_jit = eqx.filter_jit(solve_outputs_impl)


def constant_base(base: Parameters, varying) -> Parameters:
    """`base` with every parameter that is not in `varying` as a Python float.

    Passed through `eqx.filter_jit` these are static, so the compiled loop sees them as
    constants: XLA folds what depends only on them and simplifies e.g. x ** 2.0 in the Hill terms
    to x * x (a power with a run-time exponent is a scalar libm call on the CPU, ~3x the cost of
    the whole rate evaluation otherwise). One compilation per base parameter set: a sweep has
    one."""
    return base.with_values({k: float(np.asarray(v)) for k, v in base.values.items()
                             if k not in varying})


def solve_outputs(varying: dict, base: Parameters, table: ScheduleTable, sid, days: OutputDays,
                  opts: EngineOptions, expected_steps=None):
    """Compiled `solve_outputs_impl`, specialised to the fixed values of `base`."""
    return _solve_outputs_jit(varying, constant_base(base, varying), table, sid, days, opts,
                              expected_steps)
