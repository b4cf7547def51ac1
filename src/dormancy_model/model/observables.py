"""The relapse and aspirate observation laws (MODEL.md): pure jnp functions, used under jit/vmap
by `simulate`, the fit likelihood, the sweep lanes and the agents.

* A cell entering P founds a lesion that escapes extinction with probability
  p_found = 1 - delta_p / lambda_p; an escaped lesion grows at `lesion_growth_rate` from one
  cell to `detection_size`, which takes tau = ln(detection_size) / lesion_growth_rate days.
* Mean field (ODE): relapses form a Poisson process with cumulative hazard
  Lambda(t) = p_found E(t - tau) (E: cumulative escape flux, state 3; E = 0 before day 0), rate
  h(t) = p_found k_RP g(M(t - tau)) R(t - tau), relapse-free probability exp(-Lambda(t)).
* Per lesion (agents): each lesion is an agent that switches to deterministic growth at
  `switch_size` cells, so its relapse day is its switch day plus `lesion_growth_days(switch_size,
  detection_size, rate)` (the same growth law; tau is that with switch size 1).
* One aspirate samples each cell with probability f = `aspirate_fraction`: Poisson(f N) DTCs
  seen, P(DTC+) = 1 - exp(-f N).

`p` is a `Parameters` or a mapping of (broadcastable) arrays.
"""

from __future__ import annotations

import jax.numpy as jnp


def founding_probability(p):
    """Probability that a cell entering P founds a lesion escaping extinction: 1 - d/b [S22]."""
    return 1.0 - p["delta_p"] / p["lambda_p"]


def lesion_growth_days(size_from, size_to, growth_rate):
    """Days for a lesion growing at `growth_rate` (1/day) from `size_from` to `size_to` cells."""
    return jnp.log(size_to / size_from) / growth_rate


def relapse_lag(p):
    """tau: days for an escaped lesion to grow from one cell to the detection size."""
    return jnp.log(p["detection_size"]) / p["lesion_growth_rate"]


def lagged_times(t, tau, t0):
    """Times t - tau at which the lagged state is read, floored at the start t0."""
    return jnp.maximum(t - tau, t0)


def cumulative_hazard(t, escaped_lagged, p_found, tau):
    """Lambda(t) = p_found E(t - tau); 0 for t <= tau (no lesion can be detected earlier)."""
    return jnp.where(t > tau, p_found * escaped_lagged, 0.0)


def hazard_rate(t, commitment_lagged, reactivating_lagged, p_found, tau):
    """h(t) = p_found k_RP g(M(t - tau)) R(t - tau) (1/day): the escape flux at the lagged time
    (`commitment_lagged` = `rates.cell_rates(...).commitment` there); 0 for t <= tau."""
    return jnp.where(t > tau, p_found * commitment_lagged * reactivating_lagged, 0.0)


def relapse_free(cum_hazard):
    """Relapse-free probability exp(-Lambda)."""
    return jnp.exp(-cum_hazard)


def aspirate_mean(cells, fraction):
    """Mean number of DTCs one aspirate sees: f N (the Poisson mean)."""
    return fraction * cells


def p_dtc_positive(cells, fraction):
    """Probability that one aspirate shows >= 1 DTC: 1 - exp(-f N) (Poisson sampling)."""
    return -jnp.expm1(-aspirate_mean(cells, fraction))
