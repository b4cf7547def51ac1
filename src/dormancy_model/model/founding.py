"""Marrow clones under the drugs: the birth-death clock of a founding clone (issue 14).

A cell entering P founds a clone that divides at b(t) = lambda_p g(M(t)) (the mTOR gate, the
`rho` of the lesions' growth clock, `model.clock`) and dies at d = delta_p: a linear
birth-death process with time-varying rates. With the net log growth
G(t) = integral (b - d) = r (t - t_f) - lambda_p D(t) (r = lambda_p - delta_p, D the clock's lost
days, t_f its first node), the process from one cell at e has (Kendall 1948)

    P(alive at t) = 1 / (e^-(G(t) - G(e)) + integral_e^t b(s) e^-(G(s) - G(e)) ds),
    ultimate survival p(e) = 1 / B(e),  B(e) = integral_e^inf b(s) e^-(G(s) - G(e)) ds,

and N(t) e^-(G(t) - G(e)) -> W, W | survival ~ Exponential of mean B(e). Untreated, B = lambda_p / r
and p = 1 - delta_p / lambda_p (`observables.founding_probability`). A surviving clone has
reached `switch_size` S once W e^(G(t) - G(e)) >= S, i.e. (Y = ln(W / B(e)) = ln X, X ~ Exp(1),
the variable of `observables.lag_rule`)

    G(t) >= H(e) + ln S - Y,   H(e) = G(e) - ln B(e).

H is non-decreasing (H' = b p >= 0), so the clones founded by e* with H(e*) = G(sigma) - ln S + Y
are exactly those switched by sigma: the relapse law reads the escape, weighted by p(e), at
e*_q = H^-1(G(sigma) - ln S + y_q) for each node y_q, sigma = the latest switch time the lesion
clock has detected by t. Untreated this is sigma - T_q (`observables.switch_lag`), today's law
to rounding (callers skip this module without EVE).

Under EVE b falls (at the default parameters the gate stays above delta_p / lambda_p = 0.25 at
every dose up to 20 mg/day, so G still grows, slower): clones in their birth-death phase during
the course grow slower and die out more often, as the agents' clones do (their division is
gated by mTOR). Approximation: where b < d (G falls: a gate below delta_p / lambda_p) a clone
that reached S before the fall counts with the survival of the whole course (p(e), so too few),
and one founded in the fall switches when the running maximum of G, not G after its founding,
reaches its level (too early). Both are exact for non-decreasing G.

Representation (`CloneClock`): G, its running maximum (cell maxima included: G is cubic in a
cell), B and H at the growth clock's nodes; B by the backward recursion
B(a) = integral_a^b b e^-(G - G(a)) + e^-(G(b) - G(a)) B(b) over each cell (`QUAD_POINTS`-point
Gauss-Legendre on the clock's quadratic gate, D from its integral), a reverse scan from
B = lambda_p / r after the last node (no drug there). Before the first node (untreated) B and
the inverse of H are closed forms; after the last node G grows at r. Between nodes B(e) comes
from the next node's by the same rule over [e, next node], and H^-1 is a Newton solve in the
cell of the nodes' H (H' = b p).

The survival-weighted escape F(x) = integral p dE = p_found E(x) + Pi(x): E is read at the
founding times, Pi = integral (p - p_found) dE by the trapezoid rule on `founding_grid`
(HISTORY_CELLS cells before the first node, closed form there; COURSE_CELLS cells over the
course, read from the solve), with the last, partial cell up to the read itself.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.model.clock import GrowthClock

HISTORY_CELLS = 128  # founding-grid cells before the clock's first node (closed form there)
COURSE_CELLS = 48  # founding-grid cells from the first node to the last (solve reads)
HISTORY_SPAN = 12.0  # the grid starts HISTORY_SPAN / r days before the first node


class CloneClock(eqx.Module):
    """One patient's birth-death clock of a founding clone (module docstring): at the nodes
    `growth.times` (N,), the net log growth `net` (G, 0 at the first node), its running maximum
    `peak`, B (`backward`) and `level` (H = G - ln B, non-decreasing); `lam`, `death`:
    lambda_p and delta_p."""

    growth: GrowthClock
    net: jax.Array
    peak: jax.Array
    backward: jax.Array
    level: jax.Array
    lam: jax.Array
    death: jax.Array

    @property
    def rate(self):
        """r = lambda_p - delta_p (positive where the clock is used; callers guard r <= 0)."""
        return self.lam - self.death

    @property
    def times(self):
        return self.growth.times

    def net_at(self, t):
        """G(t): r (t - t_f) - lambda_p D(t) (D = 0 before the first node, constant after)."""
        return self.rate * (t - self.times[0]) - self.lam * self.growth.lost(t)

    def peak_at(self, t):
        """Running maximum of G up to t: the nodes' (cell maxima included) and, in t's cell,
        G(t) and G at an interior maximum before t."""
        i, half, x, coef = self.growth._local(t)
        interior = self.net_at(self.times[i] + half * (_cell_max_x(coef, self.lam, self.death,
                                                                   x) + 1.0))
        inside = (t >= self.times[0]) & (t < self.times[-1])
        at_node = self.peak[jnp.clip(jnp.searchsorted(self.times, t, side="right") - 1, 0,
                                     self.times.shape[0] - 1)]
        cell = jnp.maximum(jnp.maximum(self.peak[i], interior), self.net_at(t))
        after = jnp.maximum(at_node, self.net_at(t))
        return jnp.where(t < self.times[0], self.net_at(t), jnp.where(inside, cell, after))

    def level_at(self, e):
        """H(e): closed form before the first node, G - ln(lambda_p / r) after the last, and in
        between B(e) from the next node's by the Gauss rule over [e, next node]."""
        return self.level_and_net(e)[0]

    def level_and_net(self, e):
        """(H(e), G(e)) (`level_at`, `net_at`; one evaluation of G)."""
        r, lam = self.rate, self.lam
        t = self.times
        u = jnp.exp(jnp.minimum(r * (e - t[0]), 0.0))
        before = jnp.log(u) - jnp.log(lam / r * (1.0 - u) + u * self.backward[0])
        g_e = self.net_at(e)
        after = g_e - jnp.log(lam / r)
        i = jnp.clip(jnp.searchsorted(t, e, side="right") - 1, 0, t.shape[0] - 2)
        nxt = t[i + 1]
        half = 0.5 * (nxt - jnp.clip(e, t[0], t[-1]))
        gx, gw = (jnp.asarray(v, t.dtype) for v in _gauss(QUAD_POINTS))
        s = (jnp.clip(e, t[0], t[-1]) + half)[..., None] + half[..., None] * gx
        w = gw
        part = half * jnp.sum(w * lam * self.growth.rate(s) * jnp.exp(
            -(self.net_at(s) - g_e[..., None])), axis=-1)
        big_b = part + jnp.exp(-(self.net[i + 1] - g_e)) * self.backward[i + 1]
        inner = g_e - jnp.log(big_b)
        return jnp.where(e < t[0], before, jnp.where(e >= t[-1], after, inner)), g_e

    def survival(self, e):
        """p(e), the probability that a clone founded at e escapes extinction: e^(H(e) - G(e))."""
        h, g = self.level_and_net(e)
        return jnp.exp(h - g)

    def founded_by(self, level, newton: int = 2):
        """H^-1(level): the latest founding time e with H(e) <= level. Closed forms outside the
        nodes; inside, the cell from the nodes' H, then Newton from the linear guess
        (H' = b p)."""
        r, lam = self.rate, self.lam
        t = self.times
        lo, hi = self.level[0], self.level[-1]
        # before the first node: u = e^(r (e - t_f)) = e^L (lam / r) / (1 - e^L (B_0 - lam / r))
        x = jnp.exp(jnp.minimum(level, lo))
        u = x * (lam / r) / (1.0 - x * (self.backward[0] - lam / r))
        before = t[0] + jnp.log(jnp.clip(u, 1e-300, 1.0)) / r
        after = t[-1] + (level + jnp.log(lam / r) - self.net[-1]) / r
        i = jnp.clip(jnp.searchsorted(self.level, level, side="right") - 1, 0, t.shape[0] - 2)
        a, b = t[i], t[i + 1]
        ha, hb = self.level[i], self.level[i + 1]
        e = jnp.where(hb > ha, a + (b - a) * (level - ha) / jnp.where(hb > ha, hb - ha, 1.0), b)
        for _ in range(newton):
            h, g = self.level_and_net(e)
            slope = lam * self.growth.rate(e) * jnp.exp(h - g)
            step = (h - level) / jnp.maximum(slope, 1e-30)
            e = jnp.clip(jnp.where(slope > 0, e - step, e), a, b)
        return jnp.where(level < lo, before, jnp.where(level > hi, after, e))

    def reached_peak(self, value):
        """The first t with running-maximum G >= value (G = r (t - t_f) before the first node,
        growing at r after the last)."""
        lo, hi = self.peak[0], self.peak[-1]
        before = self.times[0] + value / self.rate
        after = self.times[-1] + (value - self.net[-1]) / self.rate
        inner = jnp.interp(value, self.peak, self.times)
        return jnp.where(value < lo, before, jnp.where(value > hi, jnp.maximum(
            after, self.times[-1]), inner))


def _cell_max_x(coef, lam, death, x_hi):
    """Local coordinate in [-1, x_hi] of an interior maximum of G in a cell whose gate is the
    quadratic `coef` in x (G' = lam rho(x) - death = 0 with G'' = lam rho'(x) < 0), -1 when
    there is none (G(-1) is a node's, already in the running maximum)."""
    c0, c1, c2 = coef
    a, b, c = c2, c1, c0 - death / lam
    lin = jnp.abs(a) < 1e-12
    disc = b * b - 4.0 * a * c
    sq = jnp.sqrt(jnp.maximum(disc, 0.0))
    a_s = jnp.where(lin, 1.0, a)
    roots = jnp.stack([(-b - sq) / (2.0 * a_s), (-b + sq) / (2.0 * a_s)])
    roots = jnp.where(lin, -c / jnp.where(jnp.abs(b) > 0, b, 1.0), roots)
    real = jnp.where(lin, jnp.abs(b) > 0, disc >= 0)
    is_max = (b + 2.0 * a * roots) < 0
    ok = real & is_max & (roots > -1.0) & (roots <= x_hi)
    return jnp.max(jnp.where(ok, roots, -1.0), axis=0)


QUAD_POINTS = 5  # Gauss-Legendre points per clock cell of B's integral


def _gauss(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


def clone_clock(growth: GrowthClock, lam, death) -> CloneClock:
    """`CloneClock` of one patient from its lesion growth clock (one patient's arrays) and
    lambda_p, delta_p (scalars; r = lambda_p - delta_p > 0 assumed, callers guard)."""
    t = growth.times
    dt = t.dtype
    r = lam - death
    a, b = t[:-1], t[1:]
    half = 0.5 * (b - a)
    c0, c1, c2 = growth.coefficients()
    per_cell = (c0[:, None], c1[:, None], c2[:, None])

    def rho(xx):  # the clock's quadratic gate, per cell
        return per_cell[0] + xx * (per_cell[1] + xx * per_cell[2])

    def integral(xx):  # half * int_{-1}^{xx} rho, per cell (the clock's own formula)
        return GrowthClock._integral(half[:, None], xx, per_cell)

    gx, gw = (jnp.asarray(v, dt) for v in _gauss(QUAD_POINTS))
    xs = jnp.broadcast_to(gx, (a.shape[0], QUAD_POINTS))
    # G(s_k) - G(a) at the cell's Gauss points: r (s - a) - lam (lost over [a, s])
    run = half[:, None] * (xs + 1.0)
    d_net = r * run - lam * (run - integral(xs))
    alpha = half * jnp.sum(gw * lam * rho(xs) * jnp.exp(-d_net), axis=-1)
    cell_net = r * (b - a) - lam * (growth.delay[1:] - growth.delay[:-1])
    beta = jnp.exp(-cell_net)

    tail = lam / r

    def back(b_next, ab):  # B(a) = alpha + beta B(b), cell by cell from the last
        a_i, b_i = ab
        b_here = a_i + b_i * b_next
        return b_here, b_here

    _, b_nodes = jax.lax.scan(back, jnp.asarray(tail, dt), (alpha, beta), reverse=True)
    big_b = jnp.concatenate([b_nodes, jnp.asarray(tail, dt)[None]])
    net = r * (t - t[0]) - lam * growth.delay
    # cell maxima of G (an interior maximum where the gate crosses death / lam downwards)
    xm = _cell_max_x((c0, c1, c2), lam, death, jnp.ones_like(c0))
    run_m = half * (xm + 1.0)
    g_max = net[:-1] + r * run_m - lam * (run_m - integral(xm[:, None])[:, 0])
    peak = jax.lax.cummax(jnp.concatenate([net[:1], jnp.maximum(g_max, net[1:])]))
    level = jax.lax.cummax(net - jnp.log(big_b))  # non-decreasing up to rounding
    return CloneClock(growth, net, peak, big_b, level, jnp.asarray(lam, dt),
                      jnp.asarray(death, dt))


def founding_grid(clock: CloneClock, history_cells: int = HISTORY_CELLS,
                  course_cells: int = COURSE_CELLS):
    """Times (history_cells + course_cells + 1,) where the survival-weighted escape is
    integrated: `history_cells` equal cells over the HISTORY_SPAN / r days before the first
    node (the survival deviates from its untreated value by e^-12 there at most), then
    `course_cells` equal cells to the end of the last clock cell whose gate is below
    1 - 1e-9 (after it the gate is 1, so p = p_found: the washout of the last EVE dose is
    within the clock's nodes, which run 32 days past each dose)."""
    t = clock.times
    dt = t.dtype
    start = t[0] - HISTORY_SPAN / clock.rate
    h = start + (t[0] - start) * jnp.arange(history_cells, dtype=dt) / history_cells
    acting = jnp.any(clock.growth.rho < 1.0 - 1e-9, axis=-1)  # (N - 1,) cells
    last = jnp.max(jnp.where(acting, jnp.arange(1, t.shape[0]), 0))
    end = jnp.maximum(t[last], t[0])
    c = t[0] + (end - t[0]) * jnp.arange(course_cells + 1, dtype=dt) / course_cells
    return jnp.concatenate([h, c])


class FoundingReads(eqx.Module):
    """Where the relapse law reads the survival-weighted escape under a clock (one batch of
    patients; arrays over the leading axes (...) of the output times): `times` (..., J) the
    founding grid (`founding_grid`), `pi` (..., J) p(e) - p_found there (p_found the untreated
    survival), `history` (..., J) the history's escape Psi(e - t0) where e < t0 (0 after),
    `before` (..., J) where the grid is before t0, `est` (..., T, K) and `est0` (..., K): the
    founding times e*_q read at t and at t0, `pi_est`, `pi_est0` p - p_found there, and
    `history_est` (..., T, K), `history_est0` (..., K) the history's escape Psi(e* - t0) there
    (est0 is always before t0; est where it is), and the start `t0`."""

    times: jax.Array
    pi: jax.Array
    history: jax.Array
    before: jax.Array
    est: jax.Array
    est0: jax.Array
    pi_est: jax.Array
    pi_est0: jax.Array
    history_est: jax.Array
    history_est0: jax.Array
    t0: jax.Array

    def saves(self, t0):
        """The grid times the solve must give E at: the course part of the grid (after the
        HISTORY_CELLS history points, whose E is the history's closed form), floored at t0."""
        return jnp.maximum(self.times[..., HISTORY_CELLS:], t0)


def _reads_one(times, delay, rho, lam, death, tau, log_s, t, t0, y):
    # every clock quantity is evaluated once on the concatenation of the times it is needed at
    # (each evaluation compiles its own cell searches: one call instead of several keeps the
    # program, and its compile time, small)
    growth = GrowthClock(times, delay, rho)
    cc = clone_clock(growth, lam, death)
    n = t.shape[0]
    tt = jnp.concatenate([t, jnp.reshape(t0, (1,)).astype(t.dtype)])
    sig = tt - tau - growth.lost_back(tt, tau)  # latest switch detected by t (lesion clock)
    peak = cc.peak_at(sig)
    lvl = peak[:, None] - log_s + y  # (T + 1, K)
    raw_all = cc.founded_by(lvl)
    est_all = jnp.minimum(raw_all, sig[:, None])
    raw, est, est0, sigma = raw_all[:n], est_all[:n], est_all[n], sig[:n]
    clamped = raw >= sigma[:, None]
    grid = founding_grid(cc)
    pts = jnp.concatenate([est_all.reshape(-1), grid, sigma])
    surv = cc.survival(pts)
    k = y.shape[0]
    s_est, s_grid, s_sigma = surv[:(n + 1) * k], surv[(n + 1) * k:-n], surv[-n:]
    rates = growth.rate(jnp.concatenate([est.reshape(-1), t, sigma]))
    b_est = lam * rates[:n * k].reshape(n, k)
    # h = sum_q w_q F'(e*) de*/dt, F' = p flux, de*/dt = G'(sigma) sigma' / (b(e*) p(e*))
    # (sigma' = rho(t) / rho(sigma), the lesion factor); e* clamped at sigma: de*/dt = sigma'
    rho_sigma = rates[n * k + n:]
    # G'(sigma) = b - d where G is at its running maximum (the switch level moves), else 0
    slope = jnp.where(cc.net_at(sigma) >= peak[:n] - 1e-12,
                      jnp.maximum(lam * rho_sigma - death, 0.0), 0.0)
    scale = jnp.where(clamped, s_sigma[:, None], slope[:, None] / jnp.maximum(b_est, 1e-30))
    factor = rates[n * k:n * k + n] / rho_sigma
    pu = 1.0 - death / lam
    s_est = s_est.reshape(n + 1, k)
    return est, est0, scale, factor, grid, s_grid - pu, s_est[:n] - pu, s_est[n] - pu


def clone_reads(clock: GrowthClock, lam, death, tau, t, t0, y, switch_size):
    """(est (..., T, K), est0 (..., K), rate scale (..., T, K), lesion rate factor (..., T),
    founding grid (..., J), pi (..., J), pi at est and at est0) for output times t (..., T):
    the growth clock's arrays
    (..., N) and lam, death, tau (...) batch over the leading axes; y (K,) the lag rule's
    nodes. The rate scale is G'(sigma) / b(e*) (p(sigma) where e* is clamped at sigma):
    p_found untreated."""
    dt = t.dtype
    log_s = jnp.log(jnp.asarray(switch_size, dt))
    f = jnp.vectorize(
        lambda tm, dl, rh, la, de, ta, tt: _reads_one(tm, dl, rh, la, de, ta, log_s, tt,
                                                       jnp.asarray(t0, dt), y),
        signature="(n),(n),(c,g),(),(),(),(m)->(m,k),(k),(m,k),(m),(j),(j),(m,k),(k)")
    return f(clock.times, clock.delay, clock.rho, lam, death, tau, t)


def _pi_at(x, e_x, pi_x, times, e_grid, big_pi, pi_grid):
    """Pi(x) = Pi(g_j) + (pi(g_j) + pi(x)) / 2 (E(x) - E(g_j)), g_j the grid point at or
    before x (the trapezoid rule's last, partial cell: E read at x itself, so a steep escape
    inside a cell is followed exactly)."""
    j = jnp.clip(jnp.searchsorted(times, x, side="right") - 1, 0, times.shape[0] - 1)
    part = jnp.where(x > times[0], 0.5 * (pi_grid[j] + pi_x) * (e_x - e_grid[j]), 0.0)
    return big_pi[j] + part


def survival_correction(escaped_founding, escaped_lagged, reads: FoundingReads, weights, t0):
    """sum_q w_q (Pi(e*_q(t)) - Pi(e*_q(t0))) (..., T), Pi(x) = integral_-inf^x (p - p_found) dE
    by the trapezoid rule on the founding grid (`_pi_at` in the last cell): `escaped_founding`
    E at `reads.saves(t0)` (..., J - HISTORY_CELLS), the history's closed form before t0;
    `escaped_lagged`
    (..., T, K) E at the founding times where they are after t0 (the history's before);
    `weights` (K,) the lag rule's."""
    escaped_est = jnp.where(reads.est > t0, escaped_lagged, reads.history_est)
    full = jnp.concatenate([reads.history[..., :HISTORY_CELLS], escaped_founding], axis=-1)
    e = jnp.where(reads.before, reads.history, full)
    inc = 0.5 * (reads.pi[..., 1:] + reads.pi[..., :-1]) * jnp.diff(e, axis=-1)
    big_pi = jnp.concatenate([jnp.zeros_like(inc[..., :1]), jnp.cumsum(inc, axis=-1)], axis=-1)
    at_fn = jnp.vectorize(_pi_at, signature="(),(),(),(j),(j),(j),(j)->()")
    at = at_fn(reads.est, escaped_est, reads.pi_est, reads.times[..., None, None, :],
               e[..., None, None, :], big_pi[..., None, None, :], reads.pi[..., None, None, :])
    at0 = at_fn(reads.est0, reads.history_est0, reads.pi_est0, reads.times[..., None, :],
                e[..., None, :], big_pi[..., None, :], reads.pi[..., None, :])
    return jnp.sum(weights * (at - at0[..., None, :]), axis=-1)
