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

from dormancy_model.params.postfile import read_posterior
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


def chosen_draws(tmp_path, *, n, seed_key, draws, replicates_per_draw):
    """A written posterior file's draws (rows, columns NAMES) and the predictive choice."""
    written = write_posterior(tmp_path / "p.json", n=n)
    flat = np.stack([np.ravel(written[k]) for k in NAMES], -1)
    unc = PR.predictive_draws(read_posterior(tmp_path / "p.json"), key=jax.random.key(seed_key),
                              draws=draws, replicates_per_draw=replicates_per_draw)
    return flat, unc


def test_draws_map_to_the_calibration_populations(tmp_path):
    draws = write_posterior(tmp_path / "p.json")
    pf = read_posterior(tmp_path / "p.json")
    unc = PR.predictive_draws(pf, key=jax.random.key(3), draws=4, replicates_per_draw=2)
    assert unc.names == tuple(NAMES) and unc.draws == 4 and unc.replicates == 2
    assert len(set(unc.index.tolist())) == 4 and np.all(unc.index < 6)  # without replacement
    flat = np.stack([np.ravel(draws[n]) for n in NAMES], -1)
    for j in range(unc.draws):
        row = flat[unc.row(j)]
        pop = unc.population_at(j)
        ref = population_at(np.log(row), NAMES, Population())
        assert pop.typical["delta_max"] == pytest.approx(row[0])
        assert pop.typical["k_dr"] == pytest.approx(row[1])
        assert pop.cv["delta_max"] == pytest.approx(row[4])
        assert pop.load_sigma == ref.load_sigma and pop.load_median == ref.load_median
    # the centre: the geometric mean of all draws in the file
    c = unc.centre_values()
    assert c["load_sigma"] == pytest.approx(np.exp(np.mean(np.log(flat[:, 3]))))
    # more draws than the file has: all of them, once each
    assert PR.predictive_draws(pf, key=jax.random.key(3), draws=9,
                               replicates_per_draw=2).draws == 6
    with pytest.raises(ValueError, match="draws >= 1"):
        PR.predictive_draws(pf, key=jax.random.key(3), draws=0, replicates_per_draw=2)


def test_posterior_trials_number_key_and_label_each_draw(tmp_path, monkeypatch):
    from dormancy_model.trials import protocol

    flat, unc = chosen_draws(tmp_path, n=10, seed_key=5, draws=4, replicates_per_draw=3)
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
    res, summ = PR.posterior_trials(clever_design(), None, unc, key=jax.random.key(5))
    assert len(calls) == 4 and all(c[1] == 3 for c in calls)
    assert len({json.dumps(c[0]) for c in calls}) == 4  # one key per draw
    assert res.replicates == 12
    assert sorted(summ["trial"].unique()) == list(range(12))
    assert sorted(res.patients["trial"].unique()) == list(range(12))
    assert summ["draw"].nunique() == 4
    # each trial's rows carry the parameters of its own draw
    for d, g in res.patients.groupby("draw"):
        assert g["k"].iloc[0] == pytest.approx(flat[d, 1])
        assert set(g["trial"] // 3) == {int(summ.loc[summ["draw"] == d, "trial"].iloc[0] // 3)}
    for d, g in summ.groupby("draw"):
        assert g["rfs_3y"].iloc[0] == pytest.approx(flat[d, 3])
    # deterministic given the key
    calls.clear()
    res2, summ2 = PR.posterior_trials(clever_design(), None, unc, key=jax.random.key(5))
    pd.testing.assert_frame_equal(summ, summ2)
    assert math.isclose(res2.patients["k"].sum(), res.patients["k"].sum())


def test_untreated_cohort_is_spread_over_the_draws(tmp_path, monkeypatch):
    """n // D candidates per draw, each draw at its own population and key, labelled."""
    from dormancy_model.trials import untreated

    flat, unc = chosen_draws(tmp_path, n=10, seed_key=2, draws=5, replicates_per_draw=1)
    keys = []

    def fake_cohort(params, population, *, key, n, method="fast"):
        keys.append(json.dumps(np.asarray(jax.random.key_data(key)).tolist()))
        return pd.DataFrame({"load": np.full(n, 1.0), "baseline_count": np.zeros(n, int),
                             "sigma": population.load_sigma, "relapse_day": np.inf})

    monkeypatch.setattr(untreated, "untreated_cohort", fake_cohort)
    c = PR.untreated_over_draws(None, unc, key=jax.random.key(9), n=53)
    assert len(c) == 5 * 10 and len(set(keys)) == 5
    assert sorted(c["draw"].unique()) == sorted(unc.index.tolist())
    for d, g in c.groupby("draw"):
        assert len(g) == 10 and g["sigma"].iloc[0] == pytest.approx(flat[d, 3])
