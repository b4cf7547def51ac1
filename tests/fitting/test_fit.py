"""Fitting: gradient vs finite differences, recovery of the truth, determinism, fit JSON,
`dormancy fit` / `simulate --params`, and the README example.

All fast tests share one compiled objective: the same 4-arm subset of the shipped SYNTHETIC
study, the same free parameters and batch size (equinox caches the compilation by shapes).
The shipped study is made by the stochastic agent model with between-animal variability, so a
pooled fit of it is misspecified and its truth is not expected inside the fit's confidence
region; the recovery and solver-accuracy checks "near the truth" use a study of the same 4 arms
made by the script's ODE generator (the fit's own model, one parameter set for every mouse).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from dormancy_model.cli.main import main
from dormancy_model.fitting.estimate import LBFGS, FitOptions, fit, fit_solver_options
from dormancy_model.fitting.files import apply_fit, read_fit, write_fit
from dormancy_model.fitting.objective import Objective
from dormancy_model.fitting.study import load_study
from dormancy_model.model.integrate import SolverOptions
from dormancy_model.params.table import load_model_parameters

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"
ARMS = ["vehicle", "hcq120-chronic", "eve5-chronic", "combo-hcq60-eve5-chronic"]
FREE = ["dormant_initial", "k_dr", "delta_max", "burden_sigma"]


@pytest.fixture(scope="module")
def setup():
    study = load_study(SHIPPED).subset(ARMS)
    params = load_model_parameters("mouse")
    return study, params


@pytest.fixture(scope="module")
def ode_setup(tmp_path_factory):
    """(study, params, truth): the 4 arms simulated by the script's ODE generator."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_synthetic_study import make

    d = tmp_path_factory.mktemp("ode") / "study"
    info = make(d, arms=[f"mouse-{a}" for a in ARMS], generator="ode")
    truth = {**info["truth_internal_units"], "burden_sigma": info["burden_sigma"]}
    return load_study(d), load_model_parameters("mouse"), truth


@pytest.fixture(scope="module")
def ode_result(ode_setup):
    study, params, _ = ode_setup
    return fit(study, params, FREE, starts=4, seed=0)


def _readme_block(lang):
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("## Fitting to mouse data"):]
    sec = sec[:sec.index("<!-- feature sections end -->")]
    return re.findall(rf"```{lang}\n(.*?)```", sec, re.S)[0]


@pytest.fixture(scope="module")
def readme_ns():
    """Runs the README's Python example (4 arms, 4 free parameters, 4 starts, seed 0)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        ns = {}
        exec(compile(_readme_block("python"), "README.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    return ns


@pytest.fixture(scope="module")
def result(readme_ns):
    return readme_ns["result"]


def test_gradient_matches_finite_differences(setup):
    """Autodiff gradient through diffrax vs central differences of the objective, at tight
    solver tolerances (so that the finite differences see a smooth function)."""
    study, params = setup
    obj = Objective(study, params, FREE, batch=4,
                    options=SolverOptions(rtol=1e-8, atol=1e-8, max_steps=4096))
    z = np.array([0.3, -0.2, 0.1, 0.2])
    f, g, _, _ = obj.evaluate(z[None])
    h = 1e-5
    fp, _, _, _ = obj.evaluate(np.concatenate([z + h * np.eye(4), z - h * np.eye(4)]))
    fd = (fp[:4] - fp[4:]) / (2 * h)
    assert np.isfinite(f[0])
    np.testing.assert_allclose(g[0], fd, rtol=2e-3, atol=1e-6 * np.abs(fd).max())


@pytest.mark.slow  # fast-suite budget (make test from a fresh clone ~10 min on 2 cores)
def test_fixed_step_objective_is_accurate_and_smooth(ode_setup):
    """The fitting solver (fixed-step Tsit5 on every dose time plus an even grid) is within
    0.05 nll units of an adaptive solve at rtol 1e-8 near the truth, and it is smooth: its
    autodiff gradient equals central differences to 1e-4 (an adaptive controller's step
    sequence changes with the parameters and breaks this). On the ODE-generated study: the
    shipped (agent) study's truth is far from its pooled optimum (nll 1373 vs 220), where the
    large residuals amplify any solver error."""
    study, params, truth = ode_setup
    fixed = Objective(study, params, FREE, batch=4, options=fit_solver_options())
    tight = Objective(study, params, FREE, batch=4,
                      options=SolverOptions(rtol=1e-8, atol=1e-8, max_steps=4096))
    s_truth = np.array([np.log(truth[n]) for n in FREE])
    z = fixed.scale_to_z(s_truth[None])[0]
    pts = z[None] + 0.05 * np.array([[0, 0, 0, 0], [1, -1, 1, 0], [-1, 1, 0, 1], [0, 1, -1, -1]])
    f_fixed, g, _, _ = fixed.evaluate(pts)
    f_tight, _, _, _ = tight.evaluate(pts)
    np.testing.assert_array_less(np.abs(f_fixed - f_tight), 0.05)
    h = 1e-5
    fp, _, _, _ = fixed.evaluate(np.concatenate([z + h * np.eye(4), z - h * np.eye(4)]))
    fd = (fp[:4] - fp[4:]) / (2 * h)
    np.testing.assert_allclose(g[0], fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


def test_truth_inside_joint_95_region(ode_result, ode_setup):
    """Recovery: the true values lie inside the joint 95% likelihood-ratio region of the fit,
    2 (nll(truth) - nll(best)) <= chi2_4(0.95) (Wilks), and every parameter is identifiable
    (finite SE, CI narrower than its bounds), on a study of the fit's own model (the ODE
    generator). The per-parameter Wald CIs are checked against the truth over seeds in the
    slow suite (tests/fitting/test_fit_slow.py)."""
    from scipy.stats import chi2

    study, params, truth = ode_setup
    result = ode_result
    obj = Objective(study, params, FREE, batch=4, options=fit_solver_options())
    s_truth = np.array([np.log(truth[n]) for n in FREE])
    f_truth, _ = obj.evaluate_scale(s_truth[None])
    assert 0.0 <= 2 * (f_truth[0] - result.objective) <= chi2.ppf(0.95, len(FREE))
    for n in FREE:
        assert result.identifiable[n], n
        assert result.ci_low[n] < result.estimate[n] < result.ci_high[n]
        assert result.ci_high[n] / result.ci_low[n] < 10.0


def test_starts_sorted_and_best_is_a_minimum(result, setup):
    obj_values = [s.objective for s in result.starts]
    assert obj_values == sorted(obj_values)
    assert result.objective == pytest.approx(obj_values[0], rel=1e-9)
    assert result.aic == pytest.approx(2 * len(FREE) + 2 * result.objective)
    # positive-definite Hessian at the optimum
    assert np.all(np.linalg.eigvalsh(np.array(result.hessian)) > 0)
    # converged starts agree on the optimum
    conv = [s.objective for s in result.starts if s.converged]
    assert max(conv) - min(conv) < 1e-3


def test_same_seed_same_fit(setup):
    study, params = setup
    options = FitOptions(adam_steps=3, optimizer=LBFGS(steps=3))
    a = fit(study, params, FREE, starts=4, seed=3, options=options)
    b = fit(study, params, FREE, starts=4, seed=3, options=options)
    assert a.estimate == b.estimate and a.objective == b.objective
    assert [s.initial for s in a.starts] == [s.initial for s in b.starts]


def test_fit_json_roundtrip_and_apply(result, setup, tmp_path):
    study, params = setup
    path = tmp_path / "fit.json"
    write_fit(path, result, study, "src/dormancy_model/params/data/mouse.toml")
    doc = read_fit(path)
    assert doc["study"]["data_hash"] == study.data_hash and doc["study"]["synthetic"]
    assert doc["seed"] == 0 and doc["settings"]["starts"] == 4 and doc["package_version"]
    assert len(doc["starts"]) == 4
    p2 = apply_fit(params, path)
    for n in ("dormant_initial", "k_dr", "delta_max"):
        assert float(p2[n]) == pytest.approx(result.estimate[n], rel=1e-12)
    assert float(p2["hcq_ic50"]) == float(params["hcq_ic50"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(Exception, match="bad.json: format"):
        apply_fit(params, bad)


@pytest.mark.slow  # moved from the fast suite (10-minute budget, session 8)
def test_readme_cli_example_fit_then_simulate(tmp_path, monkeypatch, capsys):
    lines = [ln for ln in _readme_block("bash").splitlines() if ln.startswith("dormancy ")]
    assert len(lines) == 2
    fit_json = tmp_path / "fits" / "quick.json"
    for line in lines:
        argv = shlex.split(line)[1:]
        argv = [str(fit_json) if a == "fits/quick.json" else a for a in argv]
        argv = [str(tmp_path / "sim") if a == "out/sim_fit" else a for a in argv]
        argv = [str(ROOT / a) if a in ("data/mouse_synthetic", "src/dormancy_model/params/data/mouse.toml") else a
                for a in argv]
        main(argv)
    doc = json.loads(fit_json.read_text())
    assert set(doc["estimates"]) == set(FREE)
    for name in ("burden_vs_dose", "kaplan_meier", "burden_vs_rfs", "waterfall"):
        assert (tmp_path / "fits" / "quick" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "sim" / "trajectory.csv").exists()
    assert "wrote" in capsys.readouterr().out


def test_readme_python_example(readme_ns):
    assert readme_ns["result"].n_converged >= 1
    assert float(readme_ns["fitted"]["delta_max"]) == readme_ns["result"].estimate["delta_max"]


@pytest.mark.parametrize("kw, field", [
    (dict(out="fit.txt"), "--out"),
    (dict(profile=["hcq_ic50"]), "profile"),
    (dict(model="human"), "meta.species"),
])
def test_run_fit_validates_before_writing(tmp_path, kw, field):
    from dormancy_model.errors import InputError
    from dormancy_model.fitting.pipeline import run_fit

    options = FitOptions(starts=2, seed=0, profile=kw.get("profile", ()))
    out = kw.get("out", tmp_path / "o" / "fit.json")
    with pytest.raises(InputError, match=field):
        run_fit(SHIPPED, kw.get("model", "mouse"), FREE, options, out=out)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value", [("--starts", "0"), ("--seed", "-1"),
                                         ("--adam-steps", "-1"), ("--lbfgs-steps", "0")])
def test_fit_cli_rejects_bad_search_flags_before_writing(tmp_path, capsys, flag, value):
    out = tmp_path / "o" / "fit.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(SHIPPED), "--out", str(out), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dormancy: error: {flag}: ") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_fit_options_carry_the_run_settings():
    """One value holds starts, seed, steps, prior and profiles; `fit`'s keywords replace them."""
    o = FitOptions(starts=4, seed=3, adam_steps=2, optimizer=LBFGS(steps=5), prior=True,
                   profile="k_dr, delta_max,")
    assert (o.starts, o.seed, o.steps, o.prior, o.profile) == (4, 3, 7, True,
                                                               ("k_dr", "delta_max"))
    o2 = o.replace(starts=2)
    assert o2.starts == 2 and o2.seed == 3 and o2.profile == o.profile and o.starts == 4
    for bad in (dict(starts=0), dict(seed=-1), dict(adam_steps=-1)):
        with pytest.raises(ValueError):
            FitOptions(**bad)


def test_fit_json_status_and_old_files(result, setup, tmp_path):
    """The fit JSON names the status of the best start and of every start (status table
    names); a file written before the status field reads as "ok" and still applies."""
    from dormancy_model import status as S
    from dormancy_model.errors import InputError

    study, params = setup
    path = tmp_path / "fit.json"
    write_fit(path, result, study, "mouse")
    doc = json.loads(path.read_text())
    assert doc["status"] == "ok" and doc["status_code"] == S.OK == result.status
    assert [s["status"] for s in doc["starts"]] == [
        "ok" if np.isfinite(s.objective) else s.status_name for s in result.starts]
    assert [s["converged"] for s in doc["starts"]] == [s.converged for s in result.starts]
    old = {k: v for k, v in doc.items() if k not in ("status", "status_code")}
    for s in old["starts"]:
        del s["status"]
    path.write_text(json.dumps(old))
    back = read_fit(path)
    assert back["status"] == "ok" and back["status_code"] == S.OK
    assert float(apply_fit(params, path)["k_dr"]) == pytest.approx(result.estimate["k_dr"])
    path.write_text(json.dumps(dict(doc, status="fine")))
    with pytest.raises(InputError, match="fit.json: status: unknown status 'fine'"):
        read_fit(path)


def test_failed_starts_carry_their_status(setup, monkeypatch):
    """Starts whose objective is not finite (here: start points made NaN) report the status
    `nonfinite` per start, sorted last; the fit's status is its best start's, "ok"."""
    from dormancy_model import status as S
    from dormancy_model.fitting import estimate as E
    from dormancy_model.fitting.files import fit_to_json

    study, params = setup
    points = E.start_points

    def half_nan(obj, starts, seed, method="sobol"):
        p = points(obj, starts, seed, method)
        p[1::2] = np.nan
        return p

    monkeypatch.setattr(E, "start_points", half_nan)
    obj = Objective(study, params, FREE, batch=4, options=fit_solver_options())
    f, _, _, _, st = obj.evaluate_status(half_nan(obj, 4, 0))
    assert np.isfinite(f[::2]).all() and st.tolist() == [S.OK, S.NONFINITE] * 2
    r = fit(study, params, FREE, options=FitOptions(starts=4, adam_steps=1,
                                                    optimizer=LBFGS(steps=1)), objective=obj)
    assert [s.status_name for s in r.starts] == ["ok", "ok", "nonfinite", "nonfinite"]
    assert [s.start for s in r.starts[2:]] == [1, 3] and r.status == S.OK
    doc = fit_to_json(r, study, "mouse")
    assert doc["status"] == "ok" and doc["status_code"] == S.OK
    assert [s["status"] for s in doc["starts"]] == ["ok", "ok", "nonfinite", "nonfinite"]
    assert not any(s["converged"] for s in doc["starts"][2:])


def test_profile_is_reoptimised_from_the_estimate(result, setup):
    """A profile grid (odd, centred on the estimate) re-optimises the other parameters from
    the best estimate, so its centre is no worse than the fit's optimum."""
    study, params = setup
    options = FitOptions(starts=4, adam_steps=0, optimizer=LBFGS(steps=2), profile=("k_dr",),
                         profile_points=3)
    r = fit(study, params, FREE, options=options)
    prof = r.profiles["k_dr"]
    assert len(prof.values) == 3
    assert prof.scale_values[1] == pytest.approx(r.scale_estimate["k_dr"], abs=1e-12)
    assert prof.objective[1] <= r.objective + 1e-9
    assert r.settings["profile"] == ["k_dr"] and r.settings["starts"] == 4


def test_sweep_draws_from_a_real_fit_json(result, setup, tmp_path):
    """`[samples] method = "fit"` reads the file `write_fit` writes: the whitened log draws of
    the three fitted model parameters (burden_sigma marginalised out) have mean 0 and identity
    covariance within sampling error."""
    import tomllib

    from dormancy_model.sweeps.spec import parse_sweep

    study, params = setup
    write_fit(tmp_path / "fit.json", result, study, "mouse", params)
    text = ('[sweep]\nmodel = "mouse"\nschedule = "mouse-vehicle"\n[samples]\nmethod = "fit"\n'
            'n = 4000\nfit = "fit.json"\n[outputs]\nresidual_days = [28]\n')
    spec = parse_sweep(tomllib.loads(text), str(tmp_path / "spec.toml"), text)
    names = [n for n in result.names if n != "burden_sigma"]
    assert set(spec.samples) == set(names)
    keep = [result.names.index(n) for n in names]
    cov = np.asarray(result.covariance)[np.ix_(keep, keep)]
    mean = np.log([result.estimate[n] for n in names])
    z = np.log(np.stack([spec.samples[n] for n in names], axis=1))
    w = (z - mean) @ np.linalg.inv(np.linalg.cholesky(cov)).T
    n = len(w)
    np.testing.assert_array_less(np.abs(w.mean(axis=0)), 4 / np.sqrt(n))
    np.testing.assert_array_less(np.abs(np.cov(w.T) - np.eye(len(names))), 4 * np.sqrt(2 / n))



def test_objective_does_not_depend_on_batch_layout(setup):
    """Layout independence of the objective: 16 points give bitwise the same values and
    gradients with 4 points per compiled call, with 1 (padded to `MIN_LANES`), in another order
    (other neighbours, positions and padding) and one at a time. Without the padding two of
    these gradients differ in the last bit (XLA compiles 1-3 lanes to other arithmetic)."""
    from dormancy_model.fitting.objective import MIN_LANES

    study, params = setup
    Z = np.random.default_rng(1).normal(size=(16, len(FREE))) * 1.5
    obj = Objective(study, params, FREE, batch=4, options=fit_solver_options())
    one = Objective(study, params, FREE, batch=1, options=fit_solver_options())
    assert one.batch == MIN_LANES == 4
    f, g, lb, lr = obj.evaluate(Z)
    assert np.isfinite(f).all()
    perm = np.random.default_rng(2).permutation(len(Z))
    f1, g1, lb1, lr1 = one.evaluate(Z)
    fp, gp, lbp, lrp = obj.evaluate(Z[perm])
    for a, b, c in ((f, f1, fp), (g, g1, gp), (lb, lb1, lbp), (lr, lr1, lrp)):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(c, a[perm])
    for i in (3, 9):
        fi, gi, _, _ = obj.evaluate(Z[i:i + 1])
        np.testing.assert_array_equal(fi[0], f[i])
        np.testing.assert_array_equal(gi[0], g[i])


def _fit_record(result):
    d = result.to_dict()
    d.pop("wall_time_s")
    return json.dumps(d, sort_keys=True)


@pytest.mark.slow
def test_fit_estimates_do_not_depend_on_batch_size(setup):
    """Layout independence of a fit (5 starts, Adam, L-BFGS whose line searches evaluate only
    the starts still searching, the Hessian, a profile): bitwise the same result, every start
    included, with 4 points per compiled call (the default on the CPU: two calls, the second
    padded), with 7 (one call) and with 1 (padded to `MIN_LANES`). The fast check is
    `test_objective_does_not_depend_on_batch_layout`."""
    from dormancy_model.fitting.objective import MIN_LANES

    study, params = setup
    options = FitOptions(starts=5, seed=1, start_method="lhs", adam_steps=3,
                         optimizer=LBFGS(steps=6), profile=("k_dr",), profile_points=3)
    records = {}
    for batch in (4, 7, 1):
        obj = Objective(study, params, FREE, batch=batch, options=options.solver)
        assert obj.batch == max(batch, MIN_LANES)
        result = fit(study, params, FREE, options=options, objective=obj)
        assert np.isfinite(result.objective) and len(result.starts) == 5
        records[batch] = _fit_record(result)
    assert records[7] == records[4]
    assert records[1] == records[4]
