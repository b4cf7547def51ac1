"""Reading posterior calibration files (written by `dormancy calibrate --posterior`,
`trials.posterior.posterior_record`; default `fits/clever_posterior.json`).

The reader lives here, below `trials` and `sweeps`, so that both can read a posterior: the
what-ifs of `dormancy trial` draw population parameter sets from it, and a sweep spec's
`[samples] method = "posterior"` draws its samples from it. Every problem is one `InputError`
naming the file and the field.

The file's `parameters` are population parameters of the virtual trial; what each one is in a
parameter set (`POSTERIOR_PARAMETERS`):

==============  ==========  ======================================================
posterior name  kind        model parameter
==============  ==========  ======================================================
delta_max       typical     delta_max (1/day)
k_dr            typical     k_dr (1/day)
load_median     typical     dormant_initial (cells): the median patient's DTC load
load_sigma      spread      log-SD of dormant_initial between patients
cv_delta_max    spread      between-patient CV of delta_max
cv_k_dr         spread      between-patient CV of k_dr
==============  ==========  ======================================================

Draws are stored in natural units (internal units of the parameter set: 1/day, cells), one
list per parameter, shaped (chains, samples); `read_posterior` flattens them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dormancy_model.errors import InputError, suggest

# posterior name -> (kind, model parameter); kept equal to trials.posterior.PRIOR_LOG_SD's
# names by a test
POSTERIOR_PARAMETERS = {
    "delta_max": ("typical", "delta_max"),
    "k_dr": ("typical", "k_dr"),
    "load_median": ("typical", "dormant_initial"),
    "load_sigma": ("spread", "dormant_initial"),
    "cv_delta_max": ("spread", "delta_max"),
    "cv_k_dr": ("spread", "k_dr"),
}
DEFAULT_POSTERIOR = "fits/clever_posterior.json"  # `dormancy calibrate --posterior`'s default


@dataclass(frozen=True)
class PosteriorFile:
    """A read posterior: `draws` name -> (n,) natural-unit values (chains flattened), in the
    order of `names`; provenance as recorded."""

    source: str
    names: tuple
    draws: dict
    parameter_file: str | None = None
    command: str | None = None
    git_commit: str | None = None
    created_utc: str | None = None
    warnings: tuple = ()
    sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(next(iter(self.draws.values())).size)

    def theta(self) -> np.ndarray:
        """(n, d) natural log of the draws, columns in the order of `names`."""
        return np.log(np.stack([self.draws[k] for k in self.names], axis=1))

    def describe(self) -> str:
        return (f"{self.source}: {self.n} draws of {', '.join(self.names)}"
                + (f" (git {self.git_commit[:10]})" if self.git_commit else ""))


def _fail(src, fld, msg):
    raise InputError(src, fld, msg)


def read_posterior(path, params=None) -> PosteriorFile:
    """The posterior file at `path`, checked: JSON object with `parameters` (known names, no
    duplicates) and `draws` (for each parameter equally many finite positive numbers, CVs and
    log-SDs included). With `params` (a parameter set), the file must have been made with the
    same parameter file (by name) and typical-value draws must lie within its bounds."""
    src = str(path)
    try:
        raw = Path(path).read_bytes()
        doc = json.loads(raw)
    except FileNotFoundError:
        _fail(src, "file", "not found")
    except IsADirectoryError:
        _fail(src, "file", "is a directory, not a posterior JSON file")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _fail(src, "file", f"not a posterior JSON file: {e}")
    except OSError as e:
        _fail(src, "file", f"cannot be read: {e.strerror}")
    hint = "(written by `dormancy calibrate --posterior`)"
    if not isinstance(doc, dict):
        _fail(src, "file", f"not a posterior file {hint}")
    names = doc.get("parameters")
    if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
        _fail(src, "parameters", f"missing or not a list of names: not a posterior file {hint}")
    if len(set(names)) != len(names):
        _fail(src, "parameters", "contains duplicates")
    for nm in names:
        if nm not in POSTERIOR_PARAMETERS:
            _fail(src, "parameters", f"unknown posterior parameter {nm!r}"
                  f"{suggest(nm, POSTERIOR_PARAMETERS)}; known: {', '.join(POSTERIOR_PARAMETERS)}")
    draws_doc = doc.get("draws")
    if not isinstance(draws_doc, dict):
        _fail(src, "draws", f"missing: not a posterior file {hint}")
    draws, count = {}, None
    for nm in names:
        fld = f"draws.{nm}"
        if nm not in draws_doc:
            _fail(src, fld, "missing")
        try:
            x = np.asarray(draws_doc[nm], dtype=float).ravel()
        except (TypeError, ValueError):
            _fail(src, fld, "must be a (nested) list of numbers of one shape")
        if x.size == 0:
            _fail(src, fld, "empty")
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            bad = x[~(np.isfinite(x) & (x > 0))][0]
            _fail(src, fld, f"must hold finite numbers > 0 (natural units), got {bad!r}")
        if count is not None and x.size != count:
            _fail(src, fld, f"{x.size} draws, but {names[0]} has {count}")
        count = x.size
        draws[nm] = x
    pf = doc.get("parameter_file")
    if params is not None:
        if isinstance(pf, str) and pf and Path(pf).name != Path(str(params.source)).name:
            _fail(src, "parameter_file", f"posterior made with {Path(pf).name}, not with "
                  f"{Path(str(params.source)).name} (the --model of this run)")
        for nm in names:
            kind, target = POSTERIOR_PARAMETERS[nm]
            if kind != "typical" or target not in params.spec:
                continue
            lo, hi = params.spec[target].bounds
            x = draws[nm]
            if np.any(x < lo * (1 - 1e-12)) or np.any(x > hi * (1 + 1e-12)):
                _fail(src, f"draws.{nm}", f"draws in [{x.min():g}, {x.max():g}] leave the bounds "
                      f"of {target} in {Path(str(params.source)).name} [{lo:g}, {hi:g}]")
    diag = doc.get("diagnostics")
    warns = diag.get("warnings", []) if isinstance(diag, dict) else []
    warns = tuple(str(w) for w in warns) if isinstance(warns, list) else ()

    def _s(k):
        v = doc.get(k)
        return v if isinstance(v, str) else None

    return PosteriorFile(src, tuple(names), draws, _s("parameter_file"), _s("command"),
                         _s("git_commit"), _s("created_utc"), warns,
                         hashlib.sha256(raw).hexdigest())


def posterior_path(value, default_exists=None) -> str | None:
    """The posterior file a run uses: `value` None -> `DEFAULT_POSTERIOR` if it exists (else
    None: no posterior); "none" (any case) or "" -> None; else the path as given (checked when
    read). `default_exists` overrides the existence test (tests)."""
    if value is None:
        exists = Path(DEFAULT_POSTERIOR).is_file() if default_exists is None else default_exists
        return DEFAULT_POSTERIOR if exists else None
    v = str(value)
    if v.strip().lower() in ("none", ""):
        return None
    return v

