"""CLI: `dormancy simulate` outputs, `dormancy schedules`, and bad input (one line, exit 2)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from cli_run import run


def test_simulate_writes_outputs(tmp_path, capsys, root):
    out = tmp_path / "o"
    code, stdout, err = run(["simulate", "--model", str(root / "src/dormancy_model/params/data/human.toml"),
                             "--schedule", "clever-combo", "--years", "5", "--out", str(out)],
                            capsys)
    assert code == 0, err
    df = pd.read_csv(out / "trajectory.csv")
    for col in ("time_day", "dormant", "reactivating", "marrow_proliferating", "residual",
                "lesion_cells", "ode_proliferating_all", "hcq_ng_ml", "eve_ng_ml",
                "mtor_activity", "autophagy_flux", "relapse_free"):
        assert col in df.columns
    # residual is the marrow (D + R + marrow P); lesions apart
    np.testing.assert_allclose(df["residual"], df["dormant"] + df["reactivating"]
                               + df["marrow_proliferating"], rtol=1e-12)
    assert len(df) == int(5 * 365.25) + 2  # daily grid 0..1826 plus the exact end
    s = json.loads((out / "summary.json").read_text())
    for k in ("residual_end_of_treatment", "relapse_free_3y", "relapse_free_5y",
              "p_dtc_positive_after_cycle_3", "p_dtc_positive_after_cycle_6"):
        assert 0 <= s[k] <= 100
    assert (out / "trajectory.png").stat().st_size > 10_000


def test_simulate_custom_schedule_grid_and_cycles(tmp_path, capsys, root):
    out = tmp_path / "o"
    code, _, err = run(["simulate", "--schedule", str(root / "examples/schedule_custom.toml"),
                        "--years", "0.5", "--cycles", "2", "--save-every-hours", "6",
                        "--out", str(out)], capsys)
    assert code == 0, err
    df = pd.read_csv(out / "trajectory.csv")
    assert abs(df["time_day"].iloc[1] - 0.25) < 1e-12
    assert df.loc[df.time_day > 70, "eve_ng_ml"].max() < 1e-3 * df["eve_ng_ml"].max()


def test_schedules_lists_presets(capsys):
    code, out, _ = run(["schedules"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert any(ln.startswith("clever-combo") and "600 mg" in ln and "10 mg" in ln for ln in lines)


BAD = [
    (["--years", "0"], "--years: years: must be in (0, 100], got 0"),
    (["--years", "-2"], "must be in (0, 100], got -2"),
    (["--schedule", "clever-comb"], "unknown preset 'clever-comb'"),
    (["--schedule", "MISSING.toml"], "MISSING.toml: file: not found"),
]


@pytest.mark.parametrize("extra,expected", BAD)
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, extra, expected):
    out = tmp_path / "o"
    code, stdout, err = run(["simulate", "--out", str(out)] + extra, capsys)
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_bad_schedule_file_and_parameter_file(tmp_path, capsys, root):
    sched = tmp_path / "s.toml"
    sched.write_text('[[dose]]\ndrug = "hcq"\namount = 600\ndays_on = "1-35"\n')
    code, _, err = run(["simulate", "--schedule", str(sched), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 2 and "s.toml: dose[0].days_on: day 29 is outside the 28-day cycle" in err
    params = tmp_path / "p.toml"
    params.write_text((root / "src/dormancy_model/params/data/human.toml").read_text().replace("value = 0.647",
                                                                         "value = 50.0"))
    code, _, err = run(["simulate", "--model", str(params), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "p.toml: parameters.eve_ka.value: 50 1/h is outside the bounds" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; uses a file as parent")
def test_unwritable_output_dir_permissions(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run(["simulate", "--years", "0.1", "--out", str(ro / "x")], capsys)
    assert code == 2 and "cannot be written" in err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run(["simulate", "--years", "0.1", "--out", str(blocker / "sub")], capsys)
    assert code == 2 and "--out: output directory cannot be written" in err


def test_demo_unknown_stage_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = run(["demo", "--out", str(out), "--only", "nosuchstage"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--only: only: no stage matches" in err
    assert not out.exists()


def test_demo_fit_stage_skips_without_the_study(tmp_path):
    from dormancy_model.cli.demo import STUDY, stage_fit

    assert (STUDY / "study.toml").is_file()  # found from the repository checkout
    text = stage_fit(tmp_path, study=tmp_path / "absent")
    assert text.startswith("skipped: the synthetic study") and not (tmp_path / "fit").exists()
