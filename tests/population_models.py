"""Closed-form animal likelihoods for the population-fit tests (`PopulationProblem`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from dormancy_model.fitting.population.problem import (
    AbstractAnimalLikelihood,
    PopulationProblem,
)

LOG_2PI = float(np.log(2 * np.pi))


class LinearGaussian(AbstractAnimalLikelihood):
    """y_j = a + b x_j + Normal(0, sigma); phi = (a, b, log sigma); padded rows masked."""

    def __call__(self, phi, animal):
        x, y, m = animal
        a, b, sigma = phi[0], phi[1], jnp.exp(phi[2])
        r = (y - a - b * x) / sigma
        ll = jnp.where(m, -0.5 * r**2 - jnp.log(sigma) - 0.5 * LOG_2PI, 0.0)
        return jnp.sum(ll), jnp.asarray(0)


class PoissonLogLinear(AbstractAnimalLikelihood):
    """counts_j ~ Poisson(exp(a + b x_j)); phi = (a, b)."""

    def __call__(self, phi, animal):
        x, k, m = animal
        lam = jnp.exp(phi[0] + phi[1] * x)
        ll = jnp.where(m, k * jnp.log(lam) - lam - gammaln(k + 1.0), 0.0)
        return jnp.sum(ll), jnp.asarray(0)


def problem(likelihood, animals, names, scales, random, lower, upper, covariance="diagonal",
            covariates=None):
    n_obs = int(np.asarray(animals[2]).sum())
    return PopulationProblem(likelihood=likelihood, animals=tuple(map(jnp.asarray, animals)),
                             lower=jnp.asarray(lower, float), upper=jnp.asarray(upper, float),
                             names=tuple(names), scales=tuple(scales), random=tuple(random),
                             covariance=covariance, n_obs=n_obs, covariates=covariates)
