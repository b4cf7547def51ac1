"""`model.pipeline.run_simulation`: the files it writes hold exactly what `simulate` and
`summarize` give, an already built parameter set replaces loading, bad input writes nothing."""

import json

import numpy as np
import pandas as pd
import pytest

import dormancy_model as dm
from dormancy_model.errors import InputError
from dormancy_model.model.pipeline import FILES, run_simulation
from dormancy_model.model.summary import summarize

YEARS = 0.5


def test_files_equal_a_direct_simulation(model, human, tmp_path):
    sched = dm.get_schedule("clever-combo", 2)
    res = run_simulation(tmp_path / "o", schedule="clever-combo", cycles=2, years=YEARS,
                         save_every_hours=12.0)
    assert res["out_dir"] == tmp_path / "o"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(FILES)
    direct = dm.simulate(model, human, sched, years=YEARS, save_every_hours=12.0)
    df = pd.read_csv(tmp_path / "o" / "trajectory.csv")
    expected = direct.to_dataframe()
    assert list(df.columns) == list(expected.columns) and len(df) == len(expected)
    np.testing.assert_allclose(df.to_numpy(float), expected.to_numpy(float), rtol=1e-12,
                               atol=0)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(dict(summarize(direct, sched), model="human",
                                                 years=YEARS)))
    assert res["summary"] == summary


def test_params_replace_the_parameter_file(model, human, tmp_path):
    """`params` is what is simulated; `model` only labels the summary."""
    faster = human.replace(k_dr=2.0 * float(human["k_dr"]))
    sched = dm.get_schedule("clever-combo", 2)
    res = run_simulation(tmp_path / "o", model="fitted", params=faster, cycles=2, years=YEARS)
    direct = dm.simulate(model, faster, sched, years=YEARS)
    base = dm.simulate(model, human, sched, years=YEARS)
    got = res["table"]["residual"].to_numpy()
    np.testing.assert_allclose(got, np.asarray(direct.residual), rtol=1e-12)
    assert not np.allclose(got, np.asarray(base.residual), rtol=1e-6)
    assert res["summary"]["model"] == "fitted"


@pytest.mark.parametrize("kw, field", [
    (dict(years=0.0), "--years"),
    (dict(save_every_hours=-1.0), "--save-every-hours"),
    (dict(options=dm.SolverOptions(rtol=2.0)), "--rtol"),
    (dict(options=dm.SolverOptions(atol=float("inf"))), "--atol"),
    (dict(schedule="clever-comb"), "unknown preset"),
])
def test_bad_input_writes_nothing(tmp_path, kw, field):
    with pytest.raises(InputError, match=field):
        run_simulation(tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()
