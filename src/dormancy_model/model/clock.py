"""The lesions' growth clock: untreated-equivalent days under the drugs.

A lesion (a clone past the switch size, `observables.SWITCH_SIZE`) grows at
`lesion_growth_rate` g times rho(t) = `rates.lesion_growth_factor` (the mTOR gate g(M(t)),
in (0, 1], 1 untreated: EVE slows lesions, HCQ does not act on them). Its size is then a
function of the growth clock

    kappa(t) = integral_{t_0}^{t} rho(u) du        ("untreated-equivalent days"):

a lesion that switched at sigma has S exp(g (kappa(t) - kappa(sigma))) cells and is detected
at the first t with kappa(t) - kappa(sigma) >= tau = ln(detection_size / S) / g. rho > 0, so
kappa is strictly increasing (no atoms in the relapse law) and its inverse is a function.
kappa depends on the patient's PK and EVE-effect parameters and the dosing only, never on the
cell states, so it is built before any solve from the closed-form PK (`pk.closed_form`).

Representation (`GrowthClock`): nodes t_i and the lost days D_i = integral (1 - rho) up to
t_i (non-decreasing, 0 at the first node); within a cell rho is the quadratic through its
values at the cell's 3 Gauss-Legendre points (so D is cubic there, continuous at the nodes,
and the inverse is a Newton solve in one cell); kappa(t) = t - t_first - D(t).
Before the first node (no EVE before it) D = 0, after the last one D stays constant (rho = 1:
the clock ends at the horizon, or once the drug is gone). Untreated, D is exactly 0 and every
quantity below reduces to today's untreated arithmetic bit for bit (`lost_days` returns 0.0).

Nodes (`clock_nodes`): after every effective EVE dose time tau_k, the offsets
`OFFSET_HOURS` (0, 7.5 min, ..., 32 days), each clipped to the next EVE dose (so the
absorption peak is resolved and no cell spans a dose, where the concentration has a kink),
plus `UNIFORM_CELLS` equal cells over the whole span. Per cell, a 3-point Gauss-Legendre rule
of the gate (as the agents' hazard table, `agents.hazard`). The grid has a static size (the
number of EVE dose events), so the clock is built inside jit, vmap and grad alike. Against
scipy quad of the gate over the CLEVER EVE course (tests/model/test_clock.py) it is within
4e-5 days at the nodes over 168 days of daily dosing and within 2e-4 days between them (in
the washout, where the gate recovers within days and the cells are 1-4 days long; linear
interpolation between the nodes was 0.025 days off there).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.model import rates as R
from dormancy_model.pk.closed_form import HIGHEST, DoseEvents, PKSolution, drug_system, solve_pk

# node offsets after each effective EVE dose (hours), clipped to the next dose
# (the first cells are short: at the human defaults EVE rises from 0 to its peak within about
# an hour of the effective dose time, and with (0, 0.5 h, 1 h, 2 h, ...) the 3-point rule was
# 1.6e-4 days off per dose; with these offsets 4e-8, against scipy quad)
OFFSET_HOURS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0,
                20.0, 24.0, 36.0, 48.0, 72.0, 96.0, 144.0, 192.0, 288.0, 384.0, 768.0)
UNIFORM_CELLS = 64

_GL_X = np.array([-np.sqrt(3.0 / 5.0), 0.0, np.sqrt(3.0 / 5.0)])
_GL_W = np.array([5.0, 8.0, 5.0]) / 18.0  # halved: weights of a cell average


def _cell(times, t):
    """Index i of the cell [times[i], times[i+1]) holding t (the last of equal nodes; clipped
    to [0, N - 2])."""
    return jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, times.shape[0] - 2)


_S = float(np.sqrt(3.0 / 5.0))


class GrowthClock(eqx.Module):
    """kappa(t) = t - times[0] - D(t), D the lost days: `delay` at the nodes `times` (both
    (N,), sorted; D(times[0]) = 0) and, within a cell, the integral of 1 - rho with rho the
    quadratic through its values `rho` (N - 1, 3) at the cell's 3 Gauss-Legendre points (whose
    integral over the cell is the rule's: the nodes' values). The methods take scalar or array
    times of any shape; the clock itself is one patient's (vmap it for several)."""

    times: jax.Array
    delay: jax.Array
    rho: jax.Array

    def coefficients(self, i=slice(None)):
        """Quadratic coefficients (c0, c1, c2) of rho in the local coordinate x of cell(s) i
        (all cells by default): rho = c0 + c1 x + c2 x^2 through the 3 Gauss-point values."""
        r1, r2, r3 = self.rho[i, 0], self.rho[i, 1], self.rho[i, 2]
        return r2, (r3 - r1) / (2.0 * _S), (0.5 * (r1 + r3) - r2) / (_S * _S)

    def _local(self, t):
        """(cell i, half width, local coordinate x in [-1, 1], quadratic coefficients of rho
        in x) of t's cell."""
        i = _cell(self.times, t)
        a, b = self.times[i], self.times[i + 1]
        half = 0.5 * (b - a)
        pos = half > 0
        x = jnp.clip(jnp.where(pos, (t - a) / jnp.where(pos, half, 1.0) - 1.0, -1.0), -1.0, 1.0)
        return i, half, x, self.coefficients(i)

    @staticmethod
    def _integral(half, x, coef):
        """half * integral_{-1}^{x} rho(u) du of the quadratic rho (exact)."""
        c0, c1, c2 = coef
        return half * (c0 * (x + 1.0) + c1 * 0.5 * (x * x - 1.0) + c2 * (x * x * x + 1.0) / 3.0)

    def lost(self, t):
        """D(t): days lost to the drug between the first node and t (0 before it)."""
        i, half, x, coef = self._local(t)
        return self.delay[i] + (half * (x + 1.0) - self._integral(half, x, coef))

    def at(self, t):
        """kappa(t), untreated-equivalent days since the first node."""
        return (t - self.times[0]) - self.lost(t)

    def rate(self, t):
        """d kappa / dt at t: rho (the quadratic of t's cell), 1 outside the nodes."""
        _, half, x, (c0, c1, c2) = self._local(t)
        inside = (t >= self.times[0]) & (t < self.times[-1]) & (half > 0)
        return jnp.where(inside, c0 + x * (c1 + x * c2), 1.0)

    def inverse(self, k):
        """The t with kappa(t) = k (slope 1 outside the nodes): the cell from the nodes'
        kappa, then Newton on the cell's cubic kappa from the linear guess."""
        v = self.times - self.times[0] - self.delay  # kappa at the nodes, non-decreasing
        i = _cell(v, k)
        dv = v[i + 1] - v[i]
        target = k - v[i]
        x = jnp.clip(jnp.where(dv > 0, 2.0 * target / jnp.where(dv > 0, dv, 1.0) - 1.0, -1.0),
                     -1.0, 1.0)
        a = self.times[i]
        half = 0.5 * (self.times[i + 1] - a)
        coef = self.coefficients(i)
        c0, c1, c2 = coef
        for _ in range(4):
            slope = half * jnp.maximum(c0 + x * (c1 + x * c2), 1e-6)
            step = (self._integral(half, x, coef) - target) / jnp.where(half > 0, slope, 1.0)
            x = jnp.clip(x - jnp.where(half > 0, step, 0.0), -1.0, 1.0)
        below, above = k < v[0], k >= v[-1]
        inner = a + half * (x + 1.0)
        return jnp.where(below, self.times[0] + k, jnp.where(
            above, self.times[-1] + (k - v[-1]), inner))

    def elapsed(self, s, t):
        """kappa(t) - kappa(s) as (t - s) - (D(t) - D(s)): exactly t - s untreated."""
        return (t - s) - (self.lost(t) - self.lost(s))

    def reached(self, s, days):
        """First t with kappa(t) - kappa(s) >= days (days >= 0): s + days + D(t) - D(s),
        exactly s + days untreated."""
        t = self.inverse(self.at(s) + days)
        return s + days + (self.lost(t) - self.lost(s))

    def lost_back(self, t, days):
        """D(t) - D(r), r = the time with kappa(t) - kappa(r) = days: the calendar days
        t - r exceed `days` by this (0.0 exactly untreated)."""
        r = self.inverse(self.at(t) - days)
        return self.lost(t) - self.lost(r)

    def back(self, t, days):
        """r with kappa(t) - kappa(r) = days, as t - days - `lost_back`."""
        return t - days - self.lost_back(t, days)


def identity_clock(dtype=jnp.float64) -> GrowthClock:
    """The untreated clock (kappa(t) = t - t_first, D = 0)."""
    z = jnp.zeros(2, dtype)
    return GrowthClock(z.at[1].set(1.0), z, jnp.ones((1, 3), dtype))


def clock_nodes(eve_tau, t0, t1, offset_hours=OFFSET_HOURS, uniform: int = UNIFORM_CELLS):
    """Sorted clock nodes from min(t0, first EVE dose) to t1: every effective EVE dose time
    (`eve_tau`, sorted; non-finite entries are padding) plus `offset_hours` after it, clipped
    to the next dose, and `uniform` equal cells. Static size: len(eve_tau) * len(offsets) +
    uniform + 1."""
    t1 = jnp.asarray(t1)
    dt = t1.dtype
    tau = jnp.asarray(eve_tau, dt)
    tau = jnp.where(jnp.isfinite(tau), jnp.minimum(tau, t1), t1)
    lo = jnp.minimum(jnp.asarray(t0, dt), jnp.min(tau))
    nxt = jnp.concatenate([tau[1:], t1[None]])
    off = jnp.asarray(offset_hours, dt) / 24.0
    after = jnp.minimum(tau[:, None] + off[None, :], nxt[:, None]).reshape(-1)
    even = lo + (t1 - lo) * jnp.arange(uniform + 1, dtype=dt) / uniform
    return jnp.sort(jnp.clip(jnp.concatenate([after, even]), lo, t1))


def growth_clock(eve: PKSolution, params, t0, t1, offset_hours=OFFSET_HOURS,
                 uniform: int = UNIFORM_CELLS) -> GrowthClock:
    """The growth clock of one patient on [min(t0, first EVE dose), t1] from the closed-form
    EVE course `eve` (`DrugCourse.eve`) and the EVE-effect parameters of `params`: rho =
    `rates.lesion_growth_factor` of the EVE blood concentration (HCQ does not enter it)."""
    nodes = clock_nodes(eve.tau, t0, t1, offset_hours, uniform)
    a, b = nodes[:-1], nodes[1:]
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    ts = mid[:, None] + half[:, None] * jnp.asarray(_GL_X, nodes.dtype)[None, :]  # sorted rows
    c = eve.observe_sorted(ts.reshape(-1))[:, 0].reshape(ts.shape)
    rho = R.lesion_growth_factor(R.drug_signals(c, jnp.zeros_like(c), params))
    lost = jnp.matmul(1.0 - rho, jnp.asarray(_GL_W, nodes.dtype), precision=HIGHEST) * (b - a)
    delay = jnp.concatenate([jnp.zeros(1, nodes.dtype), jnp.cumsum(lost)])
    return GrowthClock(nodes, delay, rho)


def course_clock(course, params, t0, t1) -> GrowthClock:
    """`growth_clock` of a `ode.DrugCourse`."""
    return growth_clock(course.eve, params, t0, t1)


def dosing_clock(params, eve: DoseEvents, t0, t1) -> GrowthClock:
    """`growth_clock` from the EVE dose events of a `Dosing` (the EVE course alone is solved:
    HCQ does not enter the clock)."""
    return growth_clock(solve_pk(drug_system(params, "eve"), eve, params["body_weight"]),
                        params, t0, t1)


def has_eve(dosing) -> bool:
    """Host check: does `dosing` give any EVE (True when it cannot tell, under a trace)? Without
    EVE the clock is the identity and callers skip it (today's untreated arithmetic)."""
    try:
        return bool(np.any(np.asarray(dosing.eve.amount) > 0))
    except jax.errors.TracerArrayConversionError:
        return True
    except jax.errors.ConcretizationTypeError:
        return True
