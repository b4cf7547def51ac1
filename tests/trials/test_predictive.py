"""Posterior predictive trials: the posterior file is read strictly (one clear line per bad
file), draws map to the populations the calibration used, and the replicated trials over draws
are numbered, keyed and labelled per draw (the protocol itself is replaced by a recording
double: its own tests are in test_trial_protocol.py)."""

import json
import math

import jax
import numpy as np
import pandas as pd
import pytest

from dormancy_model.errors import InputError
from dormancy_model.trials import predictive as PR
from dormancy_model.trials.design import clever_design
from dormancy_model.trials.population import Population
from dormancy_model.trials.posterior import population_at

NAMES = ["delta_max", "k_dr", "load_median", "load_sigma", "cv_delta_max"]


def write_posterior(path, n=6, seed=0, **override):
    rng = np.random.default_rng(seed)
    base = {"delta_max": 0.04, "k_dr": 1.4e-9, "load_median": 4e4, "load_sigma": 1.0,
            "cv_delta_max": 0.5}
    draws = {k: (v * np.exp(0.2 * rng.standard_normal((2, n // 2)))).tolist()
             for k, v in base.items()}
    rec = {"parameters": NAMES, "draws": draws, **override}
    path.write_text(json.dumps(rec))
    return draws


def test_draws_load_and_map_to_the_calibration_populations(tmp_path):
    draws = write_posterior(tmp_path / "p.json")
    post = PR.PosteriorDraws.load(tmp_path / "p.json")
    assert post.names == tuple(NAMES) and post.n == 6
    np.testing.assert_allclose(post.draws[:, 1], np.ravel(draws["k_dr"]))
    med = post.median()
    assert med["load_sigma"] == pytest.approx(np.median(np.ravel(draws["load_sigma"])))
    for i in range(post.n):
        pop = post.population(i)
        ref = population_at(np.log(post.draws[i]), NAMES, Population())
        assert pop.typical["delta_max"] == pytest.approx(post.draws[i, 0])
        assert pop.cv["delta_max"] == pytest.approx(post.draws[i, 4])
        assert pop.load_sigma == ref.load_sigma and pop.load_median == ref.load_median
    idx = post.choose(4, seed=3)
    assert len(set(idx.tolist())) == 4 and np.all(idx < 6)  # without replacement
    assert len(post.choose(9, seed=3)) == 9  # more than the file has: with replacement


@pytest.mark.parametrize("content, field", [
    ("not json", "file"),
    (json.dumps({"parameters": ["delta_max"]}), "draws"),
    (json.dumps({"parameters": ["delta_max", "k_dr"], "draws": {"delta_max": [0.1]}}),
     "draws.k_dr"),
    (json.dumps({"parameters": ["speed"], "draws": {"speed": [1.0]}}), "parameters"),
    (json.dumps({"parameters": ["delta_max"], "draws": {"delta_max": ["a"]}}),
     "draws.delta_max"),
    (json.dumps({"parameters": ["delta_max", "k_dr"],
                 "draws": {"delta_max": [0.1, 0.2], "k_dr": [1e-9]}}), "draws.k_dr"),
    (json.dumps({"parameters": ["delta_max"], "draws": {"delta_max": [0.1, -0.2]}}),
     "draws.delta_max"),
    (json.dumps({"parameters": ["delta_max"], "draws": {"delta_max": []}}), "draws.delta_max"),
])
def test_bad_posterior_files_give_one_line_naming_the_file_and_field(tmp_path, content, field):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        PR.PosteriorDraws.load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)) and e.value.field == field
    with pytest.raises(InputError, match="not found"):
        PR.PosteriorDraws.load(tmp_path / "missing.json")


def test_posterior_trials_number_key_and_label_each_draw(tmp_path, monkeypatch):
    from dormancy_model.trials import protocol

    write_posterior(tmp_path / "p.json", n=10)
    post = PR.PosteriorDraws.load(tmp_path / "p.json")
    calls = []

    def fake_trial(design, params, *, key, replicates, population, method, chunk=512):
        calls.append((np.asarray(jax.random.key_data(key)).tolist(), replicates, population))
        n = replicates * 2
        pats = pd.DataFrame({"trial": np.repeat(np.arange(replicates), 2), "arm": "HCQ",
                             "k": population.typical["k_dr"]})
        scr = pd.DataFrame({"trial": np.arange(replicates), "arm": "HCQ", "screened": 7,
                            "enrolled": 2})
        res = protocol.TrialResult(pats, scr, design, replicates, method)
        res.summary = lambda: pd.DataFrame({"trial": np.arange(replicates), "arm": "HCQ",
                                            "rfs_3y": population.load_sigma})
        assert len(pats) == n
        return res

    monkeypatch.setattr(protocol, "trial", fake_trial)
    res, summ = PR.posterior_trials(clever_design(), None, post, key=jax.random.key(5),
                                    draws=4, replicates_per_draw=3)
    assert len(calls) == 4 and all(c[1] == 3 for c in calls)
    assert len({json.dumps(c[0]) for c in calls}) == 4  # one key per draw
    assert res.replicates == 12
    assert sorted(summ["trial"].unique()) == list(range(12))
    assert sorted(res.patients["trial"].unique()) == list(range(12))
    assert summ["draw"].nunique() == 4
    # each trial's rows carry the parameters of its own draw
    for d, g in res.patients.groupby("draw"):
        assert g["k"].iloc[0] == pytest.approx(post.draws[d, 1])
        assert set(g["trial"] // 3) == {int(summ.loc[summ["draw"] == d, "trial"].iloc[0] // 3)}
    for d, g in summ.groupby("draw"):
        assert g["rfs_3y"].iloc[0] == pytest.approx(post.draws[d, 3])
    # deterministic given the key
    calls.clear()
    res2, summ2 = PR.posterior_trials(clever_design(), None, post, key=jax.random.key(5),
                                      draws=4, replicates_per_draw=3)
    pd.testing.assert_frame_equal(summ, summ2)
    assert math.isclose(res2.patients["k"].sum(), res.patients["k"].sum())
