"""`dormancy agents`: outputs and bad input (one line, exit 2, no partial output)."""

import json

import pandas as pd
import pytest

from cli_run import run


@pytest.mark.slow  # fast-suite budget (44 s from a fresh clone)
def test_agents_writes_outputs(tmp_path, capsys, root):
    out = tmp_path / "o"
    code, stdout, err = run(["agents", "--model", str(root / "src/dormancy_model/params/data/human.toml"),
                             "--schedule", "observation", "--replicates", "300", "--seed", "3",
                             "--years", "5", "--out", str(out)], capsys)
    assert code == 0, err
    df = pd.read_csv(out / "replicates.csv")
    assert len(df) == 300
    for col in ("cleared", "clearance_day", "relapsed", "relapse_day", "dtc_positive_day84",
                "dtc_positive_day168", "dtc_positive_day350"):
        assert col in df.columns
    s = json.loads((out / "summary.json").read_text())
    cp = s["clearance_probability"]
    assert cp["ci95"][0] <= cp["estimate"] <= cp["ci95"][1]
    for k in ("relapse_free_3y", "relapse_free_5y"):
        assert 0 <= s[k]["ci95"][0] <= s[k]["estimate"] <= s[k]["ci95"][1] <= 1
    # untreated: relapses happen, so the median is either a day within 5 years or None
    assert s["median_relapse_day"] is None or 0 < s["median_relapse_day"] <= 5 * 365.25
    assert df["relapsed"].mean() == pytest.approx(s["relapse_probability"]["estimate"])
    assert (out / "agents.png").stat().st_size > 10_000
    # same seed, same result
    out2 = tmp_path / "o2"
    code, _, err = run(["agents", "--schedule", "observation", "--replicates", "300", "--seed",
                        "3", "--years", "5", "--out", str(out2)], capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(df, pd.read_csv(out2 / "replicates.csv"))


BAD = [
    (["--replicates", "0"], "--replicates: replicates: must be >= 1"),
    (["--years", "0"], "--years: years: must be in (0, 100], got 0"),
    (["--seed", "-1"], "--seed: seed: must be a whole number in [0, 2**63 - 1], got -1"),
    (["--method", "slow"], "--method: method: must be 'fast' or 'exact'"),
    (["--assess-days", "84,x"], "--assess-days: assess_days: expected comma-separated days"),
    (["--years", "0.5", "--assess-days", "350"], "day 350 is outside the horizon"),
    (["--autophagy-cv", "-1"], "--autophagy-cv: autophagy_cv: must be >= 0"),
    (["--schedule", "clever-comb"], "unknown preset 'clever-comb'"),
    (["--model", "MISSING.toml"], "MISSING.toml"),
]


@pytest.mark.parametrize("args,msg", BAD)
def test_agents_bad_input(tmp_path, capsys, args, msg):
    out = tmp_path / "bad"
    code, stdout, err = run(["agents", "--out", str(out)] + args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dormancy: error:") and msg in lines[0], err
    assert not out.exists() or not any(out.iterdir())
