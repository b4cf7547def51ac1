"""Calibration: the surrogate machinery recovers a known optimum (fast, analytic stand-in for
the simulator), and the full simulation-based calibration recovers the parameters of a
synthetic trial made from known values (slow)."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from dormancy_model import load_model_parameters
from dormancy_model.errors import InputError
from dormancy_model.trials import calibrate as C
from dormancy_model.trials.design import clever_design

# a known optimum inside the calibration grid (centred at the parameter file's values, half-width
# 1 in ln units), away from the centre and from the grid points
_FILE = load_model_parameters("human")
TRUE = np.log([float(_FILE["delta_max"]), float(_FILE["k_dr"])]) + np.array([-0.37, 0.52])


def fake_simulate_at(theta, design, params, population, *, key, replicates, method="fast",
                     chunk=512):
    """Statistics as smooth known functions of theta (exactly quadratic in theta), so the
    response surface is exact and the optimum is known."""
    u, v = np.asarray(theta) - TRUE
    rows = []
    for t in range(3):
        for arm, base_red, base_rfs in (("HCQ", 0.80, 0.917), ("EVE", 0.78, 0.929),
                                        ("HCQ+EVE", 0.87, 0.99)):
            rows.append(dict(trial=t, arm=arm, reduction_C3=base_red + 0.1 * u - 0.01 * u * u,
                             rfs_3y=base_rfs - 0.04 * v + 0.005 * v * v))
        rows.append(dict(trial=t, arm="all treated", hr_cleared=0.21 * np.exp(0.2 * u),
                         screen_positivity=0.3))
    return pd.DataFrame(rows), None


def test_surrogate_calibration_recovers_known_optimum(monkeypatch):
    monkeypatch.setattr(C, "simulate_at", fake_simulate_at)
    p = load_model_parameters("human")
    targets = {k: v for k, v in C.TARGETS.items()}
    targets["rfs_3y:HCQ+EVE"] = 0.99
    res = C.calibrate(clever_design(), p, key=jax.random.key(0), replicates=3, span=1.0,
                      points=3, targets=targets)
    np.testing.assert_allclose(res.theta, TRUE, atol=1e-3)
    assert set(res.values) == {"delta_max", "k_dr"}
    rec = C.calibration_record(res, p, seed=0)
    assert rec["estimates"]["delta_max"]["internal_value"] == pytest.approx(np.exp(TRUE[0]), rel=1e-3)
    assert len(rec["grid"]) == 9 and rec["targets"]["hr_cleared"] == 0.21


def test_loss_zero_at_targets_and_load_calibration(tmp_path):
    assert C.loss(dict(C.TARGETS)) == 0.0
    assert C.loss({**C.TARGETS, "rfs_3y:HCQ": 0.917 + 0.05}) == pytest.approx(1.0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"estimates": {"k_dr": {"internal_value": 3e-4}}}))
    assert C.load_calibration(path) == {"k_dr": 3e-4}
    path.write_text("{}")
    with pytest.raises(InputError):
        C.load_calibration(path)
    packaged = C.load_calibration()  # the default shipped as package data
    assert set(packaged) == {"delta_max", "k_dr"} and all(v > 0 for v in packaged.values())


def test_calibrate_cli_writes_record(monkeypatch, tmp_path, capsys):
    from dormancy_model.cli.main import main

    monkeypatch.setattr(C, "simulate_at", fake_simulate_at)
    out = tmp_path / "cal" / "c.json"
    main(["calibrate", "--replicates", "3", "--check-replicates", "3", "--seed", "0",
          "--out", str(out)])
    rec = json.loads(out.read_text())
    assert set(rec["estimates"]) == {"delta_max", "k_dr"} and len(rec["grid"]) == 9
    assert rec["command"].startswith("dormancy calibrate --model human --replicates 3")
    assert C.load_calibration(out) == {k: v["internal_value"] for k, v in rec["estimates"].items()}
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("args, field", [
    (["--replicates", "0"], "replicates"),
    (["--check-replicates", "0"], "check_replicates"),
    (["--points", "2"], "points"),
    (["--span", "0"], "span"),
    (["--out", "cal.txt"], "--out"),
    (["--model", "nope"], "nope"),
])
def test_calibrate_cli_bad_input_one_line_exit_2(monkeypatch, tmp_path, capsys, args, field):
    from dormancy_model.cli.main import main

    monkeypatch.setattr(C, "simulate_at", fake_simulate_at)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--out", str(tmp_path / "c.json")] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and field in err[0], err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_calibration_recovers_synthetic_trial():
    """Targets = medians of a synthetic trial simulated at known typical values; calibration
    from the parameter-file values (other key) must find them again."""
    p = load_model_parameters("human")
    d = clever_design()
    trials, pats = C.simulate_at(TRUE, d, p, C.Population(), key=jax.random.key(11),
                                 replicates=16)
    stats = C.trial_statistics(trials, pats)
    targets = {k: stats[k] for k in C.TARGETS if k != "hr_cleared"}
    res = C.calibrate(d, p, key=jax.random.key(12), replicates=16, span=1.0, points=3,
                      targets=targets)
    # delta_max is pinned by three reductions; k_dr by 3-year RFS of ~51 patients (noisier)
    assert abs(res.theta[0] - TRUE[0]) < 0.3
    assert abs(res.theta[1] - TRUE[1]) < 0.7
    chk = res.check.set_index(["statistic", "arm"])
    for arm in ("HCQ", "EVE", "HCQ+EVE"):
        row = chk.loc[("reduction_C3", arm)]
        assert row["sim_p05"] <= targets[f"reduction_C3:{arm}"] <= row["sim_p95"]


BAD_CALIBRATIONS = [
    ('{"estimates": {"k_dr": {"internal_value": NaN}}}', "estimates.k_dr.internal_value",
     "must be a finite number, got nan"),
    ('{"estimates": {"k_dr": {"internal_value": Infinity}}}', "estimates.k_dr.internal_value",
     "finite number"),
    ('{"estimates": {"k_dr": {"internal_value": -3e-4}}}', "estimates.k_dr.internal_value",
     "must be >= 0, got -0.0003"),
    ('{"estimates": {"k_dr": {"internal_value": "3e-4"}}}', "estimates.k_dr.internal_value",
     "finite number"),
    ('{"estimates": {"k_drr": {"internal_value": 3e-4}}}', "estimates.k_drr",
     "unknown parameter (did you mean 'k_dr'"),
    ('{"estimates": {}}', "estimates", "empty"),
    ('{"estimates": [1, 2]}', "estimates", "not a calibration file"),
    ("not json", "estimates", "not a calibration file"),
]


@pytest.mark.parametrize("text,field,problem", BAD_CALIBRATIONS)
def test_load_calibration_refuses_bad_values(tmp_path, text, field, problem):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        C.load_calibration(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {field}: ") and problem in msg and "\n" not in msg, msg


def test_load_calibration_checks_the_model_bounds(tmp_path):
    p = load_model_parameters("human")  # k_dr bounds [1e-12, 1e-5] /day
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"estimates": {"k_dr": {"internal_value": 0.5}}}))
    assert C.load_calibration(path) == {"k_dr": 0.5}  # no model: only physical checks
    with pytest.raises(InputError, match=r"estimates.k_dr.internal_value: 0.5 1/day is outside "
                       r"the bounds of .*human.toml \[1e-12, 1e-05\] 1/day"):
        C.load_calibration(path, p)
    assert C.load_calibration(None, p) == C.load_calibration()  # the packaged one is in bounds


@pytest.mark.parametrize("spec,problem", [
    ("sample-size=1", "in [2, 100000], got 1"),
    ("sample-size=0,50", "got 0"),
    ("sample-size=-5", "got -5"),
    ("sample-size=50,50", "duplicate sizes"),
    ("sample-size=abc", "invalid literal"),
    ("sample-size=1000001", "got 1000001"),
    ("combo=1", "in [2, 100000], got 1"),
    ("cycles=3,1000", "cycles must be in [1, 100]"),
])
def test_whatif_values_are_validated(spec, problem):
    from dormancy_model.trials.whatif import parse_whatif

    with pytest.raises(InputError) as e:
        parse_whatif(spec)
    msg = str(e.value)
    assert msg.startswith("--what-if: ") and problem in msg, msg


def test_whatif_sample_sizes_parse():
    from dormancy_model.trials.whatif import parse_whatif

    assert parse_whatif("sample-size=200, 50,100") == ("sample-size", [50, 100, 200])
    assert parse_whatif("sample-size") == ("sample-size", [50, 100, 200, 400])


def test_provenance_commit_is_the_packages_not_the_working_directorys(tmp_path, monkeypatch):
    """A calibration run from inside another git repository records the commit of the code that
    ran (the checkout holding the package; "unknown" outside one), never the other repo's."""
    import subprocess
    from pathlib import Path

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "f.txt").write_text("x")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other")
    other = git("rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    got = C._git_commit()
    assert not got.startswith(other)
    pkg = Path(C.__file__).resolve().parent
    ref = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True,
                         text=True)
    if ref.returncode == 0:
        assert got.split("+")[0] == ref.stdout.strip()
    else:
        assert got == "unknown"
