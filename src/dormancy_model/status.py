"""Status codes of every verb: one table, a name and a one-line message per code.

Inside jit a status is a small int (one of the constants below); result files store it by name
(the trial's and the agents' tables hold the name, the sweep store holds the int8 code with the
CF attributes ``flag_values`` / ``flag_meanings``, see `flag_attrs`). `message` turns codes into
the text of ``Trajectory.message`` and ``AgentResult.message``.

Combination rule: where two statuses meet (a solve and the PK check, two phases of a trial, the
arms of a study), the one with the higher priority wins (`combine`, `reduce`); the priority is
the table's order (`PRIORITY`, most fundamental cause first): a degenerate PK makes the solve
meaningless, a non-finite state usually ends in a stalled step, and a limit reached is the
least specific. OK has the lowest priority, so any failure survives a combination.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Code(NamedTuple):
    value: int
    name: str
    message: str


OK = 0
MAX_STEPS = 1
NONFINITE = 2
DEGENERATE_PK = 3
STEP_TOO_SMALL = 4
SOLVER_FAILED = 5
MAX_EVENTS = 6
SLOT_OVERFLOW = 7
MISSING = -1

# In priority order, highest first (see the module docstring).
TABLE: tuple[Code, ...] = (
    Code(DEGENERATE_PK, "degenerate_pk",
         "two PK rate constants coincide (e.g. ka equal to an elimination rate); the closed-form "
         "PK needs distinct eigenvalues: perturb one of them"),
    Code(NONFINITE, "nonfinite", "the solution contains non-finite values (check the parameters)"),
    Code(STEP_TOO_SMALL, "step_too_small",
         "the solver's step size fell to rounding level (non-finite trial steps, or a stiff or "
         "singular solution): check the parameters or loosen rtol/atol"),
    Code(SOLVER_FAILED, "solver_failed",
         "the ODE solver failed (step size too small or another solver error); check the "
         "parameters or loosen rtol/atol"),
    Code(MAX_STEPS, "max_steps",
         "the ODE solver reached the maximum number of steps before the end time; raise "
         "max_steps or loosen rtol/atol"),
    Code(SLOT_OVERFLOW, "slot_overflow",
         "no free slot for a new agent or clone (raise extra_slots / clone_slots)"),
    Code(MAX_EVENTS, "max_events", "max_events reached before t1 (raise max_events)"),
    Code(MISSING, "missing", "not computed (a sweep chunk without a completion marker)"),
    Code(OK, "ok", "ok"),
)

BY_VALUE = {c.value: c for c in TABLE}
BY_NAME = {c.name: c for c in TABLE}
_LOW = min(BY_VALUE)
# PRIORITY[code - _LOW]: larger wins; OK is 0
PRIORITY = np.zeros(max(BY_VALUE) - _LOW + 1, np.int8)
BY_PRIORITY = np.asarray([c.value for c in reversed(TABLE)], np.int8)  # rank -> code
PRIORITY[BY_PRIORITY - _LOW] = np.arange(len(TABLE))


def name(code) -> str:
    """Name of one code, e.g. name(2) == 'nonfinite'."""
    return BY_VALUE[int(code)].name


def names(codes) -> np.ndarray:
    """Names of an array of codes (object array of str, same shape)."""
    codes = np.asarray(codes)
    return np.vectorize(name, otypes=[object])(codes) if codes.size else codes.astype(object)


def code(name_: str) -> int:
    """Code of a name (inverse of `name`)."""
    return BY_NAME[name_].value


def message(codes) -> str:
    """'ok', or the messages of the distinct non-OK codes in priority order, joined by '; '."""
    present = {int(c) for c in np.unique(np.asarray(codes))}
    return "; ".join(c.message for c in TABLE if c.value in present and c.value != OK) or "ok"


def _xp(*xs):
    if any(type(x).__module__.startswith("jax") for x in xs):
        import jax.numpy as jnp

        return jnp
    return np


def combine(a, b):
    """Elementwise: the status of higher priority of `a` and `b` (numpy or jax arrays)."""
    xp = _xp(a, b)
    rank = xp.asarray(PRIORITY)
    ra, rb = rank[xp.asarray(a) - _LOW], rank[xp.asarray(b) - _LOW]
    return xp.where(ra >= rb, a, b)


def reduce(codes, axis=None):
    """The status of highest priority along `axis` (all axes by default)."""
    xp = _xp(codes)
    codes = xp.asarray(codes)
    rank = xp.asarray(PRIORITY)[codes - _LOW]
    return xp.asarray(BY_PRIORITY)[xp.max(rank, axis=axis)].astype(codes.dtype)


def flag_attrs() -> dict:
    """CF attributes naming the codes of a stored int status variable."""
    return {"flag_values": [c.value for c in TABLE],
            "flag_meanings": " ".join(c.name for c in TABLE)}
