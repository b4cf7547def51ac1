"""Posterior calibration files in the format `dormancy calibrate --posterior` writes, made
without calibrating: a `PosteriorResult` with chosen draws, written by the package's own writer
(`trials.posterior.posterior_record`), so the file has exactly the fields and layout of a real
posterior (draws per parameter shaped (chains, samples), natural units)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dormancy_model.params.table import load_model_parameters
from dormancy_model.trials import posterior as P


def lognormal_draws(medians: dict, log_sd: dict, *, chains: int = 2, samples: int = 50,
                    seed: int = 0) -> dict:
    """name -> (chains, samples) log-normal draws (natural units)."""
    rng = np.random.default_rng(seed)
    return {n: m * np.exp(log_sd[n] * rng.standard_normal((chains, samples)))
            for n, m in medians.items()}


def posterior_record(draws: dict, model: str = "human", warnings=()) -> dict:
    params = load_model_parameters(model)
    names = tuple(draws)
    prior = P.default_prior(params, None, names)
    res = P.PosteriorResult(
        names=names, prior=prior, draws={n: np.log(np.asarray(v, float)) for n, v in draws.items()},
        design_theta=np.zeros((0, len(names))), design_values={}, design_mc_var={},
        emulator=None, diagnostics={"warnings": list(warnings), "max_rhat": 1.0},
        summary=pd.DataFrame(), predictive=pd.DataFrame(), settings={"targets": {}})
    return P.posterior_record(res, params, 0, "made by tests/posterior_files.py", "test")


def write_posterior_file(path, draws: dict, model: str = "human", warnings=()) -> dict:
    rec = posterior_record(draws, model, warnings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, allow_nan=False))
    return rec
