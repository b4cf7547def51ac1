"""The fast agent loop (`agents_engine.fast_step`) as one GPU kernel.

On a GPU the vmapped lock-step loop spends its time moving every replicate's state through
device memory at each event and synchronising with the host for the loop condition (and for
the binary search of each event time). Here the same algorithm runs in `engine_pallas`'s
kernel: each program keeps `block` replicates in registers and processes their events until all
are done. For Triton every per-replicate vector is a tuple of (B,) arrays (structure of arrays,
Python loops over the K trait classes, Q clone slots and R record days), the hazard table is
read with row gathers, and the key of each event is derived with threefry-2x32 written out
(`fold_in` equivalent) followed by the same SplitMix64 expansion as `_uniforms`: a replicate
draws exactly the random numbers of the vmapped loop, and the tests check that both give the
same histories.

Used by `simulate_agents(method="fast")` on a GPU when all replicates share one hazard table
(one parameter set) and K <= 16; otherwise the vmapped loop runs.

This is a second form of `fast_step` (and of the `HazardTable` lookups), kept because Triton
needs it and XLA on a CPU does not: run by the XLA loop on the 2-core CPU it was 5.8x slower
than the vmapped form (1,961 vs 11,452 histories/s, clever-combo, 8,192 replicates). The test
`test_fast_kernel_equals_vmapped_loop` holds the two to the same histories; change both.
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


def _i64(x: int):
    """A 64-bit constant as the signed integer of the same bits (Triton constants are
    signed; add, multiply and xor are the same bits in both, shifts are made logical)."""
    x %= 1 << 64
    return jnp.int64(x - (1 << 64) if x >= 1 << 63 else x)


def uniforms(k0, k1, n):
    """The n uniforms `agents_engine._uniforms` draws from key (k0, k1), as a tuple (SplitMix64
    in wrapping int64 arithmetic: the same bits as uint64)."""
    srl = jax.lax.shift_right_logical
    seed = (k0.astype(jnp.int64) << jnp.int64(32)) | k1.astype(jnp.int64)
    m = (n + 1) // 2
    lo, hi = [], []
    for j in range(1, m + 1):
        z = seed + _i64(E._SM_GAMMA * j)
        z = (z ^ srl(z, jnp.int64(30))) * _i64(E._SM_M1)
        z = (z ^ srl(z, jnp.int64(27))) * _i64(E._SM_M2)
        z = z ^ srl(z, jnp.int64(31))
        lo.append(z & jnp.int64(0xFFFFFFFF))
        hi.append(srl(z, jnp.int64(32)))
    return tuple((b.astype(jnp.float64) + 0.5) * (1.0 / 4294967296.0) for b in (lo + hi)[:n])


# ------------------------------------------------------------------------- hazard table

class _Table:
    """`HazardTable` lookups for (B,) arrays of times; arrays or kernel refs (row gathers)."""

    def __init__(self, sh):
        self.sh = sh
        self.n = sh["n_nodes"]
        self.t_split = sh["spec"][2]

    def node(self, k):
        return take_rows(self.sh["nodes"], k)[0]

    def cell(self, t):
        return H.grid_cell(t, self.sh["spec"], self.n, self.node)

    def averages(self, t0, t1, channels):
        """`HazardTable.averages` of the given channels."""
        k0, k1 = self.cell(t0), self.cell(t1)
        c0, r0 = take_rows(self.sh["cum"], k0), take_rows(self.sh["rate"], k0)
        c1, r1 = take_rows(self.sh["cum"], k1), take_rows(self.sh["rate"], k1)
        n0, n1 = self.node(k0), self.node(k1)
        dt = jnp.maximum(t1 - t0, 1e-300)
        return tuple(jnp.where(t1 > t0, ((c1[c] + (t1 - n1) * r1[c])
                                         - (c0[c] + (t0 - n0) * r0[c])) / dt, r0[c])
                     for c in channels)

    def next_time(self, wg, t, e):
        """`HazardTable.next_time` for group weights wg (5-tuple of (B,))."""
        n = self.n
        dot = lambda row: functools.reduce(  # noqa: E731
            operator.add, [row[g] * wg[g] for g in range(H.N_GROUPS)])
        k0 = self.cell(t)
        g0, r0 = take_rows(self.sh["gcum"], k0), take_rows(self.sh["grate"], k0)
        dtn = t - self.node(k0)
        target = functools.reduce(operator.add, [(g0[g] + dtn * r0[g]) * wg[g]
                                                 for g in range(H.N_GROUPS)]) + e
        cw = lambda k: dot(take_rows(self.sh["gcum"], k))  # noqa: E731
        lo = H.bisect_nodes(cw, target, k0, jnp.full_like(k0, n - 1), n)
        k = jnp.minimum(lo, n - 2)
        r = dot(take_rows(self.sh["grate"], k))
        s = self.node(k) + (target - cw(k)) / jnp.where(r > 0, r, 1.0)
        never = (lo >= n - 1) | (r <= 0) | (s > self.node(jnp.full_like(k, n - 1)))
        return jnp.where(never, jnp.inf, jnp.maximum(s, t))


# ------------------------------------------------------------------------- one event

def _sum(xs):
    return functools.reduce(operator.add, xs)


def _pick(hot, arr):
    return _sum([jnp.where(h, a, jnp.zeros_like(a)) for h, a in zip(hot, arr, strict=True)])


def _leap_clone(u, n, alpha, beta):
    """`agents_engine.leap_clone` with u a tuple of 2 * 16 + 2 uniforms (lineages summed in a
    loop; integer-valued, so exactly as the vector sum)."""
    m = E.N_EXACT_LINEAGES
    exact = jnp.zeros_like(n)
    for j in range(m):
        exact = exact + jnp.where(j < n, E.lineage_size(u[j], u[m + j], alpha, beta), 0.0)
    approx = E.clone_size_normal(n, alpha, beta, u[2 * m], u[2 * m + 1])
    return jnp.where(n <= m, exact, approx)


def fast_step_soa(tab: _Table, c: dict, ca, crp, sh) -> dict:
    """`agents_engine.fast_step` for a block of replicates in structure-of-arrays form."""
    t1, rec_t, switch_size = sh["t1"], sh["rec_t"], sh["switch_size"]
    K, Q = len(ca), len(c["ckind"])
    leap_end = lambda t: E._leap_end(t, tab.t_split, t1, rec_t, sh["leap_days"],  # noqa: E731
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
        mask = (rt >= c["t"]) & (rt < T)
        records.append(tuple(jnp.where(mask, counts[x], c["records"][j][x]) for x in range(3)))
    k0, k1 = fold_in(c["key0"], c["key1"], c["it"])
    u = uniforms(k0, k1, 7 + 2 * E.N_EXACT_LINEAGES)
    is_class = i < K
    k = jnp.minimum(i, K - 1)
    hk = [k == m for m in range(K)]
    qi = jnp.clip(i - K, 0, Q - 1)
    hq = [qi == m for m in range(Q)]
    # --- class pool event
    dk, rk, cak, crpk = _pick(hk, d), _pick(hk, r), _pick(hk, ca), _pick(hk, crp)
    rate = take_rows(tab.sh["rate"], tab.cell(T))
    z = jnp.zeros_like(dk)
    w = (dk * crpk, dk, dk * cak, rk, rk, rk, z, z, z)
    cum, acc = [], None
    for ch_ in range(H.N_CHANNELS):
        p = w[ch_] * rate[ch_]
        acc = p if acc is None else acc + p
        cum.append(acc)
    thr = u[0] * cum[-1]
    ch = jnp.minimum(_sum([(cv < thr).astype(jnp.int32) for cv in cum]), H.N_CHANNELS - 1)
    fresh_k = functools.reduce(operator.or_, [h & f for h, f in zip(hk, c["class_fresh"],
                                                                     strict=True)])
    act_c = (~finish) & is_class & ~fresh_k
    dd = jnp.where((ch == H.REACT) | (ch == H.DEATH_D0) | (ch == H.DEATH_DEFICIT), -1.0,
                   jnp.where(ch == H.RETURN_RD, 1.0, 0.0))
    dr = jnp.where(ch == H.REACT, 1.0, jnp.where((ch == H.RETURN_RD) | (ch == H.COMMIT)
                                                 | (ch == H.DEATH_R), -1.0, 0.0))
    d = [x + jnp.where(h & act_c, dd, 0.0) for x, h in zip(d, hk, strict=True)]
    r = [x + jnp.where(h & act_c, dr, 0.0) for x, h in zip(r, hk, strict=True)]
    commit = act_c & (ch == H.COMMIT)
    # --- clone leap
    act_l = (~finish) & ~is_class
    since, n = _pick(hq, c["csince"]), _pick(hq, ccount)
    tau = T - since
    lam, mu, kpd = tab.averages(since, T, (H.DIVIDE, H.DEATH_P, H.RETURN_PD))
    ret = jnp.minimum(jnp.floor(n * -jnp.expm1(-kpd * tau) + u[1]), n)
    alpha, beta = E.kendall(lam, mu, tau)
    n_new = _leap_clone(u[5:], n - ret, alpha, beta)
    n_new, new_kind, became_lesion, sw = E.leap_outcome(n, n_new, lam, mu, tau, since,
                                                        switch_size, u[4])
    sel = [h & act_l for h in hq]
    ckind = [jnp.where(s, new_kind, x).astype(x.dtype) for s, x in zip(sel, ckind, strict=True)]
    ccount = [jnp.where(s, n_new, x) for s, x in zip(sel, ccount, strict=True)]
    switch_day = [jnp.where(s & became_lesion, sw, x)
                  for s, x in zip(sel, c["switch_day"], strict=True)]
    csince = [jnp.where(s, T, x) for s, x in zip(sel, c["csince"], strict=True)]
    le = leap_end(T)
    cnext = [jnp.where(s, jnp.where(new_kind == E.PROLIFERATING, le, jnp.inf), x)
             for s, x in zip(sel, c["cnext"], strict=True)]
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
    dk2, rk2 = _pick(hk, d), _pick(hk, r)
    z = jnp.zeros_like(dk2)
    tk = tab.next_time((dk2 * crpk, dk2, dk2 * cak, rk2, z), T, -jnp.log(u[2]))
    upd = [h & (~finish) & is_class for h in hk]
    class_next = [jnp.where(up, tk, x) for up, x in zip(upd, c["class_next"], strict=True)]
    class_fresh = [jnp.where(up, False, x) for up, x in zip(upd, c["class_fresh"], strict=True)]
    class_next = [jnp.where(h, T, x) for h, x in zip(hr, class_next, strict=True)]
    class_fresh = [x | h for x, h in zip(class_fresh, hr, strict=True)]
    any_left = (_sum(d) + _sum(r) > 0) | functools.reduce(operator.or_,
                                                          [x != E.EMPTY for x in ckind])
    cd = c["clearance_day"]
    # x - x == 0 is isfinite (inf - inf and NaN are NaN); Pallas' Triton rule for isfinite, and
    # any f64 comparison with an inf literal, fails to lower
    clearance_day = jnp.where((~finish) & ~any_left & ~(cd - cd == 0.0), T, cd)
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
