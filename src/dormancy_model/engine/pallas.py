"""The sweep engine's loop as one GPU kernel (Pallas, Triton backend).

The XLA lock-step loop (`engine._solve_batch`) pays, at every step attempt, a pass through
device memory for every state array and a host round trip for the loop condition: on a GPU
that, not arithmetic, sets its speed. Here the same loop body runs inside one kernel: each
program takes `block` lanes, loads their state and constants into registers, steps them to the
end (its own `while_loop`, until all of its lanes are done) and writes the final state once.
This is the kernel-per-trajectory design of DiffEqGPU.jl, with the body written once in JAX.

Shared (non-lane) inputs: 0-d leaves are loaded as scalars; arrays stay in memory and are read
through `take_rows` (a gather per column), e.g. the packed dose tables of the dormancy model.
On a CPU the kernel runs in Pallas' interpreter (slow; used by the tests to check it against
the XLA loop).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class RefRows:
    """A 2-D table in device memory inside a kernel; `take_rows` gathers its rows."""

    def __init__(self, ref, n_cols: int):
        self.ref = ref
        self.n_cols = n_cols  # columns beyond are padding

    def columns(self, idx):
        return tuple(self.ref[idx, j] for j in range(self.n_cols))


def take_rows(table, idx):
    """Columns of the rows `idx` of a 2-D table: (table[idx, 0], table[idx, 1], ...). Works on
    arrays (one row gather) and on kernel refs (`RefRows`)."""
    if isinstance(table, RefRows):
        return table.columns(idx)
    rows = jnp.take(table, idx, axis=0)
    return tuple(rows[:, j] for j in range(table.shape[1]))


def _interpret() -> bool:
    """Interpret the kernel (no GPU). Tests patch this to lower for CUDA on a CPU machine."""
    return jax.default_backend() != "gpu"


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def pallas_lane_loop(make_loop, carry, consts, shared, block: int = 128,
                     num_warps: int | None = None):
    """Run `carry = body(consts, carry)` per lane until `active(carry)` is False for every lane,
    with `body, active = make_loop(shared)` (built inside the kernel from the loaded shared
    inputs). Leaves of `carry` and `consts` are (N,) arrays (0-d carry
    leaves are broadcast per lane), `shared` leaves are 0-d arrays, 2-D tables or Python
    numbers (static). Returns the final
    carry (0-d leaves come back per lane)."""
    from jax.experimental import pallas as pl

    c_leaves, c_def = jax.tree_util.tree_flatten(carry)
    k_leaves, k_def = jax.tree_util.tree_flatten(consts)
    s_leaves, s_def = jax.tree_util.tree_flatten(shared)
    n = max(np.shape(x)[0] for x in c_leaves if np.ndim(x))
    c_leaves = [jnp.broadcast_to(x, (n,)) for x in c_leaves]
    for x in c_leaves + list(k_leaves):
        if np.shape(x) != (n,):
            raise ValueError(f"pallas_lane_loop: lane leaves must have shape ({n},), got "
                             f"{np.shape(x)}")
    block = int(min(block, _pow2(n)))
    n_pad = -(-n // block) * block

    def pad(x):  # extra lanes repeat the last one and are dropped at the end
        return x if n_pad == n else jnp.concatenate([x, jnp.broadcast_to(x[-1:], (n_pad - n,))])

    c_dtypes = [x.dtype for x in c_leaves]
    enc = lambda x: x.astype(jnp.int32) if x.dtype == jnp.bool_ else x  # noqa: E731
    c_in = [pad(enc(x)) for x in c_leaves]
    k_dtypes = [x.dtype for x in k_leaves]
    k_in = [pad(enc(jnp.asarray(x))) for x in k_leaves]
    s_in, s_kind = [], []
    for x in s_leaves:
        if isinstance(x, (int, float, bool)):  # Python constants stay static (not "scalar")
            s_kind.append(x)
            continue
        x = jnp.asarray(x)
        if x.ndim == 0:
            s_in.append(x.reshape(1))
            s_kind.append("scalar")
        elif x.ndim == 2:
            rows, cols = _pow2(x.shape[0]), _pow2(x.shape[1])  # power-of-two blocks (Triton)
            s_in.append(jnp.pad(x, ((0, rows - x.shape[0]), (0, cols - x.shape[1]))))
            s_kind.append(("table", x.shape[1]))
        else:
            raise ValueError(f"pallas_lane_loop: shared leaves must be 0-d or 2-D, got "
                             f"{x.shape}")
    nc, nk = len(c_in), len(k_in)

    def dec(v, dt):
        return v != 0 if dt == jnp.bool_ else v

    def kernel(*refs):
        c_refs, k_refs = refs[:nc], refs[nc:nc + nk]
        s_refs, o_refs = refs[nc + nk:nc + nk + len(s_in)], refs[nc + nk + len(s_in):]
        c = jax.tree_util.tree_unflatten(
            c_def, [dec(r[...], dt) for r, dt in zip(c_refs, c_dtypes, strict=True)])
        k = jax.tree_util.tree_unflatten(
            k_def, [dec(r[...], dt) for r, dt in zip(k_refs, k_dtypes, strict=True)])
        it = iter(s_refs)
        sh = jax.tree_util.tree_unflatten(
            s_def, [next(it)[0] if isinstance(kind, str) else RefRows(next(it), kind[1])
                    if isinstance(kind, tuple) else kind for kind in s_kind])
        body, active = make_loop(sh)
        c = jax.lax.while_loop(lambda cc: jnp.max(active(cc).astype(jnp.int32)) > 0,
                               lambda cc: body(k, cc), c)
        for r, v in zip(o_refs, jax.tree_util.tree_leaves(c), strict=True):
            r[...] = enc(v)

    lane_spec = pl.BlockSpec((block,), lambda i: (i,))
    s_specs = [pl.BlockSpec(x.shape, (lambda i: (0,)) if x.ndim == 1 else (lambda i: (0, 0)))
               for x in s_in]
    interpret = _interpret()
    params = None
    if not interpret:
        from jax.experimental.pallas import triton as plt

        params = plt.CompilerParams(num_warps=num_warps or max(1, min(8, block // 32)),
                                    num_stages=1)
    out = pl.pallas_call(
        kernel, out_shape=[jax.ShapeDtypeStruct((n_pad,), x.dtype) for x in c_in],
        grid=(n_pad // block,), in_specs=[lane_spec] * (nc + nk) + s_specs,
        out_specs=[lane_spec] * nc, compiler_params=params, interpret=interpret,
        name="engine_lanes")(*c_in, *k_in, *s_in)
    out = [dec(o[:n], dt) for o, dt in zip(out, c_dtypes, strict=True)]
    return jax.tree_util.tree_unflatten(c_def, out)
