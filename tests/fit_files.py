"""Fit JSON files in the format `dormancy fit` writes, made without fitting: a `FitResult` with
chosen estimates and covariance, written by the package's own writer (`fitting.files.write_fit`),
so that the file has exactly the fields and layout of a real fit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dormancy_model.fitting.estimate import FitResult, StartResult
from dormancy_model.fitting.files import write_fit
from dormancy_model.params.table import load_model_parameters


def make_fit_result(params, estimate: dict, covariance, scales=None) -> FitResult:
    """A FitResult of `params` (a parameter set) with `estimate` (internal units; burden_sigma
    allowed) and `covariance` on each parameter's scale (k x k, ordered as `estimate`)."""
    names = tuple(estimate)
    cov = np.asarray(covariance, float)
    scales = tuple(scales or ["log" if n == "burden_sigma" else params.spec[n].scale
                              for n in names])
    units = tuple("1" if n == "burden_sigma" else params.spec[n].unit for n in names)
    factors = tuple(1.0 if n == "burden_sigma" else params.spec[n].factor for n in names)
    se = {n: float(np.sqrt(cov[j, j])) if cov[j, j] > 0 else float("nan")
          for j, n in enumerate(names)}
    start = StartResult(0, dict(estimate), dict(estimate), 12.5, True, 1e-6, 10)
    return FitResult(
        names=names, scales=scales, units=units, unit_factors=factors,
        estimate=dict(estimate), scale_estimate={n: float(np.log(v)) for n, v in estimate.items()},
        se=se, ci_low={n: v * 0.5 for n, v in estimate.items()},
        ci_high={n: v * 2.0 for n, v in estimate.items()},
        identifiable={n: True for n in names}, objective=12.5, loglik_burden=-10.0,
        loglik_relapse=-2.5, aic=2 * len(names) + 25.0, n_obs=40, starts=[start],
        hessian=np.linalg.pinv(cov).tolist(), covariance=cov.tolist(), seed=0)


STUDY = SimpleNamespace(name="hand-made", path="nowhere", data_hash="0" * 16, synthetic=True,
                        arm_names=("vehicle",), body_weight_kg=0.02)


def write_fit_file(path, model: str, estimate: dict, covariance, **kw) -> dict:
    """Write a fit JSON of parameter set `model` (name or file) at `path`; returns the doc."""
    params = load_model_parameters(model)
    return write_fit(path, make_fit_result(params, estimate, covariance, **kw), STUDY, model,
                     params)
