"""The untreated cohort: screened candidates (DTC-positive at screening or not) left untreated.

What the prognosis numbers are computed on: the validation rows (`validation.prognosis_rows`),
the posterior calibration's prognosis terms (`posterior.prognosis_quantities`) and the posterior
predictive check (`predictive.untreated_over_draws`). One source, so the three read the same
cohort law: candidates drawn as the trial screens them (`population.sample_patients` with
`screen=False`), every one followed 5 years without drug by the agent model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.units import DAYS_PER_YEAR


def untreated_cohort(params: Parameters, population, *, key, n: int,
                     model: DormancyModel | None = None, method: str = "fast") -> pd.DataFrame:
    """`n` screened candidates (positive or not) left untreated for 5 years, agent model:
    columns load (marrow DTCs at screening), baseline_count (DTCs seen in the screening
    aspirate) and relapse_day (inf: no relapse within 5 years)."""
    from dormancy_model.agents.simulate import AgentOptions, simulate_agents
    from dormancy_model.trials.design import clever_design
    from dormancy_model.trials.population import sample_patients
    from dormancy_model.trials.protocol import agent_chunk, arm_dosing, default_agent_options

    model = model or DormancyModel()
    scr = sample_patients(jax.random.fold_in(key, 0), n, population, params, screen=False)
    p = scr.params.with_values({k: jnp.asarray(v) for k, v in scr.params.values.items()})
    opts = AgentOptions(method=method, initial_count="fixed", chunk_size=agent_chunk(n),
                        **default_agent_options(method))
    res = simulate_agents(model, p, arm_dosing(clever_design(), None), n_replicates=n,
                          key=jax.random.fold_in(key, 1), t1=5 * DAYS_PER_YEAR, options=opts)
    f = float(population.base_params(params)["aspirate_fraction"])
    return pd.DataFrame({"load": scr.load, "baseline_count": scr.baseline_count,
                         "aspirate_mean": f * scr.load.astype(float),
                         "relapse_day": np.asarray(res.relapse_day, float)[:n]})
