"""dormancy_model: mechanistic modelling of breast-cancer tumour dormancy.

Public verbs: `simulate` (deterministic ODE). Parameters: `load_parameters`.
Schedules: `get_schedule`, `load_schedule`, `PRESETS`.
"""

import jax

jax.config.update("jax_enable_x64", True)

from dormancy_model._version import __version__  # noqa: E402
from dormancy_model.agents.simulate import AgentResult, AgentState, Heterogeneity, simulate_agents  # noqa: E402
from dormancy_model.errors import InputError  # noqa: E402
from dormancy_model.model.integrate import SolverOptions  # noqa: E402
from dormancy_model.model.ode import DormancyModel  # noqa: E402
from dormancy_model.model.simulate import SolveError, Trajectory, simulate  # noqa: E402
from dormancy_model.params.table import Parameters, load_model_parameters, load_parameters  # noqa: E402
from dormancy_model.pk.presets import PRESETS, get_schedule  # noqa: E402
from dormancy_model.pk.schedule import DoseLine, Schedule, load_schedule  # noqa: E402

__all__ = [
    "DormancyModel", "DoseLine", "InputError", "PRESETS", "Parameters", "Schedule", "SolveError",
    "SolverOptions", "Trajectory", "get_schedule", "load_model_parameters", "load_parameters",
    "load_schedule", "simulate", "__version__",
    "AgentResult", "AgentState", "Heterogeneity", "simulate_agents",
]
