"""Reading fit JSON files (written by `dormancy fit`, `fitting.files.write_fit`).

The reader lives here, below `fitting` and `sweeps`, so that both can read a fit: `fitting`
writes it, `sweeps` draws samples from it (`[samples] method = "fit"`) and `simulate --params`
applies it. A population fit's block (typical values, Omega, per-animal estimates) is read by
`params.popfit`. Every problem is one `InputError` naming the file and the field.

* `read_fit(path)`: the document, checked (format, estimates, status).
* `check_fit_model(doc, params, ...)`: refuses a fit made for another parameter set or
  species than `params` (the fit records `model_set` = {name, species}; files written before
  that field are judged by their `model` entry: a packaged name or a parameter file).
* `apply_fit(params, path)`: `params` with the fitted values.
* `fit_covariance(doc, params, src)`: the fitted model parameters' estimates and covariance on
  each parameter's scale (log / logit / lin), checked finite, symmetric and positive
  semi-definite; nuisance parameters (burden_sigma) are marginalised out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dormancy_model import status as S
from dormancy_model.errors import InputError, suggest
from dormancy_model.params.table import Parameters, load_model_parameters
from dormancy_model.params.transforms import SCALES, to_scale

FORMAT = "dormancy-fit/1"
NUISANCE = ("burden_sigma", "pk_sigma_hcq", "pk_sigma_eve")


def read_fit(path: str | Path) -> dict:
    src = str(path)
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(src, "file", "not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(src, "file", f"not a fit JSON file: {e}") from None
    except OSError as e:
        raise InputError(src, "file", f"cannot be read: {e.strerror}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(src, "format", f"expected {FORMAT!r} (written by `dormancy fit`)")
    est = doc.get("estimates")
    if not isinstance(est, dict) or not est:
        raise InputError(src, "estimates", "missing or empty")
    for n, e in est.items():
        v = e.get("internal_value") if isinstance(e, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(src, f"estimates.{n}.internal_value", "missing or not a number")
    st = doc.get("status", "ok")  # files written before the status field: ok
    if not isinstance(st, str) or st not in S.BY_NAME:
        raise InputError(src, "status", f"unknown status {st!r}{suggest(str(st), S.BY_NAME)}")
    doc.setdefault("status", st)
    doc.setdefault("status_code", S.code(st))
    return doc


def fit_model_set(doc: dict) -> tuple[str | None, str | None]:
    """(parameter set name, species) the fit was made for; None where it cannot be told."""
    ms = doc.get("model_set")
    if isinstance(ms, dict) and isinstance(ms.get("name"), str):
        sp = ms.get("species")
        return ms["name"], sp if isinstance(sp, str) else None
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        return None, None
    try:  # a file written before model_set: its model entry (packaged name or file)
        p = load_model_parameters(model)
        return p.name, p.species
    except InputError:
        return Path(model).stem, None


def check_fit_model(doc: dict, params: Parameters, src: str, flag: str = "--model") -> None:
    """InputError unless the fit was made for the parameter set (name and species) `params`."""
    name, species = fit_model_set(doc)
    if name is None:
        return
    if (species is not None and species != params.species) or name != params.name:
        made = f"{name!r}" + (f" (species {species})" if species else "")
        raise InputError(src, "model", f"fit made for parameter set {made}, not for {flag} "
                         f"{params.name!r} (species {params.species}); use {flag} "
                         f"{doc.get('model', name)} or a fit of {params.name!r}")


def apply_fit(params: Parameters, path: str | Path, flag: str = "--model") -> Parameters:
    """`params` with every fitted model parameter of the fit JSON at `path` replaced (nuisance
    parameters such as burden_sigma are skipped). The fit must be one of `params`' parameter
    set and species; values must lie inside the bounds."""
    src = str(path)
    doc = read_fit(path)
    check_fit_model(doc, params, src, flag)
    upd = {}
    for n, e in doc["estimates"].items():
        if n in NUISANCE:
            continue
        if n not in params.spec:
            raise InputError(src, f"estimates.{n}",
                             f"not a parameter of {params.name}{suggest(n, params.spec)}")
        upd[n] = float(e["internal_value"])
    new = params.replace(**upd)
    new.check_bounds(src)
    return new


def fit_covariance(doc: dict, params: Parameters, src: str):
    """(names, scales, mean on scale, covariance on scale) of the fitted model parameters of a
    read fit document. The covariance (`covariance_scale`, ordered as `estimates`) must be a
    finite, symmetric, positive semi-definite k x k matrix."""
    est = doc["estimates"]
    all_names = list(est)
    k = len(all_names)
    cov = doc.get("covariance_scale")
    if (not isinstance(cov, list) or len(cov) != k
            or not all(isinstance(r, list) and len(r) == k for r in cov)):
        raise InputError(src, "covariance_scale", f"missing or not a {k} x {k} matrix "
                         f"(one row and column per estimate)")
    if not all(x is not None and not isinstance(x, bool) and isinstance(x, (int, float))
               and math.isfinite(x) for r in cov for x in r):
        raise InputError(src, "covariance_scale", "has missing or non-finite entries (the "
                         "Hessian was singular at the optimum): fix the unidentifiable "
                         "parameters and refit")
    c = np.asarray(cov, float)
    size = float(np.abs(c).max()) or 1.0
    if not np.allclose(c, c.T, rtol=0, atol=1e-9 * size):
        raise InputError(src, "covariance_scale", "not symmetric")
    eig = np.linalg.eigvalsh(0.5 * (c + c.T))
    if eig.min() < -1e-9 * max(float(np.abs(eig).max()), 1e-300):
        raise InputError(src, "covariance_scale", f"not positive semi-definite (smallest "
                         f"eigenvalue {eig.min():.3g})")
    names, scales, mean, keep = [], [], [], []
    for j, n in enumerate(all_names):
        if n in NUISANCE:
            continue
        if n not in params.spec:
            raise InputError(src, f"estimates.{n}",
                             f"not a parameter of {params.name}{suggest(n, params.spec)}")
        scale = est[n].get("scale", params.spec[n].scale)
        if scale not in SCALES:
            raise InputError(src, f"estimates.{n}.scale",
                             f"must be one of {', '.join(SCALES)}, got {scale!r}")
        v = float(est[n]["internal_value"])
        if (scale == "log" and v <= 0) or (scale == "logit" and not 0 < v < 1):
            raise InputError(src, f"estimates.{n}.internal_value",
                             f"{v:g} is outside the {scale} scale's domain")
        names.append(n)
        scales.append(scale)
        mean.append(float(to_scale(v, scale)))
        keep.append(j)
    if not names:
        raise InputError(src, "estimates", "no model parameter was fitted")
    return tuple(names), tuple(scales), np.array(mean), c[np.ix_(keep, keep)]
