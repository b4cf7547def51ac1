"""Lock-step loops over a batch of independent lanes, narrowing as lanes finish.

A vmapped `while_loop` runs every lane until the slowest one is done. Both batched loops of the
package (the sweep engine's Runge-Kutta steps, the agent model's events) have lanes whose work
differs by a factor of 2-3 or more, so they use `compacting_loop`: the batch steps together
until only 1/`shrink` of its lanes are active, those are gathered into a loop of 1/`shrink` the
width, and so on down to `min_width` lanes, which finish in the last loop. Each stage is one
more compiled copy of the loop body, so `shrink` trades run time for compile time. Each lane's
arithmetic does not depend on the others, so the grouping never changes a result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compacting_loop(body, active, carry, consts, min_width: int, shrink: int = 4):
    """Run `carry = body(consts, carry)` until `active(carry)` (a (lanes,) bool array) is all
    False. Array leaves of `carry` and `consts` have the lane axis first; 0-d leaves of `carry`
    are shared by all lanes (e.g. an iteration counter) and pass through. `body` must leave
    inactive lanes unchanged."""

    def take(tree, idx):
        return jax.tree_util.tree_map(lambda a: a[idx] if jnp.ndim(a) else a, tree)

    def put(tree, idx, sub):
        return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b) if jnp.ndim(a) else b,
                                      tree, sub)

    def run(carry, consts, width):
        narrow = max(1, min_width, width // shrink)
        if width <= min_width or narrow >= width:
            return jax.lax.while_loop(lambda c: jnp.any(active(c)),
                                      lambda c: body(consts, c), carry)
        carry = jax.lax.while_loop(lambda c: jnp.sum(active(c)) > narrow,
                                   lambda c: body(consts, c), carry)
        idx = jnp.argsort(~active(carry), stable=True)[:narrow]  # active lanes first
        return put(carry, idx, run(take(carry, idx), take(consts, idx), narrow))

    return run(carry, consts, active(carry).shape[0])
