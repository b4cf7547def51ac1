"""Bad input, command by command: exit code 2, exactly one line on stderr naming the option or
file and the field, and nothing created (the working directory is the temporary directory, so
default output paths such as fits/ or out/ are checked too). Also: a failure after validation
leaves no output folder (`io.output_dir`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import run

ROOT = Path(__file__).resolve().parents[2]
STUDY = str(ROOT / "data" / "mouse_synthetic")
HUMAN = (ROOT / "src" / "dormancy_model" / "params" / "data" / "human.toml").read_text()

SPEC = """[sweep]
model = "human"
schedule = "clever-combo"
{sweep}
[outputs]
residual_days = [168]
{rest}
"""

SCHEDULE = """[[dose]]
drug = "hcq"
amount = 600
unit = "mg"
{extra}
"""

# input files written into the working directory before the command runs
FILES = {
    "samples_seed.toml": SPEC.format(sweep="", rest='[samples]\nmethod = "sobol"\nn = 4\n'
                                     'parameters = ["k_dr"]\nseed = -1\n'),
    "patients_seed.toml": SPEC.format(sweep="", rest="[patients]\nn = 2\nseed = -1\n"),
    "sweep_seed.toml": SPEC.format(sweep="seed = -1", rest=""),
    "sweep_seed_float.toml": SPEC.format(sweep="seed = 1.5", rest=""),
    "cycles.toml": SPEC.format(sweep="", rest="[schedule]\ncycles = [6, 5000]\n"),
    "sweep_schedule.toml": SPEC.format(sweep="", rest="").replace(
        'schedule = "clever-combo"', 'schedule = "reversed.toml"'),
    "reversed.toml": SCHEDULE.format(extra='days_on = "1-5,12-8"'),
    "short.toml": SCHEDULE.format(extra="interval_hours = 0.5"),
    "fraction.toml": HUMAN.replace("value = 1.0\nunit = \"1\"\nbounds = [0.1, 1.0]",
                                   "value = 1.0\nunit = \"1\"\nbounds = [0.1, 1.5]", 1),
    "nan.json": '{"estimates": {"k_dr": {"internal_value": NaN}}}',
    "unknown.json": '{"estimates": {"k_drr": {"internal_value": 3e-4}}}',
    "a_file": "",
    "ok_spec.toml": SPEC.format(sweep="", rest=""),  # a valid one-case sweep spec
    # a Zarr group without the sweep attributes
    "plain.zarr/zarr.json": '{"zarr_format": 3, "node_type": "group", "attributes": {}}',
}
DIRS = ("taken.json",)  # a directory where an output file would go
FILES["heavy.toml"] = "body_weight_kg = 7000\n" + SCHEDULE.format(extra="")  # top-level key

CASES = {
    "fit": [
        (["--seed", "-1"], "--seed: seed: must be a whole number in [0, 2**63 - 1], got -1"),
        (["--seed", str(2**63)], "--seed: seed: must be a whole number"),
        (["--starts", "0"], "--starts: starts: must be >= 1"),
        (["--out", "fits/x.csv"], "fits/x.csv: --out: must be a .json file path"),
        (["--model", "human"], "human: meta.species: 'human' does not match the study's"),
        (["--free", "k_drr"], "k_drr"),
        (["--arms", "vehicle,nope"], "--arms: arms: unknown arm 'nope'"),
        (["--figures", "a_file/figs"], "--figures: output directory cannot be written"),
        (["--study", "nowhere"], "nowhere: file: not found (a study directory needs study.toml)"),
        (["--out", "taken.json"], "taken.json: --out: is a directory, not a file"),
        (["--arms", ","], "--arms: arms: empty arm name in ','"),
        (["--arms", "vehicle,,eve1-transient"], "--arms: arms: empty arm name"),
        (["--arms", "vehicle,vehicle"], "--arms: arms: duplicate arm 'vehicle'"),
        (["--method", "laplace", "--random", "k_drr"],
         "--random: random: unknown parameter 'k_drr' (did you mean 'k_dr'"),
        (["--method", "laplace", "--free", "dormant_initial,k_dr", "--random", "hcq_ic50"],
         "--random: random: hcq_ic50 is fixed (not among --free dormant_initial,k_dr)"),
        (["--method", "laplace", "--random", "burden_sigma"],
         "--random: random: burden_sigma is the noise sd of the counts"),
        (["--method", "laplace", "--random", "k_dr,k_dr"], "--random: random: a random effect "
         "is named twice"),
        (["--method", "laplace"], "--random: random: --method laplace needs random effects"),
        (["--method", "laplace", "--random", "k_dr", "--profile", "delta_max"],
         "--profile: profile: 'delta_max' has no random effect: with --method laplace"),
        (["--method", "nuts", "--random", "k_dr", "--profile", "k_dr"],
         "--profile: profile: profiles are for --method pooled (parameters) or laplace"),
        (["--random", "k_dr"], "--random: random: random effects need --method laplace"),
        (["--method", "foce"], "--method: method: unknown method 'foce' (one of: pooled, "
         "laplace, nuts)"),
        (["--method", "laplace", "--random", "k_dr", "--covariance", "block"],
         "--covariance: covariance: unknown covariance 'block'"),
        (["--laplace-starts", "0"], "--laplace-starts: laplace_starts: must be >= 1"),
        (["--method", "nuts", "--draws", "1"], "--draws: draws: must be >= 2"),
        (["--method", "nuts"], "--random: random: --method nuts needs random effects"),
        (["--method", "nuts", "--random", "k_drr"], "--random: random: unknown parameter"),
    ],
    "vpc": [
        (["missing.json"], "missing.json: file: not found"),
        (["a_file"], "a_file: file: not a fit JSON file"),
        (["nan.json"], "nan.json: format: expected 'dormancy-fit/1' (written by `dormancy fit`)"),
        (["missing.json", "--replicates", "0"], "--replicates: replicates: must be in "
         "[1, 100000], got 0"),
        (["missing.json", "--seed", "-1"], "--seed: seed: must be a whole number in "
         "[0, 2**63 - 1], got -1"),
        (["missing.json", "--out", "a_file/v"], "a_file/v: --out: output directory cannot be "
         "written (a_file is a file)"),
    ],
    "sweep": [
        (["samples_seed.toml"], "samples_seed.toml: samples.seed: must be a whole number"),
        (["patients_seed.toml"], "patients_seed.toml: patients.seed: must be a whole number"),
        (["sweep_seed.toml"], "sweep_seed.toml: sweep.seed: must be a whole number"),
        (["sweep_seed_float.toml"], "sweep.seed: must be a whole number in [0, 2**63 - 1], "
         "got 1.5"),
        (["cycles.toml"], "cycles.toml: schedule.cycles: must be in [1, 1000], got 5000"),
        (["sweep_schedule.toml"], "sweep.schedule: reversed range '12-8'"),
        (["cycles.toml", "--chunk", "0"], "cycles.toml: schedule.cycles"),  # spec first
        (["missing.toml"], "missing.toml: file: not found"),
        (["ok_spec.toml", "--scheduler", "junk"], "--scheduler: scheduler: expected a Dask "
         "scheduler address such as tcp://HOST:PORT, got 'junk'"),
        (["ok_spec.toml", "--scheduler", "tcp://host:99999"], "--scheduler: scheduler: "
         "expected a Dask scheduler address"),
        (["ok_spec.toml", "--out", "a_file/x.zarr"], "a_file/x.zarr: --out: output directory "
         "cannot be written (a_file is a file)"),
        (["ok_spec.toml", "--out", "a_file"], "a_file: --out: exists and is not a sweep store"),
    ],
    "sensitivity": [
        (["samples_seed.toml"], "samples_seed.toml: samples.seed: must be a whole number"),
    ],
    "plot-sweep": [
        (["nostore.zarr"], "nostore.zarr: store: not a sweep store"),
        (["plain.zarr"], "plain.zarr: store: not a sweep store (no sweep attributes)"),
    ],
    "agents": [
        (["--seed", "-1"], "--seed: seed: must be a whole number"),
        (["--replicates", "0"], "--replicates: replicates: must be >= 1"),
        (["--schedule", "reversed.toml"], "reversed.toml: dose[0].days_on: reversed range "
         "'12-8' (write 8-12)"),
        (["--years", "inf"], "--years: years: must be in (0, 100], got inf"),
        (["--years", "1e308"], "--years: years: must be in (0, 100], got 1e+308"),
        (["--years", "nan"], "--years: years: must be in (0, 100], got nan"),
        (["--schedule", "short.toml"], "short.toml: dose[0].interval_hours: 0.5 h is below 1 h"),
        (["--schedule", "heavy.toml"], "heavy.toml: body_weight_kg: 7000 kg is not a plausible "
         "body weight for human"),
        (["--cycles", "5000"], "--cycles: cycles: must be in [1, 1000], got 5000"),
        (["--model", "fraction.toml"], "fraction.toml: parameters.eve_f.bounds: 1.5 1: a "
         "fraction must be in [0, 1]"),
        (["--assess-days", "84,99999"], "--assess-days: assess_days: day 99999 is outside"),
    ],
    "trial": [
        (["--seed", "-1"], "--seed: seed: must be a whole number"),
        (["--replicates", "0"], "--replicates: replicates: must be >= 1"),
        (["--what-if", "sample-size=1"], "--what-if: sample-size: n per arm must be in "
         "[2, 100000], got 1"),
        (["--what-if", "sample-size=50,50"], "--what-if: sample-size: duplicate sizes"),
        (["--calibration", "nan.json"], "nan.json: estimates.k_dr.internal_value: must be a "
         "finite number, got nan"),
        (["--calibration", "unknown.json"], "unknown.json: estimates.k_drr: unknown parameter"),
        (["--discontinuation", "2"], "--discontinuation: discontinuation: must be in [0, 1]"),
        (["--model", "fraction.toml"], "fraction.toml: parameters.eve_f.bounds"),
        (["--what-if", "cycles=3,3"], "--what-if: cycles: duplicate values in '3,3'"),
        (["--what-if", "cycles=,"], "--what-if: cycles: cycles must be in [1, 100]"),
        (["--what-if", "dose=hcq:0.5,hcq:0.5"], "--what-if: dose: duplicate values"),
    ],
    "calibrate": [
        (["--seed", "-1"], "--seed: seed: must be a whole number"),
        (["--out", "c.txt"], "c.txt: --out: must be a .json file path"),
        (["--span", "inf"], "--span: span: must be in (0, 5], got inf"),
        (["--span", "nan"], "--span: span: must be in (0, 5], got nan"),
        (["--out", "taken.json"], "taken.json: --out: is a directory, not a file"),
        (["--out", "a_file/c.json"], "a_file/c.json: --out: output directory cannot be "
         "written (a_file is a file)"),
        (["--design-points", "64"], "--design-points: design_points: only with --posterior"),
        (["--posterior", "--points", "4"], "--points: points: only without --posterior"),
        (["--posterior", "--design-points", "5"], "--design-points: design_points: must be >= "
         "22 for a quadratic emulator in 5 parameters, got 5"),
        (["--posterior", "--parameters", "k_drr"], "--parameters: parameters: unknown "
         "calibration parameter 'k_drr' (did you mean 'k_dr'"),
        (["--posterior", "--parameters", "k_dr,k_dr"], "--parameters: parameters: duplicate"),
        (["--posterior", "--replicates", "2"], "--replicates: replicates: must be >= 3 with "
         "--posterior, got 2"),
        (["--posterior", "--chains", "0"], "--chains: chains: must be >= 1, got 0"),
        (["--posterior", "--untreated", "50"], "--untreated: untreated: must be >= 100, got 50"),
        (["--untreated", "500"], "--untreated: untreated: only with --posterior"),
        (["--posterior", "--box-sd", "0"], "--box-sd: box_sd: must be in (0, 4], got 0"),
        (["--posterior", "--box-sd", "4.5"], "--box-sd: box_sd: must be in (0, 4], got 4.5"),
        (["--posterior", "--out", "c.txt"], "c.txt: --out: must be a .json file path"),
        (["--posterior", "--out", "taken.json"], "taken.json: --out: is a directory"),
        (["--refine-points", "32"], "--refine-points: refine_points: only with --posterior"),
        (["--posterior", "--refine-points", "5"], "--refine-points: refine_points: must be 0 "
         "(no second wave) or >= 22 for a quadratic emulator in 5 parameters, got 5"),
        (["--posterior", "--refine-margin", "3"], "--refine-margin: refine_margin: must be in "
         "[0, 2], got 3"),
        (["--posterior", "--first-wave", "missing.json"], "missing.json: --first-wave: no such "
         "file"),
        (["--posterior", "--first-wave", "heavy.toml"], "heavy.toml: --first-wave: not a JSON "
         "file"),
    ],
    "simulate": [
        (["--schedule", "heavy.toml"], "heavy.toml: body_weight_kg: 7000 kg is not a plausible"),
        (["--schedule", "reversed.toml"], "reversed.toml: dose[0].days_on: reversed range"),
        (["--cycles", "0"], "--cycles: cycles: must be in [1, 1000], got 0"),
        (["--years", "inf"], "--years: years: must be in (0, 100], got inf"),
        (["--years", "1e308"], "--years: years: must be in (0, 100], got 1e+308"),
        (["--years", "0"], "--years: years: must be in (0, 100], got 0"),
        (["--atol", "inf"], "--atol: atol: must be in (0, 1], got inf"),
        (["--atol", "0"], "--atol: atol: must be in (0, 1], got 0"),
        (["--rtol", "nan"], "--rtol: rtol: must be in (0, 0.1], got nan"),
        (["--save-every-hours", "1e308"], "--save-every-hours: save_every_hours: must be in "
         "[0.04383, 43830] (at most 1000000 saved points and the horizon), got 1e+308"),
        (["--save-every-hours", "inf"], "--save-every-hours: save_every_hours: must be in"),
        (["--save-every-hours", "1e-9"], "--save-every-hours: save_every_hours: must be in"),
        (["--model", "fraction.toml"], "fraction.toml: parameters.eve_f.bounds"),
    ],
}
BASE = {"fit": ["--study", STUDY], "sweep": ["--out", "store.zarr"]}
PARAMS = [(cmd, argv, expected) for cmd, cases in CASES.items() for argv, expected in cases]


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for name in DIRS:
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fixture_files_differ_from_valid_ones_only_where_meant():
    assert FILES["fraction.toml"] != HUMAN  # the eve_f bounds edit applied
    assert FILES["fraction.toml"].count("[0.1, 1.5]") == 1


@pytest.mark.parametrize("cmd,argv,expected", PARAMS,
                         ids=[f"{c}:{' '.join(a)}" for c, a, _ in PARAMS])
def test_bad_input_one_line_exit_2_nothing_created(workdir, capsys, cmd, argv, expected):
    before = _tree(workdir)
    code, _, err = run([cmd] + BASE.get(cmd, []) + argv, capsys)  # argv wins
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dormancy: error: ") and expected in lines[0], lines[0]
    assert _tree(workdir) == before  # no fits/, out/, store or temporary left


def test_unreachable_scheduler_refused_before_the_store_is_created(workdir, capsys,
                                                                     monkeypatch):
    import dormancy_model.sweeps.run as R

    monkeypatch.setattr(R, "SCHEDULER_TIMEOUT_S", 0.5)
    before = _tree(workdir)
    code, _, err = run(["sweep", "ok_spec.toml", "--out", "s.zarr", "--scheduler",
                        "tcp://127.0.0.1:1"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("dormancy: error: --scheduler: scheduler: cannot reach "
                               "tcp://127.0.0.1:1"), lines[0]
    assert _tree(workdir) == before


# ------------------------------------------------------------ failures after validation


class Boom(RuntimeError):
    pass


def _boom(*args, **kwargs):
    raise Boom("failed mid-run")


def test_agents_failure_leaves_no_out_folder(workdir, capsys, monkeypatch):
    import dormancy_model.agents.simulate as A

    monkeypatch.setattr(A, "simulate_agents", _boom)
    before = _tree(workdir)
    with pytest.raises(Boom):
        run(["agents", "--replicates", "2", "--out", "o/agents"], capsys)
    assert _tree(workdir) == before


def test_trial_failure_leaves_no_out_folder(workdir, capsys, monkeypatch):
    import dormancy_model.trials.protocol as P

    monkeypatch.setattr(P, "trial", _boom)
    before = _tree(workdir)
    with pytest.raises(Boom):
        run(["trial", "--replicates", "1", "--calibration", "", "--out", "o/trial"], capsys)
    assert _tree(workdir) == before


def test_trial_failure_keeps_an_existing_out_folder_as_it_was(workdir, capsys, monkeypatch):
    import dormancy_model.trials.protocol as P

    (workdir / "t").mkdir()
    (workdir / "t" / "report.md").write_text("old report")
    monkeypatch.setattr(P, "trial", _boom)
    before = _tree(workdir)
    with pytest.raises(Boom):
        run(["trial", "--replicates", "1", "--calibration", "", "--out", "t"], capsys)
    assert _tree(workdir) == before and (workdir / "t" / "report.md").read_text() == "old report"


def test_fit_failure_leaves_no_fits_folder(workdir, capsys, monkeypatch):
    import dormancy_model.fitting.estimate as E

    monkeypatch.setattr(E, "fit", _boom)
    before = _tree(workdir)
    with pytest.raises(Boom):
        run(["fit", "--study", STUDY, "--starts", "2", "--arms", "vehicle"], capsys)
    assert _tree(workdir) == before


def test_fit_figure_failure_leaves_neither_json_nor_figures(workdir, capsys, monkeypatch):
    """A failure while writing the figures (after the fit) leaves no fit JSON and no figures."""
    import dormancy_model.fitting.estimate as E
    import dormancy_model.fitting.pipeline as FP

    class FakeResult:
        def summary(self):
            return "fake"

    monkeypatch.setattr(E, "fit", lambda *a, **k: FakeResult())
    monkeypatch.setattr(FP, "write_fit_figures", _boom)
    before = _tree(workdir)
    with pytest.raises(Boom):
        run(["fit", "--study", STUDY, "--starts", "2", "--arms", "vehicle", "--out",
             "fits/f.json"], capsys)
    assert _tree(workdir) == before


def test_calibration_json_is_valid_json_fixture():
    assert json.loads(FILES["unknown.json"])["estimates"]["k_drr"]["internal_value"] == 3e-4
