"""The population (mixed-effects) problem: one value shared by every estimator.

Each animal i has its own parameter vector on the transform scale (log / logit / lin of each
free parameter, as in the pooled fit)::

    phi_i = theta + X_i beta + E eta_i,        eta_i ~ Normal(0, Omega)    (q random effects)

with `theta` (d,) the typical values, `X_i beta` the animal's covariate effects on them
(`covariates.CovariateModel`: power and categorical models, p effects; none by default), `E` (d,
q) selecting the parameters that carry a random effect (on a log-scale parameter this is a
log-normal between-animal law) and `Omega` (q, q) diagonal or full. The data enter only through
an animal likelihood, `AbstractAnimalLikelihood`: `loglik(phi, animal) -> (log-likelihood,
status)` for one animal (the rows of `animals` with the leading animal axis removed). The
mouse-study likelihood (`fitting.population.animals`) and the closed-form test models are such
likelihoods; the pooled fit is the case q = 0.

The outer parameter vector (what the Laplace fit optimises and differentiates) is
``[theta (d), log sd (q), L offdiag (q (q - 1) / 2), beta (p)]``: Omega = L L^T with L lower
triangular, its diagonal the standard deviations times the unit-diagonal Cholesky factor of the
correlation (``full``), or ``diag(sd^2)`` (``diagonal``, no off-diagonal entries); the
covariate effects come last (bounded by +-`BETA_BOUND`, far beyond any plausible effect).
Functions of one animal take its design row x (p,) (`design`, vmapped with `animals`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.fitting.population.covariates import CovariateModel, typical_values

COVARIANCES = ("diagonal", "full")
BETA_BOUND = 10.0  # |beta| bound (a power exponent, a log fold change) in the Laplace search


class AbstractAnimalLikelihood(eqx.Module):
    """Log-likelihood of one animal's data given its parameter vector on the transform scale."""

    def __call__(self, phi, animal):
        """(log-likelihood scalar, status int: 0 = usable) of one animal; `phi` (d,). A
        likelihood with a `shared` table also takes that animal's row as a third argument."""
        raise NotImplementedError

    def shared(self, phi_typical):
        """What the animals share at the typical values phi_typical (d,), computed once
        outside the per-animal maps: a PyTree with a leading animal axis, or None (nothing)."""
        return None


class PopulationProblem(eqx.Module):
    """Typical values `names` (d) on their `scales`, random effects on `random` (q, a subset of
    `names` in that order), the animal likelihood and the animals' data (a PyTree of arrays
    with a leading axis of `n_animals`).

    `lower` / `upper`: bounds of the typical values on the transform scale; `sd_bounds`: bounds
    of each random effect's standard deviation (transform scale); `n_obs`: the number of
    observations (BIC); `animal_ids`: one label per animal (fit files); `covariates`: covariate
    effects on the typical values (`covariates.CovariateModel`, design rows per animal), or
    None."""

    likelihood: AbstractAnimalLikelihood
    animals: object
    lower: jax.Array
    upper: jax.Array
    names: tuple = eqx.field(static=True)
    scales: tuple = eqx.field(static=True)
    random: tuple = eqx.field(static=True)
    covariance: str = eqx.field(static=True, default="diagonal")
    sd_bounds: tuple = eqx.field(static=True, default=(0.01, 3.0))
    n_obs: int = eqx.field(static=True, default=0)
    animal_ids: tuple = eqx.field(static=True, default=())
    covariates: CovariateModel | None = None

    def __check_init__(self):
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {self.covariance!r}")
        for r in self.random:
            if r not in self.names:
                raise ValueError(f"random effect {r!r} is not a typical value ({self.names})")
        if len(set(self.random)) != len(self.random):
            raise ValueError("a random effect is named twice")
        if self.covariates is not None:
            if any(not 0 <= j < len(self.names) for j in self.covariates.target):
                raise ValueError("a covariate effect targets no typical value")
            if self.covariates.design.shape != (self.n_animals, self.covariates.p):
                raise ValueError(f"covariate design must be (n_animals, p) = "
                                 f"{(self.n_animals, self.covariates.p)}, got "
                                 f"{self.covariates.design.shape}")

    # ---------------------------------------------------------------- sizes and layout
    @property
    def d(self) -> int:
        return len(self.names)

    @property
    def q(self) -> int:
        return len(self.random)

    @property
    def n_animals(self) -> int:
        return int(jax.tree.leaves(self.animals)[0].shape[0])

    @property
    def p(self) -> int:
        """Number of covariate effects (betas)."""
        return 0 if self.covariates is None else self.covariates.p

    @property
    def design(self) -> jax.Array:
        """(n_animals, p) covariate design rows (p = 0 without covariates)."""
        if self.covariates is None:
            return jnp.zeros((self.n_animals, 0))
        return self.covariates.design

    @property
    def n_offdiag(self) -> int:
        return self.q * (self.q - 1) // 2 if self.covariance == "full" else 0

    @property
    def n_theta(self) -> int:
        """Length of the outer parameter vector."""
        return self.d + self.q + self.n_offdiag + self.p

    @property
    def random_index(self) -> tuple:
        return tuple(self.names.index(r) for r in self.random)

    def selection(self) -> jax.Array:
        """E (d, q): phi = theta + E eta."""
        E = np.zeros((self.d, self.q))
        for k, j in enumerate(self.random_index):
            E[j, k] = 1.0
        return jnp.asarray(E)

    def theta_names(self) -> tuple:
        off = [f"corr_chol({self.random[i]},{self.random[j]})"
               for i, j in zip(*np.tril_indices(self.q, -1), strict=True)]
        betas = [f"beta({e.label})" for e in self.covariates.effects] if self.p else []
        return (*self.names, *(f"log_sd({r})" for r in self.random), *off[:self.n_offdiag],
                *betas)

    def theta_bounds(self) -> list:
        """(low, high) of each outer parameter (None: unbounded): the sigmoid-bounded coordinates of
        `fit_laplace`."""
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        b = [(float(a), float(c)) for a, c in zip(lo, hi, strict=True)]
        b += [(float(np.log(self.sd_bounds[0])), float(np.log(self.sd_bounds[1])))] * self.q
        b += [(None, None)] * self.n_offdiag
        b += [(-BETA_BOUND, BETA_BOUND)] * self.p
        return b

    # ---------------------------------------------------------------- unpacking
    def split(self, theta):
        """(typical (d,), log sd (q,), off-diagonal (n_offdiag,)) of an outer vector."""
        d, q = self.d, self.q
        return theta[:d], theta[d:d + q], theta[d + q:d + q + self.n_offdiag]

    def beta(self, theta):
        """The covariate effects (p,) of an outer vector."""
        return theta[self.d + self.q + self.n_offdiag:]

    def chol(self, theta):
        """Lower-triangular L (q, q) with Omega = L L^T."""
        _, log_sd, off = self.split(theta)
        sd = jnp.exp(log_sd)
        C = jnp.eye(self.q, dtype=theta.dtype)
        if self.n_offdiag:
            C = C.at[np.tril_indices(self.q, -1)].set(off)
        # unit-diagonal factor, rows normalised so that C C^T is a correlation matrix
        C = C / jnp.linalg.norm(C, axis=1, keepdims=True)
        return sd[:, None] * C

    def omega(self, theta):
        L = self.chol(theta)
        return L @ L.T

    def shared(self, theta):
        """The likelihood's shared table at the outer vector theta (`AbstractAnimalLikelihood.
        shared`; None for most likelihoods)."""
        return self.likelihood.shared(self.split(theta)[0])

    def loglik(self, phi, animal, shared=None):
        """(log-likelihood, status) of one animal, with its row of the shared table."""
        if shared is None:
            return self.likelihood(phi, animal)
        return self.likelihood(phi, animal, shared)

    def typical(self, theta, x=None):
        """The animal's typical values (d,) on the transform scale: theta + X beta for its
        design row x (p,) (`design`; needed when the problem has covariates)."""
        typ = self.split(theta)[0]
        if not self.p:
            return typ
        if x is None:
            raise ValueError("this problem has covariate effects: pass the animal's design "
                             "row x")
        return typical_values(typ, self.beta(theta), x, self.covariates.target)

    def phi(self, theta, eta, x=None):
        """The animal's parameter vector (d,) on the transform scale (x: its design row)."""
        return self.typical(theta, x) + self.selection() @ eta

    def theta0(self, typical, sd, beta=None) -> np.ndarray:
        """An outer vector from typical values (d,), random-effect sds (q,), uncorrelated, and
        covariate effects (p,; default 0)."""
        beta = np.zeros(self.p) if beta is None else np.asarray(beta, float)
        return np.concatenate([np.asarray(typical, float), np.log(np.asarray(sd, float)),
                               np.zeros(self.n_offdiag), beta])
