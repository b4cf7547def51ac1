"""Parameter files: every entry documented; unit conversion; validation; immutable updates."""

import re
import tomllib

import jax
import numpy as np
import pytest

import dormancy_model as dm
from dormancy_model.params.table import REGISTRY


@pytest.mark.parametrize("name", ["human", "mouse"])
def test_every_parameter_has_value_unit_bounds_scale_source(root, name):
    doc = tomllib.loads((root / "src" / "dormancy_model" / "params" / "data" / f"{name}.toml").read_text())
    assert set(doc["parameters"]) == set(REGISTRY)
    for k, e in doc["parameters"].items():
        assert set(e) >= {"value", "unit", "bounds", "scale", "source"}, k
        assert e["bounds"][0] <= e["value"] <= e["bounds"][1], k
        assert e["scale"] in ("lin", "log", "logit"), k
        src = e["source"]
        assert re.search(r"\[S\d+|assumption: \w|\d{4}", src), (k, src)


def test_units_are_converted(human, mouse):
    assert float(human["eve_cl"]) == pytest.approx(17.4 * 24)  # L/h -> L/day
    assert float(human["eve_ka"]) == pytest.approx(0.647 * 24)  # 1/h -> 1/day
    assert float(human["hcq_tlag"]) == pytest.approx(0.389 / 24)  # h -> day
    assert float(mouse["body_weight"]) == pytest.approx(0.025)  # g -> kg
    assert mouse.pk_per_kg and not human.pk_per_kg


def _write(tmp_path, root, edit):
    text = (root / "src" / "dormancy_model" / "params" / "data" / "human.toml").read_text()
    f = tmp_path / "p.toml"
    f.write_text(edit(text))
    return f


def test_unknown_name_suggests(tmp_path, root):
    f = _write(tmp_path, root, lambda s: s.replace("[parameters.k_dr]", "[parameters.k_drr]"))
    with pytest.raises(dm.InputError) as e:
        dm.load_parameters(f)
    assert "p.toml: parameters.k_drr: unknown parameter (did you mean 'k_dr'" in str(e.value)


def test_missing_name(tmp_path, root):
    text = (root / "src" / "dormancy_model" / "params" / "data" / "human.toml").read_text()
    start = text.index("[parameters.delta_r]")
    end = text.index("[parameters.lambda_p]")
    f = tmp_path / "p.toml"
    f.write_text(text[:start] + text[end:])
    with pytest.raises(dm.InputError, match="parameters.delta_r: missing"):
        dm.load_parameters(f)


def test_out_of_bounds_and_bad_unit(tmp_path, root):
    f = _write(tmp_path, root, lambda s: s.replace("value = 17.4", "value = 99.0"))
    with pytest.raises(dm.InputError, match=r"parameters.eve_cl.value: 99 L/h is outside the bounds"):
        dm.load_parameters(f)
    f = _write(tmp_path, root, lambda s: s.replace('value = 17.4\nunit = "L/h"',
                                                   'value = 17.4\nunit = "L/hr"'))
    with pytest.raises(dm.InputError, match=r"eve_cl.unit: unknown unit 'L/hr'.*'L/h'"):
        dm.load_parameters(f)


def test_replace_is_immutable_and_a_pytree(human):
    k0 = float(human["k_dr"])
    p2 = human.replace(k_dr=1e-3)
    assert k0 != 1e-3 and float(p2["k_dr"]) == 1e-3 and float(human["k_dr"]) == k0
    leaves = jax.tree_util.tree_leaves(p2)
    assert len(leaves) == len(REGISTRY)
    with pytest.raises(KeyError, match="did you mean 'k_dr'"):
        human.replace(k_drr=1.0)
    df = human.to_dataframe()
    assert np.isclose(df.set_index("name").loc["eve_cl", "value"], 17.4)


def test_with_values_stores_values_as_given(human):
    k0 = float(human["k_dr"])
    k = np.geomspace(1e-5, 1e-3, 4)
    pb = human.with_values({"k_dr": k}, body_weight=70.0)
    assert pb["k_dr"] is k and pb["body_weight"] == 70.0 and isinstance(pb["body_weight"], float)
    assert pb.specs is human.specs and pb.name == human.name and float(human["k_dr"]) == k0
    assert jax.vmap(lambda p: p["k_dr"] * 2)(human.with_values(
        {n: np.full(4, float(v)) for n, v in human.values.items()}, k_dr=k)).shape == (4,)
    with pytest.raises(KeyError, match="did you mean 'k_dr'"):
        human.with_values(k_drr=1.0)


def _set(text: str, name: str, **fields) -> str:
    """`text` with fields of [parameters.NAME] replaced (values as TOML text)."""
    start = text.index(f"[parameters.{name}]")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    for k, v in fields.items():
        block, n = re.subn(rf"(?m)^{k} = .*$", f"{k} = {v}", block)
        assert n == 1, (name, k)
    return text[:start] + block + text[end:]


PHYSICAL = [
    # (species file, parameter, edits, field, problem): declared bounds do not make a value
    # physical; the value is checked first, then each bound
    ("human", "k_pd", dict(value="-0.01", bounds="[-1.0, 0.1]"), "k_pd.value",
     "-0.01 1/day: a rate must be >= 0"),
    ("human", "k_pd", dict(bounds="[-1.0, 0.1]"), "k_pd.bounds", "-1 1/day: a rate must be >= 0"),
    ("human", "eve_tlag", dict(bounds="[-1.0, 2.0]"), "eve_tlag.bounds",
     "-1 h: a time must be >= 0"),
    ("human", "eve_f", dict(bounds="[0.1, 1.5]"), "eve_f.bounds",
     "1.5 1: a fraction must be in [0, 1]"),
    ("human", "eve_f", dict(value="1.2", bounds="[0.1, 1.5]"), "eve_f.value",
     "1.2 1: a fraction must be in [0, 1]"),
    ("human", "aspirate_fraction", dict(bounds="[1e-08, 2.0]"), "aspirate_fraction.bounds",
     "a fraction must be in [0, 1]"),
    ("human", "hcq_v1", dict(bounds="[0.0, 5000.0]", scale='"lin"'), "hcq_v1.bounds",
     "0 L: must be > 0"),
    ("human", "body_weight", dict(value="700.0", bounds="[35.0, 1000.0]"), "body_weight.value",
     "700 kg is not a plausible body weight for human (expected 20-300 kg)"),
    ("human", "body_weight", dict(bounds="[35.0, 1000.0]"), "body_weight.bounds",
     "1000 kg: 1000 kg is not a plausible body weight for human"),
    # grams written as kilograms in the mouse file: bounds and value agree, physics does not
    ("mouse", "body_weight", dict(unit='"kg"'), "body_weight.value",
     "25 kg: 25 kg is not a plausible body weight for mouse (expected 0.01-0.08 kg)"),
]


@pytest.mark.parametrize("species,name,edits,field,problem", PHYSICAL,
                         ids=[f"{c[0]}-{c[3]}" for c in PHYSICAL])
def test_physical_limits_beyond_the_declared_bounds(tmp_path, root, species, name, edits, field,
                                                    problem):
    text = (root / "src" / "dormancy_model" / "params" / "data" / f"{species}.toml").read_text()
    f = tmp_path / "p.toml"
    f.write_text(_set(text, name, **edits))
    with pytest.raises(dm.InputError) as e:
        dm.load_parameters(f)
    msg = str(e.value)
    assert msg == f"{f}: parameters.{field}: {problem}" or (
        msg.startswith(f"{f}: parameters.{field}: ") and problem in msg), msg


def test_physical_limits_hold_for_the_packaged_files_edges(tmp_path, root):
    """Edges are allowed: a fraction of exactly 1 and a rate of exactly 0 (k_pd = 0)."""
    text = (root / "src" / "dormancy_model" / "params" / "data" / "human.toml").read_text()
    f = tmp_path / "p.toml"
    f.write_text(_set(text, "hcq_f", value="1.0", bounds="[0.3, 1.0]", scale='"lin"'))
    p = dm.load_parameters(f)
    assert float(p["hcq_f"]) == 1.0 and float(p["k_pd"]) == 0.0


def test_meta_must_be_a_table(tmp_path, root):
    f = _write(tmp_path, root, lambda s: 'meta = 3\n' + s.replace("[meta]", "[metadata]", 1))
    with pytest.raises(dm.InputError, match=r"p.toml: meta: must be a table$"):
        dm.load_parameters(f)
