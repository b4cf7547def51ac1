"""Virtual-trial report: report.md and report.html with tables and figures (thin: results in,
files out; no numerics beyond summaries)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_text
from dormancy_model.model.survival import kaplan_meier
from dormancy_model.trials import analysis as TA

ARM_COLOURS = {"HCQ": "tab:blue", "EVE": "tab:orange", "HCQ+EVE": "tab:green",
               "observation": "tab:gray"}
SUMMARY_METRICS = [("clearance_C3", "DTC- after C3"), ("clearance_C6", "DTC- after C6"),
                   ("clearance_eot", "DTC- at end of tx"),
                   ("cleared_true_eot", "no cell left at end of tx (model)"),
                   ("extension_fraction", "extended to 12 cycles"),
                   ("reduction_C3", "DTC reduction C3 (Poisson)"),
                   ("posterior_prob", "P(reduction vs obs.)"),
                   ("posterior_prob_80", "P(>=80% reduction vs obs.)"),
                   ("rfs_3y", "3-year RFS (KM)"), ("relapses", "relapses per trial")]


VALIDATION_NOTE = (
    "Every published number the model should reproduce (PK, PD, these trial results, the "
    "untreated prognosis) beside the model's value, with sources and what is outside today: "
    "see docs/validation.md in the dormancy_model repository (regenerate it with "
    "`python scripts/validation.py --replicates 200`).")


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "NA" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        return f"{v:.3g}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


def arm_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Median [5%, 95%] over replicated trials of each endpoint, one row per arm."""
    rows = []
    for arm in trials["arm"].unique():
        row = {"arm": arm}
        for m, label in SUMMARY_METRICS:
            if m not in trials or trials.loc[trials["arm"] == arm, m].isna().all():
                row[label] = "NA"
                continue
            lo, med, hi = TA.spread(trials, m, arm)
            row[label] = f"{med:.3g} [{lo:.3g}, {hi:.3g}]"
        rows.append(row)
    return pd.DataFrame(rows)


def _figures(patients, trials, check, out: Path) -> list[tuple[str, str]]:
    from dormancy_model.model.plots import plt

    figs = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tr = patients[patients["arm"] != "observation"]
    for arm, g in tr.groupby("arm", sort=False):
        km = kaplan_meier(g["rfs_time"] / 30.4375, g["rfs_event"])
        ax.step(km.times, km.survival, where="post", color=ARM_COLOURS.get(arm), label=arm)
        ax.fill_between(km.times, km.lower, km.upper, step="post", color=ARM_COLOURS.get(arm),
                        alpha=0.25, lw=0)
    ax.legend()
    ax.axvline(36, color="k", ls=":", lw=0.8)
    ax.set_xlabel("months from start of treatment")
    ax.set_ylabel("relapse-free (Kaplan-Meier, all replicated trials pooled)")
    ax.set_ylim(0.5, 1.01)
    ax.set_title("Relapse-free survival per arm")
    atomic_savefig(fig, out / "km.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    figs.append(("km.png", "Kaplan-Meier RFS per arm (dotted: 3 years)"))

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    arms = [a for a in trials["arm"].unique() if a not in ("all treated",)]
    for k, (m, label) in enumerate((("clearance_C3", "after C3 / 3 months"),
                                    ("clearance_eot", "end of treatment"),
                                    ("cleared_true_eot", "true clearance (model)"))):
        for i, arm in enumerate(arms):
            lo, med, hi = TA.spread(trials, m, arm)
            if not np.isfinite(med):
                continue
            ax.errorbar(i + (k - 1) * 0.25, med, yerr=[[med - lo], [hi - med]], fmt="os^"[k],
                        color=ARM_COLOURS.get(arm, "k"), capsize=3,
                        label=label if i == 0 else None, mfc="white" if k == 2 else None)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("fraction DTC-negative")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("DTC clearance per arm (median, 90% interval over trials)")
    atomic_savefig(fig, out / "clearance.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    figs.append(("clearance.png", "DTC clearance per arm"))

    if check is not None and len(check):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        c = check[check["statistic"] != "hr_cleared"].reset_index(drop=True)
        for i, r in c.iterrows():
            ax.errorbar(i, r["sim_median"], yerr=[[r["sim_median"] - r["sim_p05"]],
                                                   [r["sim_p95"] - r["sim_median"]]],
                        fmt="o", color="tab:blue", capsize=3, label="simulated" if i == 0 else None)
            ax.plot(i, r["reported"], "r*", ms=10, label="reported" if i == 0 else None)
        ax.set_xticks(range(len(c)), [f"{s}\n{a}" for s, a in zip(c["statistic"], c["arm"],
                                                                   strict=True)],
                      fontsize=7, rotation=30)
        ax.legend(fontsize=8)
        ax.set_title("CLEVER reported vs simulated (median, 90% interval)")
        atomic_savefig(fig, out / "reported_vs_simulated.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs.append(("reported_vs_simulated.png", "Reported vs simulated"))
    return figs


def write_report(result, trials: pd.DataFrame, out_dir, *, check: pd.DataFrame | None = None,
                 whatifs: dict | None = None, notes: list[str] | None = None,
                 title: str = "Virtual CLEVER trial") -> dict:
    """Write report.md, report.html, trials.csv and figures; returns the headline numbers."""
    out = Path(out_dir)
    atomic_write_csv(out / "trials.csv", trials)
    figs = _figures(result.patients, trials, check, out)
    summ = arm_summary(trials)
    pooled = TA.pooled_hazard_ratio(result.patients)
    sections = [("Design", f"{result.design.describe()}.\n\n{result.replicates} replicated "
                           f"trials ({result.seed_info}).")]
    sections.append(("Endpoints per arm (median [5%, 95%] over replicated trials)", summ))
    hr = TA.spread(trials, "hr_cleared", "all treated")
    n_est = int(np.isfinite(trials.loc[trials["arm"] == "all treated", "hr_cleared"]).sum())
    sections.append(("Relapse: cleared vs persistent", (
        f"Cox HR of relapse, DTC- vs DTC+ after cycle 6 (persistent): median "
        f"{_fmt(hr[1])} [{_fmt(hr[0])}, {_fmt(hr[2])}] over the {n_est} of "
        f"{result.replicates} trials where it is estimable (relapses in both groups); pooled "
        f"over all simulated patients {_fmt(pooled.hr)} (95% CI {_fmt(pooled.lower95)}-"
        f"{_fmt(pooled.upper95)}). Published: 0.21 (0.01-3.4).")))
    if check is not None:
        sections.append(("Reported vs simulated", check.drop(columns=["source"])))
    sections.append(("Validation", VALIDATION_NOTE))
    for name, content in (whatifs or {}).items():
        sections.append((f"What if: {name}", content))
    if notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in notes)))
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for head, content in sections:
        md += [f"## {head}", ""]
        body.append(f"<h2>{html.escape(head)}</h2>")
        for part in content if isinstance(content, list) else [content]:
            if isinstance(part, pd.DataFrame):
                md += [md_table(part), ""]
                body.append(part.to_html(index=False, na_rep="NA", float_format=_fmt,
                                         border=0, classes="t"))
            else:
                md += [str(part), ""]
                body += [f"<p>{html.escape(p)}</p>" for p in str(part).split("\n\n")]
    md += ["## Figures", ""]
    body.append("<h2>Figures</h2>")
    for f, cap in figs:
        md += [f"![{cap}]({f})", ""]
        body.append(f'<figure><img src="{f}" alt="{html.escape(cap)}"><figcaption>'
                    f"{html.escape(cap)}</figcaption></figure>")
    style = ("<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
             "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{border:1px"
             " solid #ccc;padding:2px 6px}img{max-width:100%}</style>")
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "report.html", "<!doctype html><html><head><meta charset='utf-8'>"
                      f"<title>{html.escape(title)}</title>{style}</head><body>"
                      + "\n".join(body) + "</body></html>\n")
    return {"hr_pooled": pooled.hr, "figures": [f for f, _ in figs]}
