"""Cumulative per-cell hazards on a time grid, for the stochastic agent model.

The per-cell rates come from `rates.cell_rates` (the single copy of the biology) evaluated on the
closed-form drug exposure. They vary within a day with the drug concentrations. They are
integrated on a grid of cells (1 h during treatment and a washout, 1 day afterwards) with
3-point Gauss-Legendre quadrature, and the agents draw their event times by inverting the
cumulative hazard (next-reaction method): an agent of weights w (traits, clone size) that is
alive at time t with Exp(1) draw E fires at the time s with

    sum_c w_c (Cum_c(s) - Cum_c(t)) = E.

Within a grid cell the cumulative hazard is linear, i.e. the simulated process is the exact
jump process whose rates are the cell averages of the instantaneous rates (not frozen values).

Channels (columns of the table, per cell and day):
  0 reactivation D->R (reactivation propensity 1)   1 dormant death without deficit term
  2 deficit-induced dormant death per unit autophagy dependence
  3 R->D   4 R->P   5 R death   6 P division   7 P death   8 P->D
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.model import rates as R
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.pk.closed_form import HIGHEST, Dosing

N_CHANNELS = 9
REACT, DEATH_D0, DEATH_DEFICIT, RETURN_RD, COMMIT, DEATH_R, DIVIDE, DEATH_P, RETURN_PD = range(9)
# channels of each state and of a class pool (D then R), used to build agent weights
D_CHANNELS = (REACT, DEATH_D0, DEATH_DEFICIT)
R_CHANNELS = (RETURN_RD, COMMIT, DEATH_R)
P_CHANNELS = (DIVIDE, DEATH_P, RETURN_PD)

# Channel groups: an agent's weights are equal within each group (a reactivating cell is
# exposed to all three R channels alike, a clone of n cells to all three P channels with weight
# n), so event times are found on five grouped cumulative columns instead of nine.
GROUPS = ((REACT,), (DEATH_D0,), (DEATH_DEFICIT,), R_CHANNELS, P_CHANNELS)
N_GROUPS = len(GROUPS)
_G = np.zeros((N_CHANNELS, N_GROUPS))
for _g, _chs in enumerate(GROUPS):
    _G[list(_chs), _g] = 1.0

_GL_X = np.array([-np.sqrt(3.0 / 5.0), 0.0, np.sqrt(3.0 / 5.0)])
_GL_W = np.array([5.0, 8.0, 5.0]) / 9.0


class HazardGrid(NamedTuple):
    """Piecewise-uniform grid: `n_fine` nodes t0 + i h_fine before t_split, then nodes
    t_split + j h_coarse, then t1."""

    nodes: np.ndarray
    n_fine: int
    t_split: float
    h_fine: float
    h_coarse: float


def hazard_nodes(t0: float, t1: float, end_of_treatment: float, fine_hours: float = 1.0,
                 coarse_days: float = 1.0, washout_days: float = 14.0,
                 pad_to: int = 512) -> HazardGrid:
    """Grid (days): `fine_hours` spacing until `end_of_treatment + washout_days`, then
    `coarse_days` until t1, then more `coarse_days` nodes after t1 until the node count is a
    multiple of `pad_to` (runs from different start days then share compiled shapes; nothing
    after t1 is ever simulated)."""
    h_f, h_c = fine_hours / 24.0, float(coarse_days)
    t_split = float(np.clip(end_of_treatment + washout_days, t0, t1)) if end_of_treatment > 0 \
        else float(t0)
    fine = t0 + h_f * np.arange(int(np.ceil((t_split - t0) / h_f)) + 1)
    fine = fine[fine < t_split - 1e-9]
    coarse = t_split + h_c * np.arange(int(np.ceil((t1 - t_split) / h_c)) + 1)
    coarse = coarse[coarse < t1 - 1e-9]
    nodes = np.concatenate([fine, coarse, [t1]])
    extra = -nodes.size % max(int(pad_to), 1)
    nodes = np.concatenate([nodes, t1 + h_c * np.arange(1, extra + 1)])
    return HazardGrid(nodes, len(fine), t_split, h_f, h_c)


class HazardTable(eqx.Module):
    """Cumulative hazards `cum` (N, 9) at `nodes` (N,) and cell-average rates `rate` (N, 9)
    (row N-1 repeats row N-2; it is never used inside [t0, t1]). `spec` = (t0, h_fine,
    t_split, h_coarse, n_fine) locates a cell in O(1).

    The lookups (`cell`, `averages`, `next_time`) are the module functions `cell_index`,
    `channel_averages` and `next_time`, written once for any table view: this table (one
    replicate's scalar times under vmap; rows are arrays) or the GPU kernel's table in device
    memory (`agents.kernel`; rows are tuples of per-lane columns)."""

    nodes: jax.Array
    cum: jax.Array
    rate: jax.Array
    spec: jax.Array
    gcum: jax.Array  # (N, 5) grouped cumulative hazards (GROUPS)
    grate: jax.Array  # (N, 5) grouped cell-average rates

    # ---- the table view used by the lookups
    @property
    def n_nodes(self) -> int:
        return self.nodes.shape[0]

    @property
    def grid(self) -> tuple:
        return tuple(self.spec[i] for i in range(5))

    def node(self, k):
        return self.nodes[k]

    def row(self, name: str, k):
        """Row k of table `name` ("cum", "rate", "gcum", "grate"), indexed by column."""
        return getattr(self, name)[k]

    # ---- lookups
    def cell(self, t):
        """Index k of the grid cell [nodes[k], nodes[k+1]) containing t (clipped)."""
        return cell_index(self, t)

    def averages(self, t0, t1, channels):
        """Average rates of `channels` over [t0, t1] (a tuple), per cell and day."""
        return channel_averages(self, t0, t1, channels)

    def next_time(self, wg, t, e):
        """First time s > t at which the hazard of group weights wg (5,) accumulated since t
        reaches e (Exp(1) draw); inf when that does not happen before the last node."""
        return next_time(self, wg, t, e)


def _at(cum, rate, dt):
    """cum + dt rate, per column: rows as arrays or as tuples of columns."""
    if isinstance(cum, tuple):
        return tuple(c + dt * r for c, r in zip(cum, rate, strict=True))
    return cum + dt * rate


def _dot(row, w):
    """sum_g row[g] w[g] over the N_GROUPS groups: one reduction of a row array (the vmapped
    loop; its own summation order, which the results keep) or, for a tuple of columns (the
    kernel), added in order."""
    if not isinstance(row, tuple):
        return jnp.sum(row * (jnp.stack(w) if isinstance(w, tuple) else w))
    acc = row[0] * w[0]
    for g in range(1, N_GROUPS):
        acc = acc + row[g] * w[g]
    return acc


def cell_index(view, t):
    """Grid cell of t in a table view (`HazardTable` or the kernel's view): an object with
    `n_nodes`, `grid` (the 5 spec values), `node(k)` and `row(name, k)` (columns of a row)."""
    return grid_cell(t, view.grid, view.n_nodes, view.node)


def channel_averages(view, t0, t1, channels):
    """Average rates of the given channels over [t0, t1] (the rates of t0's cell when
    t1 <= t0), per cell and day, from the linear cumulative hazard within a cell."""
    k0, k1 = cell_index(view, t0), cell_index(view, t1)
    c0, r0 = view.row("cum", k0), view.row("rate", k0)
    c1, r1 = view.row("cum", k1), view.row("rate", k1)
    n0, n1 = view.node(k0), view.node(k1)
    dt = jnp.maximum(t1 - t0, 1e-300)
    return tuple(jnp.where(t1 > t0, ((c1[c] + (t1 - n1) * r1[c])
                                     - (c0[c] + (t0 - n0) * r0[c])) / dt, r0[c])
                 for c in channels)


def next_time(view, wg, t, e):
    """First time s > t at which the hazard of group weights wg (N_GROUPS, indexable)
    accumulated since t reaches e (Exp(1) draw), by bisection on the grouped cumulative
    hazards; inf when that does not happen before the last node."""
    n = view.n_nodes
    k0 = cell_index(view, t)
    g0, r0 = view.row("gcum", k0), view.row("grate", k0)
    dtn = t - view.node(k0)
    target = _dot(_at(g0, r0, dtn), wg) + e
    cw = lambda k: _dot(view.row("gcum", k), wg)  # noqa: E731
    lo = bisect_nodes(cw, target, k0, jnp.full_like(k0, n - 1), n)
    k = jnp.minimum(lo, n - 2)
    r = _dot(view.row("grate", k), wg)
    s = view.node(k) + (target - cw(k)) / jnp.where(r > 0, r, 1.0)
    never = (lo >= n - 1) | (r <= 0) | (s > view.node(jnp.full_like(k, n - 1)))
    return jnp.where(never, jnp.inf, jnp.maximum(s, t))


def grid_cell(t, spec, n_nodes: int, node):
    """Index k of the grid cell [node(k), node(k+1)) containing t (clipped), located in O(1)
    from spec = (t0, h_fine, t_split, h_coarse, n_fine) and corrected by one node either way."""
    t0, h_f, t_split, h_c, n_f = spec
    guess = jnp.where(t < t_split, jnp.floor((t - t0) / h_f),
                      n_f + jnp.floor((t - t_split) / h_c))
    last = n_nodes - 2
    k = jnp.clip(guess, 0, last).astype(jnp.int32)
    k = jnp.where((k < last) & (node(jnp.minimum(k + 1, last + 1)) <= t), k + 1, k)
    return jnp.where((k > 0) & (node(k) > t), k - 1, k)


def bisect_nodes(cw, target, lo, hi, n: int):
    """Last node k in [lo, hi] with cw(k) <= target, for cw non-decreasing in k and
    cw(lo) <= target: a fixed number of bisection steps (enough for n nodes)."""

    def body(_, lh):
        lo, hi = lh
        mid = (lo + hi + 1) // 2
        ok = cw(mid) <= target
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    steps = int(np.ceil(np.log2(max(n, 2)))) + 1
    return jax.lax.fori_loop(0, steps, body, (lo, hi))[0]


def _channel_rates(ex_eve, ex_hcq_effect, params: Parameters):
    base = R.cell_rates(ex_eve, ex_hcq_effect, params, autophagy_dependence=0.0,
                        reactivation_propensity=1.0)
    unit = R.cell_rates(ex_eve, ex_hcq_effect, params, autophagy_dependence=1.0,
                        reactivation_propensity=1.0)
    return jnp.stack([base.reactivation, base.death_dormant,
                      unit.death_dormant - base.death_dormant, base.dormancy_return,
                      base.commitment, base.death_reactivating, base.division,
                      base.death_proliferating, base.proliferative_return], axis=-1)


def hazard_table(model: DormancyModel, params: Parameters, dosing: Dosing, nodes,
                 spec) -> HazardTable:
    """Integrate the nine per-cell channel rates over each grid cell (Gauss-Legendre, 3 points).
    `nodes`, `spec` from `hazard_nodes` (spec = (t0, h_fine, t_split, h_coarse, n_fine))."""
    nodes = jnp.asarray(nodes, dtype=jnp.float64)
    course = model.drug_course(params, dosing)
    a, b = nodes[:-1], nodes[1:]
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    ts = mid[:, None] + half[:, None] * jnp.asarray(_GL_X)[None, :]  # (N-1, 3)
    ex = course.exposure_sorted(ts.reshape(-1))  # row-major: the times are sorted
    r = _channel_rates(ex.eve, ex.hcq_effect, params).reshape(ts.shape + (N_CHANNELS,))
    avg = jnp.einsum("kqc,q->kc", r, 0.5 * jnp.asarray(_GL_W), precision=HIGHEST)  # cell averages
    cum = jnp.concatenate([jnp.zeros((1, N_CHANNELS)), jnp.cumsum(avg * (b - a)[:, None], 0)])
    rate = jnp.concatenate([avg, avg[-1:]], axis=0)
    g = jnp.asarray(_G)
    grouped = lambda x: jnp.matmul(x, g, precision=HIGHEST)  # noqa: E731
    return HazardTable(nodes, cum, rate, jnp.asarray(spec, jnp.float64), grouped(cum),
                       grouped(rate))
