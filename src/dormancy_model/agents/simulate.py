"""`simulate_agents`: the stochastic agent counterpart of the ODE (MODEL.md section 5).

Each DTC is an agent in state D (dormant), R (reactivating) or P (proliferating) with two traits
drawn per cell: autophagy dependence `a` (scales the deficit-induced death of a dormant cell) and
reactivation propensity `rp` (scales D -> R). Traits are log-normal with mean 1 and coefficient
of variation `autophagy_cv` / `reactivation_cv` (sigma^2 = ln(1 + cv^2)); cv = 0 gives a = rp = 1
exactly, the homogeneous model whose mean is the ODE. Proliferating cells form clones that keep
their founder's traits. All per-cell rates come from `rates.cell_rates` through the cumulative
hazard table of `agents_hazard` (rates vary within a day with the drugs; event times are drawn
by inverting the integrated hazard, never from rates frozen over a day).

A clone that reaches `switch_size` cells becomes a lesion that grows deterministically at
`lesion_growth_rate` times the mTOR gate (`rates.lesion_growth_factor`: EVE slows lesions of
every size, HCQ does not act on them): relapse is declared when it reaches `detection_size`,
i.e. tau = `ln(detection_size / switch_size) / lesion_growth_rate` untreated-equivalent days
after the switch: the first t with kappa(t) - kappa(switch day) >= tau on the growth clock
kappa of the replicate's EVE course (`model.clock`, the same gate as the division channel of
the hazard table; per replicate when the parameters are), and its size at a count day is
switch_size e^(g (kappa(t) - kappa(switch day))). Without EVE kappa(t) = t. The mean field
reads the same growth law: its relapse lag is the birth-death time of a surviving clone to
`switch_size` (random, from the clone's limit law) plus this deterministic growth
(`model.observables`; both use `observables.SWITCH_SIZE` by default). Clearance = no cells
(and no lesion) left; its day is the last death. Aspirates at `assess_days`:
negative-binomial counts of mean aspirate_fraction * marrow cells (dispersion
`aspirate_dispersion`, Poisson at 0; `observables.draw_counts`), DTC+ when >= 1; the marrow
cells are D, R and the clones below the switch size (a lesion is not in the marrow).

History: with `history_days` T > 0 (and no initial state given) the replicates first live T
days without drug from dormant cells only (`_history`; the mean field has the same period in
closed form, `observables.history`), and lesions detected before t0 are dropped: outcomes are
conditional on no relapse before t0.

Initial cells (when `initial` is None): per replicate Poisson(dormant_initial) dormant cells (and
Poisson reactivating/proliferating initial counts) with `initial_count="poisson"` (default: the
DTC load varies between patients, and one aspirate of a Poisson load is again Poisson, as in the
ODE's P(DTC+) = 1 - exp(-f N) at aspirate_dispersion 0; with dispersion a > 0 a Poisson load
gives the same negative binomial as the mean field's 1 - (1 + a f N)^(-1/a) only up to the
load's own Poisson spread, negligible at the ~1e5-cell loads); `initial_count="fixed"` rounds
the values instead.

Methods: "exact" (every event of every cell) and "fast" (exact events on trait-class pools of
D and R cells, clones advanced by exact-in-law birth-death leaps of at most `leap_days`; error
control: `leap_days`, see `agents_engine`). With heterogeneity the fast method stratifies each
log-normal trait into `strata` equiprobable classes at their conditional means (mean kept).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.agents import kernel as AK
from dormancy_model.agents import loops as E
from dormancy_model.agents.hazard import hazard_nodes, hazard_table
from dormancy_model.model import clock as C
from dormancy_model.model import observables as O
from dormancy_model.model import rates as Rt
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import lognormal_sigma
from dormancy_model.pk.closed_form import Dosing
from dormancy_model.pk.schedule import Schedule


class Heterogeneity(eqx.Module):
    """Log-normal (mean 1) spread of per-cell traits; cv = 0 means no spread.

    The fast method replaces each continuous trait by `strata` equal-probability classes (each
    at its conditional mean). With 4 strata the fast and exact methods were distinguishable at
    3,000 replicates (CVs 0.8 and 0.5; KS on total cells, p = 7e-6); 8 strata pass that test
    (tests/test_agents_fast.py, slow)."""

    autophagy_cv: float = eqx.field(static=True, default=0.0)
    reactivation_cv: float = eqx.field(static=True, default=0.0)
    strata: int = eqx.field(static=True, default=8)  # classes per trait, fast method only

    def draw(self, key, shape):
        """(autophagy dependence, reactivation propensity) arrays of `shape`."""
        ka, kr = jax.random.split(key)
        out = []
        for k, cv in ((ka, self.autophagy_cv), (kr, self.reactivation_cv)):
            s = lognormal_sigma(cv)
            out.append(jnp.exp(s * jax.random.normal(k, shape) - 0.5 * s * s))
        return tuple(out)

    def classes(self):
        """Class traits (K,), (K,) for the fast method: product of per-trait strata."""
        from scipy.stats import norm

        vals = []
        for cv in (self.autophagy_cv, self.reactivation_cv):
            if cv <= 0:
                vals.append(np.ones(1))
                continue
            s, k = lognormal_sigma(cv), self.strata
            z = norm.ppf(np.linspace(0.0, 1.0, k + 1))
            vals.append(k * (norm.cdf(z[1:] - s) - norm.cdf(z[:-1] - s)))
        a, rp = np.meshgrid(vals[0], vals[1], indexing="ij")
        return jnp.asarray(a.ravel()), jnp.asarray(rp.ravel())


def _days(days) -> tuple:
    return tuple(float(d) for d in np.atleast_1d(np.asarray(days, float)))


class AgentOptions(eqx.Module):
    """How `simulate_agents` simulates and what it records (an immutable value).

    `method`: "exact" (every event) or "fast" (trait-class pools, clone leaps of at most
    `leap_days`, `late_leap_days` once the drug levels no longer vary within a day).
    `count_days`: days at which cell counts are recorded; `assess_days`: aspirate days.
    `initial_count`: "poisson" or "fixed" initial cells (when no initial state is given).
    `switch_size`: clone size at which growth becomes deterministic (default
    `observables.SWITCH_SIZE`, the mean field's; pass the same to `simulate` to compare the
    two with another value). `hazard_hours`: step of
    the fine hazard-table grid. `max_events`: per replicate (default 2e6 exact, 2e5 fast);
    `extra_slots` (exact: room for new agents; default 8 when k_pd > 0) and `clone_slots`
    (fast). `chunk_size`: replicates per lock-step loop (default 8192 on CPU, 131072 on an
    accelerator). `backend` (fast method): "auto" runs the event loop as one GPU kernel on a
    GPU when all replicates share one parameter set (`agents.kernel`), else the vmapped XLA
    loop; "xla" always the XLA loop; "pallas" the kernel (interpreted, slowly, without a GPU);
    `kernel_block` replicates per kernel program (a power of two).
    `pool_leap_above` (fast method; default inf, off): a class pool of more dormant cells than
    this advances its D cells by binomial leaps on the clones' leap grid (deaths counted at
    the leap end; the leap's reactivations drawn as a count and fired at their own times, so R
    stays exact; `loops.pool_leap_counts`), exact events again once it is not above it. Not
    in the GPU kernel: backend "auto" then runs the XLA loop, "pallas" is refused."""

    method: str = eqx.field(static=True, default="exact")
    count_days: tuple = eqx.field(static=True, default=(), converter=_days)
    assess_days: tuple = eqx.field(static=True, default=(), converter=_days)
    initial_count: str = eqx.field(static=True, default="poisson")
    switch_size: float = eqx.field(static=True, default=O.SWITCH_SIZE)
    leap_days: float = eqx.field(static=True, default=1.0)
    late_leap_days: float = eqx.field(static=True, default=7.0)
    hazard_hours: float = eqx.field(static=True, default=1.0)
    max_events: int | None = eqx.field(static=True, default=None)
    extra_slots: int | None = eqx.field(static=True, default=None)
    clone_slots: int = eqx.field(static=True, default=16)
    chunk_size: int | None = eqx.field(static=True, default=None)
    backend: str = eqx.field(static=True, default="auto")
    kernel_block: int = eqx.field(static=True, default=64)
    pool_leap_above: float = eqx.field(static=True, default=float("inf"), converter=float)

    def __check_init__(self):
        if self.method not in ("exact", "fast"):
            raise ValueError(f"method must be 'exact' or 'fast', got {self.method!r}")
        if self.backend not in ("auto", "xla", "pallas"):
            raise ValueError(f"backend must be 'auto', 'xla' or 'pallas', got {self.backend!r}")
        if self.initial_count not in ("poisson", "fixed"):
            raise ValueError(f"initial_count must be 'poisson' or 'fixed', got "
                             f"{self.initial_count!r}")
        if not self.switch_size >= 2 or not self.leap_days > 0:
            raise ValueError("need switch_size >= 2, leap_days > 0")
        if not self.pool_leap_above >= 0:
            raise ValueError(f"pool_leap_above must be >= 0 (inf: off), got "
                             f"{self.pool_leap_above!r}")
        if self.pool_leap_above < float("inf"):
            if self.method != "fast":
                raise ValueError("pool_leap_above applies to the fast method only")
            if self.backend == "pallas":
                raise ValueError("pool_leap_above < inf is not implemented in the GPU kernel "
                                 "(backend='pallas'): use backend='auto' or 'xla', which run "
                                 "the XLA loop")


class AgentState(eqx.Module):
    """State of every replicate at a day (leading axis = replicate; JAX arrays, left on the
    device); continue a run with `simulate_agents(..., initial=state, t0=state_day)` using the
    same method."""

    arrays: dict
    method: str = eqx.field(static=True)


class AgentResult(eqx.Module):
    """Per-replicate outcomes (numpy arrays, leading axis = replicate).

    counts: (n, len(count_days), 3) cells D, R, P, where P is all proliferating cells: the
    marrow clones plus every lesion at its deterministic size capped at the detection size
    (detected ones included). The same split as the mean field's `Trajectory`:
    `marrow_proliferating` (n, len(count_days)) the cells of clones below the switch size (the
    marrow's P: D + R + this are the marrow DTCs) and `lesion_cells` (n, len(count_days)) the
    cells in lesions not yet detected (their relapse day after the count day). aspirate_count
    and dtc_positive: (n, len(assess_days)), of the marrow cells (lesions excluded); days in
    days from the schedule's day 0."""

    cleared: Any
    clearance_day: Any
    relapsed: Any
    relapse_day: Any
    counts: Any
    marrow_proliferating: Any
    lesion_cells: Any
    aspirate_count: Any
    dtc_positive: Any
    final_state: AgentState
    count_days: Any
    assess_days: Any
    status: Any
    n_events: Any
    t1: float = eqx.field(static=True)
    method: str = eqx.field(static=True)

    @property
    def ok(self) -> bool:
        return bool(np.all(self.status == S.OK))

    @property
    def message(self) -> str:
        return S.message(self.status)

    def to_dataframe(self):
        """One row per replicate: outcomes, aspirates and cell counts."""
        import pandas as pd

        cols = {"replicate": np.arange(len(self.cleared)), "cleared": self.cleared,
                "clearance_day": self.clearance_day, "relapsed": self.relapsed,
                "relapse_day": self.relapse_day}
        for j, day in enumerate(self.assess_days):
            cols[f"dtc_positive_day{day:g}"] = self.dtc_positive[:, j]
            cols[f"aspirate_count_day{day:g}"] = self.aspirate_count[:, j]
        for j, day in enumerate(self.count_days):
            for s, name in enumerate(("dormant", "reactivating", "proliferating")):
                cols[f"{name}_day{day:g}"] = self.counts[:, j, s]
            cols[f"marrow_proliferating_day{day:g}"] = self.marrow_proliferating[:, j]
            cols[f"lesion_cells_day{day:g}"] = self.lesion_cells[:, j]
        cols["status"] = S.names(self.status)
        return pd.DataFrame(cols)


def _is_batched(params: Parameters) -> bool:
    return any(np.ndim(v) > 0 for v in params.values.values())


def _broadcast(params: Parameters, n: int) -> Parameters:
    return params.with_values({k: jnp.broadcast_to(jnp.asarray(v), (n,))
                               for k, v in params.values.items()})


def _bucket(n: int) -> int:
    """Replicates actually run for n requested: n rounded up to a quarter of its octave
    (<= 25% extra lanes), so that callers with varying n (trial arms, calibration) reuse a few
    compiled shapes instead of compiling for every n."""
    if n <= 8:
        return n
    step = (1 << (n.bit_length() - 1)) // 4
    return -(-n // step) * step


def take_rows(tree, idx):
    """Rows `idx` of every array leaf (host-side indexing: no JAX compile per shape)."""
    def take(x):
        if isinstance(x, jax.Array) and x.ndim >= 1:
            return jnp.asarray(np.asarray(x)[idx])
        if isinstance(x, np.ndarray) and x.ndim >= 1:
            return x[idx]
        return x

    return jax.tree_util.tree_map(take, tree)


@eqx.filter_jit
def _load_order(method: str, states: dict, n: int):
    """Replicates 0..n-1 by decreasing live cells (D + R + cells of growing clones: a proxy of
    their number of events), computed on the device."""
    if method == "exact":
        kind, count = states["kind"], states["count"]
        load = jnp.sum(jnp.where((kind > E.EMPTY) & (kind < E.LESION), count, 0.0), axis=1)
    else:
        live = states["clone_kind"] == E.PROLIFERATING
        load = (states["d"].sum(1) + states["r"].sum(1)
                + jnp.sum(jnp.where(live, states["clone_count"], 0.0), axis=1))
    return jnp.argsort(-load[:n], stable=True)


def _last_dose(dosing: Dosing) -> float:
    times = [np.asarray(ev.times)[np.asarray(ev.amount) > 0] for ev in (dosing.hcq, dosing.eve)]
    return float(max((t.max() for t in times if t.size), default=0.0))


@eqx.filter_jit
def _initial_counts(params, keys, mode, batched):
    def one(p, k):
        names = ("dormant_initial", "reactivating_initial", "proliferating_initial")
        ks = jax.random.split(k, 3)
        if mode == "poisson":
            return jnp.stack([jax.random.poisson(kk, p[nm]).astype(jnp.int64)
                              for kk, nm in zip(ks, names, strict=True)])
        return jnp.stack([jnp.round(p[nm]) for nm in names]).astype(jnp.int64)

    return jax.vmap(one, in_axes=(0 if batched else None, 0))(params, keys)


def _exact_state(n0, key, het: Heterogeneity, capacity: int, t0):
    """One slot per initial D and R cell; the initial P cells form one clone (same traits)."""
    d0, r0, p0 = n0[0], n0[1], n0[2]
    idx = jnp.arange(capacity)
    kind = jnp.where(idx < d0, E.DORMANT, jnp.where(idx < d0 + r0, E.REACTIVATING,
                                                     jnp.where((idx == d0 + r0) & (p0 > 0),
                                                               E.PROLIFERATING, E.EMPTY)))
    count = jnp.where(kind == E.PROLIFERATING, p0.astype(jnp.float64),
                      jnp.where(kind > 0, 1.0, 0.0))
    a, rp = het.draw(key, (capacity,))
    tot = d0 + r0 + p0
    return dict(kind=kind.astype(jnp.int64), count=count, a=a, rp=rp,
                switch_day=jnp.full(capacity, jnp.inf),
                clearance_day=jnp.where(tot > 0, jnp.inf, t0))


def _fast_state(n0, key, class_a, class_rp, max_cells: int, clone_slots: int, t0):
    n_cls = class_a.shape[0]
    kd, kr, kp = jax.random.split(key, 3)
    idx = jnp.arange(max_cells)

    def pool(k, m):
        if n_cls == 1:  # one class: the whole pool (same as drawing classes, faster)
            return jnp.reshape(m, (1,)).astype(jnp.float64)
        cls = jax.random.randint(k, (max_cells,), 0, n_cls)
        return jnp.sum((cls[:, None] == jnp.arange(n_cls)[None, :]) & (idx < m)[:, None],
                       axis=0).astype(jnp.float64)

    p0 = n0[2].astype(jnp.float64)
    ckind = jnp.zeros(clone_slots, jnp.int64).at[0].set(
        jnp.where(p0 > 0, E.PROLIFERATING, E.EMPTY))
    return dict(d=pool(kd, n0[0]), r=pool(kr, n0[1]), class_a=class_a, class_rp=class_rp,
                clone_kind=ckind, clone_count=jnp.zeros(clone_slots).at[0].set(p0),
                clone_cls=jnp.zeros(clone_slots, jnp.int64).at[0].set(
                    jax.random.randint(kp, (), 0, n_cls)),
                switch_day=jnp.full(clone_slots, jnp.inf),
                clearance_day=jnp.where(jnp.sum(n0) > 0, jnp.inf, t0))


@eqx.filter_jit
def _initial_states(method, n0, keys, het, class_a, class_rp, size, clone_slots, t0):
    if method == "exact":
        return jax.vmap(lambda c, k: _exact_state(c, k, het, size, t0))(n0, keys)
    return jax.vmap(lambda c, k: _fast_state(c, k, class_a, class_rp, size, clone_slots, t0))(
        n0, keys)


@eqx.filter_jit
def _replicate_keys(key, n):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return tuple(jax.vmap(lambda k, j=j: jax.random.fold_in(k, j))(keys) for j in range(3))


@jax.jit
def _take_lanes(tree, idx):
    """Lanes `idx` of every array leaf of `tree` (a chunk's tables, states and keys): one
    compiled gather per chunk. Eager indexing, one dispatch per leaf, was ~7 s of a 60 s
    32-trial run on the 2-core CPU (cProfile, issue 15); the same values either way."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


def _use_kernel(backend: str, method: str, pool_leap: bool = False) -> bool:
    if method != "fast" or backend == "xla" or pool_leap:  # pool leaps: the XLA loop only
        return False
    return backend == "pallas" or jax.default_backend() == "gpu"


def _sharded(backend: str, method: str, pool_leap: bool = False) -> bool:
    """Split each chunk's lanes over the local devices (one loop per device, `shard_map`):
    the XLA loop with several devices, e.g. one CPU device per core (`devices.use_cpu_cores`)."""
    return jax.local_device_count() > 1 and not _use_kernel(backend, method, pool_leap)


def _run_chunk_impl(method, table, table_axis, states, keys, t0, t1, rec_t, switch_size,
                    max_events, leap_days, late_leap_days, backend="auto", kernel_block=64,
                    pool_leap_above=None):
    """Event loops of one chunk of lanes (`_run_lanes`); when `_sharded`, each local device
    runs its share (the chunk is then a multiple of the device count). `pool_leap_above`:
    None (off) or the threshold as an array (one compiled loop for every threshold)."""
    args = (t0, t1, rec_t, switch_size, max_events, leap_days, late_leap_days)
    pool_leap = pool_leap_above is not None
    if not _sharded(backend, method, pool_leap):
        return _run_lanes(method, table, table_axis, states, keys, *args, backend, kernel_block,
                          pool_leap_above)
    from jax.sharding import PartitionSpec as P

    from dormancy_model.engine.rk import local_mesh

    if pool_leap:  # the threshold travels as one more shared argument
        args = (*args, pool_leap_above)

    def local(table, states, keys, *args):
        if pool_leap:
            *args, above = args
        else:
            above = None
        return _run_lanes(method, table, table_axis, states, keys, *args, backend,
                          kernel_block, above)

    lanes, shared = P("lanes"), P()
    return jax.shard_map(local, mesh=local_mesh(),
                         in_specs=(shared if table_axis is None else lanes, lanes, lanes)
                         + (shared,) * len(args), out_specs=lanes,
                         check_vma=False)(table, states, keys, *args)


def _run_lanes(method, table, table_axis, states, keys, t0, t1, rec_t, switch_size,
               max_events, leap_days, late_leap_days, backend="auto", kernel_block=64,
               pool_leap_above=None):
    if method == "exact":
        init = lambda tb, s, k: E.exact_init(tb, s, k, t0, rec_t)  # noqa: E731
        step = lambda tb, c: E.exact_step(tb, c, t1, rec_t, switch_size)  # noqa: E731
        final = E.exact_final
    else:
        init = lambda tb, s, k: E.fast_init(tb, s, k, t0, t1, rec_t,  # noqa: E731
                                            leap_days, late_leap_days, pool_leap_above)
        step = lambda tb, c: E.fast_step(tb, c, t1, rec_t, switch_size,  # noqa: E731
                                         leap_days, late_leap_days, pool_leap_above)
        final = E.fast_final
    carry = jax.vmap(init, in_axes=(table_axis, 0, 0))(table, states, keys)
    if _use_kernel(backend, method, pool_leap_above is not None) and AK.supported(
            table, table_axis, carry):
        carry = AK.run_fast_kernel(table, carry, t1, rec_t, switch_size, leap_days,
                                   late_leap_days, max_events, block=kernel_block)
        return jax.vmap(final)(carry)
    n = keys.shape[0]
    carry = E.lockstep(jax.vmap(step, in_axes=(table_axis, 0)), table, table_axis, carry,
                       max_events, width=max(1, n // 16))
    return jax.vmap(final)(carry)


_run_chunk = eqx.filter_jit(_run_chunk_impl)


def _constant_exponents(params: Parameters) -> Parameters:
    """`params` with the rate exponents (`rates.EXPONENTS`) as Python floats where every
    replicate has the same value: static under `eqx.filter_jit`, so the hazard table's powers
    compile to multiplications (1.2x faster tables on the CPU; one compilation per set of
    exponent values). `batch_model.constant_base` does this for all fixed parameters of a
    sweep, which are scalars there."""
    vals = dict(params.values)
    for name in Rt.EXPONENTS:
        v = np.asarray(vals[name], float)
        if v.size and np.all(v == v.flat[0]):
            vals[name] = float(v.flat[0])
    return params.with_values(vals)


@eqx.filter_jit
def _tables(model, params, dosing, nodes, spec, batched):
    if batched:  # filter_vmap: the constant exponents stay unbatched Python floats
        return eqx.filter_vmap(lambda p: hazard_table(model, p, dosing, nodes, spec))(params)
    return hazard_table(model, params, dosing, nodes, spec)


def simulate_agents(model: DormancyModel, params: Parameters, schedule: Schedule | Dosing, *,
                    n_replicates: int, key, t1: float, t0: float = 0.0,
                    heterogeneity: Heterogeneity | None = None,
                    initial: AgentState | None = None,
                    options: AgentOptions = AgentOptions(), progress=None) -> AgentResult:
    """Simulate `n_replicates` individuals from day t0 to t1 (days) with the agent model.

    `params` may carry a leading batch axis of length n_replicates (one virtual patient per
    replicate). `initial`: continue from a final state (same method) instead of drawing
    initial cells. `options`: method, recorded days and numerics (`AgentOptions`). Same `key`
    -> same result, independent of `options.chunk_size` (replicate i uses `fold_in(key, i)`).
    Replicates run in lock-step chunks; `progress(done, total)` is called after each chunk.
    """
    het = heterogeneity or Heterogeneity()
    o = options
    method, switch_size, leap_days = o.method, o.switch_size, o.leap_days
    n = int(n_replicates)
    if n < 1 or not t1 > t0:
        raise ValueError("need n_replicates >= 1 and t1 > t0")
    count_days = np.asarray(o.count_days, float)
    assess_days = np.asarray(o.assess_days, float)
    for name, days in (("count_days", count_days), ("assess_days", assess_days)):
        if days.size and (days.min() < t0 or days.max() > t1):
            raise ValueError(f"{name} must lie in [t0, t1] = [{t0:g}, {t1:g}]")
    rec_days = np.unique(np.concatenate([count_days, assess_days, [t1]]))
    dosing = schedule if isinstance(schedule, Dosing) else Dosing.from_schedule(schedule)
    batched = _is_batched(params)
    params = _broadcast(params, n) if batched else params
    if initial is None and np.any(np.asarray(params["history_days"]) > 0):
        initial = _history(model, params, dosing, n, key, t0, het, o)
    # run n_run >= n lanes (padding wraps around; lane i always uses fold_in(key, i), so the
    # first n results do not depend on the padding)
    n_run = _bucket(n)
    pad = np.arange(n_run) % n
    if batched and n_run > n:
        params = take_rows(params, pad)
    end = schedule.end_of_treatment if isinstance(schedule, Schedule) else _last_dose(dosing)
    grid = hazard_nodes(t0, t1, end, fine_hours=o.hazard_hours)
    spec = np.array([t0, grid.h_fine, grid.t_split, grid.h_coarse, grid.n_fine], float)
    table = _tables(model, _constant_exponents(params), dosing, jnp.asarray(grid.nodes),
                    jnp.asarray(spec), batched)

    k_init, k_run, k_asp = _replicate_keys(key, n_run)
    if initial is None:
        n0 = _initial_counts(params, k_init, o.initial_count, batched)
        n0_host = np.asarray(n0)
        kpd = np.asarray(params["k_pd"])
        extra = o.extra_slots if o.extra_slots is not None else (8 if np.any(kpd > 0) else 0)
        if method == "exact":
            size = int(n0_host[:, :2].sum(1).max()) + 1 + extra
        else:
            size = int(n0_host[:, :2].max())
        size = 32 * (size // 32 + 1)  # bucket the capacity: fewer recompilations
        ca, crp = het.classes()
        states = _initial_states(method, n0, k_init, het, ca, crp, size, o.clone_slots,
                                 float(t0))
    else:
        if initial.method != method:
            raise ValueError(f"initial state is from method {initial.method!r}, not {method!r}")
        states = dict(initial.arrays)
        if n_run > n:
            states = take_rows(states, pad)
        if method == "exact" and o.extra_slots:
            widen = lambda x, v: jnp.concatenate(  # noqa: E731
                [x, jnp.full((n_run, o.extra_slots), v, x.dtype)], axis=1)
            states.update(kind=widen(states["kind"], E.EMPTY),
                          count=widen(states["count"], 0.0), a=widen(states["a"], 1.0),
                          rp=widen(states["rp"], 1.0),
                          switch_day=widen(states["switch_day"], jnp.inf))
    max_events = o.max_events
    if max_events is None:
        max_events = 2_000_000 if method == "exact" else 200_000
    chunk_size = o.chunk_size
    if chunk_size is None:  # lock-step loops: wide enough to amortise each iteration
        chunk_size = 8192 if jax.default_backend() == "cpu" else 131072
    chunk = int(min(max(chunk_size, 1), n_run))
    # each device gets an equal share of a chunk's lanes
    if _sharded(o.backend, method, o.pool_leap_above < float("inf")):
        chunk = -(-chunk // jax.local_device_count()) * jax.local_device_count()
    # lock-step chunks run until their busiest lane is done: group lanes of similar load
    # (results per lane do not depend on the grouping)
    order = np.asarray(_load_order(method, states, n))
    identity = bool(np.all(order == np.arange(n)))
    outs = []
    # only passed when on: the compiled programs of the default stay those of before
    f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
    pool = (f64(o.pool_leap_above),) if o.pool_leap_above < float("inf") else ()
    for start in range(0, n, chunk):
        sl = order[np.arange(start, start + chunk) % n]  # pad the last chunk by wrapping
        if sl.size == n_run and identity and np.array_equal(sl, np.arange(n_run)):
            # the whole batch, in order: nothing to take
            tb, st, kr = table, states, k_run
        else:
            tb, st, kr = _take_lanes((table if batched else None, states, k_run),
                                     jnp.asarray(sl))
            tb = tb if batched else table
        out = _run_chunk(method, tb, 0 if batched else None, st, kr, f64(t0), f64(t1),
                         jnp.asarray(rec_days), f64(switch_size), jnp.asarray(max_events),
                         f64(leap_days), f64(max(o.late_leap_days, leap_days)), o.backend,
                         int(o.kernel_block), *pool)
        outs.append(out)  # stays on the device
        if progress is not None:
            jax.block_until_ready(out)  # results stay on the device: report finished work
            progress(min(start + chunk, n), n)
    cat = lambda *xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=0)  # noqa: E731
    out = jax.tree_util.tree_map(cat, *outs)
    # rows for replicates 0..n_run-1 (replicate i % n): chunk lane j holds replicate
    # order[j % n], so replicate order[j] first appears at lane j. One gather, none when the
    # chunks already hold the replicates in order.
    inverse = np.empty(n, np.int64)
    inverse[order] = np.arange(n)
    rows = inverse[pad]
    if not np.array_equal(rows, np.arange(n_run)):
        out = jax.tree_util.tree_map(lambda x: x[jnp.asarray(rows)], out)
    final, records, status, n_events = out
    return _outcomes(params, batched, final, records, status, n_events, rec_days, count_days,
                     assess_days, k_asp, switch_size, t1, method, n, dosing, t0)


def _history(model, params, dosing: Dosing, n: int, key, t0: float, het: Heterogeneity,
             o: AgentOptions) -> AgentState:
    """The replicates' state at t0 after the untreated history of `history_days` T
    (`observables.history`, the mean field's closed form of the same period): a run from t0 - T
    without drug, starting from dormant cells only, Poisson (or rounded) with mean
    dormant_initial / E[D(t0)] per initial cell, so that the expected dormant load at t0 is
    `dormant_initial`. Lesions detected before t0 are removed: the outcomes are conditional on
    no relapse before t0, as the mean field's hazard is (for a Poisson process of lesions the
    same law). `params` may be batched over the n replicates; T must be the same for all."""
    hist = np.asarray(params["history_days"], float)
    if np.ptp(hist) > 0:
        raise ValueError("history_days must be the same for every replicate of one call")
    for name in ("reactivating_initial", "proliferating_initial", "k_pd"):
        if np.any(np.asarray(params[name]) > 0):
            raise ValueError(f"a history (history_days > 0) starts from dormant cells only and "
                             f"assumes no P -> D return: {name} must be 0")
    T = float(hist.flat[0])
    h = O.history(params)
    start = params.with_values(dormant_initial=h.scale, history_days=jnp.zeros_like(
        jnp.asarray(params["history_days"])))
    none = Dosing(*(type(ev)(ev.times, jnp.zeros_like(ev.amount), ev.per_kg, ev.oral)
                    for ev in (dosing.hcq, dosing.eve)))
    # its own stream (salt "HI"): the run after the history keeps `key`
    pre = simulate_agents(model, start, none, n_replicates=n, key=jax.random.fold_in(key, 0x4849),
                          t1=t0, t0=t0 - T, heterogeneity=het,
                          options=dataclasses.replace(o, count_days=(), assess_days=()))
    states = {k: np.asarray(v) for k, v in pre.final_state.arrays.items()}
    kind_key = "kind" if o.method == "exact" else "clone_kind"
    count_key = "count" if o.method == "exact" else "clone_count"
    grow = np.asarray(params["lesion_growth_rate"], float)
    detect = np.asarray(params["detection_size"], float)
    if grow.ndim:
        grow, detect = grow[:, None], detect[:, None]
    # the relapse day of `_device_outcomes`: no drug in the history, so the growth clock is the
    # identity there (kappa(t) = t) and the day is the switch day plus tau
    detected = (states[kind_key] == E.LESION) & (
        states["switch_day"] + np.asarray(O.lesion_growth_days(o.switch_size, detect, grow))
        <= t0)
    states[kind_key] = np.where(detected, E.EMPTY, states[kind_key])
    states[count_key] = np.where(detected, 0.0, states[count_key])
    states["switch_day"] = np.where(detected, np.inf, states["switch_day"])
    if o.method == "exact":
        left = np.any(states["kind"] > E.EMPTY, axis=1)
    else:
        left = (states["d"].sum(1) + states["r"].sum(1) > 0) | np.any(
            states["clone_kind"] > E.EMPTY, axis=1)
    states["clearance_day"] = np.where(left, states["clearance_day"],
                                       np.minimum(states["clearance_day"], t0))
    return AgentState({k: jnp.asarray(v) for k, v in states.items()}, o.method)


@jax.jit
def _lesion_lanes(kind):
    return jnp.any(kind == E.LESION, axis=1)


def _clocked_lesions(clock, sw, rec_days, tau):
    """Under a growth clock (one replicate's, or shared): each lesion's relapse day (the first
    t with kappa(t) - kappa(switch day) >= tau, (..., S)) and its clock age
    kappa(t) - kappa(switch day) at the record days ((..., R, S))."""
    relapse = clock.reached(sw, tau)
    age = clock.elapsed(sw[..., None, :], rec_days[:, None])
    return relapse, age


@eqx.filter_jit
def _device_outcomes(growth, detect, fraction, dispersion, final, records, lesion_rows, k_asp,
                     rec_days, count_idx, assess_idx, switch_size, t1, kind_key, clock=None,
                     clock_rows=None):
    """Relapse days, cell counts (lesions at their deterministic size), marrow P, cells in
    undetected lesions and aspirates of every lane, on the device (only these arrays go to the
    host). Lesions are rare: their sizes are
    computed on `lesion_rows` only (padded with out-of-range rows, which are dropped).

    Lesions grow on the growth clock (`model.clock`): `clock` one `GrowthClock` shared by
    every replicate, or `clock_rows` = (EVE dosing, t0, t1, parameters of the lesion rows (k,))
    to build each lesion row's own; neither: no EVE, kappa(t) = t (the untreated law)."""
    switch = jnp.where(final[kind_key] == E.LESION, final["switch_day"], jnp.inf)  # (n, S)
    sw = switch.at[lesion_rows].get(mode="fill", fill_value=jnp.inf)  # (k, S)
    g, cap = (x.at[lesion_rows].get(mode="clip")[:, :, None] if x.ndim else x
              for x in (growth, detect))
    dt = rec_days[None, :, None] - sw[:, None, :]  # (k, R, S); -inf where no lesion
    if clock is None and clock_rows is None:
        # per lesion: each lesion's own switch day plus its growth to detection (the ODE's
        # mean field reads the same growth law in its lag law, see observables.relapse_lag)
        relapse_day = jnp.min(switch + O.lesion_growth_days(switch_size, detect, growth),
                              axis=1)
        grown = switch_size * jnp.exp(g * jnp.maximum(dt, 0.0))
        # undetected: before the lesion's relapse day (switch day + growth to detection)
        undetected_at = (dt >= 0) & (dt < O.lesion_growth_days(switch_size, cap, g))
    else:
        tau = O.lesion_growth_days(switch_size, cap, g)  # (k, 1, 1) or scalar
        if clock is not None:
            rel, age = _clocked_lesions(clock, sw, rec_days, tau[..., 0] if jnp.ndim(tau)
                                        else tau)
        else:
            eve, c0, c1, rows = clock_rows
            dyn, static = eqx.partition(rows, eqx.is_array)

            def one(args):
                d, s_row, ta = args
                ck = C.dosing_clock(eqx.combine(d, static), eve, c0, c1)
                return _clocked_lesions(ck, s_row, rec_days, ta)

            rel, age = jax.lax.map(one, (dyn, sw, tau[:, 0, 0]), batch_size=64)
        # each lesion's relapse day on the clock; rows without a lesion stay at inf
        relapse_day = jnp.full(switch.shape[0], jnp.inf, rel.dtype).at[lesion_rows].set(
            jnp.min(rel, axis=1), mode="drop")
        grown = switch_size * jnp.exp(g * jnp.maximum(age, 0.0))
        undetected_at = (dt >= 0) & (age < tau)
    relapsed = relapse_day <= t1
    size = jnp.where(dt >= 0, jnp.minimum(grown, cap), 0.0)
    undetected = jnp.where(undetected_at, grown, 0.0)
    lesion_cells = jnp.zeros(records.shape[:2]).at[lesion_rows].add(undetected.sum(axis=2),
                                                                     mode="drop")
    # the aspirate samples the marrow: D, R and the clones below the switch size, not lesions
    lam = O.aspirate_mean(records[:, assess_idx, :].sum(axis=2), fraction)
    marrow_p = records[:, count_idx, 2]
    records = records.at[lesion_rows, :, 2].add(size.sum(axis=2), mode="drop")
    # negative binomial (gamma-mixed Poisson) per aspirate; dispersion 0: Poisson, same draws
    disp = jnp.broadcast_to(dispersion, (lam.shape[0], 1) if jnp.ndim(dispersion) else ())
    asp = jax.vmap(O.draw_counts, in_axes=(0, 0, 0 if disp.ndim else None))(k_asp, lam, disp)
    clearance_day = final["clearance_day"]
    cleared = jnp.isfinite(clearance_day) & (clearance_day <= t1)
    return dict(relapsed=relapsed, relapse_day=jnp.where(relapsed, relapse_day, jnp.inf),
                cleared=cleared, clearance_day=jnp.where(cleared, clearance_day, jnp.inf),
                counts=records[:, count_idx, :], marrow_proliferating=marrow_p,
                lesion_cells=lesion_cells[:, count_idx], aspirate_count=asp)


@eqx.filter_jit
def _shared_clock(params, eve, t0, t1):
    return C.dosing_clock(params, eve, t0, t1)


def _outcomes(params, batched, final, records, status, n_events, rec_days, count_days,
              assess_days, k_asp, switch_size, t1, method, n, dosing=None,
              t0=0.0) -> AgentResult:
    """Outcomes of replicates 0..n-1 from the rows of all n_run (>= n) lanes; `params` has
    n_run rows when batched. `dosing`: the run's, for the lesions' growth clock (None or no
    EVE: the identity clock)."""
    get = lambda name: jnp.asarray(params[name], jnp.float64)[:, None] if batched else \
        jnp.asarray(float(params[name]), jnp.float64)  # noqa: E731
    kind_key = "kind" if method == "exact" else "clone_kind"
    lesion = np.nonzero(np.asarray(_lesion_lanes(final[kind_key])))[0]
    any_lesion = lesion.size > 0
    n_run = len(status)
    k = 8 if lesion.size <= 8 else 1 << (lesion.size - 1).bit_length()  # few shapes
    lesion = np.concatenate([lesion, np.full(k - lesion.size, n_run)])
    idx = {d: j for j, d in enumerate(rec_days)}
    clock = clock_rows = None
    if dosing is not None and any_lesion and C.has_eve(dosing):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        eve = dosing.eve
        if batched:  # each lesion row's own clock (its PK and EVE-effect parameters)
            rows = jax.tree_util.tree_map(
                lambda x: jnp.asarray(x)[jnp.asarray(np.minimum(lesion, n_run - 1))]
                if eqx.is_array(x) and jnp.ndim(x) else x, params)
            clock_rows = (eve, f64(t0), f64(t1), rows)
        else:
            clock = _shared_clock(params, eve, f64(t0), f64(t1))
    out = _device_outcomes(get("lesion_growth_rate"), get("detection_size"),
                           get("aspirate_fraction"), get("aspirate_dispersion"), final,
                           records, lesion, k_asp,
                           jnp.asarray(rec_days), np.array([idx[d] for d in count_days], int),
                           np.array([idx[d] for d in assess_days], int),
                           jnp.asarray(switch_size, jnp.float64), jnp.asarray(t1, jnp.float64),
                           kind_key, clock, clock_rows)
    out, status, n_events = jax.device_get((out, status, n_events))
    out = {k: v[:n] for k, v in out.items()}
    state = AgentState(final if n == n_run else {k: v[:n] for k, v in final.items()}, method)
    return AgentResult(cleared=out["cleared"], clearance_day=out["clearance_day"],
                       relapsed=out["relapsed"], relapse_day=out["relapse_day"],
                       counts=out["counts"], marrow_proliferating=out["marrow_proliferating"],
                       lesion_cells=out["lesion_cells"], aspirate_count=out["aspirate_count"],
                       dtc_positive=out["aspirate_count"] >= 1, final_state=state,
                       count_days=count_days, assess_days=assess_days, status=status[:n],
                       n_events=n_events[:n], t1=float(t1), method=method)
