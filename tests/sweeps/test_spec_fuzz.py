"""Property-based fuzz of the sweep-spec parser: every generated document or file (mutated valid
specs, random values of every type, NaN/inf, huge numbers, BOMs, random bytes) gives a valid
`SweepSpec` or an `InputError`, never another exception. The fast runs are a few hundred
examples each; the slow marker runs a few thousand."""

import math
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dormancy_model.errors import InputError
from dormancy_model.sweeps.spec import (
    FIELDS,
    GRID_FIELDS,
    MAX_SWEEP_SIZE,
    SweepSpec,
    load_sweep_spec,
    parse_sweep,
)
from dormancy_model.units import DAYS_PER_YEAR

VALID = """[sweep]
name = "fuzz"
model = "human"
schedule = "clever-combo"
seed = 3

[schedule]
cycles = [3, 6]
hcq_dose = [0.5, 1.0]

[parameters.k_dr]
grid = "log"
range = [1e-9, 1e-7]
n = 3

[samples]
method = "sobol"
n = 4
parameters = ["delta_max"]

[patients]
n = 3
variability = { eve_cl = 0.35 }

[outputs]
residual_days = [84, 168]
relapse_free_years = [3]
assessment_days = [84]

[solver]
rtol = 1e-6
atol = 1e-8
chunk = 64
"""
VALID_DOC = tomllib.loads(VALID)

NASTY = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30), st.integers(), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(["human", "mouse", "clever-combo", "clever-hcq", "nope.toml", "log", "lin",
                     "sobol", "lhs", "fit", "float32", "float64", "tsit5", "nan", "inf",
                     "\ufeffhuman", "1e309", "", "k_dr", "eve_cl", "auto"]),
    st.lists(st.one_of(st.integers(min_value=-5, max_value=400),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["k_dr", "delta_max", "clever-hcq", "x", 10**20])),
             max_size=4),
    st.dictionaries(st.sampled_from(["eve_cl", "k_dr", "x", "n"]),
                    st.one_of(st.integers(-3, 20), st.floats()), max_size=2),
    st.sampled_from([10**6, 10**9, 10**12, 2**63, 2**63 - 1, 2**64, 1e308, -0.0, 5e-324]),
)
TABLE_KEYS = {t: sorted(f | {"colour"}) for t, f in FIELDS.items()}
TABLE_KEYS["parameters.k_dr"] = sorted(GRID_FIELDS | {"colour"})


@st.composite
def documents(draw):
    doc = {t: dict(v) if isinstance(v, dict) else v for t, v in VALID_DOC.items()}
    doc["parameters"] = {"k_dr": dict(VALID_DOC["parameters"]["k_dr"])}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["edit", "edit", "edit", "drop", "table", "grid"]))
        table = draw(st.sampled_from(sorted(TABLE_KEYS)))
        if table == "parameters.k_dr":
            target = doc["parameters"].get("k_dr") if isinstance(doc.get("parameters"),
                                                                  dict) else None
        else:
            target = doc.get(table)
        if kind == "table":  # a whole table replaced or removed
            name = table.split(".")[0]
            if draw(st.booleans()):
                doc.pop(name, None)
            else:
                doc[name] = draw(NASTY)
        elif kind == "grid":  # another parameter grid, maybe unknown or clashing
            name = draw(st.sampled_from(["delta_max", "eve_f", "k_drr", "eve_cl", "k_dr"]))
            if isinstance(doc.get("parameters"), dict):
                doc["parameters"][name] = draw(st.one_of(
                    st.fixed_dictionaries({"values": NASTY}),
                    st.fixed_dictionaries({"grid": NASTY, "range": NASTY, "n": NASTY}),
                    NASTY))
        elif isinstance(target, dict):
            key = draw(st.sampled_from(TABLE_KEYS[table]))
            if kind == "drop":
                target.pop(key, None)
            else:
                target[key] = draw(NASTY)
    return doc


def _check(spec):
    assert isinstance(spec, SweepSpec)
    assert spec.shape and all(n >= 1 for n in spec.shape)
    assert 1 <= spec.size <= MAX_SWEEP_SIZE
    sched_dims = [d for d in spec.dims if d.kind in ("schedule", "cycles", "dose")]
    assert len(spec.schedules) == int(np.prod([d.values.size for d in sched_dims] or [1]))
    for sched in spec.schedules:
        for drug in ("hcq", "eve"):
            t, a, _, _ = sched.events(drug)
            assert np.all(np.isfinite(t)) and np.all(np.isfinite(a)) and np.all(a >= 0)
    o = spec.outputs
    days = o.residual_days + o.rfs_days + o.assessment_days
    assert days and all(math.isfinite(d) and 0 <= d <= 100 * DAYS_PER_YEAR for d in days)
    assert 0 < spec.options.rtol < 1 and 0 < spec.options.atol < 1
    assert math.isfinite(spec.options.event_step) and spec.options.event_step > 0
    assert spec.chunk >= 1
    for name, v in {**spec.grids, **spec.samples}.items():
        lo, hi = spec.params.spec[name].bounds
        assert np.all(np.isfinite(v)) and np.all(v >= lo * (1 - 1e-9)), name
        assert np.all(v <= hi * (1 + 1e-9)), name
    for name, f in spec.patient_factors.items():
        assert np.all(np.isfinite(f)) and np.all(f > 0), name
    vals, sid = spec.lanes(np.arange(min(spec.size, 8)))
    assert np.all((0 <= sid) & (sid < len(spec.schedules)))
    for v in vals.values():
        assert np.all(np.isfinite(v))


def _parse_doc(doc):
    try:
        spec = parse_sweep(doc, "fuzz.toml")
    except InputError as e:
        assert str(e).startswith("fuzz.toml: ") and "\n" not in str(e), str(e)
        return
    _check(spec)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
@example(doc=VALID_DOC)
@example(doc={**VALID_DOC, "samples": {"method": "sobol", "n": 10**18,
                                       "parameters": ["k_dr"]}})
@example(doc={**VALID_DOC, "patients": {"n": 10**18}})
@example(doc={**VALID_DOC, "parameters": {"k_dr": {"grid": "lin", "range": [1e-5, 1e-3],
                                                   "n": 10**15}}})
@example(doc={**VALID_DOC, "sweep": {"seed": 2**63 - 1}})
@example(doc={**VALID_DOC, "schedule": {"hcq_dose": [1e308]}})
@example(doc={**VALID_DOC, "schedule": {"cycles": [10**20]}})
@example(doc={**VALID_DOC, "solver": {"block": 2**80}})
def test_sweep_spec_documents_parse_or_raise_input_error(doc):
    _parse_doc(doc)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_sweep_spec_documents_parse_or_raise_input_error_many(doc):
    _parse_doc(doc)


VALID_FILE = VALID.encode()
TOKENS = [b"", b"-", b"0", b"1e400", b"nan", b"inf", b"-inf", b"\"", b"\n", b"=", b"[", b"]",
          b"[[", b"\xff", b"\xef\xbb\xbf", b"99999999999999999999", b"0.001", b"1e308",
          b"2e9", b"\"clever-hcq\"", b"\"k_dr\"", b",", b"{", b"true", b"\x00"]


@st.composite
def files(draw):
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "bom"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    data = bytearray(VALID_FILE)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 8)))
        data[i:j] = draw(st.sampled_from(TOKENS))
    return (b"\xef\xbb\xbf" if kind == "bom" else b"") + bytes(data)


_DIR = Path(tempfile.mkdtemp(prefix="spec-fuzz-"))


def _load_file(data):
    f = _DIR / "spec.toml"
    f.write_bytes(data)
    try:
        spec = load_sweep_spec(f)
    except InputError as e:
        assert str(e).startswith(f"{f}: ") and "\n" not in str(e), str(e)
        return
    _check(spec)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=files())
@example(data=b"\xef\xbb\xbf" + VALID_FILE)
@example(data=VALID_FILE.replace(b"n = 4", b"n = 99999999999999999999"))
def test_sweep_spec_files_load_or_raise_input_error(data):
    _load_file(data)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=files())
def test_sweep_spec_files_load_or_raise_input_error_many(data):
    _load_file(data)


def test_the_valid_spec_is_valid():
    """The base of the mutations parses (so the fuzz mutates a valid spec, not a broken one)."""
    spec = parse_sweep(VALID_DOC, "fuzz.toml", VALID)
    assert spec.shape == (2, 2, 3, 4, 3)
    _check(spec)
