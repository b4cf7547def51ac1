"""Population fit JSON files in the format `dormancy fit --method laplace` writes, made without
fitting: chosen typical values, between-animal sds and correlation factors, and per-animal
random effects, written by the package's own block builder (`population.study_fit.
population_block`, with Omega from `PopulationProblem.omega`) and writer (`fitting.files.
write_fit`), so that the file has exactly the fields and layout of a real population fit."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from dormancy_model.fitting.files import write_fit
from dormancy_model.fitting.objective import free_parameters
from dormancy_model.fitting.population.problem import (
    AbstractAnimalLikelihood,
    PopulationProblem,
)
from dormancy_model.fitting.population.result import PopulationResult, PopulationStart, cv_of
from dormancy_model.fitting.population.study_fit import population_block
from dormancy_model.params.table import load_model_parameters
from dormancy_model.params.transforms import to_scale
from fit_files import STUDY, make_fit_result


class _NoData(AbstractAnimalLikelihood):
    def __call__(self, phi, animal):
        return jnp.sum(phi) * 0.0, jnp.asarray(0)


def write_population_fit_file(path, model: str, typical: dict, random: tuple, sd,
                              corr=(), eta: dict | None = None, covariance_theta=None,
                              typical_covariance=None) -> dict:
    """Write a Laplace population fit of parameter set `model` at `path`; returns the doc.

    `typical`: internal values (burden_sigma allowed), `random`: names among them with
    between-animal sds `sd` (transform scale); `corr`: the correlation factors of a full
    Omega (q (q - 1) / 2, `PopulationProblem` layout; empty: diagonal); `eta`: animal id ->
    (q,) random effects; `covariance_theta`: covariance of the outer vector [typical, log sd,
    corr] (default 0.01 I); `typical_covariance`: `covariance_scale` (default its typical
    block)."""
    params = load_model_parameters(model)
    names = tuple(typical)
    fp = free_parameters(params, names)
    scales = tuple(f.scale for f in fp)
    structure = "full" if len(corr) else "diagonal"
    eta = eta if eta is not None else {"a1": [0.0] * len(random)}
    ids = tuple(eta)
    lo = np.array([to_scale(f.lower, f.scale) for f in fp])
    hi = np.array([to_scale(f.upper, f.scale) for f in fp])
    problem = PopulationProblem(likelihood=_NoData(), animals=jnp.zeros((len(ids), 1)),
                                lower=jnp.asarray(lo), upper=jnp.asarray(hi), names=names,
                                scales=scales, random=tuple(random), covariance=structure,
                                n_obs=10, animal_ids=ids)
    t_scale = np.array([to_scale(typical[n], s) for n, s in zip(names, scales, strict=True)])
    theta = np.concatenate([t_scale, np.log(np.asarray(sd, float)), np.asarray(corr, float)])
    k = theta.size
    cov_theta = (0.01 * np.eye(k) if covariance_theta is None
                 else np.asarray(covariance_theta, float))
    omega = np.asarray(problem.omega(jnp.asarray(theta)))
    sds = np.sqrt(np.diag(omega))
    d = len(names)
    rdict = lambda v: dict(zip(random, map(float, v), strict=True))  # noqa: E731
    tdict = lambda v: dict(zip(names, map(float, v), strict=True))  # noqa: E731
    cvs = [float(cv_of(s, scales[names.index(r)])) for r, s in zip(random, sds, strict=True)]
    pop = PopulationResult(
        method="laplace", names=names, scales=scales, random=tuple(random),
        covariance_structure=structure, typical_scale=tdict(t_scale),
        typical=dict(typical), typical_ci_low=tdict([typical[n] * 0.5 for n in names]),
        typical_ci_high=tdict([typical[n] * 2 for n in names]), typical_rse=tdict([10.0] * d),
        omega=omega.tolist(), sd=rdict(sds), cv=rdict(cvs), cv_ci_low=rdict(np.array(cvs) / 2),
        cv_ci_high=rdict(np.array(cvs) * 2), omega_rse=rdict([20.0] * len(random)),
        theta=theta.tolist(), theta_names=problem.theta_names(), covariance=cov_theta.tolist(),
        eta={a: list(map(float, e)) for a, e in eta.items()},
        eta_sd={a: [0.1] * len(random) for a in ids}, shrinkage=rdict([0.1] * len(random)),
        objective=12.5, aic=2 * k + 25.0, bic=k * np.log(10) + 25.0, n_obs=10,
        n_animals=len(ids), converged=True, inner_converged=len(ids), hessian_pd=True,
        starts=[PopulationStart(0, theta.tolist(), theta.tolist(), 12.5, True, 5, "ok")])
    cov_t = (cov_theta[:d, :d] if typical_covariance is None
             else np.asarray(typical_covariance, float))
    pooled = make_fit_result(params, typical, cov_t)
    e = np.array([eta[a] for a in ids], float)
    z = np.zeros(len(ids))
    block = population_block(pop, problem, fp, e, pooled, z, z)
    result = dataclasses.replace(pooled, population=block)
    return write_fit(path, result, STUDY, model, params)
