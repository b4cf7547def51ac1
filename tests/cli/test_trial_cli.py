"""`dormancy trial` end to end on the protocol logic (agent model replaced by the recording
double of test_trial_protocol, so the CLI, analysis and report are tested in seconds), plus
real-agent checks behind the slow marker."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dormancy_model.cli.main import main
from dormancy_model.trials import protocol as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trials"))
from test_trial_protocol import Recorder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def double(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(T, "_agent_simulator", lambda: rec)
    return rec


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_writes_report_and_same_seed_same_numbers(double, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["trial", "--replicates", "3", "--seed", "4", "--calibration", "",
            "--what-if", "cycles=3,6", "--posterior", "none"]  # none: even if fits/ has one
    code, out, err = run_cli(args + ["--out", str(a)], capsys)
    assert code == 0, err
    for f in ("report.md", "report.html", "trials.csv", "km.png", "clearance.png",
              "whatif_cycles.csv"):
        assert (a / f).exists(), f
    trials = pd.read_csv(a / "trials.csv")
    assert set(trials["arm"]) == {"HCQ", "EVE", "HCQ+EVE", "observation", "all treated"}
    assert trials.groupby("trial").size().tolist() == [5, 5, 5]  # one row per trial and arm
    code, _, err = run_cli(args + ["--out", str(b)], capsys)
    assert code == 0, err
    assert (a / "report.md").read_text() == (b / "report.md").read_text()
    assert (a / "trials.csv").read_text() == (b / "trials.csv").read_text()
    code, _, _ = run_cli(["trial", "--replicates", "3", "--seed", "5", "--calibration", "",
                          "--out", str(tmp_path / "c")], capsys)
    assert (tmp_path / "c" / "trials.csv").read_text() != (a / "trials.csv").read_text()
    md = (a / "report.md").read_text()
    assert "Reported vs simulated" in md and "What if: cycles" in md
    assert "reported" in out and "simulated" in out


def test_default_calibration_is_the_packaged_one(double, tmp_path):
    from dormancy_model.trials.calibrate import load_calibration
    from dormancy_model.trials.pipeline import run_trial_report

    res = run_trial_report(tmp_path / "t", replicates=1, seed=2)
    md = (tmp_path / "t" / "report.md").read_text()
    assert "population typical values from the packaged clever_calibration.json" in md
    assert f"k_dr = {load_calibration()['k_dr']:.4g} /day" in md
    # the report points to the validation document (published numbers beside the model's)
    assert "## Validation" in md and "docs/validation.md" in md
    assert "docs/validation.md" in (tmp_path / "t" / "report.html").read_text()
    assert res["agent_failures"] == 0 and set(res["trials"]["trial"]) == {0}


def test_demo_trial_stage_with_double(double, tmp_path, capsys):
    code, out, err = run_cli(["demo", "--out", str(tmp_path), "--only", "trial"], capsys)
    assert code == 0, err
    assert "== Virtual CLEVER trial and report" in out and "6 trials, 3-year RFS" in out
    assert (tmp_path / "trial" / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial"]


@pytest.mark.parametrize("args, field", [
    (["--what-if", "cycles=0"], "cycles"),
    (["--what-if", "banana=1"], "banana"),
    (["--replicates", "0"], "replicates"),
    (["--design", "clevr"], "design"),
    (["--calibration", "nope.json"], "nope.json"),
    (["--discontinuation", "1.5"], "discontinuation"),
    (["--method", "slow"], "method"),
])
def test_cli_bad_input_one_line_exit_2_no_output(double, tmp_path, capsys, args, field):
    out = tmp_path / "o"
    code, _, err = run_cli(["trial", "--out", str(out)] + args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_whatif_sample_size_and_combo_with_double(double):
    import jax

    from dormancy_model import load_model_parameters
    from dormancy_model.trials import whatif as W
    from dormancy_model.trials.design import clever_design

    d = clever_design(sizes=(3, 3, 3), observation_n=2)
    p = load_model_parameters("human")
    table, summ = W.sample_size(d, p, key=jax.random.key(0), pool=60, sizes=(10, 40),
                                resamples=20)
    assert list(table["n_per_arm"]) == [10, 40]
    assert ((table["power"] >= 0) & (table["power"] <= 1)).all()
    rows, best = W.combo_vs_single(d, p, n_per_arm=5, key=jax.random.key(0), replicates=3)
    assert set(rows["arm"]) >= {"HCQ", "EVE", "HCQ+EVE"}
    assert all(0 <= v <= 1 for v in best.values())


def test_schoenfeld_formula_closed_form():
    from scipy import stats

    from dormancy_model.trials.whatif import schoenfeld_n_per_arm

    s0, s1 = 0.8, 0.9
    hr = np.log(s1) / np.log(s0)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    d = 4 * z ** 2 / np.log(hr) ** 2
    assert schoenfeld_n_per_arm(s0, s1) == np.ceil(d / (1 - (s0 + s1) / 2) / 2)
    assert schoenfeld_n_per_arm(0.9, 0.8) == np.inf  # no benefit -> no finite size


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("## Virtual CLEVER trial"):]
    return re.search(r"```python\n(.*?)```", sec, re.S).group(1)


def test_readme_example_runs_with_double(double):
    exec(compile(readme_python_example(), "README", "exec"), {})


@pytest.mark.slow
def test_readme_example_runs_with_agents():
    r = subprocess.run([sys.executable, "-c", readme_python_example()], capture_output=True,
                       text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reduction_C3" in r.stdout


@pytest.mark.slow
def test_real_agents_same_seed_same_numbers_and_screening():
    import jax

    from dormancy_model.trials.design import clever_design
    from dormancy_model.trials.protocol import trial

    d = clever_design(sizes=(6, 6, 6), observation_n=6)
    a = trial(d, key=jax.random.key(3), replicates=4, chunk=64).summary()
    b = trial(d, key=jax.random.key(3), replicates=4, chunk=64).summary()
    pd.testing.assert_frame_equal(a, b)
    assert (a.loc[a["arm"] == "all treated", "screen_positivity"].between(0.2, 0.42)).all()
    # treatment lowers DTC counts more than observation (pooled over the 4 trials)
    red = a.groupby("arm")["reduction_C3"].median()
    assert red["HCQ+EVE"] > red["observation"]
