"""Errors raised at the edges (files, CLI). Inside jit, failures are values, not exceptions."""

from __future__ import annotations

import difflib


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
