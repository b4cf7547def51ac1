"""The population fit's shared drug signals (`StudyAnimalLikelihood.shared`,
`FixedSteps.dense_tabulated`): a tabulated solve equals the solve that computes the signals
from the course (to rounding), and so does a solve with the repeated grid points dropped
(`FixedSteps.drop_repeats`), the Laplace objective, its gradient and the modes are the same
with and without the table, and a random effect on a parameter the signals read turns the
table off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dormancy_model.fitting.objective import free_parameters
from dormancy_model.fitting.population.animals import animal_parts, study_problem
from dormancy_model.fitting.population.laplace import InnerOptions, laplace_value_and_grad
from dormancy_model.fitting.study import load_study, stacked_dosing
from dormancy_model.model.integrate import FixedSteps
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import load_model_parameters
from dormancy_model.params.transforms import to_scale

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"
ARMS = ["vehicle", "eve5-transient", "combo-hcq60-eve5-chronic"]
FREE = ["dormant_initial", "k_dr", "delta_max", "eve_ic50", "burden_sigma"]
SOLVER = FixedSteps(fine=32, coarse=48, scan_kind="bounded")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.slow  # 26 s on 2 cores; test_animal_likelihoods_are_the_same_with_the_table is fast
def test_tabulated_solve_equals_the_course_solve():
    study = load_study(SHIPPED)
    p = load_model_parameters("mouse").replace(body_weight=study.body_weight_kg)
    model = DormancyModel()
    dosing = stacked_dosing([a.schedule for a in study.arms])
    days = jnp.linspace(0.0, 250.0, 301)
    for k in (0, 8, 17):
        d = jax.tree.map(lambda v, k=k: v[k], dosing)
        course = model.drug_course(p, d)
        at, st = SOLVER.dense(model, p, course, d, 0.0, 250.0)
        ts, stages = SOLVER.stage_times(course, d, 0.0, 250.0)
        sig = model.drug_signals_at(stages.ravel(), p, course)
        sig = jax.tree.map(lambda v, s=stages: v.reshape(s.shape), sig)
        at2, st2 = SOLVER.dense_tabulated(model, p, ts, sig)
        a, b = jax.vmap(at)(days), jax.vmap(at2)(days)
        assert int(st) == int(st2) == 0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-11, atol=1e-12)
        # repeated grid points dropped: the same solve; one more than there are: a failure
        n = SOLVER.repeats(course, d, 0.0, 250.0)
        assert n > 0
        short = dataclasses.replace(SOLVER, drop_repeats=n)
        at3, st3 = short.dense(model, p, course, d, 0.0, 250.0)
        assert short.step_times(course, d, 0.0, 250.0).shape[0] == ts.shape[0] - n
        assert int(st3) == 0
        np.testing.assert_allclose(np.asarray(jax.vmap(at3)(days)), np.asarray(a),
                                   rtol=1e-11, atol=1e-12)
        _, st4 = dataclasses.replace(SOLVER, drop_repeats=n + 1).dense(
            model, p, course, d, 0.0, 250.0)
        assert int(st4) != 0


def _problems(random):
    study = load_study(SHIPPED).subset(ARMS)
    params = load_model_parameters("mouse")
    fp = free_parameters(params, FREE)
    s = np.array([to_scale(f.table_value, f.scale) for f in fp])
    s[0] += 0.3
    return [study_problem(study, params, FREE, random, solver=SOLVER, tabulate=t)
            for t in (True, False)], s


@pytest.mark.slow  # fast-suite budget (make test from a fresh clone ~10 min on 2 cores)
def test_animal_likelihoods_are_the_same_with_the_table():
    (tab, ref), s = _problems(("dormant_initial", "k_dr", "delta_max"))
    theta = jnp.asarray(tab.theta0(s, [0.4, 0.3, 0.5]))
    eta = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (tab.n_animals, tab.q))
    for a, b in zip(animal_parts(tab, theta, eta), animal_parts(ref, theta, eta), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-12)


@pytest.mark.slow
def test_laplace_objective_gradient_and_modes_are_the_same_with_the_table():
    (tab, ref), s = _problems(("dormant_initial", "k_dr", "delta_max"))
    assert tab.likelihood.tabulate and not ref.likelihood.tabulate
    assert tab.likelihood.options.drop_repeats > 0
    theta = jnp.asarray(tab.theta0(s, [0.4, 0.3, 0.5]))
    eta0 = jnp.zeros((tab.n_animals, tab.q))
    f1, g1, e1, c1, _, _ = laplace_value_and_grad(tab, theta, eta0, InnerOptions())
    f0, g0, e0, c0, _, _ = laplace_value_and_grad(ref, theta, eta0, InnerOptions())
    assert np.all(np.asarray(c1)) and np.all(np.asarray(c0))
    np.testing.assert_allclose(float(f1), float(f0), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(e1), np.asarray(e0), atol=1e-8)


def test_a_random_effect_on_a_drug_parameter_turns_the_table_off():
    (tab, _), _ = _problems(("k_dr", "eve_ic50"))
    assert not tab.likelihood.tabulate
    assert tab.shared(jnp.zeros(tab.n_theta)) is None
