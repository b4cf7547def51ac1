"""Figures of a fit (thin: data and fitted curves in, matplotlib figures out).

* burden vs dose per duration (data, fitted residual and the 95% predictive band of one mouse);
* Kaplan-Meier per arm with the fitted relapse-free curves;
* residual burden vs relapse-free survival across arms;
* waterfall of the starts; profile likelihoods;
* population fits: the per-animal random effects against the fitted between-animal law.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dormancy_model.model.survival import kaplan_meier  # noqa: E402

DRUG_COLOURS = {(): "0.3", ("hcq",): "tab:blue", ("eve",): "tab:orange",
                ("eve", "hcq"): "tab:green"}


def arm_design(arm):
    """(drugs tuple, total mg/kg per dose of the drugs, treatment days) of a study arm."""
    s = arm.schedule
    dose = sum(ln.amount for ln in s.lines)
    return s.drugs, dose, s.end_of_treatment


def plot_burden_dose(study, days, residual, sigma, fraction=1.0):
    """Residual burden (log) vs dose, one panel per treatment duration."""
    durations = sorted({arm_design(a)[2] for a in study.arms if a.schedule.lines})
    fig, axes = plt.subplots(1, max(len(durations), 1), figsize=(5.5 * max(len(durations), 1), 4.2),
                             squeeze=False, sharey=True)
    b = study.burden
    for ax, dur in zip(axes[0], durations, strict=False):
        for drugs in sorted({arm_design(a)[0] for a in study.arms}):
            arms = [i for i, a in enumerate(study.arms) if arm_design(a)[0] == drugs
                    and (arm_design(a)[2] == dur or not drugs)]
            arms.sort(key=lambda i: arm_design(study.arms[i])[1])
            if not arms:
                continue
            col = DRUG_COLOURS.get(drugs, "k")
            label = "+".join(d.upper() for d in drugs) or "vehicle"
            xs, mean = [], []
            for x, i in enumerate(arms if drugs else arms[:1]):
                xpos = x + 1 if drugs else 0
                if not (b.arm == i).any():  # an arm without counts (e.g. PK rows only)
                    continue
                rows = (b.arm == i) & (b.day == b.day[b.arm == i].min())
                day = b.day[rows][0] if rows.any() else None
                y = np.where(b.censored[rows], b.detection_limit[rows], b.cells[rows])
                ax.scatter(np.full(y.shape, xpos) + 0.06 * np.random.default_rng(i).standard_normal(
                    y.size), y / b.sampled_fraction[rows], s=14, color=col,
                    marker="o", alpha=0.7, edgecolors="none")
                if day is not None:
                    k = int(np.searchsorted(days, day))
                    xs.append(xpos)
                    mean.append(residual[i, k] * fraction)
            if xs:
                mean = np.array(mean)
                ax.plot(xs, mean, "-", color=col, label=label)
                ax.fill_between(xs, mean * np.exp(-1.96 * sigma), mean * np.exp(1.96 * sigma),
                                color=col, alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"{dur:g}-day treatment: burden at end of treatment")
        ax.set_xlabel("dose level (0 vehicle, 1-3 increasing mg/kg)")
    axes[0][0].set_ylabel("residual tumour cells (data / sampled fraction)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Residual burden vs dose: data, fit and 95% predictive band (one mouse)")
    fig.tight_layout()
    return fig


def plot_km(study, days, rfs):
    n = len(study.arms)
    cols = min(5, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False,
                             sharex=True, sharey=True)
    s = study.survival
    for i, arm in enumerate(study.arms):
        ax = axes[i // cols][i % cols]
        sel = s.arm == i
        km = kaplan_meier(s.day[sel], s.event[sel])
        ax.step(km.times, km.survival, where="post", color="k", lw=1.2, label="Kaplan-Meier")
        ax.plot(days, rfs[i], color=DRUG_COLOURS.get(arm.schedule.drugs, "tab:red"),
                label="fitted RFS")
        ax.set_title(arm.name, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("day")
    fig.supylabel("relapse-free")
    fig.tight_layout()
    return fig


def plot_burden_vs_rfs(study, days, residual, rfs):
    """Per arm: geometric mean of the end-of-treatment burden vs the relapse-free fraction at
    the last follow-up day (Kaplan-Meier), with the model's values."""
    b, s = study.burden, study.survival
    t_end = float(s.day.max())
    k_end = int(np.searchsorted(days, t_end))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, arm in enumerate(study.arms):
        col = DRUG_COLOURS.get(arm.schedule.drugs, "k")
        rows = (b.arm == i) & (b.day == b.day[b.arm == i].min()) if (b.arm == i).any() else None
        if rows is None:
            continue
        y = np.where(b.censored[rows], b.detection_limit[rows], b.cells[rows])
        gm = float(np.exp(np.mean(np.log(y / b.sampled_fraction[rows]))))
        km = kaplan_meier(s.day[s.arm == i], s.event[s.arm == i])
        ax.scatter(gm, km.survival[-1], color=col, s=25)
        day = b.day[rows][0]
        ax.scatter(residual[i, int(np.searchsorted(days, day))], rfs[i, k_end], color=col,
                   marker="x", s=30)
    ax.scatter([], [], color="k", s=25, label="data (geometric mean, KM)")
    ax.scatter([], [], color="k", marker="x", s=30, label="fit")
    ax.set_xscale("log")
    ax.set_xlabel("residual tumour cells at end of treatment")
    ax.set_ylabel(f"relapse-free at day {t_end:g}")
    ax.legend(fontsize=8)
    ax.set_title("Residual burden vs relapse-free survival (one point per arm)")
    fig.tight_layout()
    return fig


def plot_waterfall(objectives, converged):
    f = np.asarray(objectives, float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = np.arange(1, f.size + 1)
    best = np.nanmin(f)
    y = f - best + 1e-3
    conv = np.asarray(converged, bool)
    ax.plot(x, y, "-", color="0.6")
    ax.scatter(x[conv], y[conv], color="tab:green", label="converged", zorder=3)
    ax.scatter(x[~conv], y[~conv], color="tab:red", label="not converged", zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("start (sorted by objective)")
    ax.set_ylabel("nll - best nll (+1e-3)")
    ax.set_title("Waterfall of starts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_profiles(profiles, estimate, f_best, threshold):
    n = len(profiles)
    fig, axes = plt.subplots(1, max(n, 1), figsize=(4.2 * max(n, 1), 3.6), squeeze=False)
    for ax, (name, p) in zip(axes[0], profiles.items(), strict=False):
        ax.plot(p.values, np.asarray(p.objective) - f_best, "o-")
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label="95% (chi2_1 / 2)")
        ax.axvline(estimate[name], color="0.5", lw=1)
        ax.set_xscale("log" if min(p.values) > 0 else "linear")
        ax.set_xlabel(name)
        ax.set_ylabel("nll - best")
        ax.legend(fontsize=7)
    fig.suptitle("Profile likelihoods")
    fig.tight_layout()
    return fig


def plot_eta_distributions(population: dict):
    """Histogram of the per-animal random effects (EBEs for a Laplace fit, posterior means for
    NUTS) of every random effect, with the fitted between-animal law Normal(0, omega^2) on the
    transform scale; the shrinkage (Laplace) in the title."""
    names = population["random_effects"]
    eta = np.array([a["eta"] for a in population["ebe"].values()], float)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for k, (ax, r) in enumerate(zip(axes[0], names, strict=True)):
        v = population["random"][r]
        e = eta[:, k][np.isfinite(eta[:, k])]
        sd = v.get("sd") or 0.0
        span = max(3 * sd, np.max(np.abs(e), initial=0.0) * 1.1, 1e-6)
        ax.hist(e, bins=20, range=(-span, span), density=True, color="0.7",
                label=f"{e.size} animals")
        if sd > 0:
            x = np.linspace(-span, span, 200)
            ax.plot(x, np.exp(-0.5 * (x / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), "k-",
                    label=f"Normal(0, {sd:.3g}$^2$)")
        sh = v.get("shrinkage")
        ax.set_title(f"eta({r})" + ("" if sh is None else f"  shrinkage {100 * sh:.0f}%"))
        ax.set_xlabel("random effect (transform scale)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
