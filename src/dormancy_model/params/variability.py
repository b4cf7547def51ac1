"""Inter-individual variability: virtual patients' parameters log-normal around typical values.

Patient i's value of parameter k is typical_k * f_ik, f_ik = exp(omega_k * eta_ik),
eta ~ Normal(0, 1), omega_k = sqrt(ln(1 + CV_k^2)) (`transforms.lognormal_sigma`; NONMEM-style
log-normal IIV, so the typical value is the median), clipped to the parameter's bounds by the
caller. Used by the sweep's `[patients]` (`sweeps.spec`) and the virtual trial
(`trials.population`, which adds the screening by aspirate).

The caller passes the NumPy Generator: the sweep seeds one from its `seed`, the trial derives
one from its JAX key (`trials.population.host_rng`). The standard normals are one stream, taken
for the parameters in sorted name order, in one of two layouts that the two callers used before
they shared this code (kept so that every existing seed draws the same patients):

* `by="patient"`: patient by patient, an (n, k) block (the sweep);
* `by="parameter"`: parameter by parameter, k blocks of n (the trial).

Optional correlation between the log-factors: `correlation={("k_dr", "delta_max"): -0.5}`
(pairs of names in `cv`, coefficients in (-1, 1)) multiplies the independent normals by the
Cholesky factor of the correlation matrix (names in sorted order), so with no correlation the
draws are exactly the independent ones above. A matrix that is not positive definite is refused.
"""

from __future__ import annotations

import numpy as np

from dormancy_model.params.transforms import lognormal_sigma

LAYOUTS = ("patient", "parameter")


def correlation_matrix(names: list[str], correlation: dict | None) -> np.ndarray:
    """The (k, k) correlation matrix of the log-factors of `names` (sorted) from pairs."""
    k = len(names)
    c = np.eye(k)
    for pair, rho in (correlation or {}).items():
        a, b = pair
        if a not in names or b not in names or a == b:
            raise ValueError(f"correlation pair {pair!r}: both names must be distinct "
                             f"parameters with a CV ({', '.join(names)})")
        rho = float(rho)
        if not -1.0 < rho < 1.0:
            raise ValueError(f"correlation {pair!r}: {rho:g} is not in (-1, 1)")
        i, j = names.index(a), names.index(b)
        c[i, j] = c[j, i] = rho
    if k and np.linalg.eigvalsh(c)[0] <= 0:
        raise ValueError("correlation matrix is not positive definite")
    return c


def lognormal_factors(rng: np.random.Generator, cv: dict, n: int, *,
                      by: str = "patient", correlation: dict | None = None
                      ) -> dict[str, np.ndarray]:
    """name -> (n,) factors exp(omega * eta) (median 1) for every name in `cv`, drawn from
    `rng` in the layout `by` (see the module doc), with eta correlated as `correlation` says
    (default independent). A CV of 0 still draws its normals (so the other parameters' draws
    do not move) and gives factors of exactly 1."""
    names = sorted(cv)
    if by == "patient":
        eta = rng.standard_normal((n, len(names))).T
    elif by == "parameter":
        eta = rng.standard_normal((len(names), n))
    else:
        raise ValueError(f"by must be one of {LAYOUTS}, got {by!r}")
    if correlation:
        eta = np.linalg.cholesky(correlation_matrix(names, correlation)) @ eta
    return {nm: np.exp(lognormal_sigma(cv[nm]) * eta[j]) for j, nm in enumerate(names)}
