"""Demo stage: the three CLEVER arms and observation on the human model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_json
from dormancy_model.model.ode import DormancyModel
from dormancy_model.model.plots import plot_arms, plot_trajectory
from dormancy_model.model.simulate import simulate
from dormancy_model.model.summary import summarize
from dormancy_model.params.table import load_model_parameters
from dormancy_model.pk.presets import get_schedule

ARMS = ("observation", "clever-hcq", "clever-eve", "clever-combo")


def run(out: Path) -> str:
    out = Path(out) / "simulate"
    out.mkdir(parents=True, exist_ok=True)
    model, params = DormancyModel(), load_model_parameters("human")
    trajs, summaries, frames = {}, {}, []
    for arm in ARMS:
        sched = get_schedule(arm)
        tr = simulate(model, params, sched, years=5).raise_if_failed()
        trajs[arm] = tr
        summaries[arm] = summarize(tr, sched)
        df = tr.to_dataframe()
        df.insert(0, "arm", arm)
        frames.append(df)
        fig = plot_trajectory(tr, sched, title=f"{arm}: {sched.describe()}")
        atomic_savefig(fig, out / f"trajectory_{arm}.png", dpi=100)
    atomic_write_csv(out / "trajectories.csv", pd.concat(frames, ignore_index=True))
    atomic_write_json(out / "summary.json", summaries)
    atomic_savefig(plot_arms(trajs), out / "arms.png", dpi=110)
    rows = [f"{a}: residual after C6 {s['residual_after_cycle_6']:.2f}, "
            f"3y RFS {s['relapse_free_3y']:.3f}" for a, s in summaries.items()]
    return "; ".join(rows)
