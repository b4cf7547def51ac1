"""Unit conversion at the edges. Internal canonical units: days, mg, L, ng/mL, cells, kg.

Each accepted unit maps to (internal unit, factor, per_kg): value_internal = value * factor.
`per_kg` marks quantities normalised by body weight (mouse PK), multiplied by the body weight
inside the model.
"""

from __future__ import annotations

HOURS_PER_DAY = 24.0
DAYS_PER_YEAR = 365.25
MAX_YEARS = 100.0  # the longest horizon a command or sweep simulates

UNITS: dict[str, tuple[str, float, bool]] = {
    "1": ("1", 1.0, False),
    "cells": ("cells", 1.0, False),
    "ng/mL": ("ng/mL", 1.0, False),
    "ug/L": ("ng/mL", 1.0, False),
    "mg/L": ("ng/mL", 1000.0, False),
    "nM_everolimus": ("ng/mL", 0.958, False),  # MW 958.2 g/mol
    "1/day": ("1/day", 1.0, False),
    "1/h": ("1/day", HOURS_PER_DAY, False),
    "1/year": ("1/day", 1.0 / DAYS_PER_YEAR, False),
    "day": ("day", 1.0, False),
    "h": ("day", 1.0 / HOURS_PER_DAY, False),
    "min": ("day", 1.0 / (HOURS_PER_DAY * 60.0), False),
    "L": ("L", 1.0, False),
    "mL": ("L", 1e-3, False),
    "L/h": ("L/day", HOURS_PER_DAY, False),
    "L/day": ("L/day", 1.0, False),
    "mL/min": ("L/day", 1e-3 * 60.0 * HOURS_PER_DAY, False),
    "L/kg": ("L", 1.0, True),
    "L/h/kg": ("L/day", HOURS_PER_DAY, True),
    "L/day/kg": ("L/day", 1.0, True),
    "kg": ("kg", 1.0, False),
    "g": ("kg", 1e-3, False),
    "mg": ("mg", 1.0, False),
    "mg/kg": ("mg", 1.0, True),
}


def to_internal(value: float, unit: str) -> float:
    return float(value) * UNITS[unit][1]


def from_internal(value: float, unit: str) -> float:
    return float(value) / UNITS[unit][1]


# Plausible adult body weights (kg) per species: a body weight outside this range (in a
# parameter file, a schedule or a study) is refused as a unit or typing error.
BODY_WEIGHT_KG: dict[str, tuple[float, float]] = {
    "human": (20.0, 300.0),
    "mouse": (0.010, 0.080),
}


def body_weight_problem(species: str, kg: float) -> str | None:
    """Why `kg` is not a plausible body weight for `species`, or None. Unknown species: any
    weight in (0, 1000] kg."""
    lo, hi = BODY_WEIGHT_KG.get(species, (0.0, 1000.0))
    if not (lo < kg <= hi if lo == 0.0 else lo <= kg <= hi):
        what = species if species in BODY_WEIGHT_KG else "any species"
        return (f"{kg:g} kg is not a plausible body weight for {what} "
                f"(expected {lo:g}-{hi:g} kg)")
    return None
