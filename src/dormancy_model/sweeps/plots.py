"""Sweep figures (thin: a sweep Dataset in, matplotlib figures out)."""

from __future__ import annotations

import numpy as np

from dormancy_model.model.plots import plt

OUTPUT_LABELS = {"residual": "residual DTCs", "relapse_free": "relapse-free probability",
                 "p_dtc_positive": "P(DTC+)"}
DAY_DIMS = ("residual_day", "rfs_day", "assessment_day")


def _reduce(da, keep):
    """Mean over every dimension except `keep` (patients, samples, other factors)."""
    return da.mean([d for d in da.dims if d not in keep])


def _label(ds, dim):
    unit = ds[dim].attrs.get("units", "")
    return f"{dim} ({unit})" if unit and unit != "1" else dim


def heatmap(ds, var: str, day_dim: str, day_index: int, xdim: str, ydim: str):
    """Mean of `var` at one output day over an x/y pair of factors (e.g. HCQ x EVE dose)."""
    da = ds[var].isel({day_dim: day_index})
    z = _reduce(da, (ydim, xdim)).transpose(ydim, xdim).values
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(ds.sizes[xdim]), [f"{v:g}" for v in ds[xdim].values])
    ax.set_yticks(range(ds.sizes[ydim]), [f"{v:g}" for v in ds[ydim].values])
    ax.set_xlabel(_label(ds, xdim))
    ax.set_ylabel(_label(ds, ydim))
    for (i, j), v in np.ndenumerate(z):
        ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="w", fontsize=8)
    day = float(ds[day_dim].values[day_index])
    fig.colorbar(im, ax=ax, label=OUTPUT_LABELS[var])
    ax.set_title(f"{OUTPUT_LABELS[var]} at day {day:g} (mean)")
    fig.tight_layout()
    return fig


def lines(ds, var: str, day_dim: str, day_index: int, xdim: str, hue: str | None = None):
    """Mean of `var` at one output day along one factor (e.g. cycles), one line per `hue`."""
    da = ds[var].isel({day_dim: day_index})
    keep = (xdim,) + ((hue,) if hue else ())
    m = _reduce(da, keep)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = ds[xdim].values
    if hue:
        for v in ds[hue].values:
            ax.plot(x, m.sel({hue: v}).values, "o-", label=f"{hue} {v}")
        ax.legend(fontsize=8)
    else:
        ax.plot(x, m.values, "o-")
    ax.set_xlabel(_label(ds, xdim))
    ax.set_ylabel(OUTPUT_LABELS[var])
    ax.set_title(f"day {float(ds[day_dim].values[day_index]):g}")
    fig.tight_layout()
    return fig


def sensitivity_bars(result: dict, label: str):
    """First-order and total Sobol indices of one output."""
    names = result["parameters"]
    s = result["outputs"][label]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5))
    ax.bar(x - 0.2, s["S1"], 0.4, label="first order")
    ax.bar(x + 0.2, s["ST"], 0.4, label="total")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("Sobol index")
    ax.set_title(label)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sweep_figures(ds) -> dict:
    """Default figure set: heatmaps over the first two factors, lines along `cycles`."""
    factors = [d for d in ds["status"].dims if d not in ("patient", "sample")]
    figs = {}
    for var, dd in (("relapse_free", "rfs_day"), ("residual", "residual_day"),
                    ("p_dtc_positive", "assessment_day")):
        if var not in ds or ds.sizes.get(dd, 0) == 0:
            continue
        for k in range(ds.sizes[dd]):
            day = float(ds[dd].values[k])
            if len(factors) >= 2 and "schedule" not in factors[-2:]:
                y, x = factors[-2], factors[-1]
                figs[f"{var}_day{day:g}_{y}_x_{x}.png"] = heatmap(ds, var, dd, k, x, y)
            if "cycles" in factors:
                figs[f"{var}_day{day:g}_cycles.png"] = lines(ds, var, dd, k, "cycles")
            elif len(factors) == 1:
                figs[f"{var}_day{day:g}_{factors[0]}.png"] = lines(ds, var, dd, k, factors[0])
    return figs
