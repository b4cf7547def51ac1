"""Property-based fuzz of the schedule parser: every generated document or file (mutated valid
schedules, random values of every type, NaN/inf, huge numbers, BOMs, random bytes) gives a
valid `Schedule` or an `InputError`, never another exception."""

import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dormancy_model.errors import InputError
from dormancy_model.pk.schedule import (
    LINE_FIELDS,
    MAX_DOSES,
    Schedule,
    load_schedule,
    parse_schedule,
)

NASTY = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30), st.integers(), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["1-21", "12-8", "1-5,12-8", "0-3", "1--2", "-3", "1-99999999999", ",",
                     "QD", "BID", "q8h", "mg", "mg/kg", "oral", "iv", "hcq", "eve", "nan",
                     "inf", "\ufeffhcq", "1e309"]),
    st.lists(st.integers(min_value=-5, max_value=40), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
VALID_LINE = {"drug": "hcq", "amount": 400, "unit": "mg", "route": "oral", "frequency": "BID",
              "days_on": "1-21", "cycle_days": 28, "cycles": 6}
KEYS = st.sampled_from(sorted(LINE_FIELDS | {"colour", "interval_hours"}))
LINE = st.builds(lambda base, edits, drop: {**{k: v for k, v in base.items() if k not in drop},
                                            **edits},
                 st.just(VALID_LINE), st.dictionaries(KEYS, NASTY, max_size=3),
                 st.sets(KEYS, max_size=2))
DOC = st.fixed_dictionaries(
    {"dose": st.lists(LINE, max_size=3)},
    optional={"name": NASTY, "description": NASTY, "body_weight_kg": NASTY,
              "allow_short_intervals": st.one_of(st.booleans(), NASTY),
              "defaults": st.one_of(st.dictionaries(KEYS, NASTY, max_size=3), NASTY),
              "extra": NASTY})


def _check(sched):
    assert isinstance(sched, Schedule)
    total = 0
    for drug in ("hcq", "eve"):
        t, a, k, o = sched.events(drug)
        assert t.shape == a.shape == k.shape == o.shape
        assert np.all(np.isfinite(t)) and np.all(np.isfinite(a)) and np.all(a >= 0)
        assert np.all(np.diff(t) >= 0)
        total += t.size
    assert total <= MAX_DOSES + 2  # + the zero-amount placeholders
    for ln in sched.lines:
        assert ln.interval_hours > 0 and ln.cycles >= 1
        assert math.isfinite(ln.end_day)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(doc=DOC, species=st.sampled_from([None, "human", "mouse", "rat"]))
@example(doc={"dose": [], "name": 0, "description": 0, "defaults": {"\n": 0}}, species=None)
def test_schedule_documents_parse_or_raise_input_error(doc, species):
    try:
        sched = parse_schedule(doc, "fuzz.toml", species)
    except InputError as e:
        assert str(e).startswith("fuzz.toml: ") and "\n" not in str(e)
        return
    _check(sched)


VALID_FILE = (b'name = "x"\n[defaults]\ncycle_days = 28\ncycles = 6\n[[dose]]\ndrug = "hcq"\n'
              b'amount = 400\nunit = "mg"\nfrequency = "BID"\ndays_on = "1-21"\n')


@st.composite
def files(draw):
    kind = draw(st.sampled_from(["random", "mutated", "bom"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    data = bytearray(VALID_FILE)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 8)))
        data[i:j] = draw(st.sampled_from([b"", b"-", b"0", b"1e400", b"nan", b"inf", b"\"",
                                          b"\n", b"=", b"[", b"]", b"\xff", b"\xef\xbb\xbf",
                                          b"99999999999999999999", b"0.001", b"12-8"]))
    return (b"\xef\xbb\xbf" if kind == "bom" else b"") + bytes(data)


_DIR = Path(tempfile.mkdtemp(prefix="schedule-fuzz-"))


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=files())
def test_schedule_files_load_or_raise_input_error(data):
    f = _DIR / "s.toml"
    f.write_bytes(data)
    try:
        sched = load_schedule(f)
    except InputError as e:
        assert str(e).startswith(f"{f}: ") and "\n" not in str(e)
        return
    _check(sched)
