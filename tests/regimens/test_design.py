"""Regimen design (issue 18) on small problems that independent methods can check:

* the objective's forward-mode gradient against central finite differences;
* a 2-variable design (EVE amount in 2.5 mg tablets, number of cycles) against the exhaustive
  grid of the same feasible set (exact evaluations) and against scipy SLSQP with
  finite-difference gradients on the same relaxation;
* the returned regimen's trough constraint re-checked by the independent scipy ODE
  (`tests/scipy_reference.py`, PK as ODE states, doses as state jumps);
* an infeasible problem (a trough limit below what the smallest allowed dose gives) reported
  infeasible with the binding constraint named;
* the written schedule loads with `load_schedule` and gives the same dose events; the trial
  protocol doses only on a regimen's on-days.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from dormancy_model.params.table import load_model_parameters
from dormancy_model.regimens import Regimen, design, parse_design_spec
from dormancy_model.regimens.optimise import _evaluate_many
from dormancy_model.regimens.problem import FINAL_OPTIONS, Problem
from dormancy_model.trials.population import Population, sample_patients
from scipy_reference import ReferenceModel

PATIENTS = 6
LIMIT = 14.0  # ng/mL: binds between the allowed EVE amounts


def small_doc(limit=LIMIT, **over):
    doc = {
        "design": {"name": "small", "days_on": 28, "cycles": [1, 3], "starts": 2, "seed": 3},
        "population": {"patients": PATIENTS, "search_patients": PATIENTS},
        "objective": {"kind": "residual", "day": 84},
        "drug": {"hcq": {"amount_mg": 600, "tablet_mg": [200], "frequency": "BID"},
                 "eve": {"amount_mg": [2.5, 10], "tablet_mg": [2.5], "frequency": "QD"}},
        "constraint": [
            {"kind": "trough", "drug": "eve", "max_ng_ml": limit, "fraction": 0.5,
             "source": "test limit"},
            {"kind": "treatment_days", "max_days": 56, "source": "test limit"}],
    }
    doc.update(over)
    return doc


@pytest.fixture(scope="module")
def setup():
    params = load_model_parameters("human")
    spec = parse_design_spec(small_doc(), "small.toml")
    key = jax.random.key(spec.seed)
    res = design(spec, params, key=key, population=Population(), keep=2)
    pats = sample_patients(key, spec.patients, Population(), params).params.astype(jnp.float64)
    return spec, params, res, pats


def test_gradient_matches_finite_differences():
    params = load_model_parameters("human")
    spec = parse_design_spec(small_doc(), "small.toml")
    spec = dataclasses.replace(spec, days_on=dataclasses.replace(spec.days_on, lo=14))
    pats = sample_patients(jax.random.key(0), 3, Population(), params).params.astype(jnp.float64)
    prob = Problem(spec, pats, {"hcq": "BID", "eve": "QD"})
    from dormancy_model.model.integrate import SolverOptions

    opts = SolverOptions(rtol=1e-10, atol=1e-10, settle_hours=(), adjoint="forward")
    f = lambda x: prob.score(prob.per_patient(x, options=opts)[0])  # noqa: E731
    x0 = jnp.asarray([600.0, 6.3, 20.4, 2.3])
    g = np.asarray(jax.jit(jax.jacfwd(f))(x0))
    fj = jax.jit(f)
    h = np.asarray([1.0, 0.01, 0.01, 0.005])
    fd = np.asarray([(fj(x0.at[i].add(h[i])) - fj(x0.at[i].add(-h[i]))) / (2 * h[i])
                     for i in range(4)])
    assert np.all(np.abs(g) > 0)
    np.testing.assert_allclose(g, fd, rtol=2e-3)


@pytest.mark.slow  # moved from the fast suite (10-minute budget, session 8)
def test_design_beats_exhaustive_grid(setup):
    spec, params, res, pats = setup
    assert res.feasible and res.best is not None
    prob = next(iter(res.problems.values()))
    grid = [np.asarray([600.0, a, 28.0, c]) for a, c in itertools.product(
        spec.drug("eve").allowed_amounts(), range(1, 4))]
    feas = [x for x in grid if np.all(prob.constraint_values(x) <= 1e-9)]
    infeasible = [x for x in grid if np.any(prob.constraint_values(x) > 1e-9)]
    assert feas and infeasible  # the constraints cut the grid
    vals, status = _evaluate_many(prob, feas, pats, FINAL_OPTIONS)
    assert np.all(status == 0)
    scores = [float(prob.score(jnp.asarray(v))) for v in vals]
    best_grid = max(scores)
    assert res.best.objective >= best_grid - 1e-9 * abs(best_grid)
    assert res.best.feasible
    # and it is the grid's best point
    x = feas[int(np.argmax(scores))]
    assert res.best.regimen.amounts["eve"] == x[1] and res.best.regimen.cycles == x[3]


def test_continuous_optimum_agrees_with_slsqp(setup):
    spec, params, res, pats = setup
    prob = Problem(spec, pats, {"hcq": "BID", "eve": "QD"})
    span = prob.hi - prob.lo
    free = span > 0
    f = jax.jit(lambda x: prob.score(prob.per_patient(x)[0]))

    def x_of(u):
        x = prob.lo.copy()
        x[free] = prob.lo[free] + span[free] * u
        return x

    r = optimize.minimize(lambda u: -float(f(jnp.asarray(x_of(u)))), np.full(free.sum(), 0.5),
                          method="SLSQP", bounds=[(0, 1)] * int(free.sum()),
                          constraints=[{"type": "ineq",
                                        "fun": lambda u: -prob.constraint_values(x_of(u))}],
                          options=dict(ftol=1e-10, maxiter=200, eps=1e-6))
    assert r.success, r.message
    ours = res.continuous.sort_values("objective_search").iloc[-1]
    x_ref = x_of(r.x)
    np.testing.assert_allclose([ours["eve_mg"], ours["cycles"]], x_ref[[1, 3]],
                               atol=0.01 * np.max(span))
    assert abs(ours["objective_search"] + float(r.fun)) <= 1e-4 * abs(float(r.fun)) + 1e-6


def test_trough_constraint_rechecked_by_scipy_ode(setup):
    spec, params, res, pats = setup
    reg = res.best.regimen
    sched = reg.schedule("best")
    eve_only = dataclasses.replace(sched, lines=tuple(ln for ln in sched.lines
                                                      if ln.drug == "eve"))
    t_dose = sched.lines[1].times() if sched.lines[1].drug == "eve" else sched.lines[0].times()
    ts = np.r_[0.0, t_dose[1:] - 1e-9]  # just before every later dose: the troughs
    worst = []
    for i in range(PATIENTS):
        p = {k: float(np.asarray(v)[i]) for k, v in pats.values.items()}
        rm = ReferenceModel(p, per_kg=pats.pk_per_kg)
        states, _ = rm.solve(eve_only, ts, method="LSODA", rtol=1e-9, atol=1e-12)
        worst.append(np.max(1000.0 * states[:, 5] / rm.vol["eve"][0]))
    worst = np.asarray(worst)
    c = spec.constraints[0]
    assert np.mean(worst <= c.limit) >= c.fraction
    # the margin the design reports is the independent one's upper bound (steady state)
    assert -res.best.margins[0] <= 1 - np.sort(worst)[int(np.ceil(c.fraction * PATIENTS)) - 1] \
        / c.limit + 1e-3


def test_infeasible_problem_names_binding_constraint():
    params = load_model_parameters("human")
    doc = small_doc(limit=0.5)
    doc["design"] = {**doc["design"], "starts": 1}
    doc["population"] = {"patients": 3, "search_patients": 3}
    spec = parse_design_spec(doc, "infeasible.toml")
    res = design(spec, params, key=jax.random.key(0), population=Population())
    assert not res.feasible and not res.regimens
    assert res.binding == spec.constraints[0].name
    assert "trough" in res.binding


def test_written_schedule_round_trips(setup, tmp_path):
    from dormancy_model.pk.schedule import load_schedule
    from dormancy_model.regimens.pipeline import _schedule_toml

    spec, params, res, pats = setup
    reg = Regimen({"hcq": 400.0, "eve": 5.0}, {"hcq": "BID", "eve": "QD"}, 21, 4, 28)
    (tmp_path / "r.toml").write_text(_schedule_toml(reg, "r", "test"))
    got = load_schedule(tmp_path / "r.toml", "human")
    want = reg.schedule("r")
    for d in ("hcq", "eve"):
        for a, b in zip(got.events(d), want.events(d), strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(got.events("eve")[0]) == 21 * 4


def test_trial_protocol_doses_on_days_only():
    from dormancy_model.trials.design import clever_design
    from dormancy_model.trials.protocol import arm_dosing

    reg = Regimen({"hcq": 600.0, "eve": 10.0}, {"hcq": "BID", "eve": "QD"}, 21, 6, 28)
    d = clever_design().replace(regimen=reg.schedule("r"))
    arm = d.arms[-1]
    dos = arm_dosing(d, arm)
    t, a = np.asarray(dos.eve.times), np.asarray(dos.eve.amount)
    day = np.floor(np.mod(t, 28) + 1e-9) + 1
    on = (t < 6 * 28) & (day <= 21)
    np.testing.assert_array_equal(a > 0, on)
    assert np.sum(a > 0) == 21 * 6


def test_cycle_length_choices_share_the_objective_day():
    doc = small_doc()
    doc["design"] = {**doc["design"], "cycle_days": [28, 21], "days_on": [14, 28]}
    spec = parse_design_spec(doc, "lengths.toml")
    assert spec.cycle_choices == (21, 28) and spec.cycle_days == 28
    sub = spec.for_cycle_length(21)
    assert sub.days_on.hi == 21 and sub.days_on.lo == 14 and sub.cycle_choices == (21,)
    assert sub.objective_day == spec.objective_day == 84  # `day` of the spec
    doc["objective"] = {"kind": "clearance"}
    spec = parse_design_spec(doc, "lengths.toml")
    assert spec.objective_day == 3 * 28 and spec.for_cycle_length(21).objective_day == 84


@pytest.mark.slow
def test_design_over_two_cycle_lengths():
    params = load_model_parameters("human")
    doc = small_doc()
    doc["design"] = {**doc["design"], "cycle_days": [21, 28], "days_on": [14, 28],
                     "starts": 1}
    spec = parse_design_spec(doc, "lengths.toml")
    res = design(spec, params, key=jax.random.key(3), population=Population(), keep=4)
    assert res.feasible and {k[1] for k in res.problems} == {21, 28}
    assert set(res.continuous["cycle_days"]) == {21, 28}
    from dormancy_model.regimens import evaluate

    for c in res.regimens:
        assert c.regimen.cycle_days in (21, 28) and c.regimen.days_on <= c.regimen.cycle_days
        again = evaluate(spec, res.problems, c.regimen)
        assert again.objective == pytest.approx(c.objective, rel=1e-12)
