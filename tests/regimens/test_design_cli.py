"""`dormancy design`: bad specs are refused with one line naming the file and field, exit 2,
no output folder; a run end to end (slow: it compiles the search and runs virtual trials)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_run import run

GOOD = """[design]
days_on = [14, 28]
cycles = [1, 3]
starts = 1
[population]
patients = 4
search_patients = 4
[objective]
kind = "residual"
day = 84
[drug.hcq]
amount_mg = 600
tablet_mg = 200
frequency = "BID"
[drug.eve]
amount_mg = [2.5, 10]
tablet_mg = [2.5, 5]
[[constraint]]
kind = "trough"
drug = "eve"
max_ng_ml = 17.3
fraction = 0.8
source = "Fukudo [S67]"
"""

BAD = [
    (GOOD.replace("starts = 1", "startz = 1"), "bad.toml: design.startz: unknown field"),
    (GOOD.replace('source = "Fukudo [S67]"', ""), "constraint[0].source: missing"),
    (GOOD.replace("tablet_mg = [2.5, 5]", "tablet_mg = [20]"), "drug.eve.tablet_mg: no sum"),
    (GOOD.replace('frequency = "BID"', 'frequency = "Q3H"'), "drug.hcq.frequency: unknown"),
    (GOOD.replace('drug = "eve"\nmax', 'drug = "cq"\nmax'), "constraint[0].drug: must be one"),
    (GOOD.replace("days_on = [14, 28]", "days_on = [14, 29]"), "design.days_on: must be <= 28"),
    (GOOD.replace("days_on = [14, 28]", "days_on = [20, 14]"), "design.days_on: low 20"),
    (GOOD.replace("starts = 1", "starts = 1\ncycle_days = [28, 28]"), "design.cycle_days: lists"),
    (GOOD.replace("starts = 1", "starts = 1\ncycle_days = [10, 28]"), "design.days_on: at least 14"),
    (GOOD.replace("max_ng_ml = 17.3", "max_ng_ml = nan"), "constraint[0].max_ng_ml: must be"),
    (GOOD.replace("max_ng_ml = 17.3", "max_ng_ml = -1"), "constraint[0].max_ng_ml: must be >"),
    (GOOD.replace('kind = "residual"', 'kind = "rfs"'), "objective.day: rfs is read"),
    (GOOD.replace("patients = 4\n", "patients = 1\n", 1), "population.patients: must be >= 2"),
    (GOOD.replace("fraction = 0.8", "fraction = 1.5"), "constraint[0].fraction: must be <= 1"),
    (GOOD + "[drug.xyz]\n", "bad.toml: drug.xyz: unknown field"),
    ("\x00\x01 not toml", "bad.toml: file: malformed TOML"),
]


@pytest.mark.parametrize("text,expect", BAD)
def test_bad_spec_refused(text, expect, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("bad.toml").write_text(text)
    code, out, err = run(["design", "bad.toml", "--out", "d"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err and not Path("d").exists()


def test_bad_options_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("good.toml").write_text(GOOD)
    for argv, expect in ((["--seed", "-1"], "--seed: seed: must be a whole number"),
                         (["--trial-replicates", "-1"], "--trial-replicates")):
        code, out, err = run(["design", "good.toml", "--out", "d", *argv], capsys)
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
        assert not Path("d").exists()
    code, out, err = run(["design", "missing.toml"], capsys)
    assert code == 2 and "missing.toml: file: not found" in err


@pytest.mark.slow
def test_design_end_to_end(tmp_path, monkeypatch, capsys):
    from dormancy_model.pk.schedule import load_schedule

    monkeypatch.chdir(tmp_path)
    Path("good.toml").write_text(GOOD)
    code, out, err = run(["design", "good.toml", "--out", "d", "--trial-replicates", "2"],
                         capsys)
    assert code == 0, err
    for f in ("report.md", "design.csv", "pareto.png", "exposure.png", "regimen_1.toml",
              "trial.csv", "history.csv"):
        assert (Path("d") / f).stat().st_size > 0, f
    sched = load_schedule("d/regimen_1.toml", "human")
    assert {ln.drug for ln in sched.lines} == {"hcq", "eve"}
    text = Path("d/report.md").read_text()
    assert "recommended vs CLEVER" in text and "paired difference" in text


@pytest.mark.slow
def test_readme_design_example_runs(root, monkeypatch):
    """The README's Python example of "## Regimen design", with the packaged spec shrunk to 8
    patients and one start (the packaged 1,000 patients take minutes)."""
    import dataclasses
    import re

    import dormancy_model as dm
    from dormancy_model.regimens import spec as spec_module

    text = (root / "README.md").read_text()
    start = text.index("## Regimen design")
    block = re.findall(r"```python\n(.*?)```", text[start:text.find("\n## ", start + 3)],
                       re.S)
    assert len(block) == 1
    real = spec_module.load_design_spec
    small = lambda path: dataclasses.replace(real(path), patients=8,  # noqa: E731
                                             search_patients=8, starts=1)
    monkeypatch.setattr(dm, "load_design_spec", small, raising=False)
    monkeypatch.chdir(root)
    ns = {}
    exec(compile(block[0], "README.md", "exec"), ns)  # noqa: S102
    res = ns["res"]
    assert res.feasible and res.reference is not None
    assert res.best.regimen.schedule("best").lines
