"""Scale transforms of parameter values and the log-normal helper.

Each parameter has a scale in its table (`lin`, `log` or `logit`): the space where grids,
samples, standard errors and priors are uniform or normal. `to_scale` / `from_scale` map one
scale by name (NumPy); `from_scale_codes` (NumPy) and `from_scale_codes_jnp` (traceable) map a
vector of mixed scales given as `SCALE_CODE` integers, one per last-axis entry.

`lognormal_sigma(cv)` is the log-SD of a log-normal variable with coefficient of variation
`cv`: sigma = sqrt(ln(1 + CV^2)) (NONMEM-style inter-individual variability, the agents' trait
spread).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SCALES = ("lin", "log", "logit")
SCALE_CODE = {"lin": 0, "log": 1, "logit": 2}


def to_scale(x, scale: str):
    """Natural value(s) to the scale `scale` (NumPy float64)."""
    x = np.asarray(x, float)
    if scale == "log":
        return np.log(x)
    return np.log(x / (1 - x)) if scale == "logit" else x


def from_scale(z, scale: str):
    """Scale value(s) back to natural values (NumPy)."""
    if scale == "log":
        return np.exp(z)
    return 1 / (1 + np.exp(-z)) if scale == "logit" else z


def from_scale_codes(s, codes):
    """Scale values to natural values, scale per entry as `SCALE_CODE` integers (NumPy)."""
    s = np.asarray(s, float)
    return np.where(codes == 1, np.exp(s), np.where(codes == 2, 1.0 / (1.0 + np.exp(-s)), s))


def from_scale_codes_jnp(s, codes):
    """`from_scale_codes` in JAX (traceable, differentiable; logit via `jax.nn.sigmoid`)."""
    return jnp.where(codes == 1, jnp.exp(s), jnp.where(codes == 2, jax.nn.sigmoid(s), s))


def lognormal_sigma(cv: float) -> float:
    """Log-SD of a log-normal variable with coefficient of variation `cv`."""
    return math.sqrt(math.log1p(cv * cv))
