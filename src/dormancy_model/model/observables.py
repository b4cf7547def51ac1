"""The relapse and aspirate observation laws (MODEL.md): pure jnp functions, used under jit/vmap
by `simulate`, the fit likelihood, the sweep lanes and the agents.

* A cell entering P founds a clone that escapes extinction with probability
  p_found = 1 - delta_p / lambda_p (linear birth-death process, division b = lambda_p, death
  d = delta_p [S22]).
* Growth of a surviving clone (the same law in both models). The clone is a birth-death
  process until it reaches `switch_size` cells (`SWITCH_SIZE`, the agents' default), then a
  lesion growing deterministically at `lesion_growth_rate` g to `detection_size`. For a linear
  birth-death process from one cell with r = b - d > 0, N(t) e^{-rt} -> W almost surely, with
  P(W = 0) = d / b and W | survival ~ Exponential(mean b / r) (Kendall 1948). The time to reach
  S >> b / r cells is then (ln S - ln W) / r, so the relapse lag of a surviving clone is

      L = (ln S - ln(b / r) - Y) / r + ln(detection_size / S) / g,   Y = ln X, X ~ Exp(1),

  a Gumbel (minimum) law: mean ln(S r / b) / r + gamma / r + ln(detection_size / S) / g
  (gamma = 0.5772...), sd pi / (sqrt(6) r). Surviving clones get a random head start, so a
  fixed lag ln(detection_size) / g would put relapses too late and too tightly.
  This is the untreated law (b = lambda_p, d = delta_p). Under EVE the agents gate division
  by mTOR (lambda_p g(M(t))), so clones in their birth-death phase grow slower and die out
  more often: the mean field then reads the same limit law on the clone clock of
  `model.founding` (time-varying rates, Kendall 1948: survival p(e) of a clone founded at e,
  its switch where the net log growth reaches H(e) + ln S - Y), which reduces to this one
  untreated.
* Mean field (ODE): relapses form a Poisson process with cumulative hazard
  Lambda(t) = p_found E_L[E(t - L)] (E: cumulative escape flux, state 3; E = 0 before day 0)
  and rate h(t) = p_found E_L[k_RP g(M(t - L)) R(t - L)]; relapse-free probability
  exp(-Lambda(t)). The expectation over L is a `LAG_NODES`-point Gauss rule for the density
  e^{y - e^y} of Y (`lag_rule`): nodes L_q, weights w_q, so E (and the flux) is read at the
  fixed set of lagged times t - L_q (`lag_reads`). Against a brute-force convolution of E with
  the lag density (tests/model/test_relapse_law.py), at the default human parameters, over 5
  years untreated: 8 / 12 / 16 nodes are within 6.9e-4 / 4.3e-4 / 3.2e-4 in relapse-free
  probability (the kink of E at the start slows convergence); 12 is used. With 8 nodes the
  rule was about 2x closer than equal-probability strata and 3x closer than Gauss-Laguerre in
  X (old parameters).
* Per lesion (agents): each clone is an agent; the relapse day is its switch day plus
  `lesion_growth_days(switch_size, detection_size, rate)` untreated-equivalent days.
* Lesions under the drugs (issue 14). Past the switch size a lesion grows at
  g rho(t), rho = `rates.lesion_growth_factor` (the mTOR gate g(M(t)), 1 untreated: EVE is
  cytostatic on lesions, HCQ does not act on them), so its size and detection follow the
  growth clock kappa(t) = integral rho (`model.clock`): S e^(g (kappa(t) - kappa(sigma)))
  cells, detected at the first t with kappa(t) - kappa(sigma) >= tau. kappa depends on the
  drug exposure only, so the mean field keeps precomputed reads: a clone escaping at e is
  detected by t iff kappa(e + T_q) <= kappa(t) - tau, i.e. E is read at
  kappa^-1(kappa(t) - tau) - T_q (`lag_reads(..., clock=)`, exact for the lag law), the
  hazard rate gets the factor rho(t) / rho(kappa^-1(kappa(t) - tau)) and the lesion cells
  read the clock too (`lesion_cells`). The clones' birth-death phase runs on the clone clock
  (`model.founding`): E is read at the founding times e*_q(t) whose clones have switched by
  kappa^-1(kappa(t) - tau), weighted by their survival p(e) (a correction integrated on a
  grid, `founding.survival_correction`). Approximation kept: the marrow P law stays at
  untreated rates (below).
  The agents read the same clock per lesion (`agents.simulate`).
* One aspirate (`aspirate_*`): the cytospins analyse `aspirate_cells` mononuclear cells out of a
  marrow pool of `marrow_cells`, so each DTC is seen with probability f = `aspirate_fraction`
  = aspirate_cells / marrow_cells (params/data/human.toml). The sampled region's DTC density
  varies (DTCs cluster; the aspirate site, its blood dilution and the slide area differ), so
  the count is a gamma-mixed Poisson, i.e. negative binomial: Poisson(f N G), G ~ Gamma(shape
  1/a, mean 1) per aspirate, a = `aspirate_dispersion` (the squared CV of G): mean f N,
  variance f N + a (f N)^2, P(DTC+) = 1 - (1 + a f N)^(-1/a). a = 0 is exactly Poisson,
  P(DTC+) = 1 - exp(-f N).

`p` is a `Parameters` or a mapping of (broadcastable) arrays.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SWITCH_SIZE = 1.0e4  # cells: clone size at which growth becomes deterministic (both models)
LAG_NODES = 12  # quadrature nodes of the relapse-lag law in the mean field


def founding_probability(p):
    """Probability that a cell entering P founds a lesion escaping extinction: 1 - d/b [S22]."""
    return 1.0 - p["delta_p"] / p["lambda_p"]


def lesion_growth_days(size_from, size_to, growth_rate):
    """Days for a lesion growing at `growth_rate` (1/day) from `size_from` to `size_to` cells."""
    return jnp.log(size_to / size_from) / growth_rate


@lru_cache(maxsize=8)
def lag_rule(nodes: int = LAG_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule (nodes y_q, weights w_q; numpy, (nodes,)) for E[f(Y)], Y = ln X, X ~ Exp(1)
    (density e^{y - e^y}): exact for polynomials of degree < 2 nodes in Y, hence in the lag.

    The three-term recurrence is computed by the Stieltjes procedure on a fine trapezoid
    discretisation of the density on [-80, 5] (the tails outside it add < 1e-6 to any moment
    of degree <= 23, what 12 nodes need: the lower tail's share of a degree-23 moment is
    ~1e-13), then Golub-Welsch."""
    y = np.linspace(-80.0, 5.0, 425_001)
    w = np.exp(y - np.exp(y))
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()
    alpha, beta = np.zeros(nodes), np.zeros(nodes)
    p_prev, p_cur, norm_prev = np.zeros_like(y), np.ones_like(y), 1.0
    for j in range(nodes):
        norm = float(np.sum(w * p_cur * p_cur))
        alpha[j] = float(np.sum(w * y * p_cur * p_cur)) / norm
        beta[j] = norm / norm_prev
        p_prev, p_cur = p_cur, (y - alpha[j]) * p_cur - (beta[j] if j else 0.0) * p_prev
        norm_prev = norm
    off = np.sqrt(beta[1:])
    x, v = np.linalg.eigh(np.diag(alpha) + np.diag(off, 1) + np.diag(off, -1))
    return x, v[0] ** 2


def clone_growth_rate(p):
    """Net growth rate r = lambda_p - delta_p (1/day) of an untreated clone."""
    return p["lambda_p"] - p["delta_p"]


def switch_lag(p, y, switch_size=SWITCH_SIZE):
    """Birth-death part of the relapse lag (days): the time a surviving clone with
    Y = ln(W r / b) = y takes to reach `switch_size`, (ln S - ln(b / r) - y) / r (at least 0).
    Broadcasts p's arrays against y; +inf-like (1e30 days) for r <= 0 (no clone survives),
    with finite gradients."""
    r = clone_growth_rate(p)
    pos = r > 0
    rs = jnp.where(pos, r, 1.0)
    to_switch = jnp.maximum((jnp.log(switch_size * rs / p["lambda_p"]) - y) / rs, 0.0)
    return jnp.where(pos, to_switch, 1e30)


def relapse_lag(p, y, switch_size=SWITCH_SIZE):
    """Relapse lag (days) of a surviving clone with Y = ln(W r / b) = y: birth-death growth to
    `switch_size` (`switch_lag`), then deterministic growth to the detection size. Broadcasts
    p's arrays against y. For r <= 0 no clone survives (p_found <= 0): the lag is then made
    +inf-like (1e30 days) with finite gradients."""
    return switch_lag(p, y, switch_size) + lesion_growth_days(
        switch_size, p["detection_size"], p["lesion_growth_rate"])


HISTORY_KEYS = ("history_days", "dormant_initial", "k_dr", "k_rd", "k_rp", "delta_d0",
                "delta_r")


class History(NamedTuple):
    """The untreated pre-enrolment history in closed form (`history`)."""

    scale: object  # c: dormant cells at the start of the history
    rates: object  # (mu_1, mu_2): slow and fast eigenvalues of the untreated (D, R) system
    k_dr: object
    k_rp: object
    days: object  # T


def _expm1_over(mu, u):
    """(e^{mu u} - 1) / mu, = u at mu = 0 (finite gradients)."""
    small = jnp.abs(mu * u) < 1e-8
    mus = jnp.where(small, 1.0, mu)
    return jnp.where(small, u, jnp.expm1(mus * u) / mus)


def history(p) -> History:
    """Closed form of the untreated history of `history_days` T before day 0.

    Patients are enrolled (or a study starts) after a drug-free period in which the marrow
    DTCs already reactivate and seed lesions: CLEVER enrolled survivors up to 5 years after
    diagnosis, once primary therapy was over, so lesions founded before enrolment are growing
    at day 0 and can be detected at any time after it (the early recurrence on EVE in CLEVER).
    Before day 0 no drug is given and k_pd = 0 is assumed, so (D, R) follow the linear system
    D' = -(k_dr + delta_d0) D + k_rd R, R' = k_dr D - (k_rd + k_rp + delta_r) R from D = c,
    R = 0 at -T, with c chosen so that D(0) = `dormant_initial` (the load at day 0). Both
    eigenvalues mu_1 > mu_2 are real and negative; R(u) = c k_dr (e^{mu_1 u} - e^{mu_2 u}) /
    (mu_1 - mu_2) u days into the history. T = 0 gives c = dormant_initial and no history.
    """
    a = p["k_dr"] + p["delta_d0"]
    b = p["k_rd"] + p["k_rp"] + p["delta_r"]
    # + 1e-30: finite at the degenerate k_dr = 0, a = b (then the history has no escape)
    disc = jnp.sqrt((a - b) ** 2 + 4.0 * p["k_dr"] * p["k_rd"] + 1e-30)
    mu1, mu2 = 0.5 * (-(a + b) + disc), 0.5 * (-(a + b) - disc)
    T = p["history_days"]
    d_unit = ((mu1 + b) * jnp.exp(mu1 * T) - (mu2 + b) * jnp.exp(mu2 * T)) / (mu1 - mu2)
    return History(p["dormant_initial"] / d_unit, (mu1, mu2), p["k_dr"], p["k_rp"], T)


def _history_reactivating(h: History, u):
    mu1, mu2 = h.rates
    return h.scale * h.k_dr * (jnp.exp(mu1 * u) - jnp.exp(mu2 * u)) / (mu1 - mu2)


def history_escape(p, s):
    """(Psi(s), psi(s)) for days s <= 0 relative to day 0: Psi the escape into P between s and
    day 0 counted negative (Psi(0) = 0; constant before the history began), psi = Psi' the
    escape flux k_rp R(s) (0 before the history). Broadcasts p against s."""
    h = history(p)
    mu1, mu2 = h.rates
    u = jnp.clip(s + h.days, 0.0, h.days)  # days into the history

    def cum(v):  # escape from the start of the history to v days into it
        return h.scale * h.k_dr * h.k_rp * (_expm1_over(mu1, v) - _expm1_over(mu2, v)) / (
            mu1 - mu2)

    inside = (s + h.days > 0) & (s <= 0)
    return cum(u) - cum(h.days), jnp.where(inside, h.k_rp * _history_reactivating(h, u), 0.0)


def initial_cells(p):
    """(D, R, P) at day 0: the file's initial cells, plus the reactivating cells the history
    leaves (`history`). Lesions founded before day 0 are not in P: the mean field carries
    them in the relapse hazard only (`lag_reads`)."""
    h = history(p)
    return (p["dormant_initial"], p["reactivating_initial"] + _history_reactivating(h, h.days),
            p["proliferating_initial"])


class LagReads(NamedTuple):
    """Where the mean field reads its lagged state: `times` (..., T, K) = t - L_q floored at
    the start t0, `weights` (..., T, K) = w_q where t - L_q > t0 (a clone founded before the
    start is not in the solved escape E), else 0. The pre-enrolment history (`history`) adds
    `pre` (..., T, K): w_q (Psi(min(t - L_q, t0) - t0) - Psi(-L_q)), the history's escape that
    is detected in (t0, t] (clones founded before t0 - L_q were detected before the start:
    the hazard is conditional on no relapse before t0), and `pre_rate` (..., T, K):
    w_q psi(t - L_q - t0), its flux. Both are 0 without a history.

    With a growth clock (`lag_reads(..., clock=)`) the read times are the founding times
    e*_q(t) of `model.founding` (clones switched by the latest switch time r(t) the lesion
    clock has detected by t, their birth-death phase on the clone clock), `rate_factor`
    (..., T) is dr/dt = rho(t) / rho(r(t)), `rate_scale` (..., T, K) the factor of the flux at
    e*_q in the hazard rate relative to p_found (1 untreated), and `founding`
    (`model.founding.FoundingReads`) where the survival-weighted escape is integrated: the
    callers give E at `founding.saves(t0)` to `cumulative_hazard`. All three are None without a
    clock."""

    times: object
    weights: object
    pre: object
    pre_rate: object
    rate_factor: object = None
    rate_scale: object = None
    founding: object = None


def lag_reads(t, p, t0, switch_size=SWITCH_SIZE, nodes: int = LAG_NODES,
              clock=None) -> LagReads:
    """Lagged read times and weights of the relapse law for the output times t (..., T); p's
    arrays broadcast against the leading axes (...) of t.

    `clock`: the lesions' growth clock (`model.clock.GrowthClock`, arrays (..., N) over the
    same leading axes, or None: untreated, today's reads bit for bit). A lesion that switched
    at s is detected by t iff kappa(s) <= kappa(t) - tau, so the latest switch detected by t is
    r(t) = kappa^-1(kappa(t) - tau) (exact: kappa depends on the drug exposure only); the
    clones switched by r(t) are those founded by e*_q(t) on the clone clock of the same EVE
    course (`model.founding`: the birth-death phase with division gated by mTOR, survival
    p(e)). Untreated e*_q(t) = t - L_q; the history before t0 is untreated."""
    t = jnp.asarray(t)
    y, w = (jnp.asarray(v, t.dtype) for v in lag_rule(nodes))
    keys = ("lambda_p", "delta_p", "detection_size", "lesion_growth_rate") + HISTORY_KEYS
    p_b = {k: jnp.asarray(p[k], t.dtype)[..., None, None] for k in keys}
    zero = jnp.zeros((), t.dtype)
    if clock is None:
        lag = relapse_lag(p_b, y, switch_size)  # (..., 1, K)
        raw = t[..., :, None] - lag
        esc, flux = history_escape(p_b, jnp.minimum(raw - t0, 0.0))
        esc0, _ = history_escape(p_b, -lag)
        return LagReads(jnp.maximum(raw, t0), jnp.where(raw > t0, w, zero),
                        w * (esc - esc0), w * jnp.where(raw > t0, zero, flux))
    from dormancy_model.model import founding as F

    s = {k: v[..., 0, 0] for k, v in p_b.items()}
    tau = lesion_growth_days(switch_size, s["detection_size"], s["lesion_growth_rate"])
    # r <= 0: no clone survives (p_found <= 0); the clock is then built at a dummy r > 0 and
    # the hazard's factor p_found makes it 0 (as `relapse_lag`'s 1e30 days do untreated)
    ok = clone_growth_rate(s) > 0
    lam = jnp.where(ok, s["lambda_p"], 1.0)
    death = jnp.where(ok, s["delta_p"], 0.5)
    raw, raw0, scale, factor, grid, pi, pi_e, pi_e0 = F.clone_reads(clock, lam, death, tau, t,
                                                                    t0, y, switch_size)
    esc, flux = history_escape(p_b, jnp.minimum(raw - t0, 0.0))
    esc0, _ = history_escape(p_b, raw0[..., None, :] - t0)
    pf = founding_probability(s)[..., None, None]
    rate_scale = scale / jnp.where(ok[..., None, None], pf, 1.0)
    hist, _ = history_escape({k: v[..., 0] for k, v in p_b.items()},
                             jnp.minimum(grid - t0, 0.0))
    before = grid < t0
    okk = ok[..., None]
    found = F.FoundingReads(grid, jnp.where(okk, pi, 0.0), jnp.where(before, hist, zero),
                            before, raw, raw0, jnp.where(okk[..., None], pi_e, 0.0),
                            jnp.where(okk, pi_e0, 0.0), esc, esc0[..., 0, :], t0)
    return LagReads(jnp.maximum(raw, t0), jnp.where(raw > t0, w, zero), w * (esc - esc0),
                    w * jnp.where(raw > t0, zero, flux), factor, rate_scale, found)


def cumulative_hazard(escaped_lagged, reads: LagReads, p_found, escaped_founding=None):
    """Lambda(t) - Lambda(t0) = p_found sum_q (w_q E(t - L_q) + pre_q) (..., T); `escaped_lagged`
    is E at `reads.times`, `p_found` broadcasts against (..., T). Under a clock
    (`reads.founding`), plus the survival correction of `model.founding` from E at
    `reads.founding.saves(t0)` (`escaped_founding`, (..., J))."""
    lam = p_found * jnp.sum(reads.weights * escaped_lagged + reads.pre, axis=-1)
    if reads.founding is None:
        return lam
    if escaped_founding is None:
        raise ValueError("a clocked hazard needs E at reads.founding.saves(t0)")
    from dormancy_model.model import founding as F

    w = jnp.asarray(lag_rule(reads.times.shape[-1])[1], lam.dtype)
    return lam + F.survival_correction(escaped_founding, escaped_lagged, reads.founding, w,
                                       reads.founding.t0)


def hazard_rate(commitment_lagged, reactivating_lagged, reads: LagReads, p_found):
    """h(t) = p_found sum_q w_q k_RP g(M(t - L_q)) R(t - L_q) (1/day, (..., T)): the escape
    flux at the lagged times (`commitment_lagged` = `rates.cell_rates(...).commitment` there),
    from the history where t - L_q is before the start. With a growth clock, each node's flux
    times `reads.rate_scale` and the sum times the chain-rule factor `reads.rate_factor` (the
    lagged reads move at dr/dt)."""
    flux = commitment_lagged * reactivating_lagged
    if reads.rate_scale is None:
        h = p_found * jnp.sum(reads.weights * flux + reads.pre_rate, axis=-1)
    else:
        h = p_found * jnp.sum(reads.rate_scale * (reads.weights * flux + reads.pre_rate),
                              axis=-1)
    return h if reads.rate_factor is None else h * reads.rate_factor


def relapse_free(cum_hazard):
    """Relapse-free probability exp(-Lambda)."""
    return jnp.exp(-cum_hazard)


def aspirate_mean(cells, fraction):
    """Mean number of DTCs one aspirate sees: f N."""
    return fraction * cells


def _positive_nb(mean, dispersion):
    """1 - (1 + a m)^(-1/a) for a > 0, 1 - exp(-m) at a = 0 (a broadcast against m; both
    branches finite, so gradients are too)."""
    a = jnp.asarray(dispersion, jnp.result_type(mean, float))
    pos = a > 0
    a_s = jnp.where(pos, a, 1.0)
    return jnp.where(pos, -jnp.expm1(-jnp.log1p(a_s * mean) / a_s), -jnp.expm1(-mean))


def p_dtc_positive(cells, fraction, dispersion=0.0):
    """Probability that one aspirate shows >= 1 DTC: 1 - (1 + a f N)^(-1/a) (negative
    binomial, a = `aspirate_dispersion`), 1 - exp(-f N) at a = 0 (Poisson)."""
    return _positive_nb(aspirate_mean(cells, fraction), dispersion)


def aspirate_variance(cells, fraction, dispersion=0.0):
    """Variance of the count one aspirate sees: m + a m^2, m = f N."""
    m = aspirate_mean(cells, fraction)
    return m + dispersion * m * m


def draw_counts(key, mean, dispersion=0.0):
    """Aspirate counts (jax) of mean `mean` (f N): Poisson(m G), G ~ Gamma(1/a, mean 1), a =
    dispersion (broadcast against m). At a = 0, G = 1 and the draw is exactly
    jax.random.poisson(key, m) (the gamma factor uses its own key, fold_in(key, 1))."""
    m = jnp.asarray(mean)
    a = jnp.broadcast_to(jnp.asarray(dispersion, m.dtype), m.shape)
    pos = a > 0
    shape = jnp.where(pos, 1.0 / jnp.where(pos, a, 1.0), 1.0)
    g = jax.random.gamma(jax.random.fold_in(key, 1), shape, dtype=m.dtype) / shape
    return jax.random.poisson(key, jnp.where(pos, m * g, m))


def draw_aspirate(key, cells, fraction, dispersion=0.0):
    """Counts seen by one aspirate of each of `cells` DTCs (jax; `draw_counts` of f N)."""
    return draw_counts(key, aspirate_mean(cells, fraction), dispersion)


def draw_aspirate_np(rng, cells, fraction, dispersion=0.0):
    """The same law with a numpy Generator (host side, the trial's screening). At a = 0 it is
    rng.poisson(f N) and draws nothing else, so Poisson streams are unchanged."""
    lam = fraction * np.asarray(cells, float)
    if dispersion > 0:
        lam = lam * rng.gamma(1.0 / dispersion, dispersion, size=lam.shape)
    return rng.poisson(lam)


# ---------------------------------------------------------------- marrow DTCs and lesions
#
# The ODE's P is the expected number of all proliferating cells, the rare clones that became
# lesions included: its mean is dominated by lesions long before most patients have one (and a
# lesion is not in the marrow). The agents' marrow is D, R and the clones below the switch
# size; a clone at the switch size leaves it as a lesion. The mean field splits P the same way,
# per founding cohort, from the same limit law of a clone as the relapse law:
#
# * Marrow P. A cell entering P at s founds a clone whose expected size at t is e^rho,
#   rho = r (t - s) at the untreated rates of the relapse law (r = lambda_p - delta_p).
#   A surviving clone (probability p_found) grows as W e^rho with W | survival ~ Exponential
#   of mean 1 / p_found (Kendall; `relapse_lag`), and it has switched by t iff W e^rho >= S.
#   So the expected cells of the clone still in the marrow are
#       e^rho - p_found E[W e^rho; W e^rho >= S] = e^rho q(x),  x = S p_found e^-rho,
#       q(x) = 1 - (1 + x) e^-x                                   (`marrow_clone_cells`)
#   (E[W; W >= c] = (c + m) e^(-c/m) for an exponential of mean m). Marrow P(t) is the
#   integral of this kernel against the escape dE(s), the untreated history's escape Psi
#   before t0 included (`history_escape`), plus the initial P cells taken as one-cell clones
#   founded at t0. This is the same law as the relapse lag: the switched fraction of surviving
#   clones e^-x is P(T_switch <= t - s) of `switch_lag`, so what leaves the marrow is what the
#   lesion count and the hazard receive. Approximations: N ~ W e^rho once the clone is large
#   (S = 1e4 cells); the clone grows at the untreated rates, as in the relapse law. Under EVE
#   the agents gate division by mTOR, which keeps their clones smaller and longer in the
#   marrow (at 16,000 replicates through the history on clever-eve not distinguishable: the
#   slow test of tests/model/test_marrow_lesions.py). With the gated growth in rho instead,
#   longer EVE would raise the marrow at the end of treatment (clones held back from the
#   switch), against MODEL.md must-hold 3; the drug acts on marrow P through the escape.
# * Lesion cells. A clone that switched at sigma is a lesion of S e^(g (t - sigma)) cells
#   (g = lesion_growth_rate) until it is detected at sigma + tau, tau = ln(detection / S) / g,
#   when it is a relapse and leaves the count (the relapsed patient's other lesions stay; under
#   the drugs t - sigma is the growth clock's kappa(t) - kappa(sigma), see "Lesions under the
#   drugs" above). With
#   the switch lag T_q of the relapse law's nodes (`switch_lag`, weights w_q), the expected cells
#   in undetected lesions are
#       L(t) = p_found S sum_q w_q I(t - T_q),  I(u) = integral_(u - tau)^u e^(g (u - s)) dE(s),
#   the same reads as the hazard (which reads E at t - T_q - tau): the expected number of
#   undetected lesions is p_found sum_q w_q (E(t - T_q) - E(t - T_q - tau)). Under EVE the
#   switch times and the survival come from the clone clock (`model.founding`), as in the
#   relapse hazard.
#
# Marrow P is read like the hazard: E at fixed clone ages before each output time
# (`marrow_reads`: integration by parts against the kernel's slope, a `MARROW_NODES`-point
# Gauss-Legendre rule over the ages in units of the clone growth rate), so `simulate` and the
# sweep lanes share it exactly. The lesion cells (`simulate` only) are computed on a uniform grid
# of `MARROW_GRID` cells from t0 - `output_window` to the last output time (E read there from
# the solve, from the history's closed form before t0): I(u) exactly for a piecewise-constant
# flux at the grid points and linear between them.

MARROW_GRID = 1024  # cells of the grid of the marrow and lesion outputs
MAX_WINDOW_DAYS = 7305.0  # at most 20 years of history read by them


def _q_over_x(x):
    """(1 - (1 + x) e^-x) / x for x >= 0 (inf allowed), by its series below x = 0.1 (no
    cancellation)."""
    small = x < 0.1
    xs = jnp.where(small, x, 0.1)
    xl = jnp.where(small, 1.0, jnp.minimum(x, 1e30))
    series = xs * (0.5 - xs * (1.0 / 3.0 - xs * (0.125 - xs * (1.0 / 30.0 - xs / 144.0))))
    return jnp.where(small, series, (-jnp.expm1(-xl) - xl * jnp.exp(-xl)) / xl)


def marrow_clone_cells(rho, p, switch_size=SWITCH_SIZE):
    """Expected cells still in the marrow (below `switch_size`) of the clone founded by one
    cell entering P, once its expected size is e^rho: e^rho q(x) = c q(x) / x, x = c e^-rho,
    c = S p_found (see above; finite in float32 for old cohorts, whose e^rho overflows);
    e^rho where no clone survives (p_found <= 0)."""
    pf = founding_probability(p)
    pos = pf > 0
    c = switch_size * jnp.where(pos, pf, 1.0)
    x = c * jnp.exp(-jnp.maximum(rho, -80.0))
    return jnp.where(pos, c * _q_over_x(x), jnp.exp(jnp.minimum(rho, 80.0)))


def output_window(p, switch_size=SWITCH_SIZE, nodes: int = LAG_NODES):
    """Days before t0 whose escape the marrow and lesion outputs read: the marrow kernel's
    untreated tail to 1e-7 of its peak ((ln(S p_found) + 16) / r) and the oldest undetected
    lesion of the lag nodes (max_q T_q + tau), at most `MAX_WINDOW_DAYS`."""
    r = clone_growth_rate(p)
    pos = r > 0
    rs = jnp.where(pos, r, 1.0)
    pf = jnp.where(pos, founding_probability(p), 1.0)
    marrow = (jnp.log(jnp.maximum(switch_size * pf, 1.0)) + 16.0) / rs
    y = float(lag_rule(nodes)[0].min())
    lesion = switch_lag(p, y, switch_size) + lesion_growth_days(
        switch_size, p["detection_size"], p["lesion_growth_rate"])
    window = jnp.where(pos, jnp.maximum(marrow, lesion), 16.0 / jnp.maximum(jnp.abs(r), 1e-3))
    return jnp.minimum(window, MAX_WINDOW_DAYS)


def marrow_grid(t0, t1, p, switch_size=SWITCH_SIZE, cells: int = MARROW_GRID):
    """The (cells + 1,) grid times from t0 - `output_window` to t1 (p's arrays scalars)."""
    start = t0 - output_window(p, switch_size)
    return start + (t1 - start) * jnp.arange(cells + 1, dtype=jnp.result_type(t1)) / cells


def grid_history(grid, t0, p):
    """E at the grid times before t0 from the history's closed form: E(s) = Psi(s - t0)
    (E(t0) = 0, `history_escape`; continuous at t0); use the solve's values at and after t0."""
    esc, _ = history_escape(p, jnp.minimum(grid - t0, 0.0))
    return esc


MARROW_NODES = 24  # Gauss-Legendre nodes (2 panels of 12) of the marrow P law over clone ages


@lru_cache(maxsize=4)
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)


def _kernel_slope(a, p, switch_size=SWITCH_SIZE):
    """K'(a) of the marrow clone kernel K(a) = `marrow_clone_cells`(r a): r (K - c x e^-x),
    x = c e^(-r a), c = S p_found (from q'(x) = x e^-x); r e^(r a) where no clone survives."""
    r = clone_growth_rate(p)
    pf = founding_probability(p)
    pos = pf > 0
    c = switch_size * jnp.where(pos, pf, 1.0)
    x = c * jnp.exp(-jnp.maximum(r * a, -80.0))
    k = marrow_clone_cells(r * a, p, switch_size)
    return jnp.where(pos, r * (k - c * x * jnp.exp(-jnp.minimum(x, 700.0))), r * k)


class MarrowReads(NamedTuple):
    """Where the marrow P law reads the escape E: `times` (..., T, J) = max(t - a_j, t0) over
    the J clone ages a_j, `weights` (..., T, J) = -omega_j K'(a_j) (Gauss-Legendre weights
    omega_j), `pre` (..., T, J): the history's Psi(min(t - a_j - t0, 0)) (E before t0, relative
    to E(t0) = 0), and `initial` (..., T): K(t - t0), the kernel of the initial P cells."""

    times: object
    weights: object
    pre: object
    initial: object


def marrow_reads(t, p, t0, switch_size=SWITCH_SIZE, nodes: int = MARROW_NODES) -> MarrowReads:
    """Read times and weights of the marrow P law for the output times t (..., T); p's arrays
    broadcast against the leading axes (...) of t. The ages run over [0, `output_window`'s
    marrow part] in u = |r| a, where the kernel has decayed to 1e-7 of its peak."""
    t = jnp.asarray(t)
    dt = t.dtype
    keys = ("lambda_p", "delta_p") + HISTORY_KEYS
    p_b = {k: jnp.asarray(p[k], dt)[..., None, None] for k in keys}
    r = clone_growth_rate(p_b)
    pf = founding_probability(p_b)
    pos = pf > 0
    peak = jnp.where(pos, jnp.log(jnp.maximum(switch_size * jnp.where(pos, pf, 1.0), 1.0)),
                     8.0)  # u = ln(S p_found): where the kernel turns from growth to switching
    span = peak + jnp.where(pos, 16.0, 8.0)
    rate = jnp.maximum(jnp.abs(r), 1e-3)
    x, w = (jnp.asarray(v, dt) for v in _legendre(nodes // 2))
    # two panels, [0, peak] and [peak, span]: against scipy quad at the human defaults, 32
    # nodes on one panel are 0.7% off, 2 x 8 4%, 2 x 10 0.8%, 2 x 12 4e-5, 2 x 16 2e-4, 2 x 24
    # 2e-6 (the kernel's turn is steep). 2 x 12: every node is a save point (a step end) of
    # the sweep lanes' engine, whose program grows with the saves
    lo = jnp.concatenate([jnp.zeros_like(peak), peak], axis=-1)
    width = jnp.concatenate([peak, span - peak], axis=-1)
    u = lo[..., :, None] + 0.5 * width[..., :, None] * (x + 1.0)
    wu = 0.5 * width[..., :, None] * w
    a = u.reshape(*u.shape[:-2], -1) / rate  # (..., 1, J) days
    omega = wu.reshape(*wu.shape[:-2], -1) / rate
    raw = t[..., :, None] - a
    pre, _ = history_escape(p_b, jnp.minimum(raw - t0, 0.0))
    weights = jnp.broadcast_to(-omega * _kernel_slope(a, p_b, switch_size), raw.shape)
    init = marrow_clone_cells(r[..., 0] * (t - t0), {k: v[..., 0] for k, v in p_b.items()},
                              switch_size)
    return MarrowReads(jnp.maximum(raw, t0), weights, pre, init)


def marrow_proliferating(escaped, escaped_read, reads: MarrowReads, proliferating_initial):
    """Expected marrow P (..., T) from E at the output times (`escaped`, (..., T)) and at
    `reads.times` (`escaped_read`, (..., T, J)): the integral of the clone kernel K against the
    escape dE, by parts -int_0^inf K'(a) (E(t) - E(t - a)) da (K(0) (E(t) - E(t)) = 0 and K
    vanishes at old ages), plus the initial P cells as clones founded at t0."""
    f = escaped[..., None] - escaped_read - reads.pre
    return jnp.sum(reads.weights * f, axis=-1) + proliferating_initial * reads.initial


def lesion_cells(ts, grid, esc_g, p, switch_size=SWITCH_SIZE, nodes: int = LAG_NODES,
                 batch: int = 256, clock=None):
    """Expected cells in undetected lesions (T,) at the output times ts (T,) from the
    cumulative escape at the grid times (`esc_g`, (M + 1,)); p's arrays scalars. `clock`: the
    lesions' growth clock (`model.clock.GrowthClock`; None: untreated lesions)."""
    g = p["lesion_growth_rate"]
    tau = lesion_growth_days(switch_size, p["detection_size"], g)
    if clock is not None:
        return _lesion_cells_clock(ts, grid, esc_g, p, switch_size, nodes, batch, clock, g, tau)
    lo, hi = grid[:-1], grid[1:]
    flux = (esc_g[1:] - esc_g[:-1]) / (hi - lo)

    def window(u):  # I(u): escape in (u - tau, u] weighted e^(g (u - s)), flux constant per cell
        a, b = jnp.maximum(lo, u - tau), jnp.minimum(hi, u)
        inside = a < b
        a, b = jnp.where(inside, a, u), jnp.where(inside, b, u)
        return jnp.sum(jnp.where(inside, flux * (jnp.exp(g * (u - a)) - jnp.exp(g * (u - b))),
                                 0.0)) / g

    at_grid = jax.lax.map(window, grid, batch_size=batch)
    y, w = (jnp.asarray(v, ts.dtype) for v in lag_rule(nodes))
    lag = switch_lag(p, y, switch_size)  # (K,)
    reads = jnp.interp(ts[:, None] - lag[None, :], grid, at_grid, left=0.0)  # (T, K)
    pf = founding_probability(p)
    return jnp.where(pf > 0, pf, 0.0) * switch_size * (reads @ w)


def _lesion_cells_clock(ts, grid, esc_g, p, switch_size, nodes, batch, clock, g, tau):
    """`lesion_cells` under a growth clock: a clone escaping at s survives with p(s) and, at
    node y_q, switches at s_q(s), the first time the running maximum of the clone clock's G
    reaches H(s) + ln S - y_q (`model.founding`); at t it is a lesion of
    S e^(g (kappa(t) - kappa(s_q))) cells, undetected while that clock difference is below
    tau. Per node q the grid cells are mapped to the clock of their switch times,
    kappa(s_q(grid)), with the survival-weighted escape linear in the clock within a cell, and
    the window integral of the untreated law is taken in clock units at kappa(t)."""
    from dormancy_model.model import founding as F

    y, w = (jnp.asarray(v, ts.dtype) for v in lag_rule(nodes))
    pf = founding_probability(p)
    ok = pf > 0
    cc = F.clone_clock(clock, jnp.where(ok, p["lambda_p"], 1.0),
                       jnp.where(ok, p["delta_p"], 0.5))
    level, net = cc.level_and_net(grid)  # (M + 1,)
    switch = jnp.maximum(cc.reached_peak(level[None, :] + jnp.log(switch_size) - y[:, None]),
                         grid[None, :])  # (K, M + 1)
    kv = clock.at(switch)  # (K, M + 1) clock of the switch times
    lo, hi = kv[:, :-1], kv[:, 1:]
    width = hi - lo
    surv = jnp.exp(level - net)  # p(e) on the grid
    found = 0.5 * (surv[1:] + surv[:-1]) * (esc_g[1:] - esc_g[:-1])
    flux = found[None, :] / jnp.where(width > 0, width, 1.0)

    def window(k):  # (K,): escape switched in (k - tau, k] in clock units, weighted e^(g (k - v))
        a, b = jnp.maximum(lo, k - tau), jnp.minimum(hi, k)
        inside = (a < b) & (width > 0)
        a, b = jnp.where(inside, a, k), jnp.where(inside, b, k)
        return jnp.sum(jnp.where(inside, flux * (jnp.exp(g * (k - a)) - jnp.exp(g * (k - b))),
                                 0.0), axis=-1) / g

    reads = jax.lax.map(window, clock.at(ts), batch_size=batch)  # (T, K)
    return jnp.where(ok, 1.0, 0.0) * switch_size * (reads @ w)
