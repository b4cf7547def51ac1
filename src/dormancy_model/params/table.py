"""Parameter files: loading, validation, unit conversion, and the immutable `Parameters` PyTree.

A parameter file is TOML with a `[meta]` table and one `[parameters.NAME]` table per parameter
holding `value`, `unit`, `bounds` (same unit as value), `scale` (lin, log or logit) and `source`
(a citation, or "assumption: why"). On loading, every value and bound is converted to the
internal units (days, mg, L, ng/mL, cells, kg).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from dormancy_model.errors import InputError, suggest
from dormancy_model.io import read_toml
from dormancy_model.params.transforms import SCALES
from dormancy_model.units import UNITS, body_weight_problem

# name -> internal unit. Every parameter file must define exactly these names.
REGISTRY: dict[str, str] = {
    # everolimus PK and PD
    "eve_f": "1", "eve_ka": "1/day", "eve_tlag": "day", "eve_cl": "L/day", "eve_v1": "L",
    "eve_q": "L/day", "eve_v2": "L", "eve_imax": "1", "eve_ic50": "ng/mL", "eve_hill": "1",
    # hydroxychloroquine PK and PD
    "hcq_f": "1", "hcq_ka": "1/day", "hcq_tlag": "day", "hcq_cl": "L/day", "hcq_v1": "L",
    "hcq_q": "L/day", "hcq_v2": "L", "hcq_ke0": "1/day", "hcq_imax": "1", "hcq_ic50": "ng/mL",
    "hcq_hill": "1",
    # autophagy and mTORC1 gate
    "autophagy_induction": "1", "autophagy_reserve": "1", "mtor_k": "1", "mtor_hill": "1",
    # cell kinetics
    "k_dr": "1/day", "k_rd": "1/day", "k_rp": "1/day", "k_pd": "1/day", "delta_d0": "1/day",
    "delta_r": "1/day", "lambda_p": "1/day", "delta_p": "1/day", "delta_max": "1/day",
    "deficit_k": "1", "deficit_hill": "1",
    # relapse, detection, initial state, body
    "lesion_growth_rate": "1/day", "detection_size": "cells", "aspirate_fraction": "1",
    "aspirate_cells": "cells", "marrow_cells": "cells", "aspirate_dispersion": "1",
    "dormant_initial": "cells", "reactivating_initial": "cells", "proliferating_initial": "cells",
    "history_days": "day", "body_weight": "kg",
    # whole-blood / plasma concentration ratios (PK observations in plasma, `fitting.study`)
    "hcq_blood_plasma_ratio": "1", "eve_blood_plasma_ratio": "1",
}

# Physical limits, enforced whatever bounds a file declares (value and both bounds): every
# parameter is a non-negative quantity; these are fractions in [0, 1]; these must be > 0
# (they divide); body_weight must be plausible for the file's species (units.BODY_WEIGHT_KG).
FRACTIONS = ("eve_f", "hcq_f", "eve_imax", "hcq_imax", "aspirate_fraction")
STRICTLY_POSITIVE = ("eve_v1", "eve_v2", "hcq_v1", "hcq_v2", "eve_ic50", "hcq_ic50",
                     "mtor_k", "deficit_k", "detection_size", "hcq_blood_plasma_ratio",
                     "aspirate_cells", "marrow_cells",
                     "eve_blood_plasma_ratio")


def physical_problem(name: str, internal_value: float, species: str) -> str | None:
    """Why an internal value is physically impossible for parameter `name`, or None."""
    v = internal_value
    if not math.isfinite(v):
        return "not a finite number"
    if name == "body_weight":
        return body_weight_problem(species, v)
    if name in FRACTIONS and not 0 <= v <= 1:
        return "a fraction must be in [0, 1]"
    if name in STRICTLY_POSITIVE and not v > 0:
        return "must be > 0"
    if v < 0:
        unit = REGISTRY.get(name, "1")
        what = {"1/day": "a rate", "day": "a time", "L": "a volume", "L/day": "a clearance",
                "ng/mL": "a concentration", "cells": "a cell count"}.get(unit, "it")
        return f"{what} must be >= 0"
    return None


def _check_physical(path: str, specs, species: str) -> None:
    for s in specs:
        for what, v in (("value", s.value), ("bounds", s.bounds[0]), ("bounds", s.bounds[1])):
            problem = physical_problem(s.name, v, species)
            if problem:
                _fail(path, f"parameters.{s.name}.{what}",
                      f"{s.in_file_unit(v):g} {s.unit}: {problem}")


MATRICES = ("whole_blood", "plasma")  # what a set's drug concentrations are ([meta])

PK_SCALED = ("eve_cl", "eve_v1", "eve_q", "eve_v2", "hcq_cl", "hcq_v1", "hcq_q", "hcq_v2")


@dataclass(frozen=True)
class ParameterSpec:
    """Metadata of one parameter. `value` and `bounds` are in internal units."""

    name: str
    value: float
    unit: str  # unit as written in the file
    internal_unit: str
    bounds: tuple[float, float]
    scale: str
    source: str
    per_kg: bool = False

    @property
    def factor(self) -> float:
        return UNITS[self.unit][1]

    def in_file_unit(self, value: float) -> float:
        return float(value) / self.factor


class Parameters(eqx.Module):
    """Immutable parameter set: a dict of arrays (internal units) plus static metadata.

    `p["eve_cl"]` reads a value; `p.replace(eve_cl=500.0)` returns a new set (internal units),
    `p.with_values(...)` one with values stored as given (arrays, batches). It is a PyTree, so
    it can be passed through `jax.jit`, `jax.vmap` and `jax.grad`.
    """

    values: dict
    specs: tuple = eqx.field(static=True)
    name: str = eqx.field(static=True)
    species: str = eqx.field(static=True)
    source: str = eqx.field(static=True)
    # the sample matrix the PK parameters describe, (HCQ, EVE): "whole_blood" or "plasma"
    # (`[meta] hcq_matrix` / `eve_matrix`; `concentration_matrix`)
    matrices: tuple = eqx.field(static=True, default=("whole_blood", "whole_blood"))

    def __getitem__(self, key: str):
        try:
            return self.values[key]
        except KeyError:
            raise KeyError(f"unknown parameter {key!r}{suggest(key, self.values)}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def spec(self) -> dict[str, ParameterSpec]:
        return {s.name: s for s in self.specs}

    def concentration_matrix(self, drug: str) -> str:
        """"whole_blood" or "plasma": what the set's concentrations of `drug` (hcq, eve) are,
        i.e. the matrix its PK parameters (clearance, volumes) and PD potencies refer to."""
        return self.matrices[("hcq", "eve").index(drug)]

    @property
    def pk_per_kg(self) -> bool:
        return self.spec["eve_cl"].per_kg

    def with_values(self, values: dict | None = None, /, **updates) -> Parameters:
        """New parameter set with some values replaced (internal units), stored as given:
        Python floats (static under `eqx.filter_jit`), NumPy or JAX arrays (a leading axis for
        a batch of parameter sets), tracers. `values` (a dict) and keywords may be combined."""
        updates = {**(values or {}), **updates}
        self._check_names(updates)
        return Parameters({**self.values, **updates}, self.specs, self.name, self.species,
                          self.source, self.matrices)

    def replace(self, **updates) -> Parameters:
        """`with_values`, each value as a JAX array of the dtype of the value it replaces:
        `p.replace(eve_cl=500.0)`."""
        self._check_names(updates)
        return self.with_values({k: jnp.asarray(v, dtype=jnp.result_type(self.values[k]))
                                 for k, v in updates.items()})

    def _check_names(self, names) -> None:
        for k in names:
            if k not in self.values:
                raise KeyError(f"unknown parameter {k!r}{suggest(k, self.values)}")

    def astype(self, dtype) -> Parameters:
        return self.with_values({k: jnp.asarray(v, dtype=dtype) for k, v in self.values.items()})

    def check_bounds(self, source: str | None = None) -> None:
        """Raise InputError if a (concrete) value is outside its bounds or constraints fail."""
        src = source or self.source
        for s in self.specs:
            v = np.asarray(self.values[s.name])
            lo, hi = s.bounds
            if not np.all(np.isfinite(v)):
                raise InputError(src, f"parameters.{s.name}.value", "not a finite number")
            if np.any(v < lo * (1 - 1e-12)) or np.any(v > hi * (1 + 1e-12)):
                raise InputError(
                    src, f"parameters.{s.name}.value",
                    f"{s.in_file_unit(float(np.min(v) if np.any(v < lo) else np.max(v))):g} "
                    f"{s.unit} is outside the bounds "
                    f"[{s.in_file_unit(lo):g}, {s.in_file_unit(hi):g}] {s.unit}",
                )
        if np.any(np.asarray(self.values["delta_p"]) >= np.asarray(self.values["lambda_p"])):
            raise InputError(src, "parameters.delta_p.value",
                             "must be below lambda_p (a proliferating clone must be able to grow)")

    def to_dataframe(self):
        import pandas as pd

        rows = []
        for s in self.specs:
            rows.append(dict(
                name=s.name, value=s.in_file_unit(float(np.asarray(self.values[s.name]))),
                unit=s.unit, lower=s.in_file_unit(s.bounds[0]), upper=s.in_file_unit(s.bounds[1]),
                scale=s.scale, internal_value=float(np.asarray(self.values[s.name])),
                internal_unit=s.internal_unit, source=s.source))
        return pd.DataFrame(rows)


def _fail(path, field, problem):
    raise InputError(path, field, problem)


ASPIRATE_RTOL = 0.01  # aspirate_fraction vs aspirate_cells / marrow_cells in a file


def _check_aspirate(path: str, v: dict) -> None:
    """A file's aspirate_fraction is aspirate_cells / marrow_cells (the MNC analysed per
    aspirate over the marrow pool; `model.observables`), to 1%. The model reads
    aspirate_fraction only: `Parameters.replace(aspirate_fraction=...)` overrides it."""
    derived = v["aspirate_cells"] / v["marrow_cells"]
    if abs(v["aspirate_fraction"] - derived) > ASPIRATE_RTOL * derived:
        _fail(path, "parameters.aspirate_fraction.value",
              f"{v['aspirate_fraction']:g} is not aspirate_cells / marrow_cells = {derived:.4g} "
              f"(the fraction of the marrow pool one aspirate analyses)")


def _parse_spec(path: str, name: str, entry) -> ParameterSpec:
    field = f"parameters.{name}"
    if not isinstance(entry, dict):
        _fail(path, field, "must be a table with value, unit, bounds, scale, source")
    allowed = {"value", "unit", "bounds", "scale", "source", "description"}
    for k in entry:
        if k not in allowed:
            _fail(path, f"{field}.{k}", f"unknown field{suggest(k, allowed)}")
    for k in ("value", "unit", "bounds", "scale", "source"):
        if k not in entry:
            _fail(path, f"{field}.{k}", "missing")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, f"{field}.value", f"must be a finite number, got {value!r}")
    unit = entry["unit"]
    if unit not in UNITS:
        _fail(path, f"{field}.unit", f"unknown unit {unit!r}{suggest(str(unit), UNITS)}")
    internal, factor, per_kg = UNITS[unit]
    if internal != REGISTRY[name]:
        _fail(path, f"{field}.unit", f"{unit!r} cannot be converted to {REGISTRY[name]!r}")
    bounds = entry["bounds"]
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            or not bounds[0] <= bounds[1]):
        _fail(path, f"{field}.bounds", "must be [lower, upper] numbers with lower <= upper")
    scale = entry["scale"]
    if scale not in SCALES:
        _fail(path, f"{field}.scale", f"must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale in ("log",) and bounds[0] <= 0:
        _fail(path, f"{field}.bounds", "log scale needs a positive lower bound")
    if scale == "logit" and not (0 < bounds[0] and bounds[1] < 1):
        _fail(path, f"{field}.bounds", "logit scale needs bounds strictly inside (0, 1)")
    source = entry["source"]
    if not isinstance(source, str) or not source.strip():
        _fail(path, f"{field}.source", "must be a citation or 'assumption: why'")
    if not (bounds[0] <= value <= bounds[1]):
        _fail(path, f"{field}.value",
              f"{value:g} {unit} is outside the bounds [{bounds[0]:g}, {bounds[1]:g}] {unit}")
    return ParameterSpec(
        name=name, value=value * factor, unit=unit, internal_unit=internal,
        bounds=(bounds[0] * factor, bounds[1] * factor), scale=scale, source=source,
        per_kg=per_kg)


def load_parameters(path: str | Path, dtype=None) -> Parameters:
    """Load and validate a parameter file; values are converted to internal units."""
    path = str(path)
    doc, _ = read_toml(path)
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        _fail(path, "meta", "must be a table")
    for k in doc:
        if k not in ("meta", "parameters"):
            _fail(path, k, f"unknown table{suggest(k, ['meta', 'parameters'])}")
    table = doc.get("parameters")
    if not isinstance(table, dict) or not table:
        _fail(path, "parameters", "missing: define one [parameters.NAME] table per parameter")
    for name in table:
        if name not in REGISTRY:
            _fail(path, f"parameters.{name}", f"unknown parameter{suggest(name, REGISTRY)}")
    for name in REGISTRY:
        if name not in table:
            _fail(path, f"parameters.{name}", "missing")
    specs = tuple(_parse_spec(path, name, table[name]) for name in REGISTRY)
    per_kg = {s.name: s.per_kg for s in specs if s.name in PK_SCALED}
    if len(set(per_kg.values())) > 1:
        _fail(path, "parameters", "PK volumes and clearances must be all per kg or all absolute")
    for s in specs:
        if s.per_kg and s.name not in PK_SCALED:
            _fail(path, f"parameters.{s.name}.unit", "only PK volumes and clearances may be per kg")
    _check_physical(path, specs, str(meta.get("species", "unknown")))
    _check_aspirate(path, {s.name: s.value for s in specs})
    dtype = dtype or jnp.result_type(float)
    values = {s.name: jnp.asarray(s.value, dtype=dtype) for s in specs}
    matrices = []
    for drug in ("hcq", "eve"):
        m = meta.get(f"{drug}_matrix", "whole_blood")
        if m not in MATRICES:
            _fail(path, f"meta.{drug}_matrix", f"must be one of {', '.join(MATRICES)}, got {m!r}")
        matrices.append(m)
    p = Parameters(values, specs, str(meta.get("name", Path(path).stem)),
                   str(meta.get("species", "unknown")), path, tuple(matrices))
    p.check_bounds(path)
    return p


def load_model_parameters(name_or_path: str | Path, dtype=None) -> Parameters:
    """Load a packaged parameter set by name (`human`, `mouse`) or a parameter file by path."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        packaged = resources.files("dormancy_model.params") / "data" / f"{p}.toml"
        if packaged.is_file():
            with resources.as_file(packaged) as path:
                return load_parameters(path, dtype=dtype)
    return load_parameters(p, dtype=dtype)
