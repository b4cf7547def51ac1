"""The posterior calibration's second design wave (`posterior.refine_posterior`): with a fake
simulator whose relapse quantity is far from quadratic over the prior box, the first wave's
global quadratic emulator is wrong where the posterior sits; refitted on a smaller box around
the first posterior it is not, and the refined posterior covers the truth. The first wave can
be reused from a posterior file only with the settings it was made with."""

import json
import math

import jax
import numpy as np
import pytest
from test_posterior import NAMES, FakeSimulator, fake_prior

from dormancy_model.errors import InputError
from dormancy_model.trials import posterior as P
from dormancy_model.trials.pipeline import first_wave_from_file


class BentSimulator(FakeSimulator):
    """The fake simulator with an exponential (not quadratic) dependence of the late-relapse
    logit and the per-arm RFS logits on the reactivation coordinate u1."""

    def truth(self, theta, xp=np):
        out = super().truth(theta, xp)
        u1 = (theta[..., 1] - self.c[1]) / self.h[1]
        bend = 1.5 * xp.exp(2.5 * (u1 - 0.2))
        out["logit_late"] = out["logit_late"] + bend
        for k in [k for k in out if k.startswith("logit_rfs:")]:
            out[k] = out[k] - bend
        return out


@pytest.fixture(scope="module")
def two_waves():
    prior = fake_prior()
    sim = BentSimulator(prior)
    rng = np.random.default_rng(4)
    truth = prior.mu + prior.log_sd * np.array([0.6, -0.9, 0.4, -0.3, 0.5])
    theta = P.sobol_design(prior, 64, 4)
    vals, var = sim.run(theta, rng)
    targets = sim.observe(truth, rng, scale=20)
    first = P.posterior_from_design(theta, vals, var, prior, sim.exact, targets,
                                    key=jax.random.key(4), chains=2, warmup=200, samples=200)
    first.design_wave, first.design_used = np.ones(64, int), np.ones(64, bool)
    first.settings.update(points=64, replicates=32, untreated=1000, box_sd=2.5,
                          method="fast")
    second = P.refine_posterior(first, lambda th, progress=None: sim.run(th, rng), sim.exact,
                                targets, key=jax.random.key(5), points=32, seed=5, chains=2,
                                warmup=200, samples=200)
    return sim, truth, first, second


def _draws(res, n=300):
    th = np.stack([np.asarray(res.draws[k]).ravel() for k in NAMES], -1)
    return th[np.random.default_rng(0).permutation(len(th))[:n]]


def test_refined_box_holds_the_first_posterior_inside_the_first_box(two_waves):
    _, _, first, second = two_waves
    th = _draws(first, 10_000)
    lo, hi = np.quantile(th, [P.REFINE_QUANTILE, 1 - P.REFINE_QUANTILE], axis=0)
    p1, p2 = first.prior, second.prior
    assert np.all(p2.lower >= p1.lower - 1e-12) and np.all(p2.upper <= p1.upper + 1e-12)
    assert np.all(p2.lower <= lo) and np.all(p2.upper >= hi)
    assert np.prod((p2.upper - p2.lower) / (p1.upper - p1.lower)) < 0.5  # it is refocused
    np.testing.assert_array_equal(p2.mu, p1.mu)  # same prior, smaller truncation
    np.testing.assert_array_equal(p2.log_sd, p1.log_sd)


def test_second_wave_fixes_the_emulator_where_the_posterior_is(two_waves):
    """At draws of the refined posterior the refitted emulator's error in the bent quantity is
    less than half the first wave's (both against the simulator's exact noise-free map), the
    out-of-sample check of the first wave says it was off there, and the refined 99%
    intervals hold the truth."""
    sim, truth, first, second = two_waves
    th = _draws(second)
    exact = sim.truth(th)["logit_late"]
    err1 = np.asarray(first.emulator.predict(th)["logit_late"]) - exact
    err2 = np.asarray(second.emulator.predict(th)["logit_late"]) - exact
    rmse1, rmse2 = np.sqrt(np.mean(err1 ** 2)), np.sqrt(np.mean(err2 ** 2))
    assert rmse2 < 0.5 * rmse1, (rmse1, rmse2)
    assert rmse1 > 0.1  # the case is one where the first wave is wrong
    chk = {c["output"]: c for c in second.diagnostics["first_wave_error"]}
    assert set(chk) == set(first.emulator.outputs)
    assert chk["logit_late"]["rmse"] > 2 * sim.noise_sd
    for i, n in enumerate(NAMES):
        lo, hi = np.quantile(np.asarray(second.draws[n]).ravel(), [0.005, 0.995])
        assert lo <= truth[i] <= hi, (n, lo, truth[i], hi)
    d = second.diagnostics
    assert d["max_rhat"] < 1.05 and d["divergences"] == 0, d


def _first_wave_file(first, tmp_path):
    """The first wave's posterior file and the settings it was made with (as
    `first_wave_from_file` takes them)."""
    from dormancy_model import load_model_parameters

    params = load_model_parameters("human")
    first.settings["targets"] = {"note": "fake"}
    f = tmp_path / "post.json"
    f.write_text(json.dumps(P.posterior_record(first, params, 4, "cmd", "abc")))
    kw = dict(names=NAMES, points=64, replicates=32, untreated=1000, seed=4, box_sd=2.5,
              method="fast", parameter_file=params.source)
    return f, kw


def test_record_keeps_both_waves_and_the_file_round_trips(two_waves, tmp_path):
    from dormancy_model import load_model_parameters

    _, _, first, second = two_waves
    params = load_model_parameters("human")
    second.settings["targets"] = {"note": "fake"}
    rec = P.posterior_record(second, params, 4, "cmd", "abc")
    rows = rec["design"]
    assert len(rows) == 64 + 32
    assert [r["wave"] for r in rows].count(2) == 32
    inside = second.settings["refine"]["first_wave_points_inside"]
    assert sum(r["in_emulator"] for r in rows) == inside + 32
    assert all(r["wave"] == 1 for r in rows if not r["in_emulator"])
    assert "var:logit_late" in rows[0]
    assert second.emulator.outputs["logit_late"].n_used == inside + 32

    # the first wave read back from a file equals the one simulated
    f, kw = _first_wave_file(first, tmp_path)
    (theta, values, mc_var), back = first_wave_from_file(f, **kw)
    np.testing.assert_allclose(theta, first.design_theta, rtol=1e-12)
    for k, v in first.design_values.items():
        np.testing.assert_allclose(values[k], v, rtol=1e-12)
        np.testing.assert_allclose(mc_var[k], first.design_mc_var[k], rtol=1e-12)
    assert back["_mc_var_source"].startswith("per point")
    # a file without per-point variances: each output's mean variance (the emulator's floor)
    old = json.loads(f.read_text())
    old["design"] = [{k: v for k, v in r.items() if not k.startswith("var:")}
                     for r in old["design"]]
    f.write_text(json.dumps(old))
    (_, _, mc_old), back = first_wave_from_file(f, **kw)
    for c in old["emulator_cv"]:
        assert np.all(mc_old[c["output"]] == pytest.approx(c["mc_sd"] ** 2))
    assert "predates" in back["_mc_var_source"]


@pytest.mark.parametrize("field, value", [("seed", 5), ("replicates", 16), ("points", 32),
                                          ("untreated", 500), ("box_sd", 2.0),
                                          ("names", NAMES[:4])])
def test_first_wave_with_other_settings_is_refused(two_waves, tmp_path, field, value):
    _, _, first, _ = two_waves
    f, kw = _first_wave_file(first, tmp_path)
    kw[field] = value
    with pytest.raises(InputError) as e:
        first_wave_from_file(f, **kw)
    want = "parameters" if field == "names" else field
    assert e.value.field == want and "same settings" in str(e.value)


def test_refine_needs_enough_points_for_the_quadratic(two_waves):
    sim, _, first, _ = two_waves
    with pytest.raises(ValueError, match="refine points must be >= 22"):
        P.refine_posterior(first, lambda th, progress=None: sim.run(th, np.random.default_rng(0)),
                           sim.exact, None, key=jax.random.key(0), points=21, seed=0)
    assert math.isfinite(first.diagnostics["max_rhat"])


@pytest.mark.slow
def test_real_second_wave_reusing_the_first_equals_simulating_both(tmp_path, capsys):
    """The real trial through the CLI (one parameter, 4 + 4 design points x 3 trials): a
    second wave run on the first wave read back from its file gives the same design values
    and the same draws as the run that simulated both waves (the first wave's simulations are
    the ones this seed makes: common random numbers)."""
    from cli_run import run

    base = ["calibrate", "--posterior", "--parameters", "delta_max", "--design-points", "4",
            "--replicates", "3", "--chains", "2", "--warmup", "50", "--samples", "50",
            "--untreated", "200", "--seed", "3", "--no-netcdf"]
    both, first, reused = (tmp_path / f"{n}.json" for n in ("both", "first", "reused"))
    for args in (["--refine-points", "4", "--out", str(both)], ["--out", str(first)],
                 ["--refine-points", "4", "--first-wave", str(first), "--out", str(reused)]):
        code, stdout, err = run(base + args, capsys)
        assert code == 0, err
    a, c = json.loads(both.read_text()), json.loads(reused.read_text())
    assert "first-wave emulator at the second wave's points" in stdout
    assert [r["wave"] for r in a["design"]] == [1] * 4 + [2] * 4
    assert a["design"] == c["design"]
    np.testing.assert_allclose(a["draws"]["delta_max"], c["draws"]["delta_max"], rtol=1e-9)
    assert c["settings"]["first_wave_file"]["mc_var"].startswith("per point")
    assert a["settings"]["refine"]["box"]["delta_max"][0] >= a["settings"]["refine"][
        "first_box"]["delta_max"][0]
    assert c["command"].endswith(f"--refine-points 4 --first-wave {first}")
