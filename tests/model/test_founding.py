"""The clone clock of `model.founding` against closed forms of the linear birth-death process
with piecewise-constant rates (Kendall 1948), on a synthetic growth clock whose gate is c on
[0, T] and 1 elsewhere (the clock's quadratic is then exact).

Rates: division lambda_p = 0.04/day untreated (lambda_p c under the gate), death delta_p =
0.01/day (the human defaults). c = 0.5: net growth 0.01/day in the course (G grows, slower);
c = 0.15: division 0.006 < death, G falls for T days."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dormancy_model.model import founding as F
from dormancy_model.model import observables as O
from dormancy_model.model.clock import GrowthClock

LAM, DEATH = 0.04, 0.01
R = LAM - DEATH
T = 200.0


def _clock(c, cells=40):
    times = jnp.linspace(0.0, T, cells + 1)
    return GrowthClock(times, (1.0 - c) * times, jnp.full((cells, 3), c))


def _b_exact(e, c):
    """B(e) = 1 / p(e): integral_e^inf b e^-(G(s) - G(e)) ds for the two-phase rates."""
    b1, r1 = LAM * c, LAM * c - DEATH
    b_t = LAM / R  # untreated after T

    def in_course(x):  # B at x in [0, T]
        u = math.exp(-r1 * (T - x))
        return (b1 / r1) * (1.0 - u) + u * b_t

    if e >= T:
        return b_t
    if e >= 0.0:
        return in_course(e)
    u = math.exp(R * e)
    return LAM / R * (1.0 - u) + u * in_course(0.0)


@pytest.mark.parametrize("c", [0.5, 0.15])
def test_survival_matches_the_two_phase_closed_form(c):
    """p(e) within 1e-10 of 1 / B(e) before, in and after the course (the 5-point rule of B
    is exact for the exponential to rounding at these cell widths), and the untreated value
    1 - delta_p / lambda_p after it; founded_by inverts level_at (round trip within 1e-8
    days) in all three regions; level_at is non-decreasing."""
    cc = jax.jit(F.clone_clock)(_clock(c), jnp.asarray(LAM), jnp.asarray(DEATH))
    es = np.array([-400.0, -150.0, -20.0, -1e-3, 0.0, 3.7, 60.0, 133.3, 199.0, T, 250.0, 900.0])
    got = np.asarray(jax.jit(jax.vmap(cc.survival))(jnp.asarray(es)))
    want = np.array([1.0 / _b_exact(e, c) for e in es])
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert abs(got[-1] - (1.0 - DEATH / LAM)) < 1e-12
    lv = jax.jit(jax.vmap(cc.level_at))(jnp.asarray(es))
    np.testing.assert_allclose(jax.jit(jax.vmap(cc.founded_by))(lv), es, rtol=0, atol=1e-8)
    dense = np.asarray(jax.jit(jax.vmap(cc.level_at))(jnp.linspace(-300.0, 400.0, 7001)))
    assert np.all(np.diff(dense) >= -1e-12)
    # the course lowers survival below the untreated value for clones founded before its end
    assert got[4] < 1.0 - DEATH / LAM


def test_survival_falls_in_a_declining_course():
    """Where division < death (c = 0.15), a clone founded at the start of the course survives
    with p(0) = 0.208 (closed form), under 0.3 of its untreated 0.75, and survival rises
    through the course back to it by the end."""
    cc = F.clone_clock(_clock(0.15), jnp.asarray(LAM), jnp.asarray(DEATH))
    pu = 1.0 - DEATH / LAM
    assert float(cc.survival(0.0)) < 0.3 * pu
    p = np.asarray(jax.jit(jax.vmap(cc.survival))(jnp.linspace(0.0, T, 101)))
    assert np.all(np.diff(p) > 0)
    assert abs(float(cc.survival(T)) - pu) < 1e-12


def test_switch_law_matches_kendall_through_a_slow_course():
    """c = 0.5 (G grows throughout): the law's fraction of clones founded at e that have
    switched by sigma, p(e) P(Y >= H(e) + ln S - G(sigma)) = p(e) exp(-S e^(H(e) - G(sigma)))
    (Y = ln X, X ~ Exp(1)), against the exact P(N(sigma) >= S) of the two-phase birth-death process from one
    cell (Kendall: alive with 1 / A, then geometric with mean m = e^dG A), S = 1e4: within 1e-3
    (the W law is the S -> infinity limit, as untreated in test_relapse_law.py), at founding
    times before, in and after the course and switch times up to 900 days."""
    c, s = 0.5, O.SWITCH_SIZE
    cc = F.clone_clock(_clock(c), jnp.asarray(LAM), jnp.asarray(DEATH))
    b1, r1 = LAM * c, LAM * c - DEATH

    def net(x):  # G(x), 0 at day 0
        return R * min(x, 0.0) + r1 * min(max(x, 0.0), T) + R * max(x - T, 0.0)

    def integral_b(e, x):  # integral_e^x b(u) e^-(G(u) - G(e)) du, piecewise
        total, a = 0.0, e
        for lo, hi, b, r in ((-math.inf, 0.0, LAM, R), (0.0, T, b1, r1), (T, math.inf, LAM, R)):
            u0, u1 = max(a, lo), min(x, hi)
            if u1 > u0:
                g0 = net(u0) - net(e)
                total += b * math.exp(-g0) * (1.0 - math.exp(-r * (u1 - u0))) / r
        return total

    pairs = [(e, sg) for e in (-120.0, -10.0, 40.0, 150.0, 230.0)
             for sg in np.linspace(e + 5.0, 900.0, 40)]
    es, sgs = (jnp.asarray([q[i] for q in pairs]) for i in (0, 1))
    h = np.asarray(jax.jit(jax.vmap(cc.level_at))(es))
    g = np.asarray(jax.jit(jax.vmap(cc.net_at))(sgs))
    law = np.asarray(jax.jit(jax.vmap(cc.survival))(es)) * np.exp(-s * np.exp(h - g))
    exact = []
    for e, sigma in pairs:
        dg = net(sigma) - net(e)
        a = math.exp(-dg) + integral_b(e, sigma)
        m = math.exp(dg) * a
        exact.append((1.0 / a) * math.exp((s - 1.0) * math.log1p(-1.0 / m)) if m > 1 else 0.0)
    worst = np.max(np.abs(law - np.array(exact)))
    assert worst < 1e-3, worst
    assert np.max(exact) > 0.5  # the switch times span the law


def test_reads_reduce_to_the_untreated_lag_law():
    """With a gate of 1 everywhere the clocked founding times are t - L_q of the untreated
    law (`observables.relapse_lag`) within 1e-9 days, and the hazard rate's scale is exactly
    1."""
    times = jnp.linspace(0.0, 500.0, 41)
    ident = GrowthClock(times, jnp.zeros_like(times), jnp.ones((40, 3)))
    p = {"lambda_p": LAM, "delta_p": DEATH, "detection_size": 1e9, "lesion_growth_rate": 0.03,
         "history_days": 0.0, "dormant_initial": 100.0, "k_dr": 1e-4, "k_rd": 0.0,
         "k_rp": 0.1, "delta_d0": 0.0, "delta_r": 0.0}
    t = jnp.linspace(0.0, 500.0, 11)
    plain = jax.jit(O.lag_reads)(t, p, 0.0)
    clocked = jax.jit(lambda tt, pp, ck: O.lag_reads(tt, pp, 0.0, clock=ck))(t, p, ident)
    lag = np.asarray(O.relapse_lag(p, jnp.asarray(O.lag_rule()[0])))
    np.testing.assert_allclose(clocked.founding.est, np.asarray(t)[:, None] - lag[None, :],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(clocked.times, plain.times, rtol=0, atol=1e-9)
    assert np.all(np.asarray(clocked.rate_scale) == 1.0)
