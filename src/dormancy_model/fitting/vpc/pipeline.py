"""The VPC run: `vpc` (a fitted model and its study in, tables and a summary out) and `run_vpc`
(read and check a fit JSON and its study, simulate, write the folder), what `dormancy vpc`
calls.

    result = vpc(fitted, study, params, replicates=200, seed=0)
    result.burden   # per arm and day: p10 / p50 / p90 and fraction_blq, observed vs 90% PI
    result.km       # per arm and day: observed Kaplan-Meier vs the simulated 90% band
    result.gof      # per burden row: observed, PRED, IPRED (population fits), NPDE

Files written by `run_vpc` into `out` (all at once, `io.output_dir`): vpc_burden.png,
vpc_km.png, gof.png, vpc.csv (the burden and Kaplan-Meier tables, one `panel` column:
burden_percentile, fraction_blq, km), gof.csv and summary.json (settings and coverage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dormancy_model.errors import InputError, check_seed
from dormancy_model.fitting.vpc import stats as V
from dormancy_model.fitting.vpc.model import FittedModel, fitted_model
from dormancy_model.fitting.vpc.simulate import Replicates, simulate_replicates

LEVEL = 0.9  # prediction intervals: the central 90% of the replicates
KM_POINTS = 121  # days per arm on which the Kaplan-Meier band is computed
MAX_REPLICATES = 100_000


@dataclass
class VpcResult:
    burden: pd.DataFrame  # panel, arm, day, statistic, n, observed, sim_p05/p50/p95, inside
    km: pd.DataFrame  # arm, day, n, observed, sim_p05/p50/p95, inside
    gof: pd.DataFrame  # mouse_id, arm, day, observed, censored, ..., pred, ipred, npde
    summary: dict
    replicates: Replicates

    def summary_line(self) -> str:
        s = self.summary
        b, f, k = s["burden_percentiles"], s["fraction_blq"], s["km"]
        npd = s["npde"]
        return (f"VPC, {s['replicates']} replicates (seed {s['seed']}, {s['method']} fit"
                f"{', with parameter uncertainty' if s['uncertainty'] else ''}): burden "
                f"percentiles inside the 90% PI {b['inside']}/{b['n']}, fraction below the "
                f"limit {f['inside']}/{f['n']}, observed KM inside the 90% band on "
                f"{100 * k['inside_fraction']:.0f}% of the days; NPDE mean {npd['mean']:.2f}, "
                f"sd {npd['sd']:.2f} (n {npd['n']})")


def _cells(v):
    """log cells -> cells, or "BLQ" (-inf)."""
    return "BLQ" if np.isneginf(v) else float(np.exp(v))


def _json_ready(x):
    """`x` with NaN and inf as None (valid JSON)."""
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    return x


def burden_table(study, sims: Replicates, level: float = LEVEL) -> pd.DataFrame:
    """Per arm and sampling day: the observed 10/50/90th percentiles of the counts (cells:
    count / sampled fraction) and the fraction below the detection limit, each against its
    `level` prediction interval over the replicates (`stats`)."""
    b = study.burden
    log_f = np.log(b.sampled_fraction)
    obs = np.log(np.maximum(b.cells, 1e-300)) - log_f
    rows = []
    for a, arm in enumerate(study.arms):
        for day in np.unique(b.day[b.arm == a]):
            idx = np.flatnonzero((b.arm == a) & (b.day == day))
            limit = float(np.max(np.log(b.detection_limit[idx]) - log_f[idx]))
            o = V.censored_percentiles(obs[idx], b.censored[idx], limit)
            sim = V.censored_percentiles(sims.burden_log_y[:, idx] - log_f[idx],
                                         sims.burden_censored[:, idx], limit)
            lo, med, hi = V.prediction_interval(sim, limit, level)
            common = dict(arm=arm.name, day=float(day), n=idx.size,
                          limit_cells=float(np.exp(limit)))
            for j, p in enumerate(V.PERCENTILES):
                rows.append(dict(panel="burden_percentile", statistic=f"p{p:g}", **common,
                                 observed=_cells(o[j]), sim_p05=_cells(lo[j]),
                                 sim_p50=_cells(med[j]), sim_p95=_cells(hi[j]),
                                 inside=bool(V.inside(o[j], lo[j], hi[j])), log_observed=o[j],
                                 log_lo=lo[j], log_median=med[j], log_hi=hi[j]))
            frac = sims.burden_censored[:, idx].mean(axis=1)
            flo, fmed, fhi = np.quantile(frac, [(1 - level) / 2, 0.5, (1 + level) / 2])
            fo = float(b.censored[idx].mean())
            rows.append(dict(panel="fraction_blq", statistic="fraction_blq", **common,
                             observed=fo, sim_p05=flo, sim_p50=fmed, sim_p95=fhi,
                             inside=bool(flo <= fo <= fhi)))
    return pd.DataFrame(rows)[["panel", "arm", "day", "statistic", "n", "limit_cells",
                               "observed", "sim_p05", "sim_p50", "sim_p95", "inside",
                               "log_observed", "log_lo", "log_median", "log_hi"]]


def km_table(study, sims: Replicates, level: float = LEVEL, points: int = KM_POINTS):
    """Per arm, on `points` days from 0 to the arm's last follow-up: the observed Kaplan-Meier
    relapse-free fraction and the `level` band of the replicates' Kaplan-Meier curves."""
    s = study.survival
    rows = []
    for a, arm in enumerate(study.arms):
        idx = np.flatnonzero(s.arm == a)
        if not idx.size:
            continue
        days = np.linspace(0.0, float(s.day[idx].max()), points)
        obs = V.km_on_grid(s.day[idx], s.event[idx], days)
        sim = np.stack([V.km_on_grid(sims.relapse_day[r, idx], sims.relapse_event[r, idx],
                                     days) for r in range(sims.n)])
        lo, med, hi = np.quantile(sim, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
        for k, d in enumerate(days):
            rows.append(dict(panel="km", arm=arm.name, day=float(d), statistic="relapse_free",
                             n=idx.size, observed=obs[k], sim_p05=lo[k], sim_p50=med[k],
                             sim_p95=hi[k], inside=bool(lo[k] <= obs[k] <= hi[k])))
    return pd.DataFrame(rows)


def gof_table(study, sims: Replicates, rng) -> pd.DataFrame:
    """Per burden row: observed count, censoring, detection limit, PRED (the typical animal's
    median count), IPRED (its own estimates' median; population fits), NPDE (`stats.npde`);
    counts in the unit of the data (cells in the sample)."""
    b = study.burden
    log_lod = np.log(b.detection_limit)
    npde = V.npde(np.log(np.maximum(b.cells, 1e-300)), b.censored, log_lod, sims.burden_log_y,
                  b.mouse_id, rng)
    ipred = (np.exp(sims.ipred_log) if sims.ipred_log is not None
             else np.full(b.day.size, np.nan))
    return pd.DataFrame(dict(
        mouse_id=b.mouse_id, arm=[study.arm_names[a] for a in b.arm], day=b.day,
        observed=b.cells, censored=b.censored, detection_limit=b.detection_limit,
        sampled_fraction=b.sampled_fraction, pred=np.exp(sims.pred_log), ipred=ipred,
        npde=npde))


def vpc(fitted: FittedModel, study, params, *, replicates: int = 200, seed: int = 0,
        uncertainty: bool = False, level: float = LEVEL) -> VpcResult:
    """Visual predictive check of `fitted` (`model.fitted_model`) on its `study`: simulate
    `replicates` studies (`simulate.simulate_replicates`, key from `seed`) and tabulate the
    burden percentiles, the fraction below the limit, the Kaplan-Meier band and the
    goodness-of-fit rows against them."""
    import jax

    sims = simulate_replicates(fitted, study, params, replicates=replicates,
                               key=jax.random.key(seed), uncertainty=uncertainty)
    burden = burden_table(study, sims, level)
    km = km_table(study, sims, level)
    gof = gof_table(study, sims, np.random.default_rng(seed))
    pct = burden[burden.panel == "burden_percentile"]
    frac = burden[burden.panel == "fraction_blq"]
    z = gof.npde.to_numpy(float)
    summary = dict(
        replicates=int(replicates), seed=int(seed), level=level, method=fitted.method,
        uncertainty=bool(uncertainty),
        burden_percentiles=dict(inside=int(pct.inside.sum()), n=int(len(pct))),
        fraction_blq=dict(inside=int(frac.inside.sum()), n=int(len(frac))),
        km=dict(inside_fraction=float(km.inside.mean()) if len(km) else float("nan"),
                n_days=int(len(km))),
        npde=dict(mean=float(np.mean(z)), sd=float(np.std(z, ddof=1)) if z.size > 1
                  else float("nan"), n=int(z.size)))
    return VpcResult(burden, km, gof, summary, sims)


def _load(fit_path, study_path, uncertainty):
    from dormancy_model.fitting.study import load_study
    from dormancy_model.params.fitfile import check_fit_model, read_fit
    from dormancy_model.params.table import load_model_parameters

    src = str(fit_path)
    doc = read_fit(fit_path)
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InputError(src, "model", "missing (the parameter set the fit was made for)")
    try:
        params = load_model_parameters(model)
    except InputError as e:
        raise InputError(src, "model", f"{model!r}: {e.problem}") from None
    check_fit_model(doc, params, src)
    meta = doc.get("study")
    if not isinstance(meta, dict) or not isinstance(meta.get("path"), str):
        raise InputError(src, "study.path", "missing (pass --study)")
    where = study_path if study_path is not None else meta["path"]
    try:
        study = load_study(where)
    except InputError as e:
        if study_path is None:
            raise InputError(src, "study.path", f"{e}; pass --study") from None
        raise
    arms = meta.get("arms")
    if isinstance(arms, list) and tuple(arms) != study.arm_names:
        study = study.subset([str(a) for a in arms], source=src)
    if meta.get("data_hash") and meta["data_hash"] != study.data_hash:
        raise InputError("--study" if study_path is not None else src, "study.data_hash",
                         f"the study at {where} is not the one fitted (its data differ)")
    return doc, params, study, fitted_model(doc, params, src, uncertainty=uncertainty)


def run_vpc(fit_path, out, *, replicates: int = 200, seed: int = 0, study=None,
            uncertainty: bool = False) -> tuple[VpcResult, list[str]]:
    """Read the fit JSON `fit_path` and its study (`study`: another path to it; the fit's
    data hash must match), check everything, run `vpc`, write the files into `out` (module
    docstring). Returns (result, file names)."""
    from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_json, output_dir

    if isinstance(replicates, bool) or not isinstance(replicates, int) or not (
            1 <= replicates <= MAX_REPLICATES):
        raise InputError("--replicates", "replicates",
                         f"must be in [1, {MAX_REPLICATES}], got {replicates!r}")
    check_seed("--seed", "seed", seed)
    from dormancy_model.io import check_out_dir

    check_out_dir(out)
    doc, params, st, fitted = _load(fit_path, study, uncertainty)
    result = vpc(fitted, st, params, replicates=replicates, seed=seed, uncertainty=uncertainty)
    from dormancy_model._version import __version__

    result.summary.update(fit=str(fit_path), fit_status=doc.get("status"),
                          study=st.path, synthetic=st.synthetic, package_version=__version__)
    import matplotlib.pyplot as plt

    from dormancy_model.fitting.vpc.plots import plot_gof, plot_vpc_burden, plot_vpc_km

    figs = {"vpc_burden.png": plot_vpc_burden(st, result.burden),
            "vpc_km.png": plot_vpc_km(st, result.km),
            "gof.png": plot_gof(result.gof, result.summary)}
    with output_dir(out) as tmp:
        tmp = Path(tmp)
        for name, fig in figs.items():
            atomic_savefig(fig, tmp / name, dpi=100)
            plt.close(fig)
        table = pd.concat([result.burden, result.km], ignore_index=True)
        atomic_write_csv(tmp / "vpc.csv", table)
        atomic_write_csv(tmp / "gof.csv", result.gof)
        atomic_write_json(tmp / "summary.json", _json_ready(result.summary))
    return result, [*figs, "vpc.csv", "gof.csv", "summary.json"]
