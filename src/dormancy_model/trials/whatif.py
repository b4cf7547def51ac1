"""What-if questions the CLEVER trial could not answer, asked of the virtual trial.

* `cycles`: 3 vs 6 vs 12 planned cycles (the protocol's extension of 6 cycles of HCQ+EVE for
  patients still DTC+ after the last planned cycle is kept in every variant).
* `dose`: dose reductions, e.g. HCQ x0.5 (600 -> 300 mg BID), EVE x0.5 (10 -> 5 mg QD).
* `combo`: combination vs each drug alone in a larger trial (n per arm), with the probability
  over replicated trials that the combination arm has the best 3-year RFS / clearance.
* `sample_size`: the per-arm size of a confirmatory randomised trial of HCQ+EVE against
  observation (untreated, followed like the treated) needed for 80% power on RFS at 3 years:
  (a) Schoenfeld's formula from the simulated 3-year RFS of both arms (proportional hazards),
  events d = 4 (z_{1-alpha/2} + z_{power})^2 / ln(HR)^2, n per arm = d / (2 P(event)), with
  HR = ln S_trt(3y) / ln S_obs(3y); (b) a check by resampling trials of n per arm from large
  simulated pools, follow-up as in CLEVER (median 42 months), two-sided log-rank test at
  alpha = 0.05: power = fraction of resampled trials with p < alpha.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from dormancy_model.model.survival import survival_at
from dormancy_model.trials import analysis as TA
from dormancy_model.trials.design import MAX_ARM_N, MAX_DESIGN_CYCLES, Arm, TrialDesign
from dormancy_model.trials.protocol import trial

METRICS = ("clearance_C3", "clearance_C6", "clearance_eot", "cleared_true_eot", "reduction_C3",
           "rfs_3y")


def _summarise(label: str, trials: pd.DataFrame) -> list[dict]:
    rows = []
    for arm in trials["arm"].unique():
        if arm == "observation":
            continue
        row = {"scenario": label, "arm": arm}
        for m in METRICS:
            lo, med, hi = TA.spread(trials, m, arm)
            row[m] = med
            row[m + "_p05"], row[m + "_p95"] = lo, hi
        rows.append(row)
    return rows


def compare_designs(designs: dict, params, *, key, replicates: int, population=None,
                    method: str = "fast", progress=None) -> pd.DataFrame:
    """Median (and 90% interval) of each endpoint per scenario and arm; same key for every
    scenario (common random numbers: the same virtual patients get each variant)."""
    rows = []
    for i, (label, d) in enumerate(designs.items()):
        res = trial(d, params, key=key, replicates=replicates, population=population,
                    method=method)
        rows += _summarise(label, res.summary())
        if progress:
            progress(i + 1, len(designs), label)
    return pd.DataFrame(rows)


def cycles_designs(design: TrialDesign, cycles=(3, 6, 12)) -> dict:
    return {f"{c} cycles": design.with_cycles(int(c)) for c in cycles}


def dose_designs(design: TrialDesign, reductions=(("hcq", 0.5), ("eve", 0.5))) -> dict:
    out = {"full dose": design}
    for drug, f in reductions:
        out[f"{drug.upper()} x{f:g}"] = design.with_dose_factor(drug, f)
    return out


def combo_vs_single(design: TrialDesign, params, *, n_per_arm: int, key, replicates: int,
                    population=None, method: str = "fast") -> tuple[pd.DataFrame, dict]:
    """Larger trial, n per arm; returns (summary rows, P(combination best) per endpoint)."""
    big = design.with_sizes(n_per_arm).replace(name=f"{design.name}-n{n_per_arm}")
    trials = trial(big, params, key=key, replicates=replicates, population=population,
                   method=method).summary()
    rows = pd.DataFrame(_summarise(f"n={n_per_arm} per arm", trials))
    combo = next(a.name for a in big.arms if set(a.drugs) == {"hcq", "eve"})
    best = {}
    for m in ("rfs_3y", "clearance_eot", "reduction_C3"):
        wide = trials[trials["arm"].isin([a.name for a in big.arms])].pivot(
            index="trial", columns="arm", values=m)
        others = wide.drop(columns=combo)
        best[m] = float(np.mean(np.all(wide[combo].to_numpy()[:, None] > others.to_numpy(),
                                       axis=1)))
    return rows, best


def schoenfeld_n_per_arm(s_control: float, s_treated: float, *, alpha: float = 0.05,
                         power: float = 0.8) -> float:
    """Patients per arm (1:1) for a log-rank test, from survival at the landmark time."""
    if not (0 < s_control < 1 and 0 < s_treated <= 1) or s_treated <= s_control:
        return float("inf")
    hr = np.log(s_treated) / np.log(s_control) if s_treated < 1 else 1e-3
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    events = 4 * z * z / np.log(hr) ** 2
    p_event = 1 - (s_control + s_treated) / 2
    return float(np.ceil(events / p_event / 2))


def sample_size(design: TrialDesign, params, *, key, pool: int = 2000, population=None,
                sizes=(50, 100, 200, 400), resamples: int = 200, alpha: float = 0.05,
                method: str = "fast", seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Sample size for 80% power on RFS vs observation (see module doc). Returns (power table
    by n per arm, summary dict)."""
    from lifelines.statistics import logrank_test

    combo = next((a for a in design.arms if set(a.drugs) == {"hcq", "eve"}), design.arms[-1])
    d = design.replace(name="confirmatory", observation_n=0,
                       arms=(Arm("observation", (), pool), Arm(combo.name, combo.drugs, pool,
                                                               combo.hcq_factor,
                                                               combo.eve_factor)))
    res = trial(d, params, key=key, replicates=1, population=population, method=method)
    pat = res.patients
    # 3-year RFS without censoring before 3 years: every pool patient is followed >= 7 months,
    # so use the KM of the pools (administrative censoring as in CLEVER)
    s = {a: survival_at(g["rfs_time"], g["rfs_event"], TA.THREE_YEARS_DAYS)
         for a, g in pat.groupby("arm")}
    s_obs, s_trt = s["observation"], s[combo.name]
    n_formula = schoenfeld_n_per_arm(s_obs, s_trt, alpha=alpha)
    rng = np.random.default_rng(seed)
    groups = {a: g[["rfs_time", "rfs_event"]].to_numpy() for a, g in pat.groupby("arm")}
    rows = []
    for n in sizes:
        hits = 0
        for _ in range(resamples):
            a = groups["observation"][rng.integers(0, pool, n)]
            b = groups[combo.name][rng.integers(0, pool, n)]
            if a[:, 1].sum() + b[:, 1].sum() == 0:
                continue
            p = logrank_test(a[:, 0], b[:, 0], a[:, 1], b[:, 1]).p_value
            hits += p < alpha
        rows.append({"n_per_arm": int(n), "power": hits / resamples})
    table = pd.DataFrame(rows)
    ok = table[table["power"] >= 0.8]
    summary = {"rfs_3y_observation": s_obs, "rfs_3y_treated": s_trt,
               "arm": combo.name, "n_per_arm_schoenfeld": n_formula,
               "n_per_arm_resampled": int(ok["n_per_arm"].min()) if len(ok) else None,
               "pool_per_arm": pool, "alpha": alpha}
    return table, summary


MAX_PER_ARM = MAX_ARM_N  # patients per arm of a what-if trial
MAX_CYCLES = MAX_DESIGN_CYCLES  # cycles of a what-if design (CLEVER: 6, 12 with the extension)


def _no_duplicates(values: list, text: str, what: str = "values") -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what} in {text!r}")


def parse_whatif(spec: str) -> tuple[str, list]:
    """'cycles=3,6,12' -> ('cycles', [3, 6, 12]); 'dose=hcq:0.5,eve:0.5'; 'combo=100';
    'sample-size' or 'sample-size=50,100,200'."""
    from dormancy_model.errors import InputError

    name, _, val = spec.partition("=")
    name = name.strip().lower().replace("_", "-")
    try:
        if name == "cycles":
            v = [int(x) for x in val.split(",") if x]
            if not v or min(v) < 1 or max(v) > MAX_CYCLES:
                raise ValueError(f"cycles must be in [1, {MAX_CYCLES}]")
            _no_duplicates(v, val)
            return name, v
        if name == "dose":
            v = []
            for part in val.split(","):
                drug, _, f = part.partition(":")
                if drug.lower() not in ("hcq", "eve") or not 0 < float(f) <= 2:
                    raise ValueError(f"{part!r}: use hcq:FACTOR or eve:FACTOR, 0 < FACTOR <= 2")
                v.append((drug.lower(), float(f)))
            _no_duplicates(v, val)
            return name, v
        if name == "combo":
            n = int(val or 100)
            if not 2 <= n <= MAX_PER_ARM:
                raise ValueError(f"n per arm must be in [2, {MAX_PER_ARM}], got {n}")
            return name, [n]
        if name == "sample-size":
            v = [int(x) for x in val.split(",") if x.strip()] or [50, 100, 200, 400]
            for n in v:
                if not 2 <= n <= MAX_PER_ARM:
                    raise ValueError(f"n per arm must be in [2, {MAX_PER_ARM}], got {n}")
            _no_duplicates(v, val, "sizes")
            return name, sorted(v)
    except ValueError as e:
        raise InputError("--what-if", name, str(e)) from None
    raise InputError("--what-if", name or spec, "unknown what-if; known: cycles=3,6,12, "
                     "dose=hcq:0.5,eve:0.5, combo=N, sample-size[=N1,N2,...]")
