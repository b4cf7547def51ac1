"""Regimen design: the dose, frequency, on-days and number of cycles that best achieve an
objective on a virtual population within toxicity limits, by gradient through the model.

`load_design_spec` reads a design spec (TOML, `spec.py`), `design` optimises it
(`optimise.py`), `run_design` writes the schedules, table, figures and the virtual-trial
comparison (`pipeline.py`)."""

from dormancy_model.regimens.optimise import Candidate, DesignResult, design, evaluate
from dormancy_model.regimens.problem import Problem, Regimen
from dormancy_model.regimens.spec import DesignSpec, load_design_spec, parse_design_spec

__all__ = ["Candidate", "DesignResult", "DesignSpec", "Problem", "Regimen", "design", "evaluate",
           "load_design_spec", "parse_design_spec"]
