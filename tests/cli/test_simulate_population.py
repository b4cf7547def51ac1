"""`simulate --params POPFIT.json`: a population fit gives its typical values (the median animal)
and says so; `--animal ID` gives that fitted animal's empirical Bayes estimates: exactly the
parameter sets applied by hand (fast, no solve) and, in the slow suite, bitwise the same
trajectories. Bad inputs: one line, exit 2, nothing simulated, no output directory."""

import json

import numpy as np
import pytest

from cli_run import run
from dormancy_model.model.pipeline import run_simulation
from dormancy_model.params.table import load_model_parameters
from fit_files import write_fit_file
from population_fit_files import write_population_fit_file

TYP = {"dormant_initial": 1500.0, "k_dr": 3e-4, "delta_max": 0.2, "burden_sigma": 0.5}
RANDOM = ("dormant_initial", "k_dr")
ETA = {"m1": [0.3, -0.5], "m2": [-0.2, 0.4]}


@pytest.fixture
def pop_fit(tmp_path):
    path = tmp_path / "pop.json"
    write_population_fit_file(path, "mouse", TYP, RANDOM, [0.4, 0.8], [0.6], ETA)
    return path


def _simulate(tmp_path, capsys, fit, *extra, out="sim"):
    return run(["simulate", "--model", "mouse", "--schedule", "mouse-vehicle", "--years", "0.1",
                "--params", str(fit), "--out", str(tmp_path / out), *extra], capsys)


@pytest.fixture
def spy(monkeypatch):
    """`run_simulation` replaced by a recorder of the parameter set it is given (no solve):
    equal parameter sets give equal trajectories (the slow tests below check it bitwise)."""
    import pandas as pd

    import dormancy_model.model.pipeline as pipeline

    seen = []

    def fake(out, *, params=None, **kw):
        seen.append(params)
        return dict(out_dir=out, summary={"residual_end_of_treatment": 1.0},
                    table=pd.DataFrame({"relapse_free": [1.0]}))

    monkeypatch.setattr(pipeline, "run_simulation", fake)
    return seen


def _same_parameters(a, b):
    assert a.values.keys() == b.values.keys()
    for n in a.values:
        np.testing.assert_array_equal(np.asarray(a[n]), np.asarray(b[n]), err_msg=n)


def _hand(**values):
    return load_model_parameters("mouse").replace(**values)


TYPICAL = {n: v for n, v in TYP.items() if n != "burden_sigma"}


def test_population_fit_gives_the_typical_animal(tmp_path, capsys, pop_fit, spy):
    code, out, err = _simulate(tmp_path, capsys, pop_fit)
    assert code == 0, err
    assert out.splitlines()[0] == (
        "population fit (laplace, 2 animals; between-animal sd dormant_initial 0.4, k_dr 0.8, "
        "full Omega): simulating the typical animal (typical values, the population's median "
        "animal; --animal ID simulates one fitted animal)")
    _same_parameters(spy[0], _hand(**TYPICAL))


def test_animal_gives_its_empirical_bayes_estimates(tmp_path, capsys, pop_fit, spy):
    """m1's values are the file's EBE parameters (typical x exp(eta) on the log scale);
    delta_max (no random effect) stays at its typical value."""
    ebe = json.loads(pop_fit.read_text())["population"]["ebe"]["m1"]["parameters"]
    for k, n in enumerate(RANDOM):
        assert ebe[n] == pytest.approx(TYP[n] * np.exp(ETA["m1"][k]), rel=1e-12)
    code, out, err = _simulate(tmp_path, capsys, pop_fit, "--animal", "m1")
    assert code == 0, err
    assert out.splitlines()[0].endswith(
        "simulating animal m1 (empirical Bayes estimates: dormant_initial 2025 cells, k_dr "
        "0.000182 1/day)")
    _same_parameters(spy[0], _hand(delta_max=TYP["delta_max"], **ebe))


def _by_hand(tmp_path, **values):
    run_simulation(tmp_path / "hand", model="mouse", params=_hand(**values),
                   schedule="mouse-vehicle", years=0.1)
    return (tmp_path / "hand" / "trajectory.csv").read_text()


@pytest.mark.slow
def test_trajectories_equal_the_values_applied_by_hand(tmp_path, capsys, pop_fit):
    """Bitwise the same trajectory.csv as `run_simulation` with the typical values, then with
    m2's estimates, applied by hand (one compile, about 6 s on the 2-core CPU)."""
    code, out, err = _simulate(tmp_path, capsys, pop_fit)
    assert code == 0, err
    assert (tmp_path / "sim" / "trajectory.csv").read_text() == _by_hand(tmp_path, **TYPICAL)
    ebe = json.loads(pop_fit.read_text())["population"]["ebe"]["m2"]["parameters"]
    code, out, err = _simulate(tmp_path, capsys, pop_fit, "--animal", "m2", out="sim2")
    assert code == 0, err
    hand = _by_hand(tmp_path / "b", delta_max=TYP["delta_max"], **ebe)
    assert (tmp_path / "sim2" / "trajectory.csv").read_text() == hand


def _edit_omega(path):
    doc = json.loads(path.read_text())
    doc["population"]["omega"] = [[0.16, 0.9], [0.9, 0.64]]
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("case,words", [
    ("unknown", "pop.json: --animal: no animal 'm3' in the fit (did you mean 'm2', 'm1'?); "
                "its animals: m1, m2"),
    ("pooled", "fit.json: --animal: a pooled fit has no per-animal estimates: --animal needs a "
               "population fit"),
    ("no-params", "--animal: animal: needs --params FIT.json (a population fit)"),
    ("corrupt", "pop.json: population.omega: not positive semi-definite"),
])
def test_bad_inputs_one_line_no_output(tmp_path, capsys, pop_fit, case, words, spy):
    if case == "pooled":
        fit = tmp_path / "fit.json"
        write_fit_file(fit, "mouse", {"k_dr": 3e-4}, [[0.04]])
        argv = ["--animal", "m1"]
    elif case == "no-params":
        code, out, err = run(["simulate", "--model", "mouse", "--animal", "m1", "--out",
                              str(tmp_path / "sim")], capsys)
    else:
        fit, argv = pop_fit, ["--animal", "m3"]
        if case == "corrupt":
            _edit_omega(pop_fit)
            argv = []
    if case != "no-params":
        code, out, err = _simulate(tmp_path, capsys, fit, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "sim").exists() and not spy


def test_animal_without_parameters_entry_is_typical_plus_eta(pop_fit):
    """A NUTS file's EBEs hold only eta: the animal's values are typical x exp(eta)."""
    from dormancy_model.params.fitfile import read_fit
    from dormancy_model.params.popfit import animal_parameters, read_population

    doc = read_fit(pop_fit)
    for e in doc["population"]["ebe"].values():
        del e["parameters"]
    params = load_model_parameters("mouse")
    p = animal_parameters(read_population(doc, params, str(pop_fit)), params, "m2")
    for k, n in enumerate(RANDOM):
        assert float(p[n]) == pytest.approx(TYP[n] * np.exp(ETA["m2"][k]), rel=1e-12)
    assert float(p["delta_max"]) == TYP["delta_max"]
