"""Population fit of a mouse study (`fitting.population.animals`, `population.study_fit`,
`dormancy fit --method laplace`): the per-animal likelihood with every random effect at zero is
the pooled fit's; an animal id in two arms is refused; recovery of a typical value, its
between-animal sd and the noise sd from per-animal data simulated in the test (adaptive
`simulate`, not the fit's fixed-step solver) from a known truth; the CLI writes a fit file that
`simulate --params` reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from cli_run import run
from dormancy_model.fitting.likelihood import joint_loglik
from dormancy_model.fitting.objective import free_parameters
from dormancy_model.fitting.population.animals import animal_parts, study_problem
from dormancy_model.fitting.population.estimate import LaplaceOptions, fit_laplace
from dormancy_model.fitting.study import load_study, study_arrays
from dormancy_model.model.integrate import FixedSteps
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import load_model_parameters
from dormancy_model.params.transforms import SCALE_CODE, from_scale_codes, to_scale

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"
ARMS = ["vehicle", "combo-hcq60-eve5-chronic"]
FREE = ["dormant_initial", "k_dr", "delta_max", "burden_sigma"]


@pytest.mark.slow  # fast-suite budget (make test from a fresh clone ~10 min on 2 cores)
def test_animals_at_zero_random_effects_sum_to_the_pooled_likelihood():
    """Every eta = 0: the sum over the animals (burden and survival mice are separate animals
    here) of the per-animal burden and relapse log-likelihoods equals the pooled fit's
    objective at the same values, same step grid (one solve per arm there, per animal here)."""
    study = load_study(SHIPPED).subset(ARMS)
    params = load_model_parameters("mouse")
    prob = study_problem(study, params, FREE, ("dormant_initial", "k_dr"),
                         solver=FixedSteps(fine=32, coarse=48, scan_kind="bounded"))
    ids = set(study.burden.mouse_id) | set(study.survival.mouse_id)
    assert prob.n_animals == len(ids)
    assert prob.n_obs == len(study.burden.day) + len(study.survival.day)
    fp = free_parameters(params, FREE)
    s = np.array([to_scale(f.table_value, f.scale) for f in fp])
    s[0] += 0.3  # away from the table values
    nat = dict(zip(FREE, from_scale_codes(s, np.array([SCALE_CODE[f.scale] for f in fp])),
                   strict=True))
    sigma = nat.pop("burden_sigma")
    p = params.replace(body_weight=study.body_weight_kg, **nat)
    ll, lb_pooled, lr_pooled, st_pooled = eqx.filter_jit(joint_loglik)(
        DormancyModel(), p, study_arrays(study), sigma, FixedSteps(fine=32, coarse=48))
    assert int(st_pooled) == 0
    theta = prob.theta0(s, [0.3, 0.3])
    lb, lr, st = animal_parts(prob, jnp.asarray(theta), jnp.zeros((prob.n_animals, 2)))
    assert np.all(np.asarray(st) == 0)
    np.testing.assert_allclose(float(np.sum(lb)), float(lb_pooled), rtol=1e-11)
    np.testing.assert_allclose(float(np.sum(lr)), float(lr_pooled), rtol=1e-11)
    np.testing.assert_allclose(float(np.sum(lb) + np.sum(lr)), float(ll), rtol=1e-11)
    # a random effect moves only its animal
    eta = np.zeros((prob.n_animals, 2))
    eta[3, 0] = 0.5
    lb2, lr2, _ = animal_parts(prob, jnp.asarray(theta), jnp.asarray(eta))
    changed = np.flatnonzero((np.asarray(lb2) != np.asarray(lb)) | (np.asarray(lr2) !=
                                                                     np.asarray(lr)))
    assert changed.tolist() == [3]


@pytest.mark.slow
def test_laplace_marginal_tends_to_the_pooled_likelihood_as_omega_shrinks():
    """The Laplace marginal -log-likelihood of the study at random-effect sds s: at s = 1e-4 it
    equals the pooled fit's nll to 1e-5 (the log-determinant term is s^2 tr J / 2 there), at
    s = 0.3 it differs by more than 0.1 (the test sees the random effects)."""
    from dormancy_model.fitting.population.laplace import laplace_value

    study = load_study(SHIPPED).subset(ARMS)
    params = load_model_parameters("mouse")
    prob = study_problem(study, params, FREE, ("dormant_initial", "k_dr"),
                         solver=FixedSteps(fine=32, coarse=48, scan_kind="bounded"))
    fp = free_parameters(params, FREE)
    s = np.array([to_scale(f.table_value, f.scale) for f in fp])
    nat = dict(zip(FREE, from_scale_codes(s, np.array([SCALE_CODE[f.scale] for f in fp])),
                   strict=True))
    sigma = nat.pop("burden_sigma")
    p = params.replace(body_weight=study.body_weight_kg, **nat)
    ll = float(eqx.filter_jit(joint_loglik)(DormancyModel(), p, study_arrays(study), sigma,
                                            FixedSteps(fine=32, coarse=48))[0])
    eta0 = jnp.zeros((prob.n_animals, 2))
    tiny, _, conv = laplace_value(prob, jnp.asarray(prob.theta0(s, [1e-4, 1e-4])), eta0)
    assert np.all(np.asarray(conv))
    assert abs(float(tiny) + ll) < 1e-5, (float(tiny), -ll)
    wide, _, _ = laplace_value(prob, jnp.asarray(prob.theta0(s, [0.3, 0.3])), eta0)
    assert abs(float(wide) + ll) > 0.1


def test_an_animal_in_two_arms_is_refused(tmp_path, capsys, monkeypatch):
    study = tmp_path / "study"
    shutil.copytree(SHIPPED, study)
    burden = (study / "burden.csv").read_text().splitlines()
    first = burden[2].split(",")  # vehicle-b01 in arm vehicle
    surv = (study / "survival.csv").read_text().rstrip("\n")
    (study / "survival.csv").write_text(surv + f"\n{first[0]},hcq60-chronic,100,0\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["fit", "--study", str(study), "--method", "laplace", "--random",
                        "k_dr", "--out", "fits/x.json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (f"survival.csv: mouse_id: mouse '{first[0]}' is in arm 'hcq60-chronic' and in "
            "arm 'vehicle': one arm per animal") in err
    assert not (tmp_path / "fits").exists()


def _synthetic_study(root: Path, truth, sd, sigma, n_per_arm, days, seed):
    """A study directory simulated from `truth` (a parameter set): each burden mouse has its own
    dormant_initial (log-normal, sd `sd` on the log scale) and log-normal counts with noise sd
    `sigma` on `days`; one survival mouse per arm censored at day 7 (the format needs one)."""
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.simulate import simulate
    from dormancy_model.pk.presets import get_schedule

    rng = np.random.default_rng(seed)
    arms = {"vehicle": "mouse-vehicle", "hcq120-chronic": "mouse-hcq120-chronic"}
    rows, eta_true = [], []
    for arm, preset in arms.items():
        sched = get_schedule(preset, species="mouse")
        for k in range(n_per_arm):
            e = rng.normal() * sd
            eta_true.append(e)
            p = truth.replace(dormant_initial=float(truth["dormant_initial"]) * np.exp(e))
            tr = simulate(DormancyModel(), p, sched, ts=np.array([0.0, *days]))
            # the fit's burden observable: the solitary RTCs D + R (fitting.likelihood)
            res = np.asarray(tr.dormant + tr.reactivating)[1:]
            y = res * np.exp(rng.normal(size=res.size) * sigma)
            rows += [f"{arm}-b{k:02d},{arm},{d:g},{v:.8g},1" for d, v in zip(days, y,
                                                                            strict=True)]
    root.mkdir()
    (root / "study.toml").write_text(
        '[study]\nname = "pop_test"\nspecies = "mouse"\nbody_weight_g = 25.0\nsynthetic = true\n'
        + "".join(f'\n[arms.{a}]\nschedule = "{p}"\n' for a, p in arms.items()))
    (root / "burden.csv").write_text("mouse_id,arm,day,residual_cells,detection_limit\n"
                                     + "\n".join(rows) + "\n")
    (root / "survival.csv").write_text("mouse_id,arm,day,event\n" + "".join(
        f"{a}-s00,{a},7,0\n" for a in arms))
    return np.array(eta_true)


@pytest.mark.slow
def test_recovery_of_typical_value_between_animal_sd_and_noise(tmp_path):
    """24 mice in 2 arms, 3 counts each, dormant_initial log-normal between mice (sd 0.5),
    noise sd 0.25: the Laplace fit (random effect on dormant_initial) has the true typical
    value, between-animal sd and noise sd inside their 95% CIs, converges, and its EBEs track
    the true random effects."""
    params = load_model_parameters("mouse")
    truth = params.replace(dormant_initial=2000.0)
    sd, sigma = 0.5, 0.25
    eta_true = _synthetic_study(tmp_path / "s", truth, sd, sigma, 12, [28.0, 56.0, 84.0], 5)
    study = load_study(tmp_path / "s")
    prob = study_problem(study, params, ("dormant_initial", "burden_sigma"),
                         ("dormant_initial",),
                         solver=FixedSteps(fine=64, coarse=24, scan_kind="bounded"))
    theta0 = prob.theta0([np.log(500.0), np.log(0.5)], [0.2])
    res = fit_laplace(prob, options=LaplaceOptions(gtol=1e-4), theta0=theta0[None])
    assert res.converged, res.summary()
    for name, true in (("dormant_initial", 2000.0), ("burden_sigma", sigma)):
        assert res.typical_ci_low[name] < true < res.typical_ci_high[name], (name,
                                                                              res.summary())
    half = 1.96 * res.omega_rse["dormant_initial"] / 200
    s_hat = res.sd["dormant_initial"]
    assert s_hat * np.exp(-half) < sd < s_hat * np.exp(half), res.summary()
    ebe = np.array([res.eta[a][0] for a in prob.animal_ids if "-b" in a])
    assert np.corrcoef(ebe, eta_true)[0, 1] > 0.9
    assert 0.0 <= res.shrinkage["dormant_initial"] < 0.3


@pytest.mark.slow
def test_cli_laplace_fit_writes_population_block_and_simulate_reads_it(tmp_path, capsys,
                                                                       monkeypatch):
    """`dormancy fit --method laplace` on two arms of the shipped study: the fit JSON has the
    typical values as estimates, the population block (EBEs for every animal, CVs, shrinkage,
    AIC/BIC) and `simulate --params` applies it."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["fit", "--study", str(SHIPPED), "--arms", ",".join(ARMS), "--free",
                          "dormant_initial,k_dr,burden_sigma", "--random", "dormant_initial",
                          "--method", "laplace", "--starts", "2", "--adam-steps", "5",
                          "--lbfgs-steps", "30", "--laplace-starts", "1", "--profile",
                          "dormant_initial", "--out", "fits/pop.json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "fits" / "pop.json").read_text())
    pop = doc["population"]
    # the profile-likelihood interval of the CV holds the estimate (its lower end may be the
    # sd bound, flagged) and its walk starts at the optimum
    r = pop["random"]["dormant_initial"]
    assert r["cv_profile95_low"] <= r["cv"] <= r["cv_profile95_high"]
    assert min(q["delta_nll"] for q in r["profile_points"]) > -0.05
    assert "profile 95% [" in out
    study = load_study(SHIPPED).subset(ARMS)
    ids = set(study.burden.mouse_id) | set(study.survival.mouse_id)
    assert set(pop["ebe"]) == ids
    assert pop["random_effects"] == ["dormant_initial"]
    assert doc["method"] == "laplace" and doc["objective"]["nll"] == pop["objective"]["nll"]
    assert (tmp_path / "fits" / "pop" / "eta_distributions.png").stat().st_size > 0
    for n in ("dormant_initial", "k_dr", "burden_sigma"):
        assert doc["estimates"][n]["internal_value"] == pop["typical"][n]["internal_value"]
    o = pop["objective"]
    assert o["aic"] == pytest.approx(2 * 4 + 2 * o["nll"])
    assert o["bic"] == pytest.approx(4 * np.log(o["n_obs"]) + 2 * o["nll"])
    code, _, err = run(["simulate", "--model", "mouse", "--schedule", "mouse-vehicle", "--years",
                        "0.1", "--params", "fits/pop.json", "--out", "sim"], capsys)
    assert code == 0, err


@pytest.mark.slow
def test_cli_nuts_fit_writes_netcdf_and_flags_failed_diagnostics(tmp_path, capsys,
                                                                 monkeypatch):
    """`dormancy fit --method nuts` with far too few draws: the posterior NetCDF is written next
    to the fit JSON and reads back with a draw per chain and iteration, and the failed
    diagnostics (R-hat / ESS) are named in the summary and in the file, not hidden."""
    import arviz as az

    monkeypatch.chdir(tmp_path)
    code, out, err = run(["fit", "--study", str(SHIPPED), "--arms", ",".join(ARMS), "--free",
                          "dormant_initial,k_dr,burden_sigma", "--random", "dormant_initial",
                          "--method", "nuts", "--starts", "2", "--adam-steps", "5",
                          "--lbfgs-steps", "20", "--chains", "2", "--warmup", "10", "--draws",
                          "10", "--max-tree-depth", "3", "--out", "fits/nuts.json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "fits" / "nuts.json").read_text())
    dg = doc["population"]["diagnostics"]
    assert not dg["ok"] and dg["failed"] and "FAILED" in out
    idata = az.from_netcdf(tmp_path / "fits" / doc["population"]["posterior_netcdf"])
    assert np.asarray(idata.posterior["dormant_initial"]).shape == (2, 10)
    assert np.asarray(idata.posterior["eta"]).shape[2] == len(doc["population"]["ebe"])
