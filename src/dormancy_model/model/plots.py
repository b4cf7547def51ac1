"""Figures (thin: results in, matplotlib figures out; no numerics here)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dormancy_model.units import DAYS_PER_YEAR  # noqa: E402

ARM_COLOURS = {"observation": "0.4", "clever-hcq": "tab:blue", "clever-eve": "tab:orange",
               "clever-combo": "tab:green"}


LESION_LABEL = "expected cells in undetected lesions\n(mean over patients; most have none)"


def plot_trajectory(traj, schedule, title=None):
    """Marrow DTCs (log), the expected lesion burden (log, its own panel), drug concentrations
    with dose marks, mTOR/autophagy, relapse-free."""
    t = np.asarray(traj.times)
    fig, axes = plt.subplots(5, 1, figsize=(8, 12), sharex=True,
                             gridspec_kw=dict(height_ratios=[1.2, 0.8, 1, 1, 1]))
    for name, lab in (("dormant", "D"), ("reactivating", "R"),
                      ("marrow_proliferating", "P (clones below the switch size)")):
        axes[0].plot(t, np.maximum(np.asarray(getattr(traj, name)), 1e-6), label=lab)
    axes[0].plot(t, np.maximum(np.asarray(traj.marrow), 1e-6), "k--", lw=1,
                 label="marrow D+R+P")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("marrow DTCs (cells)")
    axes[0].legend(loc="best", fontsize=8)
    axes[1].plot(t, np.maximum(np.asarray(traj.lesion_cells), 1e-6), color="tab:red")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(LESION_LABEL, fontsize=8)
    a1 = axes[2]
    a1.plot(t, np.asarray(traj.eve_ng_ml), color="tab:orange", label="EVE (ng/mL)")
    a1.set_ylabel("EVE ng/mL", color="tab:orange")
    a1b = a1.twinx()
    a1b.plot(t, np.asarray(traj.hcq_ng_ml), color="tab:blue", label="HCQ blood")
    a1b.plot(t, np.asarray(traj.hcq_effect_ng_ml), color="tab:blue", ls=":",
             label="HCQ effect site")
    a1b.set_ylabel("HCQ ng/mL", color="tab:blue")
    for drug, colour, y in (("hcq", "tab:blue", 0.97), ("eve", "tab:orange", 0.92)):
        times, amount, _, _ = schedule.events(drug)
        times = times[amount > 0]
        if times.size:
            a1.plot(times, np.full(times.shape, y), "|", color=colour, ms=6,
                    transform=a1.get_xaxis_transform(), label=f"{drug.upper()} doses")
    a1b.legend(loc="upper right", fontsize=8)
    axes[3].plot(t, np.asarray(traj.mtor_activity), label="mTORC1 activity")
    axes[3].plot(t, np.asarray(traj.autophagy_flux), label="autophagy flux")
    axes[3].plot(t, np.asarray(traj.autophagy_deficit), label="autophagy deficit")
    axes[3].set_ylabel("relative to untreated")
    axes[3].legend(loc="best", fontsize=8)
    axes[4].plot(t, np.asarray(traj.relapse_free), color="k")
    axes[4].set_ylabel("relapse-free probability")
    axes[4].set_xlabel("day")
    axes[4].set_ylim(-0.02, 1.02)
    fig.suptitle(title or schedule.describe(), fontsize=10)
    fig.tight_layout()
    return fig


def plot_arms(trajs: dict, end_of_treatment: float = 168.0):
    """Compare arms: marrow DTCs (log), the expected lesion burden (log), P(DTC+) of the
    marrow, relapse-free probability."""
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    for name, tr in trajs.items():
        t = np.asarray(tr.times)
        c = ARM_COLOURS.get(name)
        ax[0].plot(t, np.maximum(np.asarray(tr.marrow), 1e-6), label=name, color=c)
        ax[1].plot(t / DAYS_PER_YEAR, np.maximum(np.asarray(tr.lesion_cells), 1e-6),
                   label=name, color=c)
        ax[2].plot(t, np.asarray(tr.p_dtc_positive), label=name, color=c)
        ax[3].plot(t / DAYS_PER_YEAR, np.asarray(tr.relapse_free), label=name, color=c)
    ax[0].set_yscale("log")
    ax[0].set_xlim(0, max(2 * end_of_treatment, 1.0))
    ax[0].set_ylabel("marrow DTCs (D+R+P below the switch size)")
    ax[0].set_xlabel("day")
    ax[1].set_yscale("log")
    ax[1].set_ylabel(LESION_LABEL, fontsize=8)
    ax[1].set_xlabel("years")
    ax[2].set_xlim(0, max(2 * end_of_treatment, 1.0))
    ax[2].set_ylabel("P(DTC+) of one aspirate")
    ax[2].set_xlabel("day")
    ax[3].set_ylabel("relapse-free probability")
    ax[3].set_xlabel("years")
    ax[3].set_ylim(0, 1.02)
    for a in ax:
        years = a is ax[1] or a is ax[3]
        a.axvline(end_of_treatment / DAYS_PER_YEAR if years else end_of_treatment,
                  color="0.8", ls="--", lw=1)
    ax[3].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
