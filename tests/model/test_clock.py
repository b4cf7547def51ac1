"""The lesions' growth clock (`model.clock`): kappa(t) = integral of the mTOR gate rho(t) =
`rates.lesion_growth_factor` over the EVE course, against scipy quad; its inverse; the
identity untreated; the mean field's reads and hazard rate under it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import dormancy_model as dm
from dormancy_model.fitting.likelihood import arm_prediction
from dormancy_model.model import clock as C
from dormancy_model.model import observables as O
from dormancy_model.model import rates as R
from dormancy_model.pk.closed_form import Dosing, drug_system, solve_pk


@pytest.fixture(scope="module")
def eve_course(human):
    """(EVE dosing of clever-eve, its closed-form course, the clock to day 400)."""
    dosing = Dosing.from_schedule(dm.get_schedule("clever-eve"))
    course = solve_pk(drug_system(human, "eve"), dosing.eve, human["body_weight"])
    clock = jax.jit(C.dosing_clock)(human, dosing.eve, 0.0, 400.0)
    return dosing, course, clock


def test_clock_matches_quad_of_the_gate(human, eve_course):
    """kappa(t) against scipy quad of rho = g(M(C_EVE(u))) between the effective dose times
    (kinks): at the clock's nodes (dose times, the end of the horizon) within 1e-4 days over
    168 days of daily EVE (measured 4e-5), between nodes (inside dosing intervals, in the
    washout where the gate recovers within days; the quadratic rho of each cell) within 5e-4
    days (measured 1.8e-4 on a dense grid; linear interpolation between the nodes was 0.025
    days off); the drug slows the clock (kappa(168) well below 168), rho is in (0, 1] and the
    clock runs at 1 day per day after the washout."""
    dosing, course, clock = eve_course
    obs = jax.jit(lambda u: R.lesion_growth_factor(
        R.drug_signals(course.observe(u)[0], 0.0, human)))
    tau = np.asarray(course.tau)
    at_nodes = np.array([tau[30], tau[100], tau[-1], 400.0])
    between = np.array([0.3, 1.71, 167.9, 170.4, 172.0, 190.0])
    days = np.concatenate([at_nodes, between])
    edges = np.unique(np.concatenate([[0.0], tau, days]))
    pieces = [integrate.quad(lambda u: float(obs(u)), a, b, epsabs=1e-12, epsrel=1e-12,
                             limit=200)[0] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ref = np.interp(days, edges, np.concatenate([[0.0], np.cumsum(pieces)]))
    err = np.asarray(clock.at(jnp.asarray(days))) - ref
    assert np.max(np.abs(err[:4])) < 1e-4, err
    assert np.max(np.abs(err[4:])) < 5e-4, err
    assert ref[2] < 0.95 * tau[-1]
    rho = np.asarray(jax.vmap(obs)(jnp.linspace(0.0, 200.0, 4001)))
    assert np.all(rho > 0) and np.all(rho <= 1.0)
    assert abs(float(clock.at(400.0) - clock.at(300.0)) - 100.0) < 1e-3


def test_clock_inverse_round_trip(eve_course):
    """inverse(at(t)) = t and at(inverse(k)) = k, before the first node, during dosing, after
    the last node; `reached` and `back` are the clock-difference inverses."""
    _, _, clock = eve_course
    t = jnp.asarray([-50.0, 0.0, 0.01, 3.3, 77.7, 168.2, 250.0, 399.9, 450.0])
    np.testing.assert_allclose(np.asarray(clock.inverse(clock.at(t))), np.asarray(t),
                               atol=1e-9)
    k = jnp.linspace(-10.0, 420.0, 97)
    np.testing.assert_allclose(np.asarray(clock.at(clock.inverse(k))), np.asarray(k),
                               atol=1e-9)
    s, tau = jnp.asarray([-100.0, 5.0, 120.0]), 60.0
    r = clock.reached(s, tau)
    np.testing.assert_allclose(np.asarray(clock.elapsed(s, r)), tau, atol=1e-9)
    np.testing.assert_allclose(np.asarray(clock.back(r, tau)), np.asarray(s), atol=1e-9)
    assert float(r[0]) == -40.0 and float(r[1]) > 65.0  # untreated before day 0; slowed after
    # the chain-rule factor rho(t) / rho(r) is the slope of r(t) = back(t, tau)
    tt, h = jnp.asarray([70.37, 150.41, 230.4]), 1e-5  # off the clock's nodes
    slope = (clock.back(tt + h, tau) - clock.back(tt - h, tau)) / (2 * h)
    np.testing.assert_allclose(np.asarray(slope), np.asarray(
        clock.rate(tt) / clock.rate(clock.back(tt, tau))), rtol=1e-6)


def test_untreated_clock_is_the_identity(human):
    """Without EVE (HCQ alone) the clock has no lost days at all, and the mean field's reads
    with it (through the clone clock of `model.founding`: founding times by inverting H, the
    survival p(e)) are the untreated law's to rounding: read times within 1e-11 days (of up to
    2,000; measured 6.6e-12), history terms within 1e-15 (of 0.026), the hazard rate's factors
    exactly 1 and the survival correction's p - p_found within 1e-12 (measured 1.5e-13)."""
    dosing = Dosing.from_schedule(dm.get_schedule("clever-hcq"))
    clock = jax.jit(C.dosing_clock)(human, dosing.eve, 0.0, 2000.0)
    assert np.all(np.asarray(clock.delay) == 0.0)
    t = jnp.linspace(0.0, 2000.0, 41)
    plain = jax.jit(O.lag_reads)(t, human, 0.0)
    clocked = jax.jit(lambda tt, p, ck: O.lag_reads(tt, p, 0.0, clock=ck))(t, human, clock)
    np.testing.assert_allclose(clocked.times, plain.times, rtol=0, atol=1e-11)
    assert np.array_equal(np.asarray(clocked.weights), np.asarray(plain.weights))
    np.testing.assert_allclose(clocked.pre, plain.pre, rtol=0, atol=1e-15)
    np.testing.assert_allclose(clocked.pre_rate, plain.pre_rate, rtol=0, atol=1e-15)
    assert np.all(np.asarray(clocked.rate_factor) == 1.0)
    assert np.all(np.asarray(clocked.rate_scale) == 1.0)
    assert np.max(np.abs(np.asarray(clocked.founding.pi))) < 1e-12
    assert C.has_eve(Dosing.from_schedule(dm.get_schedule("clever-combo")))
    assert not C.has_eve(dosing)


@pytest.mark.slow  # ~15 s alone (two compiled solves); the factor's fast check: round trip
def test_fit_hazard_under_eve(model, human):
    """Under EVE (clever-eve, with the history): the fit's arm prediction gives simulate's
    Lambda, and its hazard rate, with the clock's chain-rule factor, is Lambda's derivative
    (central differences, h = 1e-4 days, at 150 random days in [1, 400]: within 1e-4 of the
    largest rate); without the factor it is not (checked: the factor rho(t) / rho(r(t)) swings
    with each EVE dose)."""
    sched = dm.get_schedule("clever-eve")
    mid = np.sort(np.random.default_rng(0).uniform(1.0, 400.0, 150))
    h = 1e-4
    grid = jnp.asarray(np.concatenate([[0.0], np.stack([mid - h, mid, mid + h], 1).ravel()]))
    opts = dm.SolverOptions(rtol=1e-10, atol=1e-13)
    dosing = Dosing.from_schedule(sched)
    pred = jax.jit(arm_prediction, static_argnums=(0, 4))(model, human, dosing, grid, opts)
    tr = dm.simulate(model, human, sched, ts=grid, options=opts)
    lam, rate = np.asarray(pred.cum_hazard), np.asarray(pred.hazard_rate)
    assert int(pred.status) == 0 and lam[-1] > 0
    np.testing.assert_allclose(lam, np.asarray(tr.hazard), rtol=1e-6, atol=1e-12)
    fd = (lam[3::3] - lam[1::3]) / (2 * h)
    got = rate[2::3]
    assert np.max(np.abs(got - fd)) < 1e-4 * np.max(np.abs(fd)), np.max(np.abs(got - fd))
    clock = C.dosing_clock(human, dosing.eve, 0.0, float(grid[-1]))
    reads = O.lag_reads(grid, human, 0.0, clock=clock)
    bare = got / np.asarray(reads.rate_factor)[2::3]
    assert np.max(np.abs(bare - fd)) > 1e-2 * np.max(np.abs(fd))
