"""VPC figures (thin: the tables of `pipeline` in, matplotlib figures out).

* `plot_vpc_burden`: per arm, the observed 10/50/90th percentiles of the counts per sampling
  day against the simulated 90% intervals of those percentiles (an observed BLQ percentile is
  a down triangle on the limit line; an interval bound that is BLQ is drawn at the bottom of
  the axis (lower) or at the limit (upper)), and below it the observed fraction below the
  limit against its simulated interval;
* `plot_vpc_km`: per arm, the observed Kaplan-Meier curve in the simulated 90% band;
* `plot_gof`: observed vs population prediction, vs individual prediction (population fits),
  NPDE vs day and the NPDE distribution against Normal(0, 1).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dormancy_model.fitting.plots import DRUG_COLOURS  # noqa: E402

PCT_COLOURS = {"p10": "tab:blue", "p50": "tab:red", "p90": "tab:blue"}


def _grid(n, cols=5, rows_per=1, size=(3.2, 2.6)):
    cols = min(cols, max(n, 1))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows * rows_per, cols, figsize=(size[0] * cols,
                                                             size[1] * rows * rows_per),
                             squeeze=False)
    return fig, axes, cols


def plot_vpc_burden(study, burden):
    """Burden percentiles and fraction below the limit per arm and day (`burden_table`)."""
    n = len(study.arms)
    fig, axes, cols = _grid(n, rows_per=2)
    for i, arm in enumerate(study.arms):
        ax = axes[2 * (i // cols)][i % cols]
        axf = axes[2 * (i // cols) + 1][i % cols]
        rows = burden[burden.arm == arm.name]
        pct = rows[rows.panel == "burden_percentile"]
        if pct.empty:
            ax.set_title(arm.name, fontsize=8)
            ax.text(0.5, 0.5, "no burden data", ha="center", va="center",
                    transform=ax.transAxes)
            axf.axis("off")
            continue
        days = np.unique(pct.day.to_numpy(float))
        width = 0.35 * (np.min(np.diff(days)) if days.size > 1 else 10.0)
        limit = pct.limit_cells.to_numpy(float)
        bottom = 0.3 * np.min(limit)
        for stat, off in (("p10", -0.3), ("p50", 0.0), ("p90", 0.3)):
            r = pct[pct.statistic == stat]
            x = r.day.to_numpy(float) + off * width
            # a BLQ bound is "somewhere below the limit": lo at the bottom, hi at the limit
            lim = r.limit_cells.to_numpy(float)
            lo = np.where(np.isneginf(r.log_lo), bottom, np.exp(r.log_lo.to_numpy(float)))
            hi = np.where(np.isneginf(r.log_hi), lim, np.exp(r.log_hi.to_numpy(float)))
            ax.bar(x, hi - lo, bottom=lo, width=0.28 * width, color=PCT_COLOURS[stat],
                   alpha=0.25, label="90% PI" if stat == "p50" else None)
            o = r.log_observed.to_numpy(float)
            q = np.isfinite(o)
            ax.scatter(x[q], np.exp(o[q]), color=PCT_COLOURS[stat], s=14, zorder=3,
                       marker="o", label=f"observed {stat}" if i == 0 else None)
            ax.scatter(x[~q], r.limit_cells.to_numpy(float)[~q], color=PCT_COLOURS[stat],
                       s=18, zorder=3, marker="v")
        for d, lim in zip(pct.day.to_numpy(float), limit, strict=True):
            ax.hlines(lim, d - width, d + width, color="0.4", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom)
        ax.set_title(arm.name, fontsize=8)
        fr = rows[rows.panel == "fraction_blq"]
        fd = fr.day.to_numpy(float)
        lo, hi = fr.sim_p05.to_numpy(float), fr.sim_p95.to_numpy(float)
        axf.bar(fd, np.maximum(hi - lo, 0.01), bottom=lo, width=0.5 * width, color="0.6",
                alpha=0.4)
        axf.scatter(fd, fr.observed.to_numpy(float), color=DRUG_COLOURS.get(
            arm.schedule.drugs, "k"), s=14, zorder=3)
        axf.set_ylim(-0.05, 1.05)
        axf.set_ylabel("fraction BLQ", fontsize=7)
    for j in range(n, axes.shape[1] * (axes.shape[0] // 2)):
        axes[2 * (j // cols)][j % cols].axis("off")
        axes[2 * (j // cols) + 1][j % cols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.supxlabel("day")
    fig.suptitle("Burden VPC: observed 10/50/90th percentiles (cells = count / sampled "
                 "fraction; v = below the limit) and the simulated 90% intervals; below: "
                 "fraction below the detection limit", fontsize=9)
    fig.tight_layout()
    return fig


def plot_vpc_km(study, km):
    """Observed Kaplan-Meier per arm in the simulated 90% band (`km_table`)."""
    names = [a.name for a in study.arms if (km.arm == a.name).any()] if len(km) else []
    fig, axes, cols = _grid(len(names))
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        r = km[km.arm == name]
        d = r.day.to_numpy(float)
        ax.fill_between(d, r.sim_p05.to_numpy(float), r.sim_p95.to_numpy(float), step="post",
                        color="tab:blue", alpha=0.25, label="simulated 90% band")
        ax.step(d, r.sim_p50.to_numpy(float), where="post", color="tab:blue", lw=0.8, ls="--",
                label="simulated median")
        ax.step(d, r.observed.to_numpy(float), where="post", color="k", lw=1.2,
                label="observed KM")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=8)
    for j in range(len(names), axes.size):
        axes[j // cols][j % cols].axis("off")
    if names:
        axes[0][0].legend(fontsize=6)
    fig.supxlabel("day")
    fig.supylabel("relapse-free")
    fig.suptitle("Kaplan-Meier VPC", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gof(gof, summary):
    """Goodness of fit of the burden rows (`gof_table`)."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    cens = gof.censored.to_numpy(bool)
    y = np.where(cens, gof.detection_limit, gof.observed).astype(float)
    for ax, col, label in ((axes[0], "pred", "population prediction (PRED)"),
                           (axes[1], "ipred", "individual prediction (IPRED)")):
        p = gof[col].to_numpy(float)
        ok = np.isfinite(p) & (y > 0)
        if not ok.any():
            ax.text(0.5, 0.5, "no individual estimates\n(pooled fit)", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label)
            continue
        ax.scatter(p[ok & ~cens], y[ok & ~cens], s=10, color="k", label="observed")
        ax.scatter(p[ok & cens], y[ok & cens], s=14, facecolors="none", edgecolors="tab:red",
                   marker="v", label="below the limit (at the limit)")
        lim = [min(p[ok].min(), y[ok].min()) * 0.5, max(p[ok].max(), y[ok].max()) * 2]
        ax.plot(lim, lim, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label + ", count in sample")
        ax.set_ylabel("observed count")
        ax.legend(fontsize=7)
    z = gof.npde.to_numpy(float)
    axes[2].scatter(gof.day, z, s=10, c=np.where(cens, "tab:red", "k"))
    for h in (0.0, -1.645, 1.645):
        axes[2].axhline(h, color="0.5", lw=0.8, ls="-" if h == 0 else "--")
    axes[2].set_xlabel("day")
    axes[2].set_ylabel("NPDE (red: censored, imputed)")
    zs = z[np.isfinite(z)]
    axes[3].hist(zs, bins=20, density=True, color="0.7")
    x = np.linspace(-3.5, 3.5, 200)
    axes[3].plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), "k-", label="Normal(0, 1)")
    npd = summary["npde"]
    axes[3].set_title(f"NPDE mean {npd['mean']:.2f}, sd {npd['sd']:.2f}", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.suptitle(f"Goodness of fit ({summary['method']} fit, {summary['replicates']} "
                 "replicates)", fontsize=9)
    fig.tight_layout()
    return fig
