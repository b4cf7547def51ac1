"""`trial`: replicated virtual CLEVER trials following the protocol, from one key.

Every patient-level endpoint (DTCs seen in each aspirate, true clearance, relapse day) comes
from the stochastic agent model `simulate_agents` (issue 3); this module only runs the protocol
around it:

1. screening: candidates are aspirated until each arm has its DTC+ patients (`population.py`);
2. phase A, day 0 to the end of the planned cycles: one agent call per arm (and per early-stop
   cycle when discontinuation is on), aspirates after the assessed cycles;
3. the protocol branch: patients DTC+ at the last planned assessment (and not discontinued) get
   `extension_cycles` of HCQ+EVE;
4. phase B, continued from each patient's agent state (`initial=final_state`) to the end of
   follow-up (60 months), aspirates after cycle 12 (extension) and 6 months after treatment;
5. administrative censoring per patient (median 42 months, range 7-60).

All patients of one arm across all replicated trials go into one agent call (a leading batch
axis), so a 500-trial run is a handful of calls. Dosing is built on one master dose grid (every
possible dose time of `max_cycles` cycles, with zero amounts where no dose is given), so every
call has the same array shapes; group sizes are padded to powers of two to bound recompiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dormancy_model import status as S
from dormancy_model.agents.pipeline import POOL_LEAP_ABOVE
from dormancy_model.agents.simulate import AgentOptions, take_rows
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters, load_model_parameters
from dormancy_model.pk.closed_form import DoseEvents, Dosing
from dormancy_model.trials.design import MONTH_DAYS, Arm, TrialDesign
from dormancy_model.trials.population import Population, host_rng, sample_patients

OBSERVATION = "observation"


def arm_dosing(design: TrialDesign, arm: Arm | None, *, extension: bool = False,
               stop_day: float | None = None, dtype=jnp.float64) -> Dosing:
    """Dose events on the master grid (every dosing interval of the design's regimen, e.g.
    HCQ every 12 h and EVE every 24 h, over `max_cycles`; zero amounts off the regimen's
    on-days).

    `arm=None` is the untreated observation arm. Planned cycles use the arm's drugs and dose
    factors; extension cycles give the design's extension drugs at full dose; nothing is given
    from `stop_day` on (early discontinuation).
    """
    end_plan, end_ext = design.end_of_planned_treatment, design.end_of_extension
    stop = np.inf if stop_day is None else stop_day

    def events(drug, interval, mg):
        t = np.arange(0.0, max(end_ext, end_plan), interval)
        a = np.zeros_like(t)
        cd = design.cycle_days
        on = np.isin(np.floor(np.mod(t, cd) + 1e-9).astype(int) + 1,
                     design.dose_line(drug).days_on or range(1, cd + 1))
        if arm is not None and drug in arm.drugs:
            a[t < end_plan] = mg * (arm.hcq_factor if drug == "hcq" else arm.eve_factor)
        if extension and drug in design.extension_drugs:
            a[(t >= end_plan) & (t < end_ext)] = mg
        a[~on] = 0.0
        a[t >= stop] = 0.0
        return DoseEvents(jnp.asarray(t, dtype), jnp.asarray(a, dtype),
                          jnp.zeros(t.shape, bool), jnp.ones(t.shape, bool))

    return Dosing(**{d: events(d, design.dose_line(d).interval_hours / 24.0,
                               design.dose_line(d).amount) for d in ("hcq", "eve")})


def _agent_simulator():
    """The agent model's `simulate_agents` (looked up at call time; tests may substitute a
    recording double to check the protocol logic alone)."""
    from dormancy_model.agents.simulate import simulate_agents

    return simulate_agents


def default_agent_options(method: str = "fast") -> dict:
    """The trials' default extra `AgentOptions`: pool leaps above `POOL_LEAP_ABOVE` dormant
    cells with the fast method (the screened loads are ~1e5 cells; below the threshold a pool's
    events stay exact), none with the exact method."""
    return {"pool_leap_above": POOL_LEAP_ABOVE} if method == "fast" else {}


def _bucket(n: int, chunk: int) -> int:
    """Padded call size: a power of two >= n (at least 32), at most `chunk`."""
    return min(chunk, max(32, 1 << int(np.ceil(np.log2(max(n, 1))))))


def agent_chunk(m: int) -> int:
    """Lanes per lock-step loop inside one agent call. Patients' DTC loads (and so their event
    counts) spread over two orders of magnitude; `simulate_agents` groups lanes of similar load,
    and on the CPU small groups waste little on lanes that are already done (measured 1.3x on a
    336-patient arm). Accelerators want wide loops."""
    return min(m, 64) if jax.default_backend() == "cpu" else m


def _run_group(model, params: Parameters, dosing: Dosing, key, *, t0, t1, assess_days,
               initial=None, method="fast", chunk=512, agent_options=None):
    """Agent calls for a group of patients sharing one dosing: split into calls of at most
    `chunk` patients, each padded (repeating its first patient) to a power of two, so that a
    whole run uses few distinct array shapes (each new shape costs a compile).
    `agent_options`: more `AgentOptions` fields (e.g. pool_leap_above)."""
    simulate_agents = _agent_simulator()
    extra = dict(agent_options or {})
    n = int(np.shape(params["k_dr"])[0])
    parts, finals = [], []
    for c, start in enumerate(range(0, n, chunk)):
        rows = np.arange(start, min(start + chunk, n))
        m = _bucket(rows.size, chunk)
        idx = np.r_[rows, np.full(m - rows.size, rows[0])]
        p = params.with_values({k: jnp.asarray(np.asarray(v)[idx])
                                for k, v in params.values.items()})
        # the cells were drawn at screening (integers), so the agents start from exactly them
        options = AgentOptions(method=method, initial_count="fixed", chunk_size=agent_chunk(m),
                               assess_days=assess_days, **extra)
        kw = dict(n_replicates=m, key=jax.random.fold_in(key, c), t1=float(t1), options=options)
        if initial is not None:
            kw.update(initial=take_rows(initial, idx), t0=float(t0))
        res = simulate_agents(model, p, dosing, **kw)
        k = rows.size
        parts.append(dict(
            aspirate=np.asarray(res.aspirate_count)[:k].reshape(k, len(assess_days)),
            positive=np.asarray(res.dtc_positive)[:k].reshape(k, len(assess_days)),
            clearance_day=np.asarray(res.clearance_day, float)[:k],
            relapse_day=np.asarray(res.relapse_day, float)[:k],
            status=np.asarray(getattr(res, "status", np.full(m, S.OK, np.int8)))[:k]))
        finals.append(take_rows(res.final_state, np.arange(k)))
    out = {key_: np.concatenate([q[key_] for q in parts]) for key_ in parts[0]}
    final = finals[0] if len(finals) == 1 else jax.tree_util.tree_map(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs]) if np.ndim(xs[0]) else xs[0],
        *finals)
    return out, final


@dataclass
class TrialResult:
    """Patients (one row per virtual patient, all replicated trials), screening counts per
    trial, the design and how it was run. `summary()` gives one row per trial and arm."""

    patients: pd.DataFrame
    screening: pd.DataFrame
    design: TrialDesign
    replicates: int
    seed_info: str

    def summary(self, progress=None) -> pd.DataFrame:
        from dormancy_model.trials.analysis import analyze_trials

        return analyze_trials(self, progress=progress)


def trial(design: TrialDesign, params: Parameters | None = None, *, key,
          replicates: int = 100, population: Population | None = None,
          model: DormancyModel | None = None, method: str = "fast",
          chunk: int = 512, progress=None, agent_options: dict | None = None) -> TrialResult:
    """Simulate `replicates` independent trials of `design`; deterministic given `key`.

    `params` default to the packaged `human` parameter set; `population` gives the
    virtual-patient variability (default `Population()`); `method` is the agent model's
    ("fast": pooled D/R classes and exact-in-law clone leaps; "exact": every event);
    `chunk` caps the patients per agent call (memory and compile shapes);
    `progress(step, total, text)` is called between agent calls. `agent_options`: more
    `AgentOptions` fields for every agent call, e.g. {"pool_leap_above": 1e3} (dormant pools
    above 1,000 cells leap). Default (None): `default_agent_options(method)`, i.e. pool leaps
    above `POOL_LEAP_ABOVE` cells with the fast method (the marrow loads are ~1e5 cells since
    the aspirate fraction is aspirate_cells / marrow_cells), the protocol's own options only
    with the exact method; {} turns the leaps off.
    """
    reserved = {"method", "initial_count", "chunk_size", "assess_days"} & set(agent_options or {})
    if reserved:
        raise ValueError(f"agent_options cannot set {sorted(reserved)}: the protocol sets them")
    params = load_model_parameters("human") if params is None else params
    population = population or Population()
    model = model or DormancyModel()
    if agent_options is None:
        agent_options = default_agent_options(method)
    R = int(replicates)
    d = design
    k_pop, k_sim, k_cens, k_disc = jax.random.split(key, 4)
    assess = d.assessment_days()
    a_names, a_days = list(assess), list(assess.values())
    end_plan, end_ext = d.end_of_planned_treatment, d.end_of_extension
    groups = [(OBSERVATION, None)] if d.observation_n > 0 else []
    groups += [(a.name, a) for a in d.arms]
    total = 2 * len(groups)
    step = 0
    rows, screen = [], []

    for gi, (name, arm) in enumerate(groups):
        n_arm = d.observation_n if arm is None else arm.n
        n = R * n_arm
        scr = sample_patients(jax.random.fold_in(k_pop, gi), n, population, params)
        trial_idx = np.repeat(np.arange(R), n_arm)
        last = scr.candidate_index[n_arm - 1::n_arm]
        screen.append(pd.DataFrame({"trial": np.arange(R), "arm": name,
                                    "screened": np.diff(np.r_[-1, last]), "enrolled": n_arm}))
        df = pd.DataFrame({"trial": trial_idx, "arm": name, "patient": np.tile(np.arange(n_arm), R),
                           "load": scr.load, "baseline_count": scr.baseline_count})
        for pname in sorted(population.cv):  # each patient's own value (internal units)
            df[pname] = np.asarray(scr.params[pname], float)
        kg = jax.random.fold_in(k_sim, gi)
        if arm is None:  # observation arm: one aspirate after observation_days, no RFS
            out, _ = _run_group(model, scr.params, arm_dosing(d, None), jax.random.fold_in(kg, 0),
                                t0=0.0, t1=d.observation_days, assess_days=[d.observation_days],
                                method=method, chunk=chunk,
                                agent_options=agent_options)
            df["count_C3"] = out["aspirate"][:, 0]
            df["agent_status"] = S.names(out["status"])
            for c in ("extension", "cleared_true_eot", "cleared_observed", "cleared_eot_observed",
                      "rfs_event"):
                df[c] = False  # not analysed for RFS (kept boolean so columns stay typed)
            df["discontinued_cycle"] = 0
            rows.append(df)
            step += 2
            if progress:
                progress(step, total, name)
            continue
        # early discontinuation: stop day = start of a uniformly drawn planned cycle (>= 2)
        rng = host_rng(k_disc, gi)
        disc = rng.uniform(size=n) < d.discontinuation_prob
        stop_cycle = np.where(disc, rng.integers(1, d.cycles, size=n), 0)
        cols = {c: np.full(n, np.nan) for c in ["count_" + a for a in a_names] + ["count_C12",
                                                                                "count_post"]}
        clear_a, relapse_a = np.full(n, np.inf), np.full(n, np.inf)
        ext = np.zeros(n, bool)
        status = np.full(n, S.OK, np.int8)  # phases combined by status.combine
        clear_b, relapse_b = np.full(n, np.inf), np.full(n, np.inf)
        states = {}
        for s in np.unique(stop_cycle):  # phase A
            idx = np.flatnonzero(stop_cycle == s)
            stop_day = None if s == 0 else float(s * d.cycle_days)
            out, fs = _run_group(model, take_rows(scr.params, idx), arm_dosing(d, arm,
                                 stop_day=stop_day), jax.random.fold_in(kg, int(s)),
                                 t0=0.0, t1=end_plan, assess_days=a_days, method=method,
                                 chunk=chunk, agent_options=agent_options)
            for j, a in enumerate(a_names):
                cols["count_" + a][idx] = out["aspirate"][:, j]
            clear_a[idx], relapse_a[idx] = out["clearance_day"], out["relapse_day"]
            status[idx] = S.combine(status[idx], out["status"])
            ext[idx] = (out["positive"][:, -1] & (s == 0) & (d.extension_cycles > 0)
                        & bool(arm.drugs))
            states[int(s)] = (idx, fs)
        step += 1
        if progress:
            progress(step, total, name)
        for s, (idx_s, fs) in states.items():  # phase B
            for e in (False, True):
                sel = np.flatnonzero(ext[idx_s] == e)
                if sel.size == 0:
                    continue
                idx = idx_s[sel]
                eot = end_ext if e else end_plan
                days = ([end_ext] if e else []) + [eot + d.post_treatment_days]
                stop_day = None if s == 0 else float(s * d.cycle_days)
                out, _ = _run_group(
                    model, take_rows(scr.params, idx), arm_dosing(d, arm, extension=e,
                                                              stop_day=stop_day),
                    jax.random.fold_in(kg, 1000 + 2 * s + int(e)), t0=end_plan,
                    t1=d.horizon_days, assess_days=days, initial=take_rows(fs, sel), method=method,
                    chunk=chunk, agent_options=agent_options)
                if e:
                    cols["count_C12"][idx] = out["aspirate"][:, 0]
                cols["count_post"][idx] = out["aspirate"][:, -1]
                clear_b[idx], relapse_b[idx] = out["clearance_day"], out["relapse_day"]
                status[idx] = S.combine(status[idx], out["status"])
        step += 1
        if progress:
            progress(step, total, name)
        for c, v in cols.items():
            df[c] = v
        df["extension"] = ext
        df["agent_status"] = S.names(status)  # by name: see dormancy_model.status
        df["discontinued_cycle"] = stop_cycle
        eot = np.where(stop_cycle > 0, stop_cycle * d.cycle_days, np.where(ext, end_ext,
                                                                           end_plan))
        df["end_treatment_day"] = eot
        clearance = np.minimum(clear_a, clear_b)
        df["clearance_day"] = clearance
        df["cleared_true_eot"] = clearance <= eot
        # cleared vs persistent (for the HR): DTC- at the last planned assessment (C6), the
        # protocol's own definition of persistence (DTC+ after C6 triggers the extension)
        df["cleared_observed"] = df["count_" + a_names[-1]] == 0
        last_on = np.where(ext, df["count_C12"], df["count_" + a_names[-1]])
        df["cleared_eot_observed"] = last_on == 0  # DTC- at the last on-treatment aspirate
        relapse = np.minimum(relapse_a, relapse_b)
        u = host_rng(k_cens, gi).uniform(size=n)
        lo, hi = d.followup_min_months, d.followup_max_months
        censor = (lo + (hi - lo) * u ** (1.0 / d.followup_beta_a)) * MONTH_DAYS
        df["relapse_day"] = relapse
        df["censor_day"] = censor
        df["rfs_time"] = np.minimum(relapse, censor)
        df["rfs_event"] = relapse <= censor
        rows.append(df)
    patients = pd.concat(rows, ignore_index=True)
    screening = pd.concat(screen, ignore_index=True)
    return TrialResult(patients, screening, design, R, f"method={method}")
