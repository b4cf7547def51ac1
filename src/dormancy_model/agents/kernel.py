"""The fast agent loop (`loops.fast_step`) as one GPU kernel.

On a GPU the vmapped lock-step loop spends its time moving every replicate's state through
device memory at each event and synchronising with the host for the loop condition (and for
the binary search of each event time). Here the same algorithm runs in `engine.pallas`'s
kernel: each program keeps `block` replicates in registers and processes their events until all
are done. For Triton every per-replicate vector is a tuple of (B,) arrays (structure of arrays,
Python loops over the K trait classes, Q clone slots and R record days), the hazard table is
read with row gathers, and the key of each event is derived with threefry-2x32 written out
(`fold_in` equivalent) followed by the SplitMix64 expansion of `loops._uniforms`: a replicate
draws exactly the random numbers of the vmapped loop, and the tests check that both give the
same histories.

Used by `simulate_agents(method="fast")` on a GPU when all replicates share one hazard table
(one parameter set) and K <= 16; otherwise the vmapped loop runs.

What is written once: the laws of an event are elementwise functions shared with the vmapped
step, each called here with (B,) columns: the channel of a class event and its change of the
pool (`loops.event_channel`, `class_change`, `class_weights`, `class_group_weights`), the clone
leap (`loops.clone_leap`: returns, Kendall law, lineage sum, lesion switch), the leap end, the
record and clearance rules, the SplitMix64 stream (`loops.splitmix_halves`) and the hazard-table
lookups (`hazard.cell_index`, `channel_averages`, `next_time`, on the table view `_Table`).
Sharing them cost nothing measurable on the CPU (agents_bench fast method, XLA loop, 8,192
replicates: new / old histories/s median 1.01 over 9 alternating pairs; the exact method, which
now uses `event_channel`, was 1.1-1.3x faster); two pieces keep a form per layout inside the
shared function: the lineage sum of `loops.leap_clone` (a loop here, one vector in the vmapped
step, where the loop cost 30%) and the group sums of `hazard._dot` (in order here, one array
reduction there, whose summation order the vmapped results keep bit for bit).

What is written twice, and why: `fast_step_soa` keeps the slot bookkeeping (earliest slot,
one-hot picks and updates over pools and clones, the first free clone slot) over tuples of
columns, where `loops.fast_step` uses small (K,) and (Q,) arrays. Triton needs the tuples
and XLA on a CPU does not: this whole kernel step run by the XLA loop on the 2-core CPU was 5.8x
slower than the vmapped form (1,961 vs 11,452 histories/s, clever-combo, 8,192 replicates).
`threefry2x32` / `fold_in` restate `jax.random.fold_in` (the kernel cannot call it);
`test_kernel_random_numbers_match_jax` holds them to the same bits, and
`test_fast_kernel_equals_vmapped_loop` holds the two steps to the same histories.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.agents import hazard as H
from dormancy_model.agents import loops as E
from dormancy_model.engine.pallas import pallas_lane_loop, take_rows

MAX_CLASSES = 16


# ------------------------------------------------------------------------- random numbers

def _rotl(x, r):
    return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds; Salmon et al. 2011) on uint32 arrays, as in `jax.random`."""
    rot = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rot[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def fold_in(k0, k1, data):
    """`jax.random.fold_in(key, data)` of raw uint32 keys (k0, k1), elementwise."""
    return threefry2x32(k0, k1, jnp.zeros_like(k0), data.astype(jnp.uint32))


def uniforms(k0, k1, n):
    """The n uniforms `loops._uniforms` draws from key (k0, k1), as a tuple (the same
    SplitMix64 halves, one output at a time)."""
    seed = E.splitmix_seed(k0, k1)
    halves = [E.splitmix_halves(seed, jnp.int64(step)) for step in E.splitmix_steps((n + 1) // 2)]
    return tuple(E.to_unit(b) for b in ([lo for lo, _ in halves] + [hi for _, hi in halves])[:n])


# ------------------------------------------------------------------------- hazard table

class _Table:
    """The hazard table in kernel memory as a table view for `hazard.cell_index`,
    `channel_averages` and `next_time`: rows are tuples of (B,) columns (row gathers)."""

    def __init__(self, sh):
        self.sh = sh
        self.n_nodes = sh["n_nodes"]
        self.grid = sh["spec"]

    def node(self, k):
        return take_rows(self.sh["nodes"], k)[0]

    def row(self, name, k):
        return take_rows(self.sh[name], k)


# ------------------------------------------------------------------------- one event

def _sum(xs):
    return functools.reduce(operator.add, xs)


def _pick(hot, arr):
    return _sum([jnp.where(h, a, jnp.zeros_like(a)) for h, a in zip(hot, arr, strict=True)])


def fast_step_soa(tab: _Table, c: dict, ca, crp, sh) -> dict:
    """`loops.fast_step` for a block of replicates in structure-of-arrays form: the same laws
    (the elementwise functions of `loops` and `hazard`), the slot bookkeeping over tuples."""
    t1, rec_t, switch_size = sh["t1"], sh["rec_t"], sh["switch_size"]
    K, Q = len(ca), len(c["ckind"])
    leap_end = lambda t: E._leap_end(t, tab.grid[2], t1, rec_t, sh["leap_days"],  # noqa: E731
                                   sh["late_leap_days"])
    all_next = list(c["class_next"]) + list(c["cnext"])
    T, i = all_next[0], jnp.zeros(all_next[0].shape, jnp.int32)
    for j in range(1, K + Q):
        better = all_next[j] < T
        i, T = jnp.where(better, j, i), jnp.where(better, all_next[j], T)
    finish = T > t1
    d, r, ckind, ccount = list(c["d"]), list(c["r"]), list(c["ckind"]), list(c["ccount"])
    counts = (_sum(d), _sum(r), _sum([jnp.where(ckind[q] == E.PROLIFERATING, ccount[q], 0.0)
                                      for q in range(Q)]))
    records = []
    for j, rt in enumerate(rec_t):
        due = E.record_due(rt, c["t"], T)
        records.append(tuple(jnp.where(due, counts[x], c["records"][j][x]) for x in range(3)))
    k0, k1 = fold_in(c["key0"], c["key1"], c["it"])
    u = uniforms(k0, k1, E.EVENT_UNIFORMS)
    is_class = i < K
    k = jnp.minimum(i, K - 1)
    hk = [k == m for m in range(K)]
    qi = jnp.clip(i - K, 0, Q - 1)
    hq = [qi == m for m in range(Q)]
    # --- class pool event
    dk, rk, cak, crpk = _pick(hk, d), _pick(hk, r), _pick(hk, ca), _pick(hk, crp)
    ch = E.event_channel(E.class_weights(dk, rk, cak, crpk),
                         tab.row("rate", H.cell_index(tab, T)), u[E.U_CHANNEL])
    fresh_k = functools.reduce(operator.or_, [h & f for h, f in zip(hk, c["class_fresh"],
                                                                     strict=True)])
    act_c = (~finish) & is_class & ~fresh_k
    dd, dr = E.class_change(ch)
    d = [x + jnp.where(h & act_c, dd, 0.0) for x, h in zip(d, hk, strict=True)]
    r = [x + jnp.where(h & act_c, dr, 0.0) for x, h in zip(r, hk, strict=True)]
    commit = act_c & (ch == H.COMMIT)
    # --- clone leap
    act_l = (~finish) & ~is_class
    since = _pick(hq, c["csince"])
    le = leap_end(T)
    ret, n_new, new_kind, became_lesion, sw, nxt = E.clone_leap(
        _pick(hq, ccount), since, T, H.channel_averages(tab, since, T, H.P_CHANNELS), u,
        switch_size, le)
    sel = [h & act_l for h in hq]
    ckind = [jnp.where(s, new_kind, x).astype(x.dtype) for s, x in zip(sel, ckind, strict=True)]
    ccount = [jnp.where(s, n_new, x) for s, x in zip(sel, ccount, strict=True)]
    switch_day = [jnp.where(s & became_lesion, sw, x)
                  for s, x in zip(sel, c["switch_day"], strict=True)]
    csince = [jnp.where(s, T, x) for s, x in zip(sel, c["csince"], strict=True)]
    cnext = [jnp.where(s, nxt, x) for s, x in zip(sel, c["cnext"], strict=True)]
    cls_ret = _pick(hq, c["ccls"])
    got_ret = act_l & (ret > 0)
    hr = [(cls_ret == m) & got_ret for m in range(K)]
    d = [x + jnp.where(h, ret, 0.0) for x, h in zip(d, hr, strict=True)]
    # --- new clone from a commitment (first empty slot)
    empty = [x == E.EMPTY for x in ckind]
    j, found = jnp.zeros_like(qi), jnp.zeros_like(commit)
    for m in range(Q):
        j = jnp.where(empty[m] & ~found, m, j)
        found = found | empty[m]
    hj = [(j == m) & commit & found for m in range(Q)]
    ckind = [jnp.where(h, E.PROLIFERATING, x).astype(x.dtype) for h, x in zip(hj, ckind,
                                                                             strict=True)]
    ccount = [jnp.where(h, 1.0, x) for h, x in zip(hj, ccount, strict=True)]
    ccls = [jnp.where(h, k, x).astype(x.dtype) for h, x in zip(hj, c["ccls"], strict=True)]
    csince = [jnp.where(h, T, x) for h, x in zip(hj, csince, strict=True)]
    cnext = [jnp.where(h, le, x) for h, x in zip(hj, cnext, strict=True)]
    status = jnp.where(commit & ~found, E.STATUS_OVERFLOW, c["status"]).astype(c["status"].dtype)
    # --- redraw the class pool whose counts changed (memoryless)
    w_new = E.class_group_weights(_pick(hk, d), _pick(hk, r), cak, crpk)
    tk = H.next_time(tab, w_new, T, -jnp.log(u[E.U_REDRAW]))
    upd = [h & (~finish) & is_class for h in hk]
    class_next = [jnp.where(up, tk, x) for up, x in zip(upd, c["class_next"], strict=True)]
    class_fresh = [jnp.where(up, False, x) for up, x in zip(upd, c["class_fresh"], strict=True)]
    class_next = [jnp.where(h, T, x) for h, x in zip(hr, class_next, strict=True)]
    class_fresh = [x | h for x, h in zip(class_fresh, hr, strict=True)]
    any_left = (_sum(d) + _sum(r) > 0) | functools.reduce(operator.or_,
                                                          [x != E.EMPTY for x in ckind])
    clearance_day = E.first_clearance((~finish) & ~any_left, c["clearance_day"], T)
    return dict(d=tuple(d), r=tuple(r), class_next=tuple(class_next),
                class_fresh=tuple(class_fresh), ckind=tuple(ckind), ccount=tuple(ccount),
                ccls=tuple(ccls), csince=tuple(csince), cnext=tuple(cnext),
                switch_day=tuple(switch_day), t=jnp.where(finish, c["t"], T),
                records=tuple(records), it=c["it"] + 1, done=finish, status=status,
                clearance_day=clearance_day, key0=c["key0"], key1=c["key1"])


# ------------------------------------------------------------------------- driver

_VECTORS = ("d", "r", "class_next", "class_fresh", "ckind", "ccount", "ccls", "csince", "cnext",
            "switch_day")


def to_soa(carry: dict) -> tuple[dict, tuple]:
    """Vmapped fast carry -> (structure-of-arrays carry, (class_a, class_rp) columns)."""
    cols = lambda a: tuple(a[:, j] for j in range(a.shape[1]))  # noqa: E731
    soa = {k: cols(carry[k]) for k in _VECTORS}
    rec = carry["records"]
    soa["records"] = tuple(tuple(rec[:, j, x] for x in range(3)) for j in range(rec.shape[1]))
    for k in ("t", "it", "done", "status", "clearance_day"):
        soa[k] = carry[k]
    soa["key0"], soa["key1"] = carry["key"][:, 0], carry["key"][:, 1]
    return soa, (cols(carry["class_a"]), cols(carry["class_rp"]))


def from_soa(soa: dict, consts: tuple) -> dict:
    out = {k: jnp.stack(soa[k], axis=1) for k in _VECTORS}
    out["records"] = jnp.stack([jnp.stack(r, axis=1) for r in soa["records"]], axis=1)
    for k in ("t", "it", "done", "status", "clearance_day"):
        out[k] = soa[k]
    out["key"] = jnp.stack([soa["key0"], soa["key1"]], axis=1)
    out["class_a"], out["class_rp"] = (jnp.stack(x, axis=1) for x in consts)
    return out


def supported(table, table_axis, carry: dict) -> bool:
    """The kernel handles one shared table, raw uint32 keys and at most MAX_CLASSES classes."""
    key = carry["key"]
    return (table_axis is None and key.dtype == jnp.uint32 and key.ndim == 2
            and carry["d"].shape[1] <= MAX_CLASSES)


def shared_inputs(table: H.HazardTable, t1, rec_t, switch_size, leap_days, late_leap_days,
                  max_events) -> dict:
    n_rec = int(np.shape(rec_t)[0])
    return dict(nodes=table.nodes[:, None], cum=table.cum, rate=table.rate, gcum=table.gcum,
                grate=table.grate, n_nodes=int(table.nodes.shape[0]),
                spec=tuple(table.spec[j] for j in range(5)), t1=t1,
                rec_t=tuple(rec_t[j] for j in range(n_rec)), switch_size=switch_size,
                leap_days=leap_days, late_leap_days=late_leap_days, max_events=max_events)


def run_fast_kernel(table: H.HazardTable, carry: dict, t1, rec_t, switch_size, leap_days,
                    late_leap_days, max_events, block: int = 64) -> dict:
    """Run the vmapped fast carry to the end in the kernel (see module doc); returns it in the
    vmapped layout for `fast_final`."""
    soa, consts = to_soa(carry)
    shared = shared_inputs(table, t1, rec_t, switch_size, leap_days, late_leap_days, max_events)

    def make_loop(sh):
        tab = _Table(sh)

        def active(c):
            return (~c["done"]) & (c["it"] < sh["max_events"])

        def body(k, c):
            new = fast_step_soa(tab, c, k[0], k[1], sh)
            a = active(c)
            return jax.tree_util.tree_map(lambda x, y: jnp.where(a, x, y), new, c)

        return body, active

    out = pallas_lane_loop(make_loop, soa, consts, shared, block=block)
    return from_soa(out, consts)
