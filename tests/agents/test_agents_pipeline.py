"""`agents.pipeline.run_agents`: the files it writes hold exactly what `simulate_agents` gives
for the same seed and options, the default count grid, and bad input writes nothing."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

import dormancy_model as dm
from dormancy_model.agents.pipeline import COLUMNS, FILES, count_grid, run_agents
from dormancy_model.agents.report import summarize_agents
from dormancy_model.errors import InputError
from dormancy_model.units import DAYS_PER_YEAR

YEARS = 1.0
N = 64


def test_count_grid():
    assert count_grid(60.0) == [0, 28, 56, 60.0]
    assert count_grid(56.0) == [0, 28, 56.0]


@pytest.mark.slow  # fast-suite budget (61 s from a fresh clone)
def test_files_equal_a_direct_simulation(model, human, tmp_path):
    options = dm.AgentOptions(method="fast", assess_days=(84.0, 168.0))
    het = dm.Heterogeneity(autophagy_cv=0.3)
    res = run_agents(tmp_path / "o", schedule="clever-combo", replicates=N, seed=5,
                     years=YEARS, heterogeneity=het, options=options)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(FILES)
    t1 = YEARS * DAYS_PER_YEAR
    direct = dm.simulate_agents(  # run_agents' parameter set: the packaged one, as is
        model, dm.load_model_parameters("human"), dm.get_schedule("clever-combo"),
        n_replicates=N,
        key=jax.random.PRNGKey(5), t1=t1, heterogeneity=het,
        options=dm.AgentOptions(method="fast", assess_days=(84.0, 168.0),
                                count_days=count_grid(t1)))
    expected = direct.to_dataframe()
    df = pd.read_csv(tmp_path / "o" / "replicates.csv")
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert set(df.columns[len(COLUMNS):]) == {"dtc_positive_day84", "dtc_positive_day168",
                                              "aspirate_count_day84", "aspirate_count_day168"}
    want_table = expected[df.columns].to_numpy(float)
    np.testing.assert_array_equal(res["table"].to_numpy(float), want_table)
    # the CSV's text round trip (pandas' default float parser) is exact to rounding level
    np.testing.assert_allclose(df.to_numpy(float), want_table, rtol=1e-15, atol=0)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    want = json.loads(json.dumps(summarize_agents(direct), allow_nan=True))
    assert {k: summary[k] for k in want} == want
    assert summary["heterogeneity"] == {"autophagy_cv": 0.3, "reactivation_cv": 0.0}
    assert (summary["seed"], summary["years"], summary["schedule"]) == (5, YEARS,
                                                                        "clever-combo")
    assert res["summary"] == summary and res["out_dir"] == tmp_path / "o"


@pytest.mark.parametrize("kw, field", [
    (dict(replicates=0), "--replicates"),
    (dict(seed=-1), "--seed"),
    (dict(years=0.0), "--years"),
    (dict(heterogeneity=dm.Heterogeneity(reactivation_cv=-0.1)), "--reactivation-cv"),
    (dict(years=0.5, options=dm.AgentOptions(assess_days=(350.0,))), "outside the horizon"),
    (dict(model="MISSING.toml"), "MISSING.toml"),
])
def test_bad_input_writes_nothing(tmp_path, kw, field):
    with pytest.raises(InputError, match=field):
        run_agents(tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()
