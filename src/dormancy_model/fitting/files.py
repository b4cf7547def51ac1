"""Fit JSON files: write (atomically) and read; apply a fit's estimates to a parameter set.

The file holds the estimates (file units and internal units, SEs in scale space, 95% CIs), the
objective and AIC, every start sorted by objective (with its convergence flag and status name),
profiles, the study's data hash, the package version, the settings and the seed. `status` (and
`status_code`) is the status of the best start by name from `dormancy_model.status` ("ok" when
its objective is finite); `read_fit` reads files written before it as "ok".
`model_set` records the parameter set's name and species, so that a fit is never applied to
another model. The reader (`read_fit`, `apply_fit`) is `params.fitfile`, below this package,
so that sweeps can draw from a fit too; `apply_fit(params, path)` is what
`dormancy simulate --params fits/NAME.json` uses for a pooled fit (a population fit:
`params.popfit.apply_fit_file`, its typical values or one animal's estimates).

A population fit (`dormancy fit --random ... --method laplace`) writes the typical values as
`estimates` (so every reader above keeps working), its objective (Laplace -log-likelihood, AIC,
BIC), `method`, and a `population` block (`population.study_fit.population_block`).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

from dormancy_model import status as S
from dormancy_model.io import atomic_write_json
from dormancy_model.params.fitfile import FORMAT, apply_fit, read_fit  # noqa: F401 (re-export)


def fit_to_json(result, study, model_path: str, params=None) -> dict:
    """A JSON-serialisable dict of a `FitResult` for a `Study`; `params`: the parameter set
    fitted (default: loaded from `model_path` when it can be), recorded as `model_set`."""
    from dormancy_model._version import __version__
    from dormancy_model.errors import InputError
    from dormancy_model.params.table import load_model_parameters

    if params is None:
        try:
            params = load_model_parameters(model_path)
        except InputError:
            params = None

    est = {}
    for n, scale, unit, factor in zip(result.names, result.scales, result.units,
                                      result.unit_factors, strict=True):
        est[n] = dict(
            value=result.estimate[n] / factor, unit=unit, internal_value=result.estimate[n],
            scale=scale, se_scale=_num(result.se[n]),
            ci95_low=_num(result.ci_low[n] / factor), ci95_high=_num(result.ci_high[n] / factor),
            identifiable=result.identifiable[n])
    starts = [dict(start=s.start, objective=_num(s.objective), converged=s.converged,
                   status=S.name(s.status), grad_norm=_num(s.grad_norm),
                   iterations=s.iterations, initial=s.initial, estimate=s.estimate)
              for s in result.starts]
    profiles = {k: dict(values=p.values, scale_values=p.scale_values,
                        objective=[_num(x) for x in p.objective], lr_ci95_low=p.ci_low,
                        lr_ci95_high=p.ci_high) for k, p in result.profiles.items()}
    doc = {
        "format": FORMAT,
        "package_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "study": dict(name=study.name, path=study.path, data_hash=study.data_hash,
                      synthetic=study.synthetic, arms=list(study.arm_names),
                      body_weight_kg=study.body_weight_kg),
        "model": str(model_path),
        "model_set": (None if params is None
                      else dict(name=params.name, species=params.species)),
        "status": S.name(result.status),
        "status_code": int(result.status),
        "seed": result.seed,
        "settings": result.settings,
        "objective": dict(nll=result.objective, loglik_burden=result.loglik_burden,
                          loglik_relapse=result.loglik_relapse, aic=result.aic,
                          n_params=len(result.names), n_obs=result.n_obs,
                          n_pk=getattr(result, "n_pk", 0)),
        "estimates": est,
        "starts": starts,
        "n_converged": result.n_converged,
        "profiles": profiles,
        "hessian_scale": [[_num(x) for x in r] for r in result.hessian],
        "covariance_scale": [[_num(x) for x in r] for r in result.covariance],
        "wall_time_s": result.wall_time_s,
        "n_evaluations": result.n_evaluations,
    }
    pop = getattr(result, "population", None)
    if pop:  # a population fit: estimates are the typical values, the rest is here
        doc["method"] = pop["method"]
        doc["objective"].update({k: pop["objective"][k] for k in ("bic", "n_params")
                                 if k in pop["objective"]})
        if pop["method"] == "nuts":  # no marginal likelihood: the objective is the pooled fit's
            doc["objective"]["of"] = "pooled fit (starting point of the NUTS chains)"
        doc["population"] = pop
    return doc


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def write_fit(path: str | Path, result, study, model_path: str, params=None) -> dict:
    doc = fit_to_json(result, study, model_path, params)
    atomic_write_json(path, doc)
    return doc
