"""Figures (thin: results in, matplotlib figures out; no numerics here)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dormancy_model.units import DAYS_PER_YEAR  # noqa: E402

ARM_COLOURS = {"observation": "0.4", "clever-hcq": "tab:blue", "clever-eve": "tab:orange",
               "clever-combo": "tab:green"}


def plot_trajectory(traj, schedule, title=None):
    """Cells (log), drug concentrations with dose marks, mTOR/autophagy, relapse-free."""
    t = np.asarray(traj.times)
    fig, ax = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    for name, lab in (("dormant", "D"), ("reactivating", "R"), ("proliferating", "P")):
        ax[0].plot(t, np.maximum(np.asarray(getattr(traj, name)), 1e-6), label=lab)
    ax[0].plot(t, np.asarray(traj.residual), "k--", lw=1, label="D+R+P")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("cells")
    ax[0].legend(loc="best", fontsize=8)
    a1 = ax[1]
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
    ax[2].plot(t, np.asarray(traj.mtor_activity), label="mTORC1 activity")
    ax[2].plot(t, np.asarray(traj.autophagy_flux), label="autophagy flux")
    ax[2].plot(t, np.asarray(traj.autophagy_deficit), label="autophagy deficit")
    ax[2].set_ylabel("relative to untreated")
    ax[2].legend(loc="best", fontsize=8)
    ax[3].plot(t, np.asarray(traj.relapse_free), color="k")
    ax[3].set_ylabel("relapse-free probability")
    ax[3].set_xlabel("day")
    ax[3].set_ylim(-0.02, 1.02)
    fig.suptitle(title or schedule.describe(), fontsize=10)
    fig.tight_layout()
    return fig


def plot_arms(trajs: dict, end_of_treatment: float = 168.0):
    """Compare arms: residual burden (log), P(DTC+), relapse-free probability."""
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for name, tr in trajs.items():
        t = np.asarray(tr.times)
        c = ARM_COLOURS.get(name)
        ax[0].plot(t, np.asarray(tr.residual), label=name, color=c)
        ax[1].plot(t, np.asarray(tr.p_dtc_positive), label=name, color=c)
        ax[2].plot(t / DAYS_PER_YEAR, np.asarray(tr.relapse_free), label=name, color=c)
    ax[0].set_yscale("log")
    ax[0].set_xlim(0, max(2 * end_of_treatment, 1.0))
    ax[0].set_ylabel("residual DTCs (D+R+P)")
    ax[0].set_xlabel("day")
    ax[1].set_xlim(0, max(2 * end_of_treatment, 1.0))
    ax[1].set_ylabel("P(DTC+) of one aspirate")
    ax[1].set_xlabel("day")
    ax[2].set_ylabel("relapse-free probability")
    ax[2].set_xlabel("years")
    ax[2].set_ylim(0, 1.02)
    for a in ax:
        a.axvline(end_of_treatment if a is not ax[2] else end_of_treatment / DAYS_PER_YEAR,
                  color="0.8", ls="--", lw=1)
    ax[2].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
