"""Posterior calibration: the emulator reproduces known smooth functions; with a cheap fake
simulator (a known analytic map theta -> model quantities, plus Monte-Carlo noise) the
posterior's 90% intervals cover the truth (fast: one seed; slow: coverage over seeds drawn from
the prior, two-sided); a tiny end-to-end run of the real trial (slow)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dormancy_model.trials import likelihood as L
from dormancy_model.trials import posterior as P
from dormancy_model.trials.emulator import fit_emulator, quadratic_features


def test_emulator_reproduces_a_known_quadratic_exactly_and_a_smooth_function_closely():
    rng = np.random.default_rng(0)
    th = rng.uniform(-1, 1, (40, 3))
    beta = rng.normal(size=10)
    y = quadratic_features(th) @ beta
    em = fit_emulator(th, {"q": y}, centre=np.zeros(3), half_width=np.ones(3))
    x = rng.uniform(-1, 1, (20, 3))
    np.testing.assert_allclose(np.asarray(em.predict(jnp.asarray(x))["q"]),
                               quadratic_features(x) @ beta, atol=1e-9)
    # a smooth non-quadratic function: small LOO error, and the emulator's variance covers the
    # actual error at new points (z-scores of order 1 or below)
    f = lambda t: np.sin(0.8 * t[:, 0]) + 0.3 * np.exp(0.5 * t[:, 1]) * t[:, 2]  # noqa: E731
    em = fit_emulator(th, {"f": f(th)}, centre=np.zeros(3), half_width=np.ones(3))
    p = em.predict(jnp.asarray(x))
    err = np.asarray(p["f"]) - f(x)
    assert np.sqrt(np.mean(err ** 2)) < 0.05 * np.std(f(th))
    assert np.sqrt(np.mean(err ** 2 / np.asarray(p["f:var"]))) < 2.0
    cv = em.cv_table()[0]
    assert cv["loo_rmse"] < 0.06 * cv["design_sd"]
    # noisy outputs: the Monte-Carlo variance is kept as the floor of the emulator variance
    em = fit_emulator(th, {"g": f(th) + rng.normal(0, 0.1, 40)}, {"g": np.full(40, 0.01)},
                      centre=np.zeros(3), half_width=np.ones(3))
    assert float(em.predict(jnp.zeros(3))["g:var"]) >= 0.01
    # differentiable
    g = jax.grad(lambda t: em.predict(t)["g"])(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))


# ----------------------------------------------------------------------------- fake simulator
NAMES = ("a", "b", "c", "d", "e")


def fake_prior():
    return P.Prior(NAMES, np.array([0.05, 4e-6, 100.0, 1.0, 0.5]),
                   np.array([1.0, 1.5, 1.0, 0.5, 0.5]), 2.5)


class FakeSimulator:
    """Known smooth map of the design coordinates u in [-1, 1]^5 to the quantities the
    likelihood needs (not exactly quadratic: the emulator carries a small lack of fit)."""

    def __init__(self, prior, noise_sd=0.03):
        self.prior, self.noise_sd = prior, noise_sd
        self.c = (prior.lower + prior.upper) / 2
        self.h = (prior.upper - prior.lower) / 2

    def truth(self, theta, xp=np):
        u = (theta - self.c) / self.h
        u0, u1, u2, u3, u4 = (u[..., i] for i in range(5))
        out = {"logit_late": -3.0 + 1.5 * u1 + 0.4 * u2,
               "log_hr": -1.0 + 2.0 * u4 - 0.4 * u0 + 0.1 * xp.sin(u3),
               "logit_cleared": 1.4 + 0.8 * u0 - 1.0 * u4 - 0.5 * u3 + 0.1 * u4 ** 2}
        for j, a in enumerate(L.ARMS):
            out[f"logit_rfs:{a}"] = 2.6 + 0.3 * j - 1.5 * u1 + 0.3 * u0 - 0.3 * u2 + 0.1 * u1 ** 2
            out[f"z_mean:{a}"] = -1.6 - 0.1 * j - 2.0 * u0 + 0.2 * u4 ** 2 + 0.05 * xp.sin(2 * u0)
            out[f"z_logsd:{a}"] = math.log(0.4) + 0.6 * u4
        return out

    def exact(self, theta):
        u = (theta - jnp.asarray(self.c)) / jnp.asarray(self.h)
        return {"p_screen": jax.nn.sigmoid(-0.85 + 1.5 * u[..., 2] - 0.8 * u[..., 3])}

    def run(self, theta, rng):
        t = self.truth(np.asarray(theta))
        vals = {k: v + self.noise_sd * rng.standard_normal(v.shape) for k, v in t.items()}
        var = {k: np.full(v.shape, self.noise_sd ** 2) for k, v in t.items()}
        return vals, var

    def observe(self, theta, rng, scale=1):
        """Published statistics drawn from the likelihood at the true theta; `scale`
        multiplies every sample size (scale > 1: a more informative synthetic trial)."""
        t = {k: float(v) for k, v in self.truth(np.asarray(theta)).items()}
        p_scr = float(self.exact(jnp.asarray(theta))["p_screen"])
        ex = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        n_scr = 184 * scale
        rfs = {a: (int(rng.binomial(n, ex(t[f"logit_rfs:{a}"]))), n)
               for a, n in zip(L.ARMS, (12 * scale, 14 * scale, 13 * scale), strict=True)}
        n_late = 31 * scale
        se = L.hr_se_from_ci(0.01, 3.4) / math.sqrt(scale)
        hr = math.exp(t["log_hr"] + se * rng.standard_normal())
        red = {a: 1 - math.exp(t[f"z_mean:{a}"] + math.exp(t[f"z_logsd:{a}"])
                               * rng.standard_normal()) for a in L.ARMS}
        return L.PublishedTargets(
            screen=(int(rng.binomial(n_scr, p_scr)), n_scr), rfs=rfs,
            late=(int(rng.binomial(n_late, ex(t["logit_late"]))), n_late),
            hr=(hr, hr * math.exp(-L.Z975 * se), hr * math.exp(L.Z975 * se)),
            reduction_C3=red,
            cleared=(int(rng.binomial(51 * scale, ex(t["logit_cleared"]))), 51 * scale))


def fake_posterior(seed, *, truth=None, scale=1, points=64, chains=2, warmup=300, samples=300):
    prior = fake_prior()
    sim = FakeSimulator(prior)
    rng = np.random.default_rng(seed)
    if truth is None:  # drawn from the (truncated) prior
        while True:
            truth = prior.mu + prior.log_sd * rng.standard_normal(5)
            if np.all((truth > prior.lower) & (truth < prior.upper)):
                break
    theta = P.sobol_design(prior, points, seed)
    vals, var = sim.run(theta, rng)
    targets = sim.observe(truth, rng, scale)
    res = P.posterior_from_design(theta, vals, var, prior, sim.exact, targets,
                                  key=jax.random.key(seed), chains=chains, warmup=warmup,
                                  samples=samples)
    return res, truth


def interval_covers(res, truth, level=0.90):
    a = (1 - level) / 2
    out = []
    for i, n in enumerate(NAMES):
        lo, hi = np.quantile(np.asarray(res.draws[n]).ravel(), [a, 1 - a])
        out.append(bool(lo <= truth[i] <= hi))
    return np.array(out)


@pytest.fixture(scope="module")
def fake_fit():
    """One seed, a synthetic trial 20 times CLEVER's size from a known theta."""
    prior = fake_prior()
    truth = prior.mu + prior.log_sd * np.array([0.8, -0.6, 0.5, -0.4, 0.7])
    res, _ = fake_posterior(11, truth=truth, scale=20, warmup=200, samples=200)
    return res, truth


def test_fake_posterior_covers_a_known_truth_and_contracts(fake_fit):
    """Every 99% and at least 4 of 5 90% intervals hold the truth, the identified
    parameters' posteriors are much narrower than the prior, and the sampler's diagnostics are
    clean."""
    res, truth = fake_fit
    assert interval_covers(res, truth, 0.99).all()
    assert interval_covers(res, truth, 0.90).sum() >= 4
    sd_ratio = res.summary.set_index("parameter")["sd_ratio"]
    assert (sd_ratio[["a", "b", "e"]] < 0.5).all(), sd_ratio
    d = res.diagnostics
    assert d["max_rhat"] < 1.05 and d["min_ess_bulk"] > 100 and d["divergences"] == 0, d
    assert len(d["emulator_cv"]) == 12
    # a short test run may be flagged for R-hat > 1.01 or ESS < 400, never for the rest
    assert all(w.startswith(("R-hat", "bulk ESS")) for w in d["warnings"]), d["warnings"]
    # the posterior predictive of the given targets covers them (emulated)
    assert res.predictive["inside_90"].mean() >= 0.7


def test_posterior_file_has_draws_diagnostics_and_provenance(fake_fit, tmp_path):
    import json

    import arviz as az

    from dormancy_model import load_model_parameters

    res, _ = fake_fit
    res.settings["targets"] = {"note": "fake"}
    rec = P.posterior_record(res, load_model_parameters("human"), 11, "cmd line", "abc123")
    text = json.dumps(rec, allow_nan=False)  # strict JSON: no NaN / inf
    back = json.loads(text)
    assert back["command"] == "cmd line" and back["git_commit"] == "abc123"
    assert back["seed"] == 11 and back["targets"] == {"note": "fake"}
    assert set(back["draws"]) == set(NAMES)
    assert np.asarray(back["draws"]["a"]).shape == (2, 200)
    np.testing.assert_allclose(np.log(back["draws"]["b"]), res.draws["b"], rtol=1e-12)
    assert {"max_rhat", "min_ess_bulk", "divergences", "ess_tail",
            "warnings"} <= set(back["diagnostics"])
    assert len(back["design"]) == 64 and len(back["emulator_cv"]) == 12
    assert back["priors"]["a"]["median"] == pytest.approx(0.05)
    P.write_netcdf(res, tmp_path / "p.nc", {"git_commit": "abc123"})
    idata = az.from_netcdf(tmp_path / "p.nc")
    assert idata.posterior["ln_a"].shape == (2, 200)
    assert idata.posterior.attrs["git_commit"] == "abc123"
    assert [p.name for p in tmp_path.iterdir()] == ["p.nc"]  # no temporary left


@pytest.mark.slow
def test_fake_posterior_coverage_over_seeds_is_nominal_two_sided():
    """Simulation-based calibration: truths drawn from the prior, CLEVER-sized synthetic
    trials; 90% intervals must cover 90% of the truths, neither too few (overconfident) nor
    too many (too wide), and identified parameters must contract."""
    cover, ratio = [], []
    for seed in range(12):
        res, truth = fake_posterior(100 + seed, scale=4)
        cover.append(interval_covers(res, truth))
        ratio.append(res.summary["sd_ratio"].to_numpy())
    cover = np.array(cover)
    rate = cover.mean()
    print(f"coverage {rate:.3f}; per parameter {cover.mean(0)}; mean sd ratio "
          f"{np.mean(ratio, 0)}")
    # 60 intervals, nominal 0.9: binomial sd 0.039; band +-2.5 sd, capped below 1
    assert 0.80 <= rate <= 0.98, (rate, cover.mean(0))
    assert np.mean(ratio, 0)[[0, 1]].max() < 0.7


@pytest.mark.slow
def test_tiny_real_posterior_calibration_end_to_end(tmp_path, capsys):
    """The real trial through the CLI: one calibrated parameter (delta_max), 4 design points x
    3 trials, a short NUTS run; the file has the draws and the provenance."""
    import json

    from cli_run import run

    out = tmp_path / "fits" / "post.json"
    code, stdout, err = run(["calibrate", "--posterior", "--parameters", "delta_max",
                             "--design-points", "4", "--replicates", "3", "--chains", "2",
                             "--warmup", "50", "--samples", "50", "--untreated", "200",
                             "--seed", "3", "--out", str(out)], capsys)
    assert code == 0, err
    assert "R-hat max" in stdout
    rec = json.loads(out.read_text())
    assert rec["command"].startswith("dormancy calibrate --posterior")
    assert rec["settings"]["points"] == 4 and rec["settings"]["trials"] == 12
    assert np.asarray(rec["draws"]["delta_max"]).shape == (2, 50)
    lo, hi = rec["priors"]["delta_max"]["box"]
    assert lo <= np.min(rec["draws"]["delta_max"]) <= np.max(rec["draws"]["delta_max"]) <= hi
    assert len(rec["design"]) == 4 and "logit_rfs:HCQ" in rec["design"][0]
    assert "log_irr" in rec["design"][0] and rec["settings"]["untreated"] == 200
    assert "prognosis_irr" in rec["targets"]
    assert (tmp_path / "fits" / "post.nc").exists()


def test_library_calibrate_has_a_posterior_mode(monkeypatch):
    """`calibrate(mode="posterior")` hands over to `calibrate_posterior` with the posterior
    defaults (64 points x 32 trials) and its own options; the point mode is untouched."""
    from dormancy_model import load_model_parameters
    from dormancy_model.trials import calibrate as C
    from dormancy_model.trials.design import clever_design

    seen = {}
    monkeypatch.setattr(P, "calibrate_posterior", lambda *a, **kw: seen.update(kw) or "post")
    p = load_model_parameters("human")
    assert C.calibrate(clever_design(), p, key=jax.random.key(0), mode="posterior",
                       chains=2) == "post"
    assert seen["points"] == 64 and seen["replicates"] == 32 and seen["chains"] == 2
    with pytest.raises(ValueError, match="mode must be"):
        C.calibrate(clever_design(), p, key=jax.random.key(0), mode="grid")


def test_default_prior_is_centred_on_the_current_values_inside_the_bounds():
    from dormancy_model import load_model_parameters
    from dormancy_model.trials.population import Population

    p = load_model_parameters("human")
    prior = P.default_prior(p)
    assert prior.names == P.DEFAULT_PARAMETERS and len(prior.names) >= 5
    d = prior.describe()
    assert d["delta_max"]["median"] == pytest.approx(float(p["delta_max"]))
    assert d["k_dr"]["median"] == pytest.approx(float(p["k_dr"]))
    assert d["load_median"]["median"] == pytest.approx(Population().median_load(p))
    for n in ("delta_max", "k_dr"):
        lo, hi = p.spec[n].bounds
        assert lo <= d[n]["box"][0] < d[n]["median"] < d[n]["box"][1] <= hi
    # a Population at theta carries every calibrated value
    pop = P.population_at(np.log([0.03, 1e-6, 50.0, 1.5, 0.7]), prior.names, Population())
    assert pop.typical == pytest.approx({"delta_max": 0.03, "k_dr": 1e-6})
    assert pop.load_median == pytest.approx(50.0) and pop.load_sigma == pytest.approx(1.5)
    assert pop.cv["delta_max"] == pytest.approx(0.7) and pop.cv["k_dr"] == 0.76
    with pytest.raises(ValueError, match="unknown calibration parameters"):
        P.default_prior(p, names=("delta_max", "k_rd"))


def test_quality_warnings_flag_bad_chains_box_edges_and_emulator_misfit():
    import pandas as pd

    good = {"max_rhat": 1.002, "min_ess_bulk": 900.0, "divergences": 0,
            "emulator_cv": [{"output": "log_hr", "loo_z_rms": 1.1}]}
    summ = pd.DataFrame([{"parameter": "k_dr", "at_box_edge": 0.0}])
    assert P.quality_warnings(good, summ) == []
    bad = {"max_rhat": 1.2, "min_ess_bulk": 50.0, "divergences": 3,
           "emulator_cv": [{"output": "log_hr", "loo_z_rms": 3.0}]}
    summ = pd.DataFrame([{"parameter": "k_dr", "at_box_edge": 0.2}])
    w = " | ".join(P.quality_warnings(bad, summ))
    for text in ("R-hat 1.200", "bulk ESS 50", "3 divergent", "k_dr: 20%", "emulator log_hr"):
        assert text in w, w
