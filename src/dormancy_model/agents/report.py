"""Summaries and figures of agent-model results (thin: results in, numbers/figures out)."""

from __future__ import annotations

import math

import numpy as np

from dormancy_model.units import DAYS_PER_YEAR

Z95 = 1.959963984540054


def wilson(successes: int, n: int) -> list[float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = successes / n
    den = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return [lo, hi]


def proportion(flags) -> dict:
    flags = np.asarray(flags, bool)
    k, n = int(flags.sum()), int(flags.size)
    return {"estimate": k / n if n else float("nan"), "ci95": wilson(k, n), "n": n}


def relapse_free_at(result, day: float):
    """Fraction relapse-free at `day` with a 95% CI (every replicate is followed to t1, so
    there is no censoring before t1); None beyond the horizon."""
    if day > result.t1 + 1e-9:
        return None
    return proportion(~(np.asarray(result.relapse_day) <= day))


def median_relapse_day(result):
    """Day by which half of the replicates relapsed (None when fewer than half did by t1)."""
    days = np.sort(np.asarray(result.relapse_day))
    n = days.size
    k = math.ceil(n / 2)
    if n == 0 or not np.isfinite(days[k - 1]):
        return None
    return float(days[k - 1])


def summarize_agents(result) -> dict:
    out = {
        "method": result.method,
        "n_replicates": int(len(result.cleared)),
        "horizon_day": result.t1,
        "clearance_probability": proportion(result.cleared),
        "relapse_probability": proportion(result.relapsed),
        "relapse_free_3y": relapse_free_at(result, 3 * DAYS_PER_YEAR),
        "relapse_free_5y": relapse_free_at(result, 5 * DAYS_PER_YEAR),
        "median_relapse_day": median_relapse_day(result),
        "dtc_positive": {f"day_{d:g}": proportion(result.dtc_positive[:, j])
                         for j, d in enumerate(result.assess_days)},
        "status": result.message,
    }
    return out


def step_curve(event_days, t1: float, grid=None):
    """(t, fraction with event by t) on a grid (for plotting)."""
    grid = np.linspace(0.0, t1, 400) if grid is None else grid
    ev = np.sort(np.asarray(event_days))
    return grid, np.searchsorted(ev, grid, side="right") / max(ev.size, 1)


def plot_agents(result, title: str = "", n_paths: int = 8):
    """Relapse-free fraction, fraction cleared over time and sample paths. Every replicate is
    followed to t1 (no censoring before it), so the fractions are empirical: the Kaplan-Meier
    estimate equals them."""
    from dormancy_model.model.plots import plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    t1 = result.t1
    years = lambda d: np.asarray(d) / DAYS_PER_YEAR  # noqa: E731
    t, rel = step_curve(result.relapse_day, t1)
    ax[0].step(years(t), 1 - rel, where="post", color="tab:red")
    ax[0].set_ylim(0, 1.02)
    ax[0].set_xlabel("years")
    ax[0].set_ylabel("relapse-free (fraction of replicates)")
    t, cl = step_curve(result.clearance_day, t1)
    ax[1].step(years(t), cl, where="post", color="tab:green")
    ax[1].set_ylim(0, 1.02)
    ax[1].set_xlabel("years")
    ax[1].set_ylabel("fraction cleared (no cells left)")
    if len(result.count_days):
        tot = result.counts.sum(axis=2)
        for i in range(min(n_paths, tot.shape[0])):
            ax[2].step(years(result.count_days), np.maximum(tot[i], 0.5), where="post", lw=1)
        ax[2].set_yscale("log")
        ax[2].axhline(1.0, color="0.6", lw=0.5)
    ax[2].set_xlabel("years")
    ax[2].set_ylabel("cells D+R+P (sample paths; 0 drawn at 0.5)")
    fig.suptitle(title or f"agent model ({result.method}), {len(result.cleared)} replicates")
    fig.tight_layout()
    return fig


def plot_arms_agents(results: dict):
    """Relapse-free and cleared fractions of several arms on shared axes."""
    from dormancy_model.model.plots import ARM_COLOURS, plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, res in results.items():
        c = ARM_COLOURS.get(arm)
        t, rel = step_curve(res.relapse_day, res.t1)
        ax[0].step(t / DAYS_PER_YEAR, 1 - rel, where="post", label=arm, color=c)
        t, cl = step_curve(res.clearance_day, res.t1)
        ax[1].step(t / DAYS_PER_YEAR, cl, where="post", label=arm, color=c)
    ax[0].set_ylabel("relapse-free")
    ax[1].set_ylabel("fraction cleared")
    for a in ax:
        a.set_xlabel("years")
        a.set_ylim(0, 1.02)
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig
