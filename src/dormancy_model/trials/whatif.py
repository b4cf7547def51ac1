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

Over a posterior (`dormancy trial --posterior FILE`, the default when
`fits/clever_posterior.json` exists; `*_posterior` functions below): D parameter sets drawn
from the posterior calibration x R replicated trials per set, common random numbers across the
what-if levels. Each answer's interval is the 5-95% range of the pooled D x R trials (parameter
uncertainty and replicate noise together), shown beside the replicate-only interval of R_c
trials at the posterior centre (mean of the log draws), with the law of total variance
var_total = var_between (of the per-draw means: parameters) + var_within (mean per-draw
variance: replicates) and the dominant part. Cycles and dose levels also get paired contrasts
against the reference level (6 cycles / full dose): same draw, trial and patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from dormancy_model.model.survival import survival_at
from dormancy_model.trials import analysis as TA
from dormancy_model.trials.design import MAX_ARM_N, MAX_DESIGN_CYCLES, Arm, TrialDesign
from dormancy_model.trials.protocol import trial
from dormancy_model.trials.uncertainty import (  # noqa: F401  (re-exported)
    ParameterUncertainty,
    posterior_uncertainty,
)

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


# ----------------------------------------------------------------------------- posterior
# What-ifs that carry the parameter uncertainty: D parameter sets drawn from a posterior file
# (`dormancy calibrate --posterior`), R replicated trials at each (common random numbers across
# the what-if levels: the same key per draw for every level), and the pooled predictive of the
# D x R trials as each answer's interval. Beside it, the replicate-only interval: R_c trials at
# the posterior centre (the mean of the log draws). Per answer, the law of total variance over
# the pooled trials, Var = E_draw[Var(. | draw)] + Var_draw(E[. | draw]) (within + between;
# `variance_decomposition`), says whether parameters or replicate noise dominate.

N_CAP = 1e5  # n per arm counted as "no benefit" in the decomposition of ln n (Schoenfeld inf)
ANSWER_METRICS = ("rfs_3y", "clearance_eot")  # shown in the report (every metric in the CSV)


def variance_decomposition(values, draw) -> dict:
    """Law of total variance of the pooled values over groups `draw` (population variances,
    ddof 0; draws weighted by their number of finite values): var_total = var_between (variance
    of the draw means) + var_within (mean of the within-draw variances), exactly.
    share_parameters = between / total; dominant: "parameters" (share >= 0.5), "replicates",
    or "none" (no spread)."""
    v = np.asarray(values, float).ravel()
    g = np.asarray(draw).ravel()
    ok = np.isfinite(v)
    v, g = v[ok], g[ok]
    if v.size == 0:
        return dict(var_total=np.nan, var_between=np.nan, var_within=np.nan,
                    share_parameters=np.nan, dominant="none")
    m = v.mean()
    _, inv, cnt = np.unique(g, return_inverse=True, return_counts=True)
    means = np.bincount(inv, v) / cnt
    w = cnt / v.size
    between = float(np.sum(w * (means - m) ** 2))
    within = float(np.sum(w * np.bincount(inv, (v - means[inv]) ** 2) / cnt))
    total = float(np.mean((v - m) ** 2))
    share = between / total if total > 0 else np.nan
    dom = "none" if not total > 0 else ("parameters" if share >= 0.5 else "replicates")
    return dict(var_total=total, var_between=between, var_within=within,
                share_parameters=share, dominant=dom)


def _quantiles(x) -> tuple[float, float, float]:
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (np.nan,) * 3
    # inverted CDF: no interpolation between a finite value and inf (Schoenfeld's n)
    return tuple(float(q) for q in np.quantile(x, [0.05, 0.5, 0.95], method="inverted_cdf"))


def answer_row(scenario: str, arm: str, metric: str, pooled, draw, centre) -> dict:
    """One answer: pooled predictive median and 90% interval (D x R trials), replicate-only
    interval (trials at the centre), its widening and the variance decomposition."""
    lo, med, hi = _quantiles(pooled)
    rlo, rmed, rhi = _quantiles(centre)
    wide = (hi - lo) / (rhi - rlo) if np.isfinite(hi - lo) and rhi - rlo > 0 else np.nan
    x = np.asarray(pooled, float)
    return dict(scenario=scenario, arm=arm, metric=metric, median=med, p05=lo, p95=hi,
                rep_median=rmed, rep_p05=rlo, rep_p95=rhi, widening=wide,
                mean=float(np.nanmean(x)) if np.isfinite(x).any() else np.nan,
                **variance_decomposition(pooled, draw))


def posterior_trials(designs: dict, params, *, key, unc: ParameterUncertainty,
                     method: str = "fast", progress=None) -> pd.DataFrame:
    """Per-trial summaries (`TrialResult.summary()`) of every design at every draw (column
    `draw` 0..D-1; -1: the centre) and level (column `scenario`). Draw d uses key
    fold_in(key, d + 1) for every level (common random numbers); the centre uses `key`."""
    import jax

    out = []
    runs = [(-1, None)] + [(d, d) for d in range(unc.draws)]
    for i, (d, which) in enumerate(runs):
        pop = unc.population_at(which)
        k = key if d < 0 else jax.random.fold_in(key, d + 1)
        reps = unc.centre_replicates if d < 0 else unc.replicates
        for label, des in designs.items():
            s = trial(des, params, key=k, replicates=reps, population=pop,
                      method=method).summary()
            s.insert(0, "draw", d)
            s.insert(0, "scenario", label)
            out.append(s)
        if progress:
            progress(i + 1, len(runs), "centre" if d < 0 else f"draw {d + 1}")
    return pd.concat(out, ignore_index=True)


def _answers(tab: pd.DataFrame, metrics=METRICS) -> list[dict]:
    rows = []
    for (sc, arm), g in tab.groupby(["scenario", "arm"], sort=False):
        if arm == "observation":
            continue
        c, p = g[g["draw"] < 0], g[g["draw"] >= 0]
        for m in metrics:
            rows.append(answer_row(sc, arm, m, p[m], p["draw"], c[m]))
    return rows


def _contrasts(tab: pd.DataFrame, ref: str, metrics=METRICS) -> pd.DataFrame:
    """Paired differences level - ref (same draw, trial and arm: common random numbers)."""
    keys = ["draw", "trial", "arm"]
    base = tab[tab["scenario"] == ref].set_index(keys)[list(metrics)]
    out = []
    for sc, g in tab[tab["scenario"] != ref].groupby("scenario", sort=False):
        diff = g.set_index(keys)[list(metrics)] - base.reindex(g.set_index(keys).index)
        diff = diff.reset_index()
        diff.insert(0, "scenario", f"{sc} - {ref}")
        out.append(diff)
    return pd.concat(out, ignore_index=True) if out else tab.iloc[:0]


def compare_designs_posterior(designs: dict, params, *, key, unc: ParameterUncertainty,
                              reference: str | None = None, method: str = "fast",
                              progress=None) -> pd.DataFrame:
    """Every endpoint per level and arm with the pooled predictive interval over the posterior
    draws and replicates, the replicate-only interval at the centre and the variance
    decomposition; plus paired contrasts of each level against `reference` (default: the
    first level)."""
    tab = posterior_trials(designs, params, key=key, unc=unc, method=method, progress=progress)
    ref = reference if reference in designs else next(iter(designs))
    rows = _answers(tab) + _answers(_contrasts(tab, ref))
    return pd.DataFrame(rows)


def combo_vs_single_posterior(design: TrialDesign, params, *, n_per_arm: int, key,
                              unc: ParameterUncertainty, method: str = "fast",
                              progress=None) -> pd.DataFrame:
    """`combo_vs_single` over the posterior: per-arm answers, and per endpoint P(HCQ+EVE has
    the best value of the three arms): `mean` the pooled probability, p05 / p95 the 90% range
    of the per-draw probabilities, rep_median the centre's probability; the decomposition is
    that of the indicator (between: spread of the per-draw probabilities)."""
    big = design.with_sizes(n_per_arm).replace(name=f"{design.name}-n{n_per_arm}")
    label = f"n={n_per_arm} per arm"
    tab = posterior_trials({label: big}, params, key=key, unc=unc, method=method,
                           progress=progress)
    rows = _answers(tab)
    combo = next(a.name for a in big.arms if set(a.drugs) == {"hcq", "eve"})
    arms = [a.name for a in big.arms]
    for m in ("rfs_3y", "clearance_eot", "reduction_C3"):
        wide = tab[tab["arm"].isin(arms)].pivot_table(index=["draw", "trial"], columns="arm",
                                                      values=m, dropna=False)
        others = wide.drop(columns=combo).to_numpy()
        best = np.all(wide[combo].to_numpy()[:, None] > others, axis=1).astype(float)
        dr = wide.index.get_level_values("draw").to_numpy()
        pooled, c = best[dr >= 0], best[dr < 0]
        per_draw = pd.Series(pooled).groupby(dr[dr >= 0]).mean().to_numpy()
        lo, hi = (np.quantile(per_draw, [0.05, 0.95]) if per_draw.size else (np.nan, np.nan))
        rows.append(dict(scenario=label, arm=combo, metric=f"P(best) {m}",
                         median=float(np.median(per_draw)), p05=float(lo), p95=float(hi),
                         rep_median=float(c.mean()) if c.size else np.nan, rep_p05=np.nan,
                         rep_p95=np.nan, widening=np.nan, mean=float(pooled.mean()),
                         **variance_decomposition(pooled, dr[dr >= 0])))
    return pd.DataFrame(rows)


def schoenfeld_power(s_control, s_treated, n_per_arm, *, alpha: float = 0.05):
    """Power of a 1:1 log-rank test with n per arm from survival at the landmark (Schoenfeld:
    the inverse of `schoenfeld_n_per_arm`; a harmful effect gives power below alpha / 2)."""
    s0 = np.clip(np.asarray(s_control, float), 1e-6, 1 - 1e-6)
    s1 = np.clip(np.asarray(s_treated, float), 1e-6, 1 - 1e-6)
    log_hr = np.log(np.log(s1) / np.log(s0))
    events = n_per_arm * ((1 - s0) + (1 - s1))
    return stats.norm.cdf(np.sqrt(events) * (-log_hr) / 2 - stats.norm.ppf(1 - alpha / 2))


def sample_size_posterior(design: TrialDesign, params, *, key, unc: ParameterUncertainty,
                          pool: int = 2000, sizes=(50, 100, 200, 400), alpha: float = 0.05,
                          method: str = "fast", progress=None) -> pd.DataFrame:
    """`sample_size` over the posterior. At each draw R replicated pools of pool / R patients
    per arm (HCQ+EVE and observation; the same total as the point answer's pool), 3-year RFS of
    each arm by Kaplan-Meier, and from them Schoenfeld's n per arm for 80% power (metric
    `n_per_arm`; the decomposition is that of ln n, n capped at `N_CAP` where the treated arm is
    not better) and the power at each n of `sizes` (metric `power n=N`: `mean` over the pooled
    pairs is the expected power over the posterior, p05 / p95 the range of the per-draw mean
    power). Replicate noise here is the Monte-Carlo error of the simulated pools."""
    combo = next((a for a in design.arms if set(a.drugs) == {"hcq", "eve"}), design.arms[-1])
    per = max(20, int(pool) // max(unc.replicates, 1))
    d = design.replace(name="confirmatory", observation_n=0,
                       arms=(Arm("observation", (), per), Arm(combo.name, combo.drugs, per,
                                                              combo.hcq_factor,
                                                              combo.eve_factor)))
    import jax

    recs = []
    runs = [(-1, None)] + [(i, i) for i in range(unc.draws)]
    for j, (dr, which) in enumerate(runs):
        k = key if dr < 0 else jax.random.fold_in(key, dr + 1)
        reps = unc.centre_replicates if dr < 0 else unc.replicates
        res = trial(d, params, key=k, replicates=reps, population=unc.population_at(which),
                    method=method)
        for t, g in res.patients.groupby("trial"):
            s = {a: survival_at(h["rfs_time"], h["rfs_event"], TA.THREE_YEARS_DAYS)
                 for a, h in g.groupby("arm")}
            recs.append(dict(draw=dr, trial=t, s_obs=s["observation"], s_trt=s[combo.name]))
        if progress:
            progress(j + 1, len(runs), "centre" if dr < 0 else f"draw {dr + 1}")
    tab = pd.DataFrame(recs)
    tab["n"] = [schoenfeld_n_per_arm(a, b, alpha=alpha) for a, b in zip(tab["s_obs"], tab["s_trt"],
                                                                        strict=True)]
    c, p = tab[tab["draw"] < 0], tab[tab["draw"] >= 0]
    label = f"confirmatory, {per} per arm x {unc.replicates} pools per draw"
    rows = [answer_row(label, "observation", "rfs_3y", p["s_obs"], p["draw"], c["s_obs"]),
            answer_row(label, combo.name, "rfs_3y", p["s_trt"], p["draw"], c["s_trt"]),
            answer_row(label, combo.name, "rfs_3y difference", p["s_trt"] - p["s_obs"],
                       p["draw"], c["s_trt"] - c["s_obs"])]
    r = answer_row(label, combo.name, "n_per_arm", p["n"], p["draw"], c["n"])
    r.update(variance_decomposition(np.log(np.minimum(p["n"], N_CAP)), p["draw"]))
    r["no_benefit"] = float(np.mean(~np.isfinite(p["n"])))
    rows.append(r)
    for n in sizes:
        pw = schoenfeld_power(p["s_obs"], p["s_trt"], n, alpha=alpha)
        pc = schoenfeld_power(c["s_obs"], c["s_trt"], n, alpha=alpha)
        r = answer_row(label, combo.name, f"power n={n}", pw, p["draw"], pc)
        per_draw = pd.Series(pw).groupby(p["draw"].to_numpy()).mean().to_numpy()
        r["p05"], r["p95"] = (float(x) for x in np.quantile(per_draw, [0.05, 0.95]))
        r["median"], r["rep_median"] = float(np.median(per_draw)), float(np.mean(pc))
        r["widening"] = np.nan
        rows.append(r)
    return pd.DataFrame(rows)


def posterior_note(tab: pd.DataFrame, name: str) -> str:
    """One line per what-if: where parameters dominate, where replicates do."""
    t = tab[tab["metric"].isin(ANSWER_METRICS + ("n_per_arm",)) | tab["metric"].str.startswith(
        "P(best)")]
    t = t[t["dominant"] != "none"]
    if not len(t):
        return f"{name}: no spread to decompose"
    par = int((t["dominant"] == "parameters").sum())
    narrower = tab[(tab["widening"] < 1) & tab["widening"].notna()]
    txt = (f"{name}: parameter uncertainty dominates {par} of {len(t)} answers "
           f"({', '.join(ANSWER_METRICS)}, n per arm, P(best)); median share of the variance "
           f"from parameters {float(np.nanmedian(t['share_parameters'])):.2f}")
    ns = tab[tab["metric"] == "n_per_arm"]
    for r in ns.itertuples():
        txt += (f"; n per arm for 80% power {r.median:.4g} [{r.p05:.4g}, {r.p95:.4g}] "
                f"(replicate-only [{r.rep_p05:.4g}, {r.rep_p95:.4g}]), no benefit in "
                f"{r.no_benefit:.0%} of the simulated pools")
    if len(narrower):
        txt += (f"; {len(narrower)} posterior intervals narrower than the replicate-only one "
                "(sampling noise of few draws / replicates: raise --posterior-draws / "
                "--posterior-replicates)")
    return txt


def report_view(tab: pd.DataFrame) -> pd.DataFrame:
    """The report's view of a posterior what-if table: the headline metrics and every
    probability / sample-size answer, rounded columns."""
    keep = (tab["metric"].isin(ANSWER_METRICS + ("n_per_arm", "rfs_3y difference"))
            | tab["metric"].str.startswith(("P(best)", "power")))
    cols = ["scenario", "arm", "metric", "median", "p05", "p95", "rep_p05", "rep_p95",
            "share_parameters", "dominant"]
    return tab.loc[keep, cols].reset_index(drop=True)
