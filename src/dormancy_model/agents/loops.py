"""The event loops of the agent model, for one replicate (vmapped by `agents.py`).

Both loops are next-reaction methods: every slot holds the time of its next event, drawn by
inverting its cumulative hazard (`HazardTable.next_time`), and each iteration processes the
earliest slot. Slots are fixed-capacity arrays; empty slots are masked.

* exact: one slot per cell (D, R) or per proliferating clone (P; all its cells share the
  founder's traits). Every transition, death and division is an individual event.
* fast: D and R cells are pooled by trait class (stratified traits; exact events on the class
  pools), and proliferating clones advance by leaps of at most `leap_days` with the exact
  birth-death (Kendall) transition law for the step-average rates: a clone of n cells becomes a
  sum of n modified-geometric lineages (summed exactly for n <= 16, moment-matched normal above).
  Opt-in (`pool_leap_above` < inf): a class pool of more dormant cells than that leaps too (see
  `pool_leap_counts`): on the clones' leap grid its D cells' deaths are binomial counts applied
  at the leap end, and the reactivations of the leap, drawn as a count at its start, fire as
  individual events at their own times within it (so R stays exact).

Slot kinds: 0 empty, 1 dormant D, 2 reactivating R, 3 proliferating clone P, 4 lesion L (a
clone that reached `switch_size` and continues deterministically; its switch day is kept).

Each method is `*_init` (loop carry of one replicate), `*_step` (one event) and `*_final`;
`lockstep` runs a vmapped batch of replicates in a loop that narrows as replicates finish.
A replicate's random numbers depend only on its key and its own event counter, so results do
not depend on batching or chunking.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp

from dormancy_model import status as S
from dormancy_model.agents import hazard as H
from dormancy_model.engine.lockstep import compacting_loop

EMPTY, DORMANT, REACTIVATING, PROLIFERATING, LESION = range(5)
N_EXACT_LINEAGES = 16
STATUS_OK, STATUS_MAX_EVENTS, STATUS_OVERFLOW = S.OK, S.MAX_EVENTS, S.SLOT_OVERFLOW


def _record(rec_t, records, t, t_next, counts):
    return jnp.where(record_due(rec_t, t, t_next)[:, None], counts[None, :], records)


def _pick(onehot, arr):
    """arr[index] for a one-hot mask of the index (entries of arr may be inf)."""
    return jnp.sum(jnp.where(onehot, arr, jnp.zeros_like(arr)))


# ---------------------------------------------------------------- exact (one slot per cell)

def exact_weights(kind, count, a, rp):
    """Channel weights (..., 9) of slots."""
    is_d, is_r, is_p = kind == DORMANT, kind == REACTIVATING, kind == PROLIFERATING
    z = jnp.zeros_like(count)
    cols = [
        jnp.where(is_d, rp, z), jnp.where(is_d, 1.0, z), jnp.where(is_d, a, z),
        jnp.where(is_r, 1.0, z), jnp.where(is_r, 1.0, z), jnp.where(is_r, 1.0, z),
        jnp.where(is_p, count, z), jnp.where(is_p, count, z), jnp.where(is_p, count, z),
    ]
    return jnp.stack(cols, axis=-1)


def exact_group_weights(kind, count, a, rp):
    """Group weights (..., 5) of slots (see `agents_hazard.GROUPS`)."""
    is_d, is_r, is_p = kind == DORMANT, kind == REACTIVATING, kind == PROLIFERATING
    z = jnp.zeros_like(count)
    return jnp.stack([jnp.where(is_d, rp, z), jnp.where(is_d, 1.0, z), jnp.where(is_d, a, z),
                      jnp.where(is_r, 1.0, z), jnp.where(is_p, count, z)], axis=-1)


def _alive(kind):
    return (kind >= DORMANT) & (kind <= PROLIFERATING)


def exact_counts(kind, count):
    return jnp.stack([jnp.sum(kind == DORMANT), jnp.sum(kind == REACTIVATING),
                      jnp.sum(jnp.where(kind == PROLIFERATING, count, 0.0))]).astype(count.dtype)


def exact_init(table: H.HazardTable, state: dict, key, t0, rec_t) -> dict:
    """Loop carry of one replicate from `state` (kind, count, a, rp, switch_day,
    clearance_day)."""
    kind, count, a, rp = state["kind"], state["count"], state["a"], state["rp"]
    n_slots = kind.shape[0]
    k_init, k_loop = jax.random.split(key)
    e0 = jax.random.exponential(k_init, (n_slots,))
    w0 = exact_group_weights(kind, count, a, rp)
    nt = jax.vmap(lambda w, e: table.next_time(w, t0, e))(w0, e0)
    nt = jnp.where(_alive(kind), nt, jnp.inf)
    records = jnp.zeros((rec_t.shape[0], 3))
    return dict(kind=kind, count=count, a=a, rp=rp, switch_day=state["switch_day"], next_t=nt,
                fresh=jnp.zeros(n_slots, bool), t=jnp.asarray(t0, jnp.float64),
                records=records, it=jnp.asarray(0), done=jnp.asarray(False),
                status=jnp.asarray(STATUS_OK), clearance_day=state["clearance_day"],
                key=k_loop)


def exact_step(table: H.HazardTable, c: dict, t1, rec_t, switch_size) -> dict:
    """One event of one replicate (the next-reaction method, one slot per cell)."""
    k_loop = c["key"]
    kind, count = c["kind"], c["count"]
    i = jnp.argmin(c["next_t"])
    T = c["next_t"][i]
    finish = T > t1
    records = _record(rec_t, c["records"], c["t"], T, exact_counts(kind, count))
    u = jax.random.uniform(jax.random.fold_in(k_loop, c["it"]), (2,))
    # channel of the event, from the cell-average rates at T
    wi = exact_weights(kind[i], count[i], c["a"][i], c["rp"][i])
    ch = event_channel(wi, table.row("rate", table.cell(T)), u[0])
    fresh = c["fresh"][i]
    act = (~finish) & (~fresh)
    ki, ni = kind[i], count[i]
    grow = ni + 1.0
    new_k = jnp.select(
        [ch == H.REACT, (ch == H.DEATH_D0) | (ch == H.DEATH_DEFICIT) | (ch == H.DEATH_R),
         ch == H.RETURN_RD, ch == H.COMMIT,
         ch == H.DIVIDE, (ch == H.DEATH_P) | (ch == H.RETURN_PD)],
        [REACTIVATING, EMPTY, DORMANT, PROLIFERATING,
         jnp.where(grow >= switch_size, LESION, PROLIFERATING),
         jnp.where(ni - 1.0 <= 0.0, EMPTY, PROLIFERATING)], ki)
    new_n = jnp.select([ch == H.COMMIT, ch == H.DIVIDE,
                        (ch == H.DEATH_P) | (ch == H.RETURN_PD)],
                       [1.0, grow, ni - 1.0], ni)
    kind = kind.at[i].set(jnp.where(act, new_k, ki))
    count = count.at[i].set(jnp.where(act, new_n, ni))
    switch_day = c["switch_day"].at[i].set(
        jnp.where(act & (new_k == LESION) & (ki == PROLIFERATING), T, c["switch_day"][i]))
    # next event of slot i (memoryless redraw with its new weights)
    wn = exact_group_weights(kind[i], count[i], c["a"][i], c["rp"][i])
    ti = table.next_time(wn, T, -jnp.log(u[1]))
    next_t = c["next_t"].at[i].set(
        jnp.where(finish, c["next_t"][i], jnp.where(_alive(kind[i]), ti, jnp.inf)))
    fresh_arr = c["fresh"].at[i].set(jnp.where(finish, fresh, False))
    # P -> D return: a new dormant agent with the clone's traits in a free slot
    birth = act & (ch == H.RETURN_PD)
    j = jnp.argmax(kind == EMPTY)
    has_free = kind[j] == EMPTY
    b = birth & has_free
    kind = kind.at[j].set(jnp.where(b, DORMANT, kind[j]))
    count = count.at[j].set(jnp.where(b, 1.0, count[j]))
    a_arr = c["a"].at[j].set(jnp.where(b, c["a"][i], c["a"][j]))
    rp_arr = c["rp"].at[j].set(jnp.where(b, c["rp"][i], c["rp"][j]))
    next_t = next_t.at[j].set(jnp.where(b, T, next_t[j]))
    fresh_arr = fresh_arr.at[j].set(jnp.where(b, True, fresh_arr[j]))
    status = jnp.where(birth & ~has_free, STATUS_OVERFLOW, c["status"])
    any_left = jnp.any(_alive(kind) | (kind == LESION))
    clearance_day = first_clearance(act & ~any_left, c["clearance_day"], T)
    return dict(kind=kind, count=count, a=a_arr, rp=rp_arr, switch_day=switch_day,
                next_t=next_t, fresh=fresh_arr, t=jnp.where(finish, c["t"], T),
                records=records, it=c["it"] + 1, done=finish, status=status,
                clearance_day=clearance_day, key=k_loop)


def exact_final(c: dict):
    # a limit hit earlier (slot overflow) outranks max_events (`status.combine`)
    status = S.combine(c["status"], jnp.where(c["done"], STATUS_OK, STATUS_MAX_EVENTS))
    final = dict(kind=c["kind"], count=c["count"], a=c["a"], rp=c["rp"],
                 switch_day=c["switch_day"], clearance_day=c["clearance_day"])
    return final, c["records"], status, c["it"]


# ---------------------------------------------------------------- fast (class pools + leaps)

# The laws of one event, written once as elementwise functions of per-replicate scalars: the
# vmapped step calls them with one replicate's values, the GPU kernel (`agents.kernel`) with
# (block,) columns. Only the slot bookkeeping (which pool or clone, which free slot) is written
# twice: as small arrays here, as tuples of columns there (see `agents.kernel`).

def class_weights(d, r, a, rp):
    """Channel weights (9-tuple) of a class pool of d dormant and r reactivating cells with
    autophagy dependence a and reactivation propensity rp."""
    z = jnp.zeros_like(d)
    return (d * rp, d, d * a, r, r, r, z, z, z)


def class_group_weights(d, r, a, rp):
    """Group weights (5-tuple) of a class pool (see `hazard.GROUPS`)."""
    return (d * rp, d, d * a, r, jnp.zeros_like(d))


def event_channel(w, rate, u):
    """Channel of an event of an agent with channel weights w, given the cell-average rates
    `rate` (9 columns) at its time: the first channel whose cumulative propensity exceeds u
    times the total (u uniform)."""
    cum = [w[0] * rate[0]]
    for c in range(1, H.N_CHANNELS):
        cum.append(cum[-1] + w[c] * rate[c])
    thr = u * cum[-1]
    below = [(x < thr).astype(jnp.int32) for x in cum]
    return jnp.minimum(functools.reduce(operator.add, below), H.N_CHANNELS - 1)


def class_change(ch):
    """(change of D, change of R) of a class pool at an event on channel ch (a commitment
    R -> P also founds a clone)."""
    dd = jnp.where((ch == H.REACT) | (ch == H.DEATH_D0) | (ch == H.DEATH_DEFICIT), -1.0,
                   jnp.where(ch == H.RETURN_RD, 1.0, 0.0))
    dr = jnp.where(ch == H.REACT, 1.0, jnp.where((ch == H.RETURN_RD) | (ch == H.COMMIT)
                                                 | (ch == H.DEATH_R), -1.0, 0.0))
    return dd, dr


def kendall(lam, mu, tau):
    """(alpha, beta) of the birth-death transition law over tau for constant rates:
    P(0) = alpha, P(j) = (1 - alpha)(1 - beta) beta^(j-1) for one ancestor [Kendall 1948]."""
    r = lam - mu
    rt = r * tau
    small = jnp.abs(rt) < 1e-8
    ratio = jnp.where(small, 1.0 / jnp.maximum(tau, 1e-300),
                      r / jnp.where(small, 1.0, jnp.expm1(rt)))  # r / expm1(r tau)
    denom = lam + ratio
    return mu / denom, lam / denom


def round_half_up(x):
    """floor(x + 0.5): rounding that GPU kernels lower (ties, of probability zero here, go up)."""
    return jnp.floor(x + 0.5)


def lineage_size(u_survive, u_size, alpha, beta):
    """Cells descending from one ancestor after a leap (modified geometric law of `kendall`),
    from two uniforms."""
    lb = jnp.log(jnp.clip(beta, 1e-300, 1.0 - 1e-16))
    geo = 1.0 + jnp.where(beta > 0, jnp.floor(jnp.log(jnp.maximum(u_size, 1e-300)) / lb), 0.0)
    return jnp.where(u_survive < 1.0 - alpha, geo, 0.0)


def clone_size_normal(n, alpha, beta, u1, u2):
    """Sum of n lineages drawn from the normal law with their exact mean and variance (Box-Muller
    on u1, u2), rounded and floored at 0."""
    mean = n * (1.0 - alpha) / (1.0 - beta)
    var = n * (1.0 - alpha) * (alpha + beta) / (1.0 - beta) ** 2
    z = jnp.sqrt(-2.0 * jnp.log(jnp.maximum(u1, 1e-300))) * jnp.cos(2 * jnp.pi * u2)
    return jnp.maximum(round_half_up(mean + jnp.sqrt(var) * z), 0.0)


def leap_clone(u, n, alpha, beta):
    """Size after a leap of a clone of n cells: the sum of n iid modified-geometric lineages
    (exact for n <= 16; above, a normal draw with the exact mean and variance, rounded).
    `u`: 2 * 16 + 2 uniforms, an array (one replicate: the 16 lineages as one vector) or a
    tuple of columns (the GPU kernel: the lineages added in a loop; integer-valued sums, so the
    same numbers). The loop form in the vmapped step cost 30% of the fast loop on the CPU."""
    m = N_EXACT_LINEAGES
    if isinstance(u, tuple):
        exact = jnp.zeros_like(n)
        for j in range(m):
            exact = exact + jnp.where(j < n, lineage_size(u[j], u[m + j], alpha, beta), 0.0)
    else:
        lineage = lineage_size(u[:m], u[m:2 * m], alpha, beta)
        exact = jnp.sum(jnp.where(jnp.arange(m) < n, lineage, 0.0))
    approx = clone_size_normal(n, alpha, beta, u[2 * m], u[2 * m + 1])
    return jnp.where(n <= m, exact, approx)


def leap_outcome(n, n_new, lam, mu, tau, since, switch_size, u_bridge):
    """(size, kind, became_lesion, switch day) of a clone of n cells whose leap of tau days
    from `since` ended at n_new cells. The first passage of the switch size inside the leap is
    observed at the end, or (ended below it) drawn with the Brownian-bridge crossing
    probability of the diffusion limit (uniform `u_bridge`)."""
    n_mid = 0.5 * (n + n_new)
    var = jnp.maximum(n_mid * (lam + mu) * tau, 1e-300)
    gap_a, gap_b = switch_size - n, switch_size - n_new
    p_cross = jnp.where((n_new > 0) & (gap_b > 0), jnp.exp(-2.0 * gap_a * gap_b / var), 0.0)
    bridge = u_bridge < p_cross
    became_lesion = (n_new >= switch_size) | bridge
    frac = jnp.where(bridge, gap_a / jnp.maximum(gap_a + gap_b, 1e-300),
                     jnp.log(switch_size / jnp.maximum(n, 1.0))
                     / jnp.log(jnp.maximum(n_new, switch_size + 1e-9) / jnp.maximum(n, 1.0)))
    sw = since + tau * jnp.clip(frac, 0.0, 1.0)
    n_new = jnp.where(bridge, switch_size, n_new)
    new_kind = jnp.where(n_new <= 0, EMPTY, jnp.where(became_lesion, LESION, PROLIFERATING))
    return n_new, new_kind, became_lesion, sw


def clone_leap(n, since, t, rates, u, switch_size, leap_to):
    """A clone of n cells leaps from `since` to t at the leap-average rates (division, death,
    return P -> D): returns (cells returned to dormancy, new size, kind, became_lesion, switch
    day, time of its next leap). The returns come first (binomial count as floor(n p + u)),
    the rest grow by the birth-death law (`kendall`, `leap_clone`, `leap_outcome`); a clone
    still proliferating leaps next at `leap_to`. `u`: the event's uniforms (`EVENT_UNIFORMS`,
    array or tuple)."""
    lam, mu, kpd = rates
    tau = t - since
    ret = jnp.minimum(jnp.floor(n * -jnp.expm1(-kpd * tau) + u[U_RETURN]), n)
    alpha, beta = kendall(lam, mu, tau)
    n_new = leap_clone(u[U_LINEAGES:], n - ret, alpha, beta)
    n_new, kind, became_lesion, sw = leap_outcome(n, n_new, lam, mu, tau, since, switch_size,
                                                  u[U_BRIDGE])
    nxt = jnp.where(kind == PROLIFERATING, leap_to, jnp.inf)
    return ret, n_new, kind, became_lesion, sw, nxt


def first_clearance(cleared_now, clearance_day, t):
    """Clearance day: t when the last cell goes now and none was recorded yet (x - x == 0 is
    isfinite: inf - inf and NaN are NaN; the GPU kernel cannot lower isfinite)."""
    cd = clearance_day
    return jnp.where(cleared_now & ~(cd - cd == 0.0), t, cd)


def record_due(rec_t, t, t_next):
    """Record days reached by the event at t_next (they take the counts before it)."""
    return (rec_t >= t) & (rec_t < t_next)


# uniforms of one event: u[0] channel of a class event, u[1] returns of a leap, u[2] next
# time of the class pool, u[4] Brownian bridge, u[5:] clone size (2 * 16 + 2)
U_CHANNEL, U_RETURN, U_REDRAW, U_BRIDGE, U_LINEAGES = 0, 1, 2, 4, 5
EVENT_UNIFORMS = U_LINEAGES + 2 * N_EXACT_LINEAGES + 2

_SM_GAMMA = 0x9E3779B97F4A7C15
_SM_M1 = 0xBF58476D1CE4E5B9
_SM_M2 = 0x94D049BB133111EB


def _i64(x: int) -> int:
    """A 64-bit constant as the signed integer of the same bits (Triton constants are
    signed; add, multiply and xor are the same bits in both, shifts are made logical)."""
    x %= 1 << 64
    return x - (1 << 64) if x >= 1 << 63 else x


def splitmix_seed(k0, k1):
    """The 64-bit SplitMix64 seed (as int64) of a raw uint32 key (k0, k1)."""
    return (k0.astype(jnp.int64) << jnp.int64(32)) | k1.astype(jnp.int64)


def splitmix_steps(m: int) -> list[int]:
    """Seed offsets of the first m SplitMix64 outputs (j * gamma, j = 1..m, as int64)."""
    return [_i64(_SM_GAMMA * j) for j in range(1, m + 1)]


def splitmix_halves(seed, step):
    """The two 32-bit halves (low, high; int64 in [0, 2^32)) of the SplitMix64 output at
    offset `step` from `seed`, in wrapping int64 arithmetic (the same bits as uint64)."""
    srl = jax.lax.shift_right_logical
    z = seed + step
    z = (z ^ srl(z, jnp.int64(30))) * jnp.int64(_i64(_SM_M1))
    z = (z ^ srl(z, jnp.int64(27))) * jnp.int64(_i64(_SM_M2))
    z = z ^ srl(z, jnp.int64(31))
    return z & jnp.int64(0xFFFFFFFF), srl(z, jnp.int64(32))


def to_unit(bits):
    """A 32-bit integer as a uniform in (0, 1)."""
    return (bits.astype(jnp.float64) + 0.5) * (1.0 / 4294967296.0)


def _uniforms(key, n):
    """n uniforms in (0, 1) for one loop iteration: the iteration's key (threefry) seeds a
    SplitMix64 stream (Steele, Lea & Flood 2014; passes BigCrush) whose 64-bit outputs give two
    32-bit uniforms each (all low halves, then all high halves). One threefry block per
    iteration instead of n / 2: the generator was a third of the fast loop's time. The
    smallest value, 2^-33, caps an Exp(1) draw at 22.9 (probability 1e-10)."""
    kd = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    kd = kd.reshape(-1)[:2]
    steps = jnp.asarray(splitmix_steps((n + 1) // 2), jnp.int64)
    lo, hi = splitmix_halves(splitmix_seed(kd[0], kd[1]), steps)
    return to_unit(jnp.concatenate([lo, hi])[:n])



# ---- dormant-pool leaps (opt-in, `pool_leap_above`)

POOL_SALT = 0x504C  # "PL": the binomial key of an iteration, fold_in(iteration key, POOL_SALT)


def pool_leap_counts(key, d, lr, ld):
    """(reactivating, dying, leaving probability) of d dormant cells over a leap with integrated
    per-cell reactivation hazard lr and death hazard ld: the multinomial (binomial, then
    conditional binomial) of independent cells with p_react = lr / L (1 - exp(-L)), p_die =
    ld / L (1 - exp(-L)), L = lr + ld. The leaving probability is exact; the split is exact
    when the two hazards are proportional within the leap; on the default grid under
    clever-combo the drugs move the death hazard within each day, and the split's error is at
    most 0.76% of one leap's p_react (a = 1; 3.8% at a = 5), +0.17% (a = 1) of a cell's
    probability of reactivating within a year (`benchmarks/pool_leap_bench.py
    --split-error`). Both errors are per cell: given the two probabilities the counts are the
    exact multinomial of d independent cells whatever d is, so the pool size above which pools
    leap (`pipeline.POOL_LEAP_ABOVE`, 30) moves no approximation (tests/agents/test_pool_leap.py
    compares leaps above it with exact events)."""
    lt = lr + ld
    p_leave = -jnp.expm1(-lt)
    pos = lt > 0
    pr = jnp.where(pos, lr / jnp.where(pos, lt, 1.0) * p_leave, 0.0)
    pd = jnp.where(pos, ld / jnp.where(pos, lt, 1.0) * p_leave, 0.0)
    k1, k2 = jax.random.split(key)
    nr = jax.random.binomial(k1, d, jnp.clip(pr, 0.0, 1.0), dtype=jnp.float64)
    q = jnp.where(pr < 1.0, pd / jnp.maximum(1.0 - pr, 1e-300), 0.0)
    nd = jax.random.binomial(k2, d - nr, jnp.clip(q, 0.0, 1.0), dtype=jnp.float64)
    return nr, nd, p_leave


def pool_react_time(table, wg_react, since, v, m, lr, u, t_end):
    """Next of the m pending reactivations of a pool leap that started at `since`: the m
    reactivation times are drawn iid with the law of the reactivation hazard within the leap,
    F(x) = Lambda_r(x) / lr (Lambda_r: a cell's reactivation hazard since `since`, group
    weights `wg_react`; lr its integral over the leap), and the earliest of them after the last
    one (where 1 - F = v) has 1 - F = v u^(1/m). The exact law has the density
    h_r(s) exp(-H(s)) / p_react (H: all the cell's dormant hazard): this drops the survival
    factor, which varies by at most the leap's leaving probability (Kolmogorov distance 1.8e-2
    at most on the default grid, clever-combo, a = 1: benchmarks/pool_leap_bench.py).
    Returns (time, new v)."""
    mm = jnp.maximum(m, 1.0)
    v_new = v * u ** (1.0 / mm)
    s = table.next_time(wg_react, since, (1.0 - v_new) * lr)
    return jnp.where(m > 0, jnp.minimum(s, t_end), jnp.inf), v_new


def fast_counts(d, r, ckind, ccount):
    return jnp.stack([jnp.sum(d), jnp.sum(r),
                      jnp.sum(jnp.where(ckind == PROLIFERATING, ccount, 0.0))])


def _leap_end(t, t_split, t1, rec_t, leap_days, late_leap_days):
    """End of a clone's leap from t: `leap_days` while drugs vary within a day (before the end
    of the hourly grid), `late_leap_days` after, never past the next record day or t1."""
    if isinstance(rec_t, tuple):  # record days as scalars (the GPU kernel)
        nxt = functools.reduce(jnp.minimum, [jnp.where(r > t, r, jnp.inf) for r in rec_t])
    else:
        nxt = jnp.min(jnp.where(rec_t > t, rec_t, jnp.inf))
    step = jnp.where(t < t_split, leap_days, late_leap_days)
    end = jnp.minimum(t + step, nxt)
    return jnp.where(t >= t1, jnp.inf, jnp.minimum(end, t1))


def _pool_weights(d, pmode):
    """Dormant cells seen by a class pool's exact events: none while the pool leaps."""
    return jnp.where(pmode, 0.0, d)


def fast_init(table: H.HazardTable, state: dict, key, t0, t1, rec_t, leap_days,
              late_leap_days, pool_leap_above=None) -> dict:
    """Loop carry of one replicate from `state` (d, r (K,), class_a, class_rp (K,),
    clone_kind, clone_count, clone_cls, switch_day (Q,), clearance_day). With a
    `pool_leap_above` (None: off; else a threshold, may be traced) the pools above it start
    leaping at t0 (a leap of length 0 at
    t0 draws their first leap; the carry then has the pool entries pmode, pnext, psince, pdie,
    pm, pv, plr, rnext)."""
    d, r, ca, crp = state["d"], state["r"], state["class_a"], state["class_rp"]
    n_cls = d.shape[0]
    q_slots = state["clone_kind"].shape[0]
    pool = pool_leap_above is not None
    pmode = d > pool_leap_above if pool else None
    dw = _pool_weights(d, pmode) if pool else d
    k_init, k_loop = jax.random.split(key)
    e0 = jax.random.exponential(k_init, (n_cls,))
    cnt = jax.vmap(lambda d, r, a, rp, e: table.next_time(class_group_weights(d, r, a, rp), t0,
                                                          e))(dw, r, ca, crp, e0)
    ckind = state["clone_kind"]
    first_leap = _leap_end(jnp.asarray(t0, jnp.float64), table.spec[2], t1, rec_t, leap_days,
                           late_leap_days)
    clone_next = jnp.where(ckind == PROLIFERATING, first_leap, jnp.inf)
    carry = dict(d=d, r=r, class_a=ca, class_rp=crp, class_next=cnt,
                 class_fresh=jnp.zeros(n_cls, bool), ckind=ckind, ccount=state["clone_count"],
                 ccls=state["clone_cls"], csince=jnp.full(q_slots, t0, jnp.float64),
                 cnext=clone_next, switch_day=state["switch_day"],
                 t=jnp.asarray(t0, jnp.float64), records=jnp.zeros((rec_t.shape[0], 3)),
                 it=jnp.asarray(0), done=jnp.asarray(False), status=jnp.asarray(STATUS_OK),
                 clearance_day=state["clearance_day"], key=k_loop)
    if pool:
        zero = jnp.zeros(n_cls)
        t0v = jnp.full(n_cls, t0, jnp.float64)
        carry.update(pmode=pmode, pnext=jnp.where(pmode, t0v, jnp.inf), psince=t0v, pdie=zero,
                     pm=zero, pv=jnp.ones(n_cls), plr=zero, rnext=jnp.full(n_cls, jnp.inf))
    return carry


def fast_step(table: H.HazardTable, c: dict, t1, rec_t, switch_size, leap_days,
              late_leap_days, pool_leap_above=None) -> dict:
    """One event of one replicate: a class-pool event or a clone leap, whichever is first. The
    laws are the elementwise functions above (shared with `agents.kernel.fast_step_soa`); the
    slot bookkeeping is on small arrays with one-hot selectors (cheaper than scatters and
    gathers on small arrays under vmap).

    With a `pool_leap_above` (None: off; `fast_init` with the same value) two more kinds
    of event: a pending reactivation of a leaping pool, and a pool leap (see the module doc,
    `pool_leap_counts`, `pool_react_time`). The slots are then, in order of precedence at equal
    times: class pools, pending reactivations, clones, pool leaps (a leap ends after the
    reactivations it drew)."""
    ca, crp, k_loop = c["class_a"], c["class_rp"], c["key"]
    n_cls = ca.shape[0]
    q_slots = c["ckind"].shape[0]
    t_split = table.spec[2]  # end of the hourly grid: drugs vary within a day before it
    pool = pool_leap_above is not None

    def leap_end(t):
        return _leap_end(t, t_split, t1, rec_t, leap_days, late_leap_days)

    if pool:
        all_next = jnp.concatenate([c["class_next"], c["rnext"], c["cnext"], c["pnext"]])
        off_q = 2 * n_cls
    else:
        all_next = jnp.concatenate([c["class_next"], c["cnext"]])
        off_q = n_cls
    i = jnp.argmin(all_next)
    T = jnp.min(all_next)
    finish = T > t1
    d, r, ckind, ccount = c["d"], c["r"], c["ckind"], c["ccount"]
    records = _record(rec_t, c["records"], c["t"], T, fast_counts(d, r, ckind, ccount))
    k_it = jax.random.fold_in(k_loop, c["it"])
    u = _uniforms(k_it, EVENT_UNIFORMS)
    is_class = i < n_cls
    if pool:
        is_react = (i >= n_cls) & (i < off_q)
        is_pool = i >= off_q + q_slots
        k = jnp.clip(jnp.where(is_class, i, jnp.where(is_react, i - n_cls, i - off_q - q_slots)),
                     0, n_cls - 1)
        is_clone = (i >= off_q) & ~is_pool
        pmode = c["pmode"]
        dw = _pool_weights(d, pmode)
    else:
        k = jnp.minimum(i, n_cls - 1)
        is_clone = ~is_class
        dw = d
    hk = jnp.arange(n_cls) == k
    qi = jnp.clip(i - off_q, 0, q_slots - 1)
    hq = jnp.arange(q_slots) == qi
    # --- class pool event
    dk, rk = _pick(hk, dw), _pick(hk, r)
    cak, crpk = _pick(hk, ca), _pick(hk, crp)
    ch = event_channel(class_weights(dk, rk, cak, crpk), table.row("rate", table.cell(T)),
                       u[U_CHANNEL])
    act_c = (~finish) & is_class & ~jnp.any(hk & c["class_fresh"])
    dd, dr = class_change(ch)
    d = d + jnp.where(hk & act_c, dd, 0.0)
    r = r + jnp.where(hk & act_c, dr, 0.0)
    commit = act_c & (ch == H.COMMIT)
    # --- clone leap
    act_l = (~finish) & is_clone
    since = _pick(hq, c["csince"])
    le = leap_end(T)
    ret, n_new, new_kind, became_lesion, sw, nxt = clone_leap(
        _pick(hq, ccount), since, T, table.averages(since, T, H.P_CHANNELS), u, switch_size, le)
    sel = hq & act_l
    ckind = jnp.where(sel, new_kind, ckind)
    ccount = jnp.where(sel, n_new, ccount)
    switch_day = jnp.where(sel & became_lesion, sw, c["switch_day"])
    csince = jnp.where(sel, T, c["csince"])
    cnext = jnp.where(sel, nxt, c["cnext"])
    cls_ret = _pick(hq, c["ccls"])
    got_ret = act_l & (ret > 0)
    hr = (jnp.arange(n_cls) == cls_ret) & got_ret
    d = d + jnp.where(hr, ret, 0.0)
    if pool:
        d, r, pst = _pool_events(table, c, d, r, T, finish, is_react, is_pool, hk, cak, crpk,
                                 u, jax.random.fold_in(k_it, POOL_SALT), le, pool_leap_above)
        pmode = pst["pmode"]
        upd_kinds = is_class | is_react | is_pool
    else:
        upd_kinds = is_class
    # --- new clone from a commitment
    empty = ckind == EMPTY
    j = jnp.argmax(empty)
    has_free = jnp.any(empty)
    hj = (jnp.arange(q_slots) == j) & commit & has_free
    ckind = jnp.where(hj, PROLIFERATING, ckind)
    ccount = jnp.where(hj, 1.0, ccount)
    ccls = jnp.where(hj, k, c["ccls"])
    csince = jnp.where(hj, T, csince)
    cnext = jnp.where(hj, le, cnext)
    status = jnp.where(commit & ~has_free, STATUS_OVERFLOW, c["status"])
    # --- redraw the class pool whose counts changed (memoryless)
    dk_new = _pick(hk, _pool_weights(d, pmode) if pool else d)
    w_new = class_group_weights(dk_new, _pick(hk, r), cak, crpk)
    tk = table.next_time(w_new, T, -jnp.log(u[U_REDRAW]))
    upd = hk & (~finish) & upd_kinds
    class_next = jnp.where(upd, tk, c["class_next"])
    class_fresh = jnp.where(upd, False, c["class_fresh"])
    # a pool that received returned cells draws a new time at the next iteration
    class_next = jnp.where(hr, T, class_next)
    class_fresh = class_fresh | hr
    any_left = (jnp.sum(d) + jnp.sum(r) > 0) | jnp.any(ckind != EMPTY)
    clearance_day = first_clearance((~finish) & ~any_left, c["clearance_day"], T)
    out = dict(d=d, r=r, class_next=class_next, class_fresh=class_fresh, ckind=ckind,
               ccount=ccount, ccls=ccls, csince=csince, cnext=cnext,
               switch_day=switch_day, t=jnp.where(finish, c["t"], T), records=records,
               it=c["it"] + 1, done=finish, status=status, clearance_day=clearance_day,
               class_a=ca, class_rp=crp, key=k_loop)
    if pool:
        # a pool grown above the threshold (returns) starts leaping: a leap of length 0 now,
        # and its exact clock is redrawn without its dormant cells at the next iteration
        enter = (~pst["pmode"]) & (d > pool_leap_above) & (~finish)
        pst.update(pmode=pst["pmode"] | enter, pnext=jnp.where(enter, T, pst["pnext"]),
                   psince=jnp.where(enter, T, pst["psince"]))
        out.update(pst, class_next=jnp.where(enter, T, class_next),
                   class_fresh=class_fresh | enter)
    return out


def _pool_events(table, c, d, r, T, finish, is_react, is_pool, hk, cak, crpk, u, key, le,
                 above):
    """The dormant-pool events of `fast_step` for class k (one-hot hk): a pending reactivation
    (D -> R now; the time of the next one) or a leap ending at T (its deaths; then, if the pool
    is still above `above`, the counts of the next leap to `le` and its first reactivation
    time; else back to exact events). Returns (d, r, pool carry entries)."""
    pick = lambda name: _pick(hk, c[name])  # noqa: E731
    z = jnp.zeros_like(cak)
    wg_react = (crpk, z, z, z, z)
    act_r = (~finish) & is_react
    act_p = (~finish) & is_pool
    # pending reactivation of class k
    m_left = pick("pm") - 1.0
    t_r, v_r = pool_react_time(table, wg_react, pick("psince"), pick("pv"), m_left,
                               pick("plr"), u[U_CHANNEL], pick("pnext"))
    # leap of class k ending at T: its deaths (and any reactivation left, by rounding)
    left = pick("pm")
    dk = _pick(hk, d) - pick("pdie") - left
    stay = dk > above
    go = stay & (le < jnp.inf)
    tau = jnp.where(go, le - T, 0.0)
    avg = table.averages(T, jnp.where(go, le, T), H.D_CHANNELS)
    lr = crpk * avg[0] * tau
    ld = (avg[1] + cak * avg[2]) * tau
    nr, nd, _ = pool_leap_counts(key, jnp.where(go, dk, 0.0), lr, ld)
    t_p, _ = pool_react_time(table, wg_react, T, 1.0, nr, lr, u[U_CHANNEL], le)
    hr_, hp = hk & act_r, hk & act_p
    d = jnp.where(hr_, d - 1.0, jnp.where(hp, dk, d))
    r = jnp.where(hr_, r + 1.0, jnp.where(hp, r + left, r))
    sel = lambda a_r, a_p, name: jnp.where(hr_, a_r, jnp.where(hp, a_p, c[name]))  # noqa: E731
    pst = dict(pmode=jnp.where(hp, stay, c["pmode"]),
               pnext=sel(c["pnext"], jnp.where(stay, le, jnp.inf), "pnext"),
               psince=sel(c["psince"], T, "psince"),
               pdie=sel(c["pdie"], nd, "pdie"),
               pm=sel(m_left, nr, "pm"),
               pv=sel(v_r, 1.0, "pv"),
               plr=sel(c["plr"], lr, "plr"),
               rnext=sel(t_r, t_p, "rnext"))
    return d, r, pst


def fast_final(c: dict):
    # a limit hit earlier (slot overflow) outranks max_events (`status.combine`)
    status = S.combine(c["status"], jnp.where(c["done"], STATUS_OK, STATUS_MAX_EVENTS))
    final = dict(d=c["d"], r=c["r"], class_a=c["class_a"], class_rp=c["class_rp"],
                 clone_kind=c["ckind"], clone_count=c["ccount"], clone_cls=c["ccls"],
                 switch_day=c["switch_day"], clearance_day=c["clearance_day"])
    return final, c["records"], status, c["it"]


# ---------------------------------------------------------------- lock-step driver

def lockstep(step, table, table_axis, carry: dict, max_events, width: int) -> dict:
    """Run a batch of replicates (leading axis of every carry leaf) until each is done or has
    processed `max_events` events. `step(table, carry)` advances every lane by one event
    (vmapped `exact_step` / `fast_step`); finished lanes keep their carry. When only `width`
    lanes are active they finish in a narrow loop (`lockstep.compacting_loop`); each lane's
    random stream is indexed by its own event counter, so results do not depend on this
    grouping."""

    def active(c):
        return (~c["done"]) & (c["it"] < max_events)

    def body(tb, c):
        new = step(tb, c)
        a = active(c)

        def keep(x, y):
            return jnp.where(a.reshape(a.shape + (1,) * (x.ndim - 1)), x, y)

        return {k: v if k == "key" else keep(new[k], v) for k, v in c.items()}

    # one narrowing stage (shrink = 1 / 16): nearly all lanes of a chunk finish within a few
    # events of each other, and every stage compiles the (large) event body once more
    if table_axis is None:  # one table for all lanes: not a per-lane constant
        return compacting_loop(lambda _, c: body(table, c), active, carry, (), width,
                               shrink=16)
    return compacting_loop(body, active, carry, table, width, shrink=16)
