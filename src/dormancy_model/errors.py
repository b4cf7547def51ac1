"""Errors raised at the edges (files, CLI). Inside jit, failures are values, not exceptions."""

from __future__ import annotations

import difflib
import math


def one_line(text) -> str:
    """`text` with every non-printable character (newline, tab, NUL...) written as its escape,
    so a message quoting user input (a field name, a CSV cell) stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class InputError(ValueError):
    """Bad user input: names the file, the field and the problem in one line (characters that
    would break the line, e.g. a newline inside a quoted field name, are escaped)."""

    def __init__(self, source: str, field: str, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(one_line(f"{self.source}: {field}: {problem}"))


def suggest(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest valid names, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"


MAX_SEED = 2**63 - 1  # the largest seed every generator used here accepts (JAX keys: int64)


def check_seed(source: str, field: str, value) -> int:
    """A random seed as a whole number in [0, 2**63 - 1], else InputError naming `source`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputError(source, field, f"must be a whole number in [0, 2**63 - 1], got {value!r}")
    return value


def check_range(source: str, field: str, value, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False, note: str = "") -> float:
    """A finite real number in the interval from `lo` to `hi` (open at an end where `lo_open` /
    `hi_open`), else InputError naming `source` and `field`: "must be in (0, 100], got inf".
    `note` (e.g. "(the horizon)") follows the interval in the message."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        v = float(value)
        ok = (math.isfinite(v) and (lo < v if lo_open else lo <= v)
              and (v < hi if hi_open else v <= hi))
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:.6g}, {hi:.6g}{')' if hi_open else ']'}"
        got = f"{value:g}" if isinstance(value, float) else repr(value)
        raise InputError(source, field,
                         f"must be in {interval}{' ' + note if note else ''}, got {got}")
    return float(value)
