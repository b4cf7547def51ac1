"""Covariate models on typical values (`fitting.population.covariates`, `dormancy fit
--covariate`): the per-animal typical value against its closed form (power and categorical);
every beta = 0 reproduces the problem without covariates exactly (Laplace objective and
gradient), the beta gradient against finite differences; the NUTS prior on beta is Normal(0, 1);
recovery of a body-weight exponent and of dose-group effects from data simulated with known
truth (a closed-form model in the fast suite, the mouse study by the ODE in the slow one); bad
input through the CLI: exit 2, one line naming the option or the file and field, nothing
written."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from cli_run import run
from dormancy_model.errors import InputError
from dormancy_model.fitting.population.covariates import (
    Column,
    covariate_model,
    parse_covariates,
    typical_values,
)
from dormancy_model.fitting.population.estimate import LaplaceOptions, fit_laplace
from dormancy_model.fitting.population.laplace import laplace_value_and_grad
from population_models import PoissonLogLinear, problem

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"
GROUPS = ("vehicle", "low", "high")


def _columns(weight, group):
    where = lambda i: ("animals", "covariate")  # noqa: E731
    return {"weight": Column(tuple(weight), where),
            "group": Column(tuple(group), where)}


def _poisson(n, J, rate, b, beta_w, beta_g, sd, seed, specs):
    """Poisson counts with log rate log(rate) + beta_w log(w / median w) + beta_g[group] + eta
    (+ b x): weights 18-32 g, three groups in turn; the problem with `specs` and without."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(18.0, 32.0, n)
    g = np.array(GROUPS)[np.arange(n) % 3]
    shift = beta_w * np.log(w / np.median(w)) + np.array([beta_g.get(x, 0.0) for x in g])
    x = np.tile(np.linspace(-1, 1, J), (n, 1))
    eta = rng.normal(size=n) * sd
    k = rng.poisson(np.exp(np.log(rate) + shift[:, None] + eta[:, None] + b * x)).astype(float)
    data = (x, k, np.ones_like(k, bool))
    args = (PoissonLogLinear(), data, ("rate", "b"), ("log", "lin"), ("rate",),
            [np.log(1e-2), -5], [np.log(1e3), 5])
    ids = tuple(str(i) for i in range(n))
    cov = covariate_model(specs, ("rate", "b"), _columns(w, g), ids, scales=("log", "lin"))
    return problem(*args), problem(*args, covariates=cov), w, g


def test_typical_value_is_the_closed_form_power_and_categorical_model():
    """rate_i = rate_pop (w_i / median w)^beta_w exp(beta_level) for the power and categorical
    effects on the log-scale `rate`; b_i = b + beta on the lin-scale slope; the reference is the
    median weight and the first level; `typical_values` is the same function."""
    from dormancy_model.params.transforms import from_scale

    _, prob, w, g = _poisson(7, 3, 5.0, 0.2, 0.0, {}, 0.3, 0,
                             ["rate~weight", "rate~group:categorical,b~group:categorical@low"])
    eff = prob.covariates.effects
    assert [e.label for e in eff] == ["rate~weight", "rate~group=low", "rate~group=high",
                                      "b~group=vehicle", "b~group=high"]
    assert eff[0].reference == pytest.approx(np.median(w)) and "median" in eff[0].reference_rule
    assert eff[1].reference == "vehicle" and eff[3].reference == "low"
    beta = np.array([0.75, -0.4, 0.9, 0.3, -0.2])
    theta = prob.theta0([np.log(5.0), 0.2], [0.3], beta)
    fold = {"vehicle": 1.0, "low": np.exp(-0.4), "high": np.exp(0.9)}
    slope = {"vehicle": 0.2 + 0.3, "low": 0.2, "high": 0.2 - 0.2}
    for i in range(7):
        t = np.asarray(prob.typical(jnp.asarray(theta), prob.design[i]))
        rate = float(from_scale(t[0], "log"))
        np.testing.assert_allclose(rate, 5.0 * (w[i] / np.median(w)) ** 0.75 * fold[g[i]],
                                   rtol=1e-13)
        np.testing.assert_allclose(t[1], slope[g[i]], rtol=1e-13)
        np.testing.assert_array_equal(t, np.asarray(typical_values(
            theta[:2], beta, prob.design[i], prob.covariates.target)))


@functools.cache
def _recovery():
    """The recovery data set (shared by two tests: one compilation of its Laplace objective):
    60 animals, weights 18-32 g, three dose groups; rate ~ weight (power, beta 1.0), rate ~
    group (log fold 0.8 high, -0.5 low vs vehicle), b ~ group (no effect)."""
    return _poisson(60, 8, 5.0, 0.4, 1.0, {"high": 0.8, "low": -0.5}, 0.25, 12,
                    ["rate~weight", "rate~group:categorical", "b~group:categorical"])


def test_beta_zero_reproduces_the_problem_without_covariates_exactly():
    """With every beta = 0 the Laplace objective is the no-covariate problem's, bit for bit, and
    its modes and gradient in the shared components to rounding; the gradient in beta equals
    central differences; at beta != 0 the objective moves."""
    prob0, prob1, _, _ = _recovery()
    assert prob1.n_theta == prob0.n_theta + 5
    assert prob1.theta_names()[-5:] == ("beta(rate~weight)", "beta(rate~group=low)",
                                        "beta(rate~group=high)", "beta(b~group=low)",
                                        "beta(b~group=high)")
    t0 = prob0.theta0([np.log(4.0), 0.25], [0.4])
    eta0 = jnp.zeros((60, 1))
    f0, g0, e0, *_ = laplace_value_and_grad(prob0, jnp.asarray(t0), eta0)
    f1, g1, e1, *_ = laplace_value_and_grad(prob1, jnp.asarray(prob1.theta0(t0[:2], [0.4])),
                                            eta0)
    assert float(f1) == float(f0)
    # the modes and gradients to rounding (the compiled programs differ by the zero shift)
    np.testing.assert_allclose(np.asarray(e1), np.asarray(e0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(g1)[:3], np.asarray(g0), rtol=1e-12, atol=1e-15)
    h = 1e-5
    for j in (3, 6):  # the weight exponent; a level's shift of b (no random effect on b)
        e = np.zeros(8)
        e[j] = h
        tp, tm = prob1.theta0(t0[:2], [0.4]) + e, prob1.theta0(t0[:2], [0.4]) - e
        fd = (float(laplace_value_and_grad(prob1, jnp.asarray(tp), eta0)[0])
              - float(laplace_value_and_grad(prob1, jnp.asarray(tm), eta0)[0])) / (2 * h)
        np.testing.assert_allclose(float(g1[j]), fd, rtol=1e-5, atol=1e-7)
    moved = laplace_value_and_grad(prob1, jnp.asarray(prob1.theta0(
        t0[:2], [0.4], [0.5, 0.0, 0.0, 0.0, 0.0])), eta0)[0]
    assert abs(float(moved) - float(f0)) > 1e-3


def test_nuts_prior_on_beta_is_standard_normal():
    """The NUTS log-density changes by log N(b; 0, 1) - log N(0; 0, 1) plus the change of the
    bounded coordinate's log-Jacobian when beta moves from 0 to b and its design column is 0
    (the likelihood does not see it)."""
    import jax

    from dormancy_model.fitting.population.covariates import CovariateModel
    from dormancy_model.fitting.population.estimate import BoundedCoordinates
    from dormancy_model.fitting.population.nuts import _Posterior

    prob0, _, _, _ = _poisson(4, 3, 5.0, 0.3, 0.0, {}, 0.3, 2, [])
    cov = CovariateModel(design=jnp.zeros((4, 1)), target=(0,), effects=("none",))
    prob = problem(PoissonLogLinear(), prob0.animals, prob0.names, prob0.scales, ("rate",),
                   prob0.lower, prob0.upper, covariates=cov)
    coords = BoundedCoordinates(prob.theta_bounds())
    lo, hi = np.asarray(prob.lower), np.asarray(prob.upper)
    post = _Posterior(prob, jnp.asarray(coords.lo), jnp.asarray(coords.hi),
                      jnp.asarray(coords.bounded), jnp.asarray(0.5 * (lo + hi)),
                      jnp.asarray((hi - lo) / 4))
    u = np.full(4, 0.1)
    density = eqx.filter_jit(_Posterior.log_density)

    def logp(b):
        z = coords.z(prob.theta0([np.log(5.0), 0.3], [0.3], [b]))
        logjac = np.log(20.0) + float(jax.nn.log_sigmoid(z[-1]) + jax.nn.log_sigmoid(-z[-1]))
        return float(density(post, jnp.asarray(np.concatenate([z, u])))), logjac

    (l0, j0), (l1, j1) = logp(0.0), logp(1.3)
    np.testing.assert_allclose(l1 - l0, -0.5 * 1.3**2 + (j1 - j0), rtol=1e-10)


def test_recovery_of_body_weight_exponent_and_dose_group_effects():
    """`_recovery` (b carries no random effect): every true beta inside its 95% CI, the strong
    effects' CIs exclude 0, the reported reference is the median weight, AIC counts the
    betas. (Seeds 20-44 of the same design: the weight exponent's CI covers 1.0 in 23 of 25,
    mean estimate 0.98.)"""
    _, prob, w, _ = _recovery()
    res = fit_laplace(prob, options=LaplaceOptions(starts=1, seed=0, gtol=1e-6),
                      theta0=prob.theta0([np.log(3.0), 0.0], [0.3])[None])
    assert res.converged and res.hessian_pd, res.summary()
    truth = {"rate~weight": 1.0, "rate~group=low": -0.5, "rate~group=high": 0.8,
             "b~group=low": 0.0, "b~group=high": 0.0}
    rows = {r["label"]: r for r in res.covariates}
    assert set(rows) == set(truth)
    for label, true in truth.items():
        r = rows[label]
        assert r["ci95_low"] < true < r["ci95_high"], (label, r)
        assert r["rse_percent"] == pytest.approx(100 * r["se"] / abs(r["estimate"]))
    for label in ("rate~weight", "rate~group=low", "rate~group=high"):
        assert not rows[label]["ci95_low"] < 0 < rows[label]["ci95_high"], rows[label]
    assert rows["rate~weight"]["reference"] == pytest.approx(np.median(w))
    assert rows["rate~group=high"]["fold_change"] == pytest.approx(
        np.exp(rows["rate~group=high"]["estimate"]))
    assert res.aic == pytest.approx(2 * (2 + 1 + 5) + 2 * res.objective)
    assert "beta(rate~weight)" in res.summary()


# ----------------------------------------------------------------------------- bad input


def test_specifications_parse_and_duplicates_are_refused():
    s = parse_covariates(["k_dr~body_weight_g@25, delta_max~arm", "k_dr~sex:categorical@F"])
    assert [(x.parameter, x.covariate, x.model, x.reference) for x in s] == [
        ("k_dr", "body_weight_g", None, "25"), ("delta_max", "arm", None, None),
        ("k_dr", "sex", "categorical", "F")]
    with pytest.raises(InputError, match="given twice"):
        parse_covariates(["k_dr~arm", "k_dr~arm:categorical"])


@pytest.fixture()
def studies(tmp_path, monkeypatch):
    """`study`: the shipped study with text and numeric columns added to animals.csv (a NaN on
    line 6, -1 on line 7) and an arm without animals; `holes`: an empty weight; `bare`: no
    animals.csv."""
    study = tmp_path / "study"
    shutil.copytree(SHIPPED, study)
    lines = (study / "animals.csv").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1] == "mouse_id,body_weight_g"
    out = [lines[0], lines[1] + ",sex,nanscore,negscore"]
    for k, ln in enumerate(lines[2:]):
        out.append(ln + f",{'MF'[k % 2]},{'NaN' if k == 3 else 1.5},{-1 if k == 4 else 2}")
    (study / "animals.csv").write_text("\n".join(out) + "\n")
    toml = (study / "study.toml").read_text()
    (study / "study.toml").write_text(toml + '\n[arms.extra]\nschedule = "mouse-vehicle"\n')
    holes = tmp_path / "holes"
    shutil.copytree(SHIPPED, holes)
    text = (holes / "animals.csv").read_text().splitlines()
    text[4] = text[4].split(",")[0] + ","
    (holes / "animals.csv").write_text("\n".join(text) + "\n")
    bare = tmp_path / "bare"
    shutil.copytree(SHIPPED, bare)
    (bare / "study.toml").write_text((bare / "study.toml").read_text().replace(
        'animals = "animals.csv"\n', ""))
    monkeypatch.chdir(tmp_path)
    return tmp_path


POP = ["--method", "laplace", "--free", "dormant_initial,k_dr,burden_sigma", "--random",
       "dormant_initial"]
CASES = [
    ("study", ["--covariate", "k_dr~body_weight_gg"],
     "study/animals.csv: body_weight_gg: no such column (did you mean 'body_weight_g'?)"),
    ("study", ["--covariate", "k_dr~nanscore"],
     "study/animals.csv:6: nanscore: missing for animal"),
    ("holes", ["--covariate", "k_dr~body_weight_g"],
     "holes/animals.csv:5: body_weight_g: missing for animal"),
    ("study", ["--covariate", "k_dr~sex"],
     "study/animals.csv:3: sex: not a number: 'M' for animal"),
    ("study", ["--covariate", "k_dr~negscore"],
     "study/animals.csv:7: negscore: -1 for animal"),
    ("study", ["--covariate", "k_drr~body_weight_g"],
     "--covariate: covariate: unknown parameter 'k_drr'"),
    ("study", ["--covariate", "delta_max~body_weight_g"],
     "--covariate: covariate: delta_max is fixed (not among --free"),
    ("study", ["--covariate", "k_dr~body_weight_g", "--covariate", "k_dr~body_weight_g@25"],
     "--covariate: covariate: k_dr~body_weight_g is given twice"),
    ("study", ["--covariate", "k_dr~arm"],
     "--covariate: covariate: level 'extra' of arm has no animals"),
    ("study", ["--covariate", "k_dr~sex:categorical@X"],
     "--covariate: covariate: reference level 'X' of 'k_dr~sex:categorical@X' is not a level"),
    ("study", ["--covariate", "k_dr=body_weight_g"], "--covariate: covariate: 'k_dr=body"),
    ("bare", ["--covariate", "k_dr~body_weight_g"],
     "bare/study.toml: study.animals: no per-animal covariate table"),
]


@pytest.mark.parametrize("study,argv,expected", CASES, ids=[" ".join(a) for _, a, _ in CASES])
def test_bad_covariate_input_one_line_exit_2_nothing_written(studies, capsys, study, argv,
                                                             expected):
    before = sorted(studies.rglob("*"))
    code, _, err = run(["fit", "--study", study, *POP, *argv, "--out", "fits/x.json"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("dormancy: error: ") and expected in lines[0], lines[0]
    assert sorted(studies.rglob("*")) == before


def test_covariate_with_the_pooled_method_is_refused(studies, capsys):
    code, _, err = run(["fit", "--study", "study", "--covariate", "k_dr~arm", "--out",
                        "fits/x.json"], capsys)
    assert code == 2 and "--covariate: covariate: covariate effects need --method" in err
    assert not (studies / "fits").exists()


# ----------------------------------------------------------------------------- mouse study


def _write_weighted_files(root: Path, arms: dict, rows: list, animals: list) -> None:
    """The study files of the weighted studies: burden `rows`, `animals` (id, weight) in
    animals.csv, one censored survival mouse per arm (the format needs one)."""
    root.mkdir()
    (root / "study.toml").write_text(
        '[study]\nname = "cov_test"\nspecies = "mouse"\nbody_weight_g = 25.0\nsynthetic = '
        'true\nanimals = "animals.csv"\n'
        + "".join(f'\n[arms.{a}]\nschedule = "{p}"\n' for a, p in arms.items()))
    (root / "burden.csv").write_text("mouse_id,arm,day,residual_cells,detection_limit\n"
                                     + "\n".join(rows) + "\n")
    (root / "survival.csv").write_text("mouse_id,arm,day,event\n" + "".join(
        f"{a}-s00,{a},7,0\n" for a in arms))
    (root / "animals.csv").write_text("mouse_id,body_weight_g\n" + "\n".join(animals) + "\n")


def _weighted_study(root: Path, truth, beta_w, arm_fold, sd, sigma, n_per_arm, days, seed):
    """A study simulated by the adaptive ODE solve: each burden mouse's dormant_initial is
    truth x (w / median w)^beta_w x arm_fold[arm] x exp(eta), eta ~ Normal(0, sd), weights
    18-32 g in animals.csv; log-normal counts (sd `sigma`) on `days`; one censored survival
    mouse per arm (the format needs one) at the median weight."""
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.simulate import simulate
    from dormancy_model.pk.presets import get_schedule

    rng = np.random.default_rng(seed)
    arms = {"vehicle": "mouse-vehicle", "hcq120-chronic": "mouse-hcq120-chronic"}
    n = n_per_arm * len(arms)
    w = rng.uniform(18.0, 32.0, n)
    ref = float(np.median(np.concatenate([w, np.full(len(arms), np.median(w))])))
    rows, animals, k = [], [], 0
    for arm, preset in arms.items():
        sched = get_schedule(preset, species="mouse")
        for j in range(n_per_arm):
            d0 = (float(truth["dormant_initial"]) * (w[k] / ref) ** beta_w * arm_fold[arm]
                  * np.exp(rng.normal() * sd))
            tr = simulate(DormancyModel(), truth.replace(dormant_initial=d0), sched,
                          ts=np.array([0.0, *days]))
            # the fit's burden observable: the solitary RTCs D + R (fitting.likelihood)
            y = np.asarray(tr.dormant + tr.reactivating)[1:] * np.exp(
                rng.normal(size=len(days)) * sigma)
            rows += [f"{arm}-b{j:02d},{arm},{d:g},{v:.8g},1" for d, v in zip(days, y,
                                                                            strict=True)]
            animals.append(f"{arm}-b{j:02d},{w[k]:.6g}")
            k += 1
        animals.append(f"{arm}-s00,{ref:.6g}")
    _write_weighted_files(root, arms, rows, animals)
    return ref


@pytest.mark.slow
def test_study_recovery_of_body_weight_exponent_and_arm_effect(tmp_path):
    """24 mice in 2 arms (vehicle, hcq120-chronic), 3 counts each, dormant_initial ~
    (w / median)^1.0 x 2.5 in the treated arm x log-normal (sd 0.2), noise sd 0.25: the Laplace
    fit with dormant_initial~body_weight_g and dormant_initial~arm has both true betas inside
    their 95% CIs, the arm effect's CI excludes 0, the reference is the median weight and the
    vehicle arm; with the betas set to 0 the animals' log-likelihoods are those of the problem
    without covariates, bit for bit."""
    from dormancy_model.fitting.population.animals import animal_parts, study_problem
    from dormancy_model.fitting.study import load_study
    from dormancy_model.model.integrate import FixedSteps
    from dormancy_model.params.table import load_model_parameters

    params = load_model_parameters("mouse")
    truth = params.replace(dormant_initial=2000.0, body_weight=0.025)
    ref = _weighted_study(tmp_path / "s", truth, 1.0, {"vehicle": 1.0, "hcq120-chronic": 2.5},
                          0.2, 0.25, 12, [28.0, 56.0, 84.0], 7)
    study = load_study(tmp_path / "s")
    kw = dict(solver=FixedSteps(fine=64, coarse=24, scan_kind="bounded"))
    free = ("dormant_initial", "burden_sigma")
    prob = study_problem(study, params, free, ("dormant_initial",),
                         covariates=("dormant_initial~body_weight_g", "dormant_initial~arm"),
                         **kw)
    theta0 = prob.theta0([np.log(500.0), np.log(0.5)], [0.2])
    res = fit_laplace(prob, options=LaplaceOptions(gtol=1e-4), theta0=theta0[None])
    assert res.converged, res.summary()
    rows = {r["label"]: r for r in res.covariates}
    w, a = rows["dormant_initial~body_weight_g"], rows["dormant_initial~arm=hcq120-chronic"]
    assert w["reference"] == pytest.approx(ref) and a["reference"] == "vehicle"
    assert w["ci95_low"] < 1.0 < w["ci95_high"], res.summary()
    assert a["ci95_low"] < np.log(2.5) < a["ci95_high"], res.summary()
    assert a["ci95_low"] > 0, res.summary()
    assert res.typical_ci_low["dormant_initial"] < 2000.0 < res.typical_ci_high[
        "dormant_initial"], res.summary()
    plain = study_problem(study, params, free, ("dormant_initial",), **kw)
    t = np.asarray(res.theta)
    eta = jnp.asarray(np.array([res.eta[i] for i in prob.animal_ids]))
    zero = np.concatenate([t[:plain.n_theta], np.zeros(prob.p)])
    for x, y in zip(animal_parts(prob, jnp.asarray(zero), eta),
                    animal_parts(plain, jnp.asarray(t[:plain.n_theta]), eta), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_cli_laplace_fit_with_covariates_writes_and_prints_the_effects(tmp_path, capsys,
                                                                       monkeypatch):
    """`dormancy fit --method laplace --covariate ...` on two arms of the shipped study: the
    population block lists each effect with its reference, estimate, SE, RSE% and CI, the
    summary prints them, AIC and BIC count the betas."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["fit", "--study", str(SHIPPED), "--arms",
                          "vehicle,combo-hcq60-eve5-chronic", "--free",
                          "dormant_initial,k_dr,burden_sigma", "--random", "dormant_initial",
                          "--covariate", "dormant_initial~body_weight_g", "--covariate",
                          "k_dr~arm", "--method", "laplace", "--starts", "2",
                          "--adam-steps", "5", "--lbfgs-steps", "30", "--laplace-starts", "1",
                          "--out", "fits/cov.json"], capsys)
    assert code == 0, err
    pop = json.loads((tmp_path / "fits" / "cov.json").read_text())["population"]
    rows = {r["label"]: r for r in pop["covariates"]}
    assert set(rows) == {"dormant_initial~body_weight_g", "k_dr~arm=combo-hcq60-eve5-chronic"}
    assert rows["k_dr~arm=combo-hcq60-eve5-chronic"]["reference"] == "vehicle"
    for r in rows.values():
        for k in ("estimate", "se", "rse_percent", "ci95_low", "ci95_high", "reference",
                  "model", "parameter", "covariate"):
            assert r[k] is not None, (k, r)
    o = pop["objective"]
    assert o["n_params"] == 3 + 1 + 2
    assert o["aic"] == pytest.approx(2 * 6 + 2 * o["nll"])
    assert o["bic"] == pytest.approx(6 * np.log(o["n_obs"]) + 2 * o["nll"])
    assert "beta(dormant_initial~body_weight_g)" in out and "beta(k_dr~arm=" in out


def _covariate_fit(tmp_path, ref, rows_extra=()):
    """A population fit file of the weighted study at its truth: dormant_initial 2000 (the
    vehicle arm, median weight), beta 1.0 on body weight, log 2.5 for the treated arm, a tiny
    Omega, no EBEs."""
    from dormancy_model.fitting.files import write_fit
    from dormancy_model.fitting.study import load_study
    from dormancy_model.params.table import load_model_parameters
    from fit_files import make_fit_result

    params = load_model_parameters("mouse")
    study = load_study(tmp_path / "s")
    est = {"dormant_initial": 2000.0, "burden_sigma": 0.25}
    result = make_fit_result(params, est, np.diag([0.01, 0.01]))
    rows = [dict(parameter="dormant_initial", covariate="body_weight_g", model="power",
                 level=None, reference=ref, label="dormant_initial~body_weight_g",
                 estimate=1.0),
            dict(parameter="dormant_initial", covariate="arm", model="categorical",
                 level="hcq120-chronic", reference="vehicle",
                 label="dormant_initial~arm=hcq120-chronic", estimate=float(np.log(2.5))),
            *rows_extra]
    result.population = dict(method="laplace", random_effects=["dormant_initial"],
                             omega=[[1e-6]], objective={}, covariates=rows)
    path = tmp_path / "fit.json"
    write_fit(path, result, study, "mouse", params)
    return params, study, path


@pytest.mark.slow
def test_vpc_simulates_each_animal_with_its_covariates(tmp_path):
    """A VPC of a covariate fit: the typical prediction (PRED) of every burden row is the
    adaptive-solver residual of that mouse at 2000 x (w / w_ref)^1 x 2.5 (treated arm), each
    mouse's own weight from animals.csv (fixed step grid vs adaptive: rtol 2e-3); with the
    effects dropped the PRED of the heavy and light mice would be equal."""
    from dormancy_model.fitting.vpc.model import fitted_model
    from dormancy_model.fitting.vpc.simulate import simulate_replicates
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.simulate import simulate
    from dormancy_model.params.fitfile import read_fit
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.pk.presets import get_schedule

    truth = load_model_parameters("mouse").replace(dormant_initial=2000.0, body_weight=0.025)
    ref = _weighted_study(tmp_path / "s", truth, 1.0, {"vehicle": 1.0, "hcq120-chronic": 2.5},
                          0.0, 0.25, 3, [28.0], 3)
    params, study, path = _covariate_fit(tmp_path, ref)
    fitted = fitted_model(read_fit(path), params, str(path))
    sims = simulate_replicates(fitted, study, params, replicates=4, key=__import__(
        "jax").random.key(0))
    weights = dict(line.split(",") for line in (tmp_path / "s" / "animals.csv").read_text()
                   .splitlines()[1:])
    b = study.burden
    fold = {"vehicle": 1.0, "hcq120-chronic": 2.5}
    presets = {"vehicle": "mouse-vehicle", "hcq120-chronic": "mouse-hcq120-chronic"}
    expect = []
    for mid, a, day in zip(b.mouse_id, b.arm, b.day, strict=True):
        arm = study.arms[a].name
        d0 = 2000.0 * float(weights[mid]) / ref * fold[arm]
        tr = simulate(DormancyModel(), truth.replace(dormant_initial=d0),
                      get_schedule(presets[arm], species="mouse"), ts=np.array([0.0, day]))
        # the fit's burden observable: the solitary RTCs D + R (fitting.likelihood)
        expect.append(float(np.asarray(tr.dormant + tr.reactivating)[1]))
    np.testing.assert_allclose(np.exp(sims.pred_log), expect, rtol=2e-3)
    assert np.ptp(np.asarray(expect)[b.arm == 0]) > 0.1 * np.mean(expect)


def _plain_weighted_study(root: Path, n_per_arm: int, seed: int) -> float:
    """The layout of `_weighted_study` (weights in animals.csv, two arms) with made-up counts
    (no solve): for checks that do not read the data. Returns the median weight."""
    rng = np.random.default_rng(seed)
    arms = {"vehicle": "mouse-vehicle", "hcq120-chronic": "mouse-hcq120-chronic"}
    w = rng.uniform(18.0, 32.0, n_per_arm * len(arms))
    ref = float(np.median(np.concatenate([w, np.full(len(arms), np.median(w))])))
    rows, animals, k = [], [], 0
    for arm in arms:
        for j in range(n_per_arm):
            rows.append(f"{arm}-b{j:02d},{arm},28,100,1")
            animals.append(f"{arm}-b{j:02d},{w[k]:.6g}")
            k += 1
        animals.append(f"{arm}-s00,{ref:.6g}")
    _write_weighted_files(root, arms, rows, animals)
    return ref


def test_vpc_covariate_shift_is_the_closed_form(tmp_path):
    """Each animal's shift of log dormant_initial in a VPC of a covariate fit: log(w / w_ref)
    x 1.0 + log 2.5 in the treated arm (its weight from animals.csv); other parameters 0."""
    from dormancy_model.fitting.population.animals import animal_table
    from dormancy_model.fitting.vpc.model import covariate_shift, fitted_model
    from dormancy_model.params.fitfile import read_fit

    ref = _plain_weighted_study(tmp_path / "s", 3, 5)
    params, study, path = _covariate_fit(tmp_path, ref)
    fitted = fitted_model(read_fit(path), params, str(path))
    ids, arm_of, _, _ = animal_table(study)
    weights = dict(line.split(",") for line in (tmp_path / "s" / "animals.csv").read_text()
                   .splitlines()[1:])
    shift = covariate_shift(fitted, study, ids, arm_of)
    j = fitted.names.index("dormant_initial")
    expect = [np.log(float(weights[a]) / ref) + np.log(2.5) * (study.arms[k].name != "vehicle")
              for a, k in zip(ids, arm_of, strict=True)]
    np.testing.assert_allclose(shift[:, j], expect, rtol=1e-12, atol=1e-12)
    assert np.all(np.delete(shift, j, axis=1) == 0.0)


def test_vpc_of_a_covariate_fit_names_what_the_study_lacks(tmp_path):
    """A fit whose covariate the study's animals.csv does not have, or whose effect row is
    malformed: one InputError naming the file and field."""
    from dormancy_model.fitting.vpc.model import _population, fitted_model
    from dormancy_model.fitting.vpc.simulate import simulate_replicates
    from dormancy_model.params.fitfile import read_fit

    ref = _plain_weighted_study(tmp_path / "s", 2, 4)
    extra = [dict(parameter="dormant_initial", covariate="age_weeks", model="power", level=None,
                  reference=8.0, label="dormant_initial~age_weeks", estimate=0.5)]
    params, study, path = _covariate_fit(tmp_path, ref, extra)
    fitted = fitted_model(read_fit(path), params, str(path))
    with pytest.raises(InputError, match=r"animals.csv: age_weeks: no such column"):
        simulate_replicates(fitted, study, params, replicates=2,
                            key=__import__("jax").random.key(0))
    bad = dict(random_effects=["k_dr"], omega=[[0.1]],
               covariates=[dict(parameter="k_dr", covariate="arm", model="linear",
                                label="k_dr~arm=x", estimate=0.1, reference="vehicle")])
    with pytest.raises(InputError, match=r"fit.json: population.covariates\[0\].model: must "
                                         "be power or categorical"):
        _population(bad, ("k_dr",), "fit.json")
