"""Property-based fuzz of the trial-design parser: designs built from mutated CLEVER fields
(random values of every type, NaN/inf, huge numbers, BOM-prefixed names), `--what-if` texts
(mutated valid ones, random text, NaN/inf strings, huge numbers) and the designs the what-ifs
derive all give a valid `TrialDesign` (or parsed what-if) or an `InputError`, never another
exception. The fast runs are a few hundred examples each; the slow marker runs a few
thousand."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dormancy_model.errors import InputError
from dormancy_model.pk.presets import PRESETS
from dormancy_model.trials import whatif as W
from dormancy_model.trials.design import (
    MAX_ARM_N,
    MAX_DESIGN_CYCLES,
    Arm,
    TrialDesign,
    clever_design,
    get_design,
)

CLEVER = clever_design()
NASTY = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30), st.integers(-3, 20), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.none(),
    st.sampled_from(["hcq", "eve", "nan", "inf", "\ufeffHCQ", "", "clever", 10**6, 2**63,
                     1e308, -0.0, 5e-324, 0.5, 1.5, ("hcq",), ("hcq", "hcq"), ("x",), "hcq",
                     (), (3,), (3, 6), (0,), (7,), (3.0,), [3, 6], PRESETS["clever-hcq"],
                     PRESETS["clever-combo"], PRESETS["mouse-vehicle"]]),
)
DESIGN_FIELDS = sorted(f.name for f in dataclasses.fields(TrialDesign) if f.name != "arms")
ARM_FIELDS = sorted(f.name for f in dataclasses.fields(Arm))


@st.composite
def designs(draw):
    """(TrialDesign fields as a dict) with a few fields, or arm fields, replaced."""
    kw = {f.name: getattr(CLEVER, f.name) for f in dataclasses.fields(TrialDesign)}
    arms = [dataclasses.asdict(a) | {"drugs": a.drugs} for a in CLEVER.arms]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["design", "arm", "arm", "arms"]))
        if kind == "design":
            kw[draw(st.sampled_from(DESIGN_FIELDS))] = draw(NASTY)
        elif kind == "arm":
            arms[draw(st.integers(0, len(arms) - 1))][draw(st.sampled_from(ARM_FIELDS))] = \
                draw(NASTY)
        else:  # drop or duplicate an arm
            i = draw(st.integers(0, len(arms) - 1))
            if draw(st.booleans()):
                arms.pop(i)
            else:
                arms.append(dict(arms[i]))
    return kw, arms


def _check(d):
    assert isinstance(d, TrialDesign)
    assert d.arms and len({a.name for a in d.arms}) == len(d.arms)
    for a in d.arms:
        assert isinstance(a.n, int) and 1 <= a.n <= MAX_ARM_N
        assert set(a.drugs) <= {"hcq", "eve"}
        assert math.isfinite(a.hcq_factor) and math.isfinite(a.eve_factor)
        assert a.hcq_factor >= 0 and a.eve_factor >= 0
        assert a.label
    assert isinstance(d.cycles, int) and 1 <= d.cycles <= MAX_DESIGN_CYCLES
    assert all(1 <= c <= d.cycles for c in d.assess_after_cycles)
    assert isinstance(d.extension_cycles, int) and d.extension_cycles >= 0
    assert 0 <= d.discontinuation_prob <= 1
    for v in (d.followup_beta_a, d.horizon_days, d.end_of_extension, d.post_treatment_days,
              d.observation_days, *d.assessment_days().values()):
        assert math.isfinite(v), v
    assert d.followup_beta_a > 0 and d.observation_days > 0
    assert d.describe() and d.n_treated == sum(a.n for a in d.arms)


def _build(kw, arms):
    try:
        arm_objs = tuple(Arm(**a) for a in arms)
        d = TrialDesign(**{**kw, "arms": arm_objs})
    except InputError as e:
        assert str(e).startswith("design ") and "\n" not in str(e), str(e)
        return
    _check(d)
    for c in (1, d.cycles, MAX_DESIGN_CYCLES):  # the what-if variants stay valid
        _check(d.with_cycles(c))
    _check(d.with_sizes(2))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(fields=designs())
@example(fields=({f.name: getattr(CLEVER, f.name) for f in dataclasses.fields(TrialDesign)}
                 | {"followup_max_months": float("inf")},
                 [dataclasses.asdict(a) | {"drugs": a.drugs} for a in CLEVER.arms]))
@example(fields=({f.name: getattr(CLEVER, f.name) for f in dataclasses.fields(TrialDesign)},
                 [{"name": "A", "drugs": ("hcq",), "n": 10**30}]))
@example(fields=({f.name: getattr(CLEVER, f.name) for f in dataclasses.fields(TrialDesign)},
                 [{"name": "A", "drugs": ("hcq",), "n": 5, "hcq_factor": float("nan")}]))
def test_designs_build_or_raise_input_error(fields):
    _build(*fields)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=designs())
def test_designs_build_or_raise_input_error_many(fields):
    _build(*fields)


VALID_WHATIFS = ["cycles=3,6,12", "dose=hcq:0.5,eve:0.5", "combo=100", "sample-size",
                 "sample-size=50,100", "combo", "dose=hcq:2"]
TOKENS = ["", ",", "=", ":", "-", "0", "1", "2", "3", "nan", "inf", "-inf", "1e309",
          "99999999999999999999", "0.5", "hcq", "eve", "HCQ", "\ufeff", " ", "\n", "_", "1e5",
          "cycles", "dose", "combo", "sample-size", "sample_size", "3,3", "hcq:0.5,hcq:0.5"]


@st.composite
def whatif_texts(draw):
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "mutated", "bom"]))
    if kind == "random":
        return draw(st.text(max_size=30))
    s = draw(st.sampled_from(VALID_WHATIFS))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(s)))
        j = draw(st.integers(i, min(len(s), i + 4)))
        s = s[:i] + draw(st.sampled_from(TOKENS)) + s[j:]
    return ("\ufeff" if kind == "bom" else "") + s


def _whatif(text):
    try:
        name, vals = W.parse_whatif(text)
    except InputError as e:
        assert str(e).startswith("--what-if: ") and "\n" not in str(e), str(e)
        return
    assert name in ("cycles", "dose", "combo", "sample-size")
    assert vals and len(set(vals)) == len(vals)
    if name == "cycles":
        designs = W.cycles_designs(CLEVER, vals)
        assert len(designs) == len(vals)
    elif name == "dose":
        designs = W.dose_designs(CLEVER, vals)
        assert len(designs) == len(vals) + 1
    else:
        assert all(isinstance(n, int) and 2 <= n <= W.MAX_PER_ARM for n in vals)
        designs = {n: CLEVER.with_sizes(n) for n in vals}
    for d in designs.values():
        _check(d)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=whatif_texts())
@example(text="cycles=3,3")
@example(text="dose=hcq:nan")
@example(text="dose=hcq:0.5,HCQ:0.5")
@example(text="combo=1e309")
@example(text="sample-size=99999999999999999999")
@example(text="dose=")
def test_whatif_texts_parse_or_raise_input_error(text):
    _whatif(text)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=whatif_texts())
def test_whatif_texts_parse_or_raise_input_error_many(text):
    _whatif(text)


@given(name=st.one_of(st.text(max_size=10), st.sampled_from(["clever", "CLEVER", "\ufeffclever"])))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_get_design_known_or_input_error(name):
    try:
        d = get_design(name)
    except InputError as e:
        assert str(e).startswith("--design: design: ") and "\n" not in str(e)
        return
    _check(d)


def test_the_base_design_is_valid():
    _check(CLEVER)
    _build({f.name: getattr(CLEVER, f.name) for f in dataclasses.fields(TrialDesign)},
           [dataclasses.asdict(a) | {"drugs": a.drugs} for a in CLEVER.arms])
