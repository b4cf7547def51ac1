"""dormancy_model: mechanistic modelling of breast-cancer tumour dormancy.

Public verbs:
    simulate         one individual, deterministic ODE (`model.simulate`)
    simulate_agents  per-patient stochastic agent model of the DTCs (`agents.simulate`)
    sweep            parameter/schedule grid or samples into a Zarr store (`sweeps.run`)
    fit              multistart fit of free parameters to a mouse study (`fitting.estimate`)
    trial            replicated virtual CLEVER trials (`trials.protocol`)
    calibrate        typical delta_max, k_dr fitted to the published CLEVER results
                     (`trials.calibrate`)
Inputs:
    load_parameters  a parameter set by packaged name (`human`, `mouse`) or TOML path
                     (`load_model_parameters` is the same function)
    get_schedule     a schedule preset by name (`PRESETS`) or a schedule TOML path
    load_schedule    a schedule TOML file
    load_study       a mouse study directory (`fitting.study`)

Options as values: `SolverOptions` (simulate), `AgentOptions` (simulate_agents), `FitOptions`
(fit). `fit`, `FitOptions`, `sweep`, `trial`, `calibrate` and `load_study` are imported on first
use (they pull in the heavier data-analysis libraries). Importing the package turns on JAX float64
(`jax_enable_x64`) for the whole process: see the README, "Python API".
"""

import importlib

import jax

# float64 for the closed-form PK (long terminal phases) and simulate's float64 default;
# float32 solves stay available through SolverOptions(dtype="float32")
jax.config.update("jax_enable_x64", True)

from dormancy_model._version import __version__  # noqa: E402
from dormancy_model.agents.simulate import (  # noqa: E402
    AgentOptions,
    AgentResult,
    AgentState,
    Heterogeneity,
    simulate_agents,
)
from dormancy_model.errors import InputError  # noqa: E402
from dormancy_model.model.integrate import SolverOptions  # noqa: E402
from dormancy_model.model.ode import DormancyModel  # noqa: E402
from dormancy_model.model.simulate import SolveError, Trajectory, simulate  # noqa: E402
from dormancy_model.params.table import Parameters, load_model_parameters  # noqa: E402
from dormancy_model.pk.presets import PRESETS, get_schedule  # noqa: E402
from dormancy_model.pk.schedule import DoseLine, Schedule, load_schedule  # noqa: E402

load_parameters = load_model_parameters  # one loader: packaged name or file path

_ON_FIRST_USE = {
    "fit": "dormancy_model.fitting.estimate",
    "FitOptions": "dormancy_model.fitting.estimate",
    "sweep": "dormancy_model.sweeps.run",
    "trial": "dormancy_model.trials.protocol",
    "calibrate": "dormancy_model.trials.calibrate",
    "load_study": "dormancy_model.fitting.study",
    "design": "dormancy_model.regimens.optimise",
    "load_design_spec": "dormancy_model.regimens.spec",
}


def __getattr__(name):
    if name in _ON_FIRST_USE:
        value = getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dormancy_model' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))


__all__ = [
    "simulate", "simulate_agents", "sweep", "fit", "trial", "calibrate", "design",
    "load_design_spec", "load_parameters", "load_model_parameters", "get_schedule",
    "load_schedule", "load_study",
    "AgentOptions", "AgentResult", "AgentState", "FitOptions", "DormancyModel", "DoseLine",
    "Heterogeneity", "InputError",
    "PRESETS", "Parameters", "Schedule", "SolveError", "SolverOptions", "Trajectory",
    "__version__",
]
