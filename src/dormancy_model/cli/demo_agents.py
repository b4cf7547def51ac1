"""Demo stage: the agent model on the three CLEVER arms (and observation): clearance and
relapse as chance events per virtual patient."""

from __future__ import annotations

from pathlib import Path

import jax

from dormancy_model.agents.report import plot_agents, plot_arms_agents, summarize_agents
from dormancy_model.agents.simulate import AgentOptions, simulate_agents
from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_json
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import load_model_parameters
from dormancy_model.pk.schedule import get_schedule
from dormancy_model.units import DAYS_PER_YEAR

ARMS = ("observation", "clever-hcq", "clever-eve", "clever-combo")
N_PATIENTS = 2000


def run(out: Path) -> str:
    out = Path(out) / "agents"
    out.mkdir(parents=True, exist_ok=True)
    model, params = DormancyModel(), load_model_parameters("human")
    t1 = 5 * DAYS_PER_YEAR
    count_days = [float(d) for d in range(0, int(t1), 28)] + [t1]
    options = AgentOptions(method="fast", count_days=count_days,
                           assess_days=(84.0, 168.0, 350.0))
    results, summaries = {}, {}
    for i, arm in enumerate(ARMS):
        res = simulate_agents(model, params, get_schedule(arm), n_replicates=N_PATIENTS,
                              key=jax.random.PRNGKey(i), t1=t1, options=options)
        results[arm] = res
        summaries[arm] = summarize_agents(res)
        df = res.to_dataframe()
        keep = ["replicate", "cleared", "clearance_day", "relapsed", "relapse_day"] + [
            c for c in df.columns if c.startswith("dtc_positive_day")]
        atomic_write_csv(out / f"replicates_{arm}.csv", df[keep])
        atomic_savefig(plot_agents(res, title=f"{arm}: {N_PATIENTS} virtual patients"),
                       out / f"agents_{arm}.png", dpi=100)
    atomic_write_json(out / "summary.json", summaries)
    atomic_savefig(plot_arms_agents(results), out / "arms_agents.png", dpi=110)
    return "; ".join(f"{a}: cleared {s['clearance_probability']['estimate']:.2f}, "
                     f"5y RFS {s['relapse_free_5y']['estimate']:.3f}"
                     for a, s in summaries.items())
