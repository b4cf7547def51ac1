"""Lock-step batched explicit Runge-Kutta with per-trajectory error control.

This is the throughput engine behind `sweep`. It is not `vmap(diffeqsolve)`: the whole batch is
one `lax.while_loop` over structure-of-arrays state (one array of shape (N,) per state variable),
and every trajectory ("lane") carries its own time, step size, accept/reject decision, event
pointer and save pointer. One loop iteration is one step attempt of every lane: a handful of
fused element-wise array operations, no per-lane control flow, no solver objects.

What a problem supplies (`AbstractLaneProblem`):

* `rhs(t, y, x, s, lane, shared)`: derivatives of the integrated states `y` (tuple of (N,)
  arrays) at time t + s, where `x` is an exogenous state known in closed form at time t (for the
  dormancy model: the PK mode amplitudes), propagated by `advance(x, s, lane, shared)`;
* `next_event(ev, lane, shared)` and `apply_events(t, x, ev, lane, shared)`: known event times
  per lane (dose times). Steps are clipped to the next event, so no step straddles a kink.

After events the first step is at most `EngineOptions.event_step` times the problem's
`event_time_scale` (for the dormancy model ~2/ka after an EVE dose), so that the error estimate
sees a resolved transient (see that method).

Steps are also clipped to each lane's own save times (sorted per lane), so the saved values are
exact solution points, not interpolants. `buckets > 1` sorts lanes by an expected step count and
runs each bucket in its own while loop (finished lanes stop costing), and `solve_sharded` splits
the lanes over the local devices with `shard_map`. On a GPU (`EngineOptions.backend`, "auto")
the same loop body runs inside one Pallas kernel instead (`engine_pallas`): each kernel program
steps a block of lanes to the end in registers.
"""

from __future__ import annotations

import functools
import math
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.engine.lockstep import compacting_loop

# ---------------------------------------------------------------------------- tableaux


class Tableau(eqx.Module):
    """Explicit embedded RK pair: a (lower triangular), b (solution), e (error = b - b_hat), c."""

    a: tuple = eqx.field(static=True)
    b: tuple = eqx.field(static=True)
    e: tuple = eqx.field(static=True)
    c: tuple = eqx.field(static=True)
    order: int = eqx.field(static=True)  # order of the error estimate + 1 (for the controller)
    fsal: bool = eqx.field(static=True)


def _tsit5() -> Tableau:
    # Tsitouras 2011 coefficients (as in diffrax / OrdinaryDiffEq).
    c = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
    a = (
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
         -3.290069515436081, 2.324710524099774),
    )
    b = a[6] + (0.0,)
    e = (0.001780011052226, 0.000816434459657, -0.007880878010262, 0.144711007173263,
         -0.582357165452555, 0.458082105929187, -1.0 / 66.0)
    return Tableau(a, b, e, c, 5, True)


def _dopri5() -> Tableau:
    c = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
    a = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
    b = a[6] + (0.0,)
    bh = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
    e = tuple(x - y for x, y in zip(b, bh, strict=True))
    return Tableau(a, b, e, c, 5, True)


def _bs3() -> Tableau:
    c = (0.0, 0.5, 0.75, 1.0)
    a = ((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9))
    b = a[3] + (0.0,)
    bh = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
    e = tuple(x - y for x, y in zip(b, bh, strict=True))
    return Tableau(a, b, e, c, 3, True)


TABLEAUX = {"tsit5": _tsit5, "dopri5": _dopri5, "bs3": _bs3}
# "rk4": classic RK4 with an embedded second-order (trapezoidal) error estimate on the same
# nodes, k5 = f(t + h, y4) (FSAL). The nodes are only t, t + h/2 and t + h, so a problem whose
# vector field is y -> A(t) y (time-dependent coefficients, cheap in y) evaluates its
# coefficients twice per step (`node_coefficients`) instead of once per stage, and
# exp(lambda h/2) gives exp(lambda h) by squaring.
METHODS = (*TABLEAUX, "rk4")
BACKENDS = ("auto", "xla", "pallas")


class EngineOptions(eqx.Module):
    """Numerical options of the engine. Tolerances are per lane, on a weighted RMS norm:
    err = rms((y5 - y4) / (atol + rtol max(|y|, |y_new|))) <= 1 accepts a step."""

    method: str = eqx.field(static=True, default="tsit5")
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-6)
    dtype: str = eqx.field(static=True, default="float32")
    h0: float = eqx.field(static=True, default=0.01)
    max_iters: int = eqx.field(static=True, default=200_000)
    buckets: int = eqx.field(static=True, default=1)
    safety: float = eqx.field(static=True, default=0.9)
    factor_min: float = eqx.field(static=True, default=0.2)
    factor_max: float = eqx.field(static=True, default=10.0)
    # "xla": the lock-step while loop over the whole batch (narrowing as lanes finish);
    # "pallas": one GPU kernel, each program integrating `block` lanes to the end in registers
    # (interpreted, hence slow, on a CPU); "auto": pallas on a GPU in float32, else xla
    backend: str = eqx.field(static=True, default="auto")
    block: int = eqx.field(static=True, default=128)
    # first step after an event <= event_step * problem.event_time_scale (no bound where the
    # problem gives none); 0.5 since issue 14's defaults (proliferating cells following each EVE
    # dose): 1.0 let the residual's error grow to 6.7e-4 relative over 6 daily-dosed cycles,
    # 0.5 keeps it at 1.2e-4 for 3-7% more steps (tests/sweeps/test_sweep.py)
    event_step: float = eqx.field(static=True, default=0.5)

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    @property
    def tableau(self) -> Tableau:
        return TABLEAUX[self.method]()

    @property
    def order(self) -> int:
        """Order of the error estimate + 1 (the controller's exponent is -1 / order)."""
        return 3 if self.method == "rk4" else self.tableau.order


class AbstractLaneProblem(eqx.Module):
    """A batch ODE with closed-form exogenous state and known event times (see module doc)."""

    def rhs(self, t, y, x, s, lane, shared):
        raise NotImplementedError

    def advance(self, x, s, lane, shared):
        return x

    def next_event(self, ev, lane, shared):
        return None  # no events

    def apply_events(self, t, x, ev, lane, shared):
        return x, ev

    def event_time_scale(self, t, ev, lane, shared):
        """Time scale of the transient started by the events that fire at t (`ev`: the event
        state before they are applied), per lane, or None. The first step after them is at most
        `EngineOptions.event_step` times this.

        Why: an embedded error estimate is only reliable once the step resolves the solution's
        fastest variation. Right after a dose the step size proposed before it can be many times
        the absorption time; the estimate then misses most of the error (measured for the
        dormancy model: local errors 4x rtol accepted after every EVE dose, the same sign each
        day, so they add up over months of daily dosing)."""
        return None

    @property
    def rhs_continuous_at_events(self) -> bool:
        """True if events never change the rhs at the event time (FSAL stays valid)."""
        return True

    # For method "rk4": the vector field split into time-dependent coefficients and a cheap
    # application to y. The defaults wrap `rhs`; a problem overrides them to share work.
    def coefficients(self, t, x, s, lane, shared):
        """Coefficients of the vector field at time t + s (x known at t)."""
        return (t, x, jnp.broadcast_to(s, jnp.shape(t)).astype(jnp.result_type(t)))

    def apply(self, coef, y, lane, shared):
        """dy/dt from coefficients and state."""
        t, x, s = coef
        return self.rhs(t, y, x, s, lane, shared)

    def node_coefficients(self, t, x, h, lane, shared):
        """(coefficients at t + h/2, coefficients at t + h, x advanced to t + h)."""
        return (self.coefficients(t, x, 0.5 * h, lane, shared),
                self.coefficients(t, x, h, lane, shared), self.advance(x, h, lane, shared))


class Solution(eqx.Module):
    """ys: tuple of (N, S) arrays at each lane's save times; status (int8, `dormancy_model.status`):
    OK, MAX_STEPS (max_iters reached), NONFINITE or STEP_TOO_SMALL; counts of accepted and
    rejected steps per lane; iterations of the loop."""

    ys: tuple
    status: jax.Array
    accepted: jax.Array
    rejected: jax.Array
    iterations: jax.Array


def _tree_where(c, a, b):
    def w(u, v):
        cc = c.reshape(c.shape + (1,) * (jnp.ndim(u) - 1))
        return jnp.where(cc, u, v)

    return jax.tree_util.tree_map(w, a, b)


def _lincomb(y, h, coefs, ks):
    out = []
    for i, yi in enumerate(y):
        acc = None
        for cf, k in zip(coefs, ks, strict=False):
            if cf == 0.0:
                continue
            term = cf * k[i]
            acc = term if acc is None else acc + term
        out.append(yi if acc is None else yi + h * acc)
    return tuple(out)


def _axpy(y, h, k):
    return tuple(yi + h * ki for yi, ki in zip(y, k, strict=True))


def _tableau_step(problem, tab, fsal, t, y, x, dt, k1, lane, shared):
    """One embedded explicit RK step: (y_new, error vector, x at t + dt, last stage)."""
    zero = jnp.zeros((), dt.dtype)
    ks = [k1 if fsal else problem.rhs(t, y, x, zero, lane, shared)]
    for i in range(1, len(tab.c)):
        yi = _lincomb(y, dt, tab.a[i], ks)
        s = tab.c[i] * dt
        ks.append(problem.rhs(t + s, yi, x, s, lane, shared))
    y_new = _lincomb(y, dt, tab.b, ks)
    err = tuple(dt * sum(cf * k[i] for cf, k in zip(tab.e, ks, strict=True) if cf != 0.0)
                for i in range(len(y)))
    return y_new, err, problem.advance(x, dt, lane, shared), tuple(ks[-1])


def _rk4_step(problem, fsal, t, y, x, dt, c0, lane, shared):
    """One RK4 step (trapezoidal error estimate) on node coefficients: (y_new, error vector,
    x at t + dt, coefficients at t + dt)."""
    if not fsal:
        c0 = problem.coefficients(t, x, jnp.zeros((), dt.dtype), lane, shared)
    c_half, c_full, x_new = problem.node_coefficients(t, x, dt, lane, shared)
    f = lambda c, yy: problem.apply(c, yy, lane, shared)  # noqa: E731
    k1 = f(c0, y)
    k2 = f(c_half, _axpy(y, 0.5 * dt, k1))
    k3 = f(c_half, _axpy(y, 0.5 * dt, k2))
    k4 = f(c_full, _axpy(y, dt, k3))
    y_new = tuple(yi + (dt / 6.0) * (a + 2.0 * b + 2.0 * c + d)
                  for yi, a, b, c, d in zip(y, k1, k2, k3, k4, strict=True))
    k5 = f(c_full, y_new)
    # trapezoidal estimate (order 2) on the same nodes: it sees the time-quadrature error of
    # rapidly varying coefficients, which a third-order estimate sharing Simpson's weights
    # (b_hat = (1/6, 1/3, 1/3, 0, 1/6)) does not
    err = tuple(dt * ((a + 2.0 * b + 2.0 * c + d) / 6.0 - 0.5 * (a + e))
                for a, b, c, d, e in zip(k1, k2, k3, k4, k5, strict=True))
    return y_new, err, x_new, c_full


def _initial_state(problem, y0, x0, ev0, t0, saves, lane, shared, opts: EngineOptions):
    """Loop carry of a batch at t0 (every leaf has the lane axis first, except the 0-d
    iteration counter)."""
    rk4 = opts.method == "rk4"
    dt_ = opts.jnp_dtype
    n, n_save = saves.shape
    fsal = _fsal(problem, opts)
    t = jnp.broadcast_to(jnp.asarray(t0, dt_), (n,))
    # saves at or before t0 are the initial state. Saved values live in S separate (N,) arrays
    # per state and are updated with selects (no gather/scatter: those are slow on CPU)
    first = saves <= t[:, None]
    js = jnp.sum(first, axis=1).astype(jnp.int32)
    out = tuple(tuple(jnp.where(first[:, j], yi, 0.0).astype(dt_) for j in range(n_save))
                for yi in y0)
    zero = jnp.zeros((), dt_)
    # carried between steps: the last stage (FSAL tableaux) or the coefficients at t (rk4)
    if rk4:
        k1 = problem.coefficients(t, x0, zero, lane, shared)
    else:
        k1 = problem.rhs(t, y0, x0, zero, lane, shared) if fsal else y0
    h = jnp.full((n,), opts.h0, dt_)
    cnt = jnp.zeros((n,), jnp.int32)
    false = jnp.zeros((n,), bool)
    return (t, h, y0, k1, x0, ev0, js, out, cnt, cnt, false, jnp.int32(0))


def _fsal(problem, opts):
    return (opts.method == "rk4" or opts.tableau.fsal) and problem.rhs_continuous_at_events


def _active_lanes(n_save, opts):
    def active(st):
        return (st[6] < n_save) & ~st[10] & (st[11] < opts.max_iters)

    return active


def _make_body(problem, opts: EngineOptions, n_save: int, shared):
    """One step attempt of every lane: body(consts, carry) -> carry, with consts = (save
    columns, t_end, lane). Element-wise in the lanes (no reductions, gathers only through
    `take_rows`), so the same body runs in the XLA loop and inside the Pallas kernel."""
    rk4 = opts.method == "rk4"
    tab = None if rk4 else opts.tableau
    dt_ = opts.jnp_dtype
    fsal = _fsal(problem, opts)
    zero = jnp.zeros((), dt_)
    expo = -1.0 / opts.order

    def body(consts, st):
        save_cols, t_end, lane = consts
        t, h, y, k1, x, ev, js, out, nacc, nrej, bad, it = st
        active = (js < n_save) & ~bad
        t_save = save_cols[n_save - 1]
        for j in range(n_save - 2, -1, -1):
            t_save = jnp.where(js == j, save_cols[j], t_save)
        t_stop = jnp.minimum(t_save, t_end)
        t_ev = problem.next_event(ev, lane, shared)
        if t_ev is not None:
            t_stop = jnp.minimum(t_stop, t_ev)
        avail = jnp.maximum(t_stop - t, 0.0)
        clipped = h >= avail
        dt = jnp.where(clipped, avail, h)
        if rk4:
            y_new, err_v, x_new, k_last = _rk4_step(problem, fsal, t, y, x, dt, k1, lane, shared)
        else:
            y_new, err_v, x_new, k_last = _tableau_step(problem, tab, fsal, t, y, x, dt, k1,
                                                        lane, shared)
        sq = zero
        for i in range(len(y)):
            scale = opts.atol + opts.rtol * jnp.maximum(jnp.abs(y[i]), jnp.abs(y_new[i]))
            sq = sq + (err_v[i] / scale) ** 2
        err = jnp.sqrt(sq / len(y))
        finite = jnp.isfinite(err)
        accept = active & (err <= 1.0)
        # err ** expo as exp(expo log err): XLA's CPU backend calls the scalar libm `pow` for a
        # non-integer exponent (~3x a vectorised log and exp)
        pos = finite & (err > 0)
        factor = jnp.where(err > 0, opts.safety * jnp.exp(expo * jnp.log(jnp.where(pos, err,
                                                                                   1.0))),
                           opts.factor_max)
        factor = jnp.clip(jnp.where(finite, factor, opts.factor_min), opts.factor_min,
                          opts.factor_max)
        h_new = dt * factor
        h_new = jnp.where(accept & clipped, jnp.maximum(h_new, h), h_new)
        h_new = jnp.where(active, h_new, h)
        t_new = jnp.where(accept, jnp.where(clipped, t_stop, t + dt), t)
        y_out = _tree_where(accept, y_new, y)
        x_out = _tree_where(accept, x_new, x)
        # record saves reached by this step
        hit = accept & (t_new >= t_save) & (js < n_save)
        out = tuple(tuple(jnp.where(hit & (js == j), yi, o[j]) for j in range(n_save))
                    for o, yi in zip(out, y_out, strict=True))
        js = js + hit.astype(jnp.int32)
        if t_ev is not None:
            fired = accept & (t_new >= t_ev)
            scale = problem.event_time_scale(t_new, ev, lane, shared)
            x_out, ev = problem.apply_events(t_new, x_out, ev, lane, shared)
            if scale is not None:
                # resolve the transient an event starts: see `event_time_scale`
                h_new = jnp.where(fired, jnp.minimum(h_new, opts.event_step * scale), h_new)
        k1n = _tree_where(accept, k_last, k1) if fsal else k1
        ybad = ~functools.reduce(operator.and_, [jnp.isfinite(v) for v in y_out])
        stuck = active & (dt < 1e-12 * jnp.maximum(jnp.abs(t), 1.0)) & ~clipped
        bad = bad | (active & ybad) | stuck
        nacc = nacc + accept.astype(jnp.int32)
        nrej = nrej + (active & ~accept).astype(jnp.int32)
        return (t_new, h_new, y_out, k1n, x_out, ev, js, out, nacc, nrej, bad, it + 1)

    return body


def _solution(st, n_save, n) -> Solution:
    js, out, nacc, nrej, bad, it = st[6:12]
    # a lane stops at its first failure, so a non-finite state is still there at the end;
    # a lane stopped with a finite state had its step size fall to rounding level
    y_bad = ~functools.reduce(operator.and_, [jnp.isfinite(v) for v in st[2]])
    status = jnp.where(bad, jnp.where(y_bad, S.NONFINITE, S.STEP_TOO_SMALL),
                       jnp.where(js < n_save, S.MAX_STEPS, S.OK)).astype(jnp.int8)
    ys = tuple(jnp.stack(o, axis=1) for o in out)
    return Solution(ys, status, nacc, nrej, jnp.broadcast_to(it, (n,)))


def _solve_batch(problem, y0, x0, ev0, t0, saves, lane, shared, opts: EngineOptions) -> Solution:
    """One lock-step loop over a batch. y0: tuple of (N,); saves: (N, S) sorted per lane."""
    n, n_save = saves.shape
    state = _initial_state(problem, y0, x0, ev0, t0, saves, lane, shared, opts)
    consts = (tuple(saves[:, j] for j in range(n_save)), saves[:, -1], lane)
    if _use_pallas(opts):
        from dormancy_model.engine.pallas import pallas_lane_loop

        st = pallas_lane_loop(lambda sh: (_make_body(problem, opts, n_save, sh),
                                          _active_lanes(n_save, opts)),
                              state, consts, shared, block=opts.block)
        return _solution(st, n_save, n)
    # lanes need different step counts (clearances, doses): the loop narrows as they finish
    # (n -> n/4 -> n/16 lanes)
    st = compacting_loop(_make_body(problem, opts, n_save, shared), _active_lanes(n_save, opts),
                         state, consts, min_width=max(1, n // 16), shrink=4)
    return _solution(st, n_save, n)


def _use_pallas(opts: EngineOptions) -> bool:
    if opts.backend == "auto":
        return jax.default_backend() == "gpu" and opts.dtype == "float32"
    return opts.backend == "pallas"


def solve_lanes(problem, y0, x0, ev0, t0, saves, lane, shared, opts: EngineOptions,
                expected_steps=None) -> Solution:
    """Solve a batch of lanes; with `opts.buckets > 1`, lanes are sorted by `expected_steps`
    and each bucket of N / buckets lanes runs its own loop. Every leaf of y0, x0, ev0, saves and
    `lane` has the lane axis first; `shared` is common to all lanes. Traceable (call under jit)."""
    n = saves.shape[0]
    b = opts.buckets
    if b <= 1 or n % b:
        return _solve_batch(problem, y0, x0, ev0, t0, saves, lane, shared, opts)
    key = expected_steps if expected_steps is not None else jnp.zeros((n,))
    order = jnp.argsort(key, stable=True)
    inv = jnp.argsort(order)
    per = (y0, x0, ev0, saves, lane)
    per = jax.tree_util.tree_map(lambda a: a[order].reshape((b, n // b) + a.shape[1:]), per)

    def one(args):
        yb, xb, evb, sb, lb = args
        return _solve_batch(problem, yb, xb, evb, t0, sb, lb, shared, opts)

    sol = jax.lax.map(one, per)
    return jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:])[inv], sol)


def local_mesh():
    """1-D mesh over the local devices (axis 'lanes')."""
    devs = np.array(jax.local_devices())
    return jax.sharding.Mesh(devs, ("lanes",))


def solve_sharded(problem, y0, x0, ev0, t0, saves, lane, shared, opts: EngineOptions,
                  expected_steps=None, mesh=None) -> Solution:
    """`solve_lanes` split over local devices with `shard_map` (each device runs its own loop,
    so a device never waits for another device's slowest lane). N is padded to a multiple of
    the device count times `opts.buckets` (copies of the last lane, dropped from the result);
    with one device this is `solve_lanes`. On a CPU, `devices.use_cpu_cores` gives one device
    per core."""
    mesh = mesh or local_mesh()
    es = expected_steps if expected_steps is not None else jnp.zeros(saves.shape[:1])
    n = saves.shape[0]
    pad = pad_lanes(n, mesh.size * max(opts.buckets, 1)) - n
    if pad:
        def grow(a):
            return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if jnp.ndim(a) else a

        y0, x0, ev0, saves, lane, es = jax.tree_util.tree_map(grow, (y0, x0, ev0, saves, lane,
                                                                      es))
        sol = solve_sharded(problem, y0, x0, ev0, t0, saves, lane, shared, opts, es, mesh)
        return jax.tree_util.tree_map(lambda a: a[:n], sol)
    if mesh.size == 1:
        return solve_lanes(problem, y0, x0, ev0, t0, saves, lane, shared, opts, expected_steps)
    from jax.sharding import PartitionSpec as P

    def f(y0, x0, ev0, saves, lane, es, shared):
        return solve_lanes(problem, y0, x0, ev0, t0, saves, lane, shared, opts, es)

    spec = P("lanes")
    return jax.shard_map(f, mesh=mesh, in_specs=(spec, spec, spec, spec, spec, spec, P()),
                         out_specs=spec, check_vma=False)(y0, x0, ev0, saves, lane, es, shared)


def pad_lanes(n: int, multiple: int) -> int:
    return int(math.ceil(max(n, 1) / multiple) * multiple)
