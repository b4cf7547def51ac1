"""`simulate --params FIT.json` applies a fit only to the parameter set (name and species) it was
made for: another model is refused with one line, before anything is simulated or written."""

import json
import shutil

import pytest

from cli_run import run
from dormancy_model.errors import InputError
from dormancy_model.fitting.files import apply_fit
from dormancy_model.params.table import load_model_parameters
from fit_files import write_fit_file

EST = {"k_dr": 3.0e-4, "delta_max": 0.2, "burden_sigma": 0.5}
COV = [[0.04, 0.0, 0.0], [0.0, 0.09, 0.0], [0.0, 0.0, 0.01]]


@pytest.fixture
def mouse_fit(tmp_path):
    path = tmp_path / "fit.json"
    write_fit_file(path, "mouse", EST, COV)
    return path


def _simulate(tmp_path, capsys, model, fit):
    return run(["simulate", "--model", model, "--schedule", "mouse-vehicle", "--years", "0.1",
                "--params", str(fit), "--out", str(tmp_path / "sim")], capsys)


def test_mouse_fit_refused_for_human_model(tmp_path, capsys, mouse_fit):
    code, out, err = _simulate(tmp_path, capsys, "human", mouse_fit)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == (f"dormancy: error: {mouse_fit}: model: fit made for parameter set "
                        "'mouse' (species mouse), not for --model 'human' (species human); use "
                        "--model mouse or a fit of 'human'")
    assert not (tmp_path / "sim").exists()


def test_other_parameter_set_of_the_same_species_refused(tmp_path, mouse_fit):
    """A mouse parameter file with another name is another model."""
    text = load_model_parameters("mouse").source
    other = tmp_path / "mouse_b.toml"
    other.write_text(open(text).read().replace('name = "mouse"', 'name = "mouse-b"', 1))
    params = load_model_parameters(other)
    assert params.name == "mouse-b" and params.species == "mouse"
    with pytest.raises(InputError, match="fit made for parameter set 'mouse' .* not for "
                       "--model 'mouse-b' \\(species mouse\\)"):
        apply_fit(params, mouse_fit)


def test_same_model_applies(tmp_path, mouse_fit):
    """The packaged set by name and a copy of its file both take the fit."""
    copy = tmp_path / "copy.toml"
    shutil.copy(load_model_parameters("mouse").source, copy)
    for model in ("mouse", copy):
        p = apply_fit(load_model_parameters(model), mouse_fit)
        assert float(p["k_dr"]) == EST["k_dr"] and float(p["delta_max"]) == EST["delta_max"]


@pytest.mark.parametrize("model_entry", ["mouse", "elsewhere/mouse.toml"])
def test_fit_without_model_set_judged_by_its_model_entry(tmp_path, mouse_fit, model_entry):
    """A fit written before `model_set`: the `model` entry is loaded (a packaged name) or, when
    it cannot be, its file name is compared with the parameter set's name."""
    doc = json.loads(mouse_fit.read_text())
    del doc["model_set"]
    doc["model"] = model_entry
    mouse_fit.write_text(json.dumps(doc))
    assert float(apply_fit(load_model_parameters("mouse"), mouse_fit)["k_dr"]) == EST["k_dr"]
    with pytest.raises(InputError, match="model: fit made for parameter set 'mouse'"):
        apply_fit(load_model_parameters("human"), mouse_fit)
