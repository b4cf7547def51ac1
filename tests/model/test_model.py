"""Model must-holds: baseline, positivity, hazard, monotone response, scipy agreement, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

import dormancy_model as dm
from dormancy_model.pk.closed_form import Dosing
from scipy_reference import ReferenceModel

ARMS = ("observation", "clever-hcq", "clever-eve", "clever-combo")


@pytest.fixture(scope="module")
def arms(model, human):
    return {a: dm.simulate(model, human, dm.get_schedule(a), years=5) for a in ARMS}


def test_all_arms_solve(arms):
    for a, tr in arms.items():
        assert tr.ok, (a, tr.message)
        assert np.all(np.isfinite(np.asarray(tr.residual)))


def test_untreated_equals_closed_form_baseline(model, human):
    """No drug: M = 1, deficit = 0 exactly, and cells follow expm of the constant-rate system
    (also through the untreated history before day 0)."""
    ts = np.linspace(0.0, 365.0, 74)
    tr = dm.simulate(model, human, dm.get_schedule("observation"), ts=ts,
                     options=dm.SolverOptions(rtol=1e-10, atol=1e-13))
    assert np.all(np.asarray(tr.hcq_ng_ml) == 0) and np.all(np.asarray(tr.eve_ng_ml) == 0)
    assert np.all(np.asarray(tr.mtor_activity) == 1) and np.all(np.asarray(tr.autophagy_deficit) == 0)
    v = {k: float(x) for k, x in human.values.items()}
    K = np.array([
        [-v["k_dr"] - v["delta_d0"], v["k_rd"], v["k_pd"], 0],
        [v["k_dr"], -(v["k_rd"] + v["k_rp"] + v["delta_r"]), 0, 0],
        [0, v["k_rp"], v["lambda_p"] - v["delta_p"] - v["k_pd"], 0],
        [0, v["k_rp"], 0, 0]])
    # day 0 after the untreated history of T = history_days from one dormant cell at -T, scaled
    # to the file's dormant load (`observables.history`; no lesion cells of the history in P)
    assert v["history_days"] > 0 and v["k_pd"] == 0
    unit = expm(K * v["history_days"]) @ np.array([1.0, 0, 0, 0])
    c = v["dormant_initial"] / unit[0]
    y0 = np.array([v["dormant_initial"], v["reactivating_initial"] + c * unit[1],
                   v["proliferating_initial"], 0])
    ref = np.stack([expm(K * t) @ y0 for t in ts])
    got = np.stack([np.asarray(getattr(tr, k)) for k in
                    ("dormant", "reactivating", "proliferating", "escaped")], axis=1)
    # the logistic crowding term lambda_P P^2 / N_det is the only difference; its relative effect
    # on P is bounded by lambda_P * integral(P / N_det) dt, computed from the reference
    crowd = v["lambda_p"] * np.trapezoid(ref[:, 2], ts) / v["detection_size"]
    assert crowd < 1e-4
    np.testing.assert_allclose(got, ref, rtol=1e-8 + 2 * crowd, atol=1e-12)
    np.testing.assert_allclose(got[:, :2], ref[:, :2], rtol=1e-8, atol=1e-12)
    # and a schedule whose doses are all zero is the untreated run
    zero = dm.simulate(model, human, dm.get_schedule("clever-combo").scaled("hcq", 0.0)
                       .scaled("eve", 0.0), ts=ts, options=dm.SolverOptions(rtol=1e-10, atol=1e-13))
    np.testing.assert_allclose(np.asarray(zero.residual), np.asarray(tr.residual), rtol=1e-9)


def test_non_negative_cells_and_monotone_hazard(arms):
    for a, tr in arms.items():
        for k in ("dormant", "reactivating", "proliferating", "escaped"):
            assert np.all(np.asarray(getattr(tr, k)) >= 0.0), (a, k)
        h = np.asarray(tr.hazard)
        assert np.all(np.diff(h) >= -1e-12), a
        rfs = np.asarray(tr.relapse_free)
        assert np.all((rfs > 0) & (rfs <= 1))


def test_treatment_lowers_burden_and_raises_rfs(arms):
    res = {a: arms[a].at(168.0) for a in ARMS}
    rfs = {a: arms[a].at(5 * 365.25, "relapse_free") for a in ARMS}
    assert res["clever-combo"] < min(res["clever-hcq"], res["clever-eve"]) < res["observation"]
    assert rfs["clever-combo"] > max(rfs["clever-hcq"], rfs["clever-eve"]) > rfs["observation"]


def test_eve_alone_kills_dormant_cells(arms, human):
    """EVE alone raises autophagy demand above capacity: dormant death above baseline."""
    tr = arms["clever-eve"]
    assert float(np.max(np.asarray(tr.autophagy_deficit))) > 0.1
    assert tr.at(84.0, "dormant") < 0.5 * tr.at(0.0, "dormant")


# ------------------------------------------------------------------ monotone dose/duration response
T_END = 6 * 28.0
_ts = np.array([0.0, T_END])


@pytest.fixture(scope="module")
def residual_at_end(model, human):
    base = Dosing.from_schedule(dm.get_schedule("clever-combo"))

    @jax.jit
    def f(hcq_factor, eve_factor, hcq_days, eve_days):
        d = Dosing(
            hcq=base.hcq.__class__(base.hcq.times, base.hcq.amount * hcq_factor
                                   * (base.hcq.times < hcq_days), base.hcq.per_kg, base.hcq.oral),
            eve=base.eve.__class__(base.eve.times, base.eve.amount * eve_factor
                                   * (base.eve.times < eve_days), base.eve.per_kg, base.eve.oral))
        tr = dm.simulate(model, human, d, ts=_ts)
        return tr.residual[-1], tr.status[()]

    return f


doses = st.floats(0.0, 2.0)
days = st.integers(0, 6).map(lambda c: 28.0 * c)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h1=doses, h2=doses, e1=doses, e2=doses, d1=days, d2=days)
def test_more_drug_or_longer_never_increases_residual(residual_at_end, h1, h2, e1, e2, d1, d2):
    lo = (min(h1, h2), min(e1, e2), min(d1, d2))
    hi = (max(h1, h2), max(e1, e2), max(d1, d2))
    r_lo, s_lo = residual_at_end(lo[0], lo[1], lo[2], lo[2])
    r_hi, s_hi = residual_at_end(hi[0], hi[1], hi[2], hi[2])
    assert int(s_lo) == 0 and int(s_hi) == 0
    assert float(r_hi) <= float(r_lo) * (1 + 1e-6) + 1e-9


# ------------------------------------------------------------------ independent solver agreement
def _compare_with_radau(model, p, sched, ts, hazard_rtol=1e-6):
    ref = ReferenceModel({k: float(v) for k, v in p.values.items()}, per_kg=p.pk_per_kg)
    states, hazard = ref.solve(sched, ts, method="Radau", rtol=1e-10, atol=1e-12)
    tr = dm.simulate(model, p, sched, ts=ts, options=dm.SolverOptions(rtol=1e-11, atol=1e-13))
    assert tr.ok
    for i, k in enumerate(("dormant", "reactivating", "proliferating", "escaped")):
        got = np.asarray(getattr(tr, k))
        err = np.max(np.abs(got - states[:, i])) / np.max(np.abs(states[:, i]))
        assert err < 1e-6, (k, err)
    if hazard.max() > 0:
        err = np.max(np.abs(np.asarray(tr.hazard) - hazard)) / hazard.max()
        assert err < hazard_rtol, err
    conc = np.asarray(tr.hcq_effect_ng_ml)
    assert np.max(np.abs(conc - states[:, 10])) / np.max(np.abs(states[:, 10])) < 1e-6
    return tr


def test_full_model_matches_scipy_radau_short(model, human):
    """clever-combo, first 10 days, full model (PK, PD, cells), Radau rtol 1e-10."""
    _compare_with_radau(model, human, dm.get_schedule("clever-combo"), np.linspace(0, 10, 41))


def test_full_model_matches_scipy_radau_hazard(model, human):
    """Short relapse lags (fast clone growth r = 0.4/day, quick lesions) so that every node of
    the lagged hazard (lags 52-109 days) is exercised within a short Radau run. Under EVE the
    lesions grow on the growth clock, which the reference integrates as an ODE state (DOP853,
    rtol 1e-11) and inverts by brentq, and the clones' birth-death phase runs on the clone
    clock (`model.founding`), which the reference writes out (its survival B by a backward
    DOP853 solve, H inverted by brentq, the survival-weighted escape as a 12th ODE state).

    Within 2e-4 of the largest hazard (measured 7.0e-5; the lesion clock alone agreed to
    1e-6): at these rates (division 1/day, death 0.6/day, so EVE makes G fall) the net log
    growth G = lambda_p kappa - delta_p t multiplies the growth clock's quadrature error
    (kappa within 7e-6 days of DOP853 here) by lambda_p = 1, and the founding times just
    before the course, where H' = b p is small (p ~ 0.0015), move by 1e-4 days; the founding
    grid's trapezoid adds the rest (2,000 cells: 6.0e-5). The previous law (clones at
    untreated rates) is 0.31 off."""
    p = human.replace(lambda_p=1.0, delta_p=0.6, lesion_growth_rate=0.2, detection_size=1e7)
    tr = _compare_with_radau(model, p, dm.get_schedule("clever-combo", cycles=1),
                             np.linspace(0, 150, 61), hazard_rtol=2e-4)
    assert float(tr.hazard[-1]) > 0


@pytest.mark.slow
def test_full_model_matches_scipy_radau_long(model, human):
    """clever-combo 6 cycles and 2.5 years of follow-up, Radau rtol 1e-10 (minutes). The
    hazard within 2e-5 of its largest value (measured 5.0e-6, from the founding grid's
    trapezoid rule for the survival-weighted escape: 48 cells over the course; 1,000 cells give
    3.3e-7; the states within 1e-6 as before)."""
    _compare_with_radau(model, human, dm.get_schedule("clever-combo"),
                        np.linspace(0, 2.5 * 365.25, 92), hazard_rtol=2e-5)


# ------------------------------------------------------------------ vmap, dtype, failures
def test_vmap_row_equals_single_call(model, human):
    # 3 years: the relapse law reads E at t - L_q with lags of 633-1,399 days (8 nodes), so up
    # to day ~633 the hazard is 0 in every lane and comparing it would test nothing.
    # rtol 1e-8: batched and single XLA code round differently (last-bit differences from the
    # first step), and the PID controller feeds that rounding back into the step sizes (same
    # number of steps, sizes up to 1.2e-4 relative apart at the default rtol 1e-6); the
    # outputs then differ by the solver's error times that, 1e-9 relative at rtol 1e-6 but
    # 2e-14 at rtol 1e-8 (measured). The property is the batching, not the rounding.
    ts = jnp.linspace(0.0, 3 * 365.25, 41)
    sched = dm.get_schedule("clever-combo")
    opts = dm.SolverOptions(rtol=1e-8, atol=1e-11)
    k_drs = jnp.array([2.5e-5, 5e-5, 2e-4])
    batched = jax.vmap(lambda k: dm.simulate(model, human.replace(k_dr=k), sched, ts=ts,
                                             options=opts))(k_drs)
    assert np.all(np.asarray(batched.hazard)[:, -1] > 0)
    for i, k in enumerate(k_drs):
        single = dm.simulate(model, human.replace(k_dr=k), sched, ts=ts, options=opts)
        assert int(batched.num_steps[i]) == int(single.num_steps)
        np.testing.assert_allclose(np.asarray(batched.residual[i]), np.asarray(single.residual),
                                   rtol=1e-10)
        np.testing.assert_allclose(np.asarray(batched.hazard[i]), np.asarray(single.hazard),
                                   rtol=1e-10, atol=1e-15)


def test_float32_agrees_with_float64(model, human):
    sched = dm.get_schedule("clever-combo")
    ts = np.linspace(0.0, 3 * 365.25, 100)
    # the same step control in both precisions, so that the difference is the precision's: at
    # rtol 1e-5 the adaptive solve itself is ~0.4% off the exact solution whatever the dtype
    # (measured against rtol 1e-10), which a float64 reference at its default rtol 1e-6 would
    # wrongly charge to float32
    f64 = dm.simulate(model, human, sched, ts=ts, options=dm.SolverOptions(rtol=1e-5, atol=1e-6))
    f32 = dm.simulate(model, human, sched, ts=ts,
                      options=dm.SolverOptions(dtype="float32", rtol=1e-5, atol=1e-6))
    assert f32.residual.dtype == jnp.float32 and f64.residual.dtype == jnp.float64
    assert f32.ok
    # float32 over ~1,000 steps; the exponential growth of P after treatment amplifies the
    # accumulated rounding, so agreement is to 0.5% relative, not to float eps
    np.testing.assert_allclose(np.asarray(f32.residual), np.asarray(f64.residual), rtol=5e-3,
                               atol=1e-3)
    np.testing.assert_allclose(np.asarray(f32.relapse_free), np.asarray(f64.relapse_free),
                               atol=1e-4)


def test_failed_solve_is_reported_not_nan(model, human):
    tr = dm.simulate(model, human, dm.get_schedule("clever-combo"), years=1,
                     options=dm.SolverOptions(max_steps=20))
    assert not tr.ok
    assert "maximum number of steps" in tr.message
    with pytest.raises(dm.SolveError):
        tr.to_dataframe()


@pytest.mark.slow
def test_gradient_is_finite(model, human):
    """jax.grad of the 3-year relapse-free probability wrt k_dr through the adaptive solve.

    diffrax stops gradients through the step-size controller, so AD differentiates the solve
    with its step sequence frozen, while a finite difference also sees the steps move with
    k_dr: the two differ by the k_dr-derivative of the step-dependent discretisation error.
    At the default rtol 1e-6 that error is ~1e-3 of the escape state E (~0.007 cells, its
    tolerance ~atol 1e-9 per step) and AD/FD differ by 2.3e-4 (E alone, no lagged read:
    1.5e-4), both 1e-3 from the converged derivative; at rtol 1e-10 they agree to 8e-9
    (measured). So the check of the value is at rtol 1e-10; at the defaults only finiteness
    and sign."""
    ts = jnp.linspace(0.0, 3 * 365.25, 20)
    sched = dm.get_schedule("clever-combo")

    def rfs(k, options=None):
        return dm.simulate(model, human.replace(k_dr=k), sched, ts=ts,
                           options=options).relapse_free[-1]

    g_default = jax.grad(rfs)(human["k_dr"])
    assert np.isfinite(float(g_default)) and float(g_default) < 0
    tight = dm.SolverOptions(rtol=1e-10, atol=1e-13)
    g = jax.grad(rfs)(human["k_dr"], tight)
    eps = 1e-3 * float(human["k_dr"])  # central difference, truncation error ~eps^2
    fd = (rfs(human["k_dr"] + eps, tight) - rfs(human["k_dr"] - eps, tight)) / (2 * eps)
    assert np.isfinite(float(g)) and float(g) < 0
    assert abs(float(g) - float(fd)) / abs(float(fd)) < 1e-4


def test_default_tolerance_is_accurate_after_doses(model, human):
    """At the default rtol 1e-6 the adaptive solve stays within 1e-4 (max-normalised) of a tight
    LSODA solve over 6 combination cycles and 3 years (the relapse hazard is zero in year 1). Fails without the forced step
    points after each dose (SolverOptions.settle_hours): the controller then spans the
    absorption transient with one long step and the error was 1.7e-3 (2026-12-04)."""
    sched = dm.get_schedule("clever-combo")
    ts = np.arange(0.0, 3 * 365.0 + 1e-9, 1.0)
    ref = ReferenceModel({k: float(v) for k, v in human.values.items()}, per_kg=human.pk_per_kg)
    states, hazard = ref.solve(sched, ts, method="LSODA", rtol=1e-11, atol=1e-14)
    tr = dm.simulate(model, human, sched, ts=ts)
    assert tr.ok
    for i, k in enumerate(("dormant", "reactivating", "proliferating")):
        got = np.asarray(getattr(tr, k))
        err = np.max(np.abs(got - states[:, i])) / np.max(np.abs(states[:, i]))
        assert err < 1e-4, (k, err)
    err = np.max(np.abs(np.asarray(tr.hazard) - hazard)) / hazard.max()
    assert err < 1e-4, ("hazard", err)
