"""`fit_nuts`: a Bayesian fit of a `PopulationProblem` with numpyro NUTS, same likelihood.

    idata, summary = fit_nuts(problem, options=NutsOptions(chains=4, warmup=500, draws=500))

The sampled vector is ``[z (n_theta), u (n_animals, q)]``:

* z: the outer vector in the Laplace fit's sigmoid-bounded coordinates
  (`estimate.BoundedCoordinates`: typical values and log sds inside their bounds, correlation
  factors unbounded), with the log-Jacobian of that map added;
* u: standard-normal animal effects, eta_i = L u_i (non-centred: no funnel between the sds and
  the etas, the usual remedy for divergences in hierarchical models).

Priors: each typical value Normal on its transform scale centred on `prior_centre` (the
parameter table's value for a study, `study_prior`; the middle of the bounds otherwise) with
sd a quarter of the bounds' width (`likelihood.log_prior`, the pooled fit's `--prior`), inside
its bounds; log sd uniform between the sd bounds (log-uniform sd); correlation factors Normal(0,
1); covariate effects (`covariates`) Normal(0, 1) each, an assumption: on a log-scale parameter
a 2.7-fold (e) change of the typical value per unit of log covariate ratio (power model: per
e-fold covariate ratio) or between a level and the reference is one prior sd (inside +-10).
The log-density is ``sum_i loglik(theta + X_i beta + E L u_i) + log N(u; 0, I) + log prior``;
a failed solve (non-zero status) makes it -inf, which NUTS rejects.

Output: an arviz `InferenceData` (posterior: the typical values (natural), sd and CV of every
random effect, ``beta(PARAM~COVARIATE[=LEVEL])`` of every covariate effect, eta per animal;
sample_stats: diverging, tree depth, energy) and a summary (`NutsSummary`): R-hat, bulk/tail
ESS, divergences, and `ok` False with the failed diagnostics named when R-hat >= `rhat_max`, the
bulk ESS < `ess_min` or any draw diverged. Saved with `save_netcdf` (h5netcdf engine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.fitting.population.estimate import BoundedCoordinates
from dormancy_model.fitting.population.problem import PopulationProblem
from dormancy_model.fitting.population.result import cv_of
from dormancy_model.params.transforms import SCALE_CODE, from_scale_codes

LOG_2PI = float(np.log(2 * np.pi))
BETA_PRIOR_SD = 1.0  # prior sd of each covariate effect (log scale), see the module docstring


class NutsOptions(eqx.Module):
    """`chains` chains (vectorized) of `warmup` + `draws` NUTS iterations from `seed`, target
    acceptance `target_accept`, at most 2^`max_tree_depth` leapfrog steps per draw; a diagnostic
    fails when R-hat >= `rhat_max`, bulk ESS < `ess_min` or a draw diverged."""

    chains: int = eqx.field(static=True, default=4)
    warmup: int = eqx.field(static=True, default=500)
    draws: int = eqx.field(static=True, default=500)
    seed: int = eqx.field(static=True, default=0)
    target_accept: float = eqx.field(static=True, default=0.8)
    max_tree_depth: int = eqx.field(static=True, default=8)
    rhat_max: float = eqx.field(static=True, default=1.01)
    ess_min: float = eqx.field(static=True, default=400.0)
    sd0: float = eqx.field(static=True, default=0.3)
    # a dense mass matrix adapts to the posterior correlation of a typical value with the mean
    # of its animals' u (strong in the non-centred form when each animal has much data)
    dense_mass: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.chains < 1 or self.warmup < 1 or self.draws < 2 or self.seed < 0:
            raise ValueError("NutsOptions needs chains >= 1, warmup >= 1, draws >= 2, seed >= 0")


@dataclass
class NutsSummary:
    ok: bool
    failed: list  # names of the failed diagnostics
    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    draws: int
    chains: int
    table: dict = field(default_factory=dict)  # variable -> {mean, sd, hdi, rhat, ess_bulk}
    wall_time_s: float = 0.0

    def text(self) -> str:
        head = (f"nuts: {self.chains} chains x {self.draws} draws, R-hat max "
                f"{self.rhat_max:.3f}, bulk ESS min {self.ess_bulk_min:.0f}, "
                f"{self.divergences} divergences: "
                + ("diagnostics ok" if self.ok else "FAILED " + ", ".join(self.failed)))
        rows = [head]
        for k, v in self.table.items():
            rows.append(f"  {k:<26} mean {v['mean']:.4g}  sd {v['sd']:.3g}  R-hat "
                        f"{v['r_hat']:.3f}  ESS {v['ess_bulk']:.0f}")
        return "\n".join(rows)


class _Posterior(eqx.Module):
    problem: PopulationProblem
    coords_lo: jax.Array
    coords_hi: jax.Array
    bounded: jax.Array
    centre: jax.Array
    prior_sd: jax.Array

    def theta(self, z):
        s = jax.nn.sigmoid(z)
        th = jnp.where(self.bounded, self.coords_lo + (self.coords_hi - self.coords_lo) * s, z)
        # log |d theta / d z| of the bounded components
        logjac = jnp.sum(jnp.where(self.bounded, jnp.log(self.coords_hi - self.coords_lo)
                                   + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z), 0.0))
        return th, logjac

    def log_density(self, x):
        p = self.problem
        d, q, nt = p.d, p.q, p.n_theta
        z, u = x[:nt], x[nt:].reshape(p.n_animals, q)
        theta, logjac = self.theta(z)
        L = p.chol(theta)
        eta = u @ L.T

        def one(e, a, s, x):
            return p.loglik(p.phi(theta, e, x), a, s)

        ll, status = jax.vmap(one)(eta, p.animals, p.shared(theta), p.design)
        r = (theta[:d] - self.centre) / self.prior_sd
        lp = jnp.sum(-0.5 * r**2 - jnp.log(self.prior_sd) - 0.5 * LOG_2PI)
        lp = lp + jnp.sum(-0.5 * p.split(theta)[2] ** 2)  # correlation factors
        # covariate effects: Normal(0, 1) (BETA_PRIOR_SD)
        lp = lp + jnp.sum(-0.5 * (p.beta(theta) / BETA_PRIOR_SD) ** 2
                          - np.log(BETA_PRIOR_SD) - 0.5 * LOG_2PI)
        lu = jnp.sum(-0.5 * u**2)
        total = jnp.sum(ll) + lu + lp + logjac
        bad = jnp.any(status != 0) | ~jnp.isfinite(total)
        return jnp.where(bad, -jnp.inf, total)


def fit_nuts(problem: PopulationProblem, *, options: NutsOptions = NutsOptions(),
             prior_centre=None, theta0=None, progress_bar: bool = False):
    """Sample the posterior of `problem`; returns (arviz InferenceData, `NutsSummary`).
    `prior_centre`: (d,) typical-value prior centres on the transform scale (default: the
    middle of the bounds); `theta0`: an outer vector to start every chain near (default: the
    prior centres, sds at `options.sd0`)."""
    from numpyro.infer import MCMC, NUTS

    t0 = time.perf_counter()
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    centre = 0.5 * (lo + hi) if prior_centre is None else np.asarray(prior_centre, float)
    coords = BoundedCoordinates(problem.theta_bounds())
    post = _Posterior(problem, jnp.asarray(coords.lo), jnp.asarray(coords.hi),
                      jnp.asarray(coords.bounded), jnp.asarray(centre),
                      jnp.asarray((hi - lo) / 4.0))
    if theta0 is None:
        theta0 = problem.theta0(centre, np.full(problem.q, options.sd0))
    nt, n, q = problem.n_theta, problem.n_animals, problem.q
    rng = np.random.default_rng(options.seed)
    z0 = coords.z(np.asarray(theta0, float))
    init = np.concatenate([np.tile(z0, (options.chains, 1))
                           + 0.1 * rng.normal(size=(options.chains, nt)),
                           0.1 * rng.normal(size=(options.chains, n * q))], axis=1)

    def potential(x):
        return -post.log_density(x)

    kernel = NUTS(potential_fn=potential, target_accept_prob=options.target_accept,
                  max_tree_depth=options.max_tree_depth, dense_mass=options.dense_mass)
    mcmc = MCMC(kernel, num_warmup=options.warmup, num_samples=options.draws,
                num_chains=options.chains, chain_method="vectorized",
                progress_bar=progress_bar)
    mcmc.run(jax.random.PRNGKey(options.seed), init_params=jnp.asarray(init),
             extra_fields=("diverging", "num_steps", "energy"))
    x = np.asarray(mcmc.get_samples(group_by_chain=True))  # (chains, draws, dim)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    idata = _inference_data(problem, coords, x, extra)
    return idata, summarise(idata, options, time.perf_counter() - t0)


def _inference_data(problem, coords, x, extra):
    import arviz as az

    C, D = x.shape[:2]
    nt, q = problem.n_theta, problem.q
    theta = coords.theta(x[..., :nt].reshape(-1, nt)).reshape(C, D, nt)
    codes = np.array([SCALE_CODE[s] for s in problem.scales])
    typ = from_scale_codes(theta[..., :problem.d], codes)
    posterior = {n: typ[..., j] for j, n in enumerate(problem.names)}
    omega = np.asarray(jax.vmap(problem.omega)(jnp.asarray(theta.reshape(-1, nt))))
    omega = omega.reshape(C, D, q, q)
    L = np.asarray(jax.vmap(problem.chol)(jnp.asarray(theta.reshape(-1, nt)))).reshape(
        C, D, q, q)
    u = x[..., nt:].reshape(C, D, problem.n_animals, q)
    eta = np.einsum("cdij,cdaj->cdai", L, u)
    for k, r in enumerate(problem.random):
        sd = np.sqrt(omega[..., k, k])
        posterior[f"sd({r})"] = sd
        posterior[f"cv({r})"] = cv_of(sd, problem.scales[problem.names.index(r)])
    if problem.p:
        beta = theta[..., problem.d + q + problem.n_offdiag:]
        for k, e in enumerate(problem.covariates.effects):
            posterior[f"beta({e.label})"] = beta[..., k]
    posterior["eta"] = eta
    ids = list(problem.animal_ids or (str(i) for i in range(problem.n_animals)))
    stats = dict(diverging=np.asarray(extra["diverging"], bool),
                 n_steps=np.asarray(extra["num_steps"]), energy=np.asarray(extra["energy"]))
    return az.from_dict(posterior=posterior, sample_stats=stats,
                        coords=dict(animal=ids, random_effect=list(problem.random)),
                        dims=dict(eta=["animal", "random_effect"]))


def summarise(idata, options: NutsOptions, wall: float = 0.0) -> NutsSummary:
    """R-hat, ESS (arviz) and divergences of the typical values and random-effect sds."""
    import arviz as az

    names = [v for v in idata.posterior.data_vars if v != "eta"]
    s = az.summary(idata, var_names=names, kind="all", round_to="none")
    rhat = float(np.nanmax(s["r_hat"].to_numpy()))
    ess_b = float(np.nanmin(s["ess_bulk"].to_numpy()))
    ess_t = float(np.nanmin(s["ess_tail"].to_numpy()))
    div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    failed = []
    if not rhat < options.rhat_max:
        failed.append(f"R-hat {rhat:.3f} >= {options.rhat_max}")
    if not ess_b >= options.ess_min:
        failed.append(f"bulk ESS {ess_b:.0f} < {options.ess_min:g}")
    if div:
        failed.append(f"{div} divergent transitions")
    table = {k: {c: float(s.loc[k, c]) for c in ("mean", "sd", "r_hat", "ess_bulk",
                                                  "ess_tail")} for k in s.index}
    C, D = np.asarray(idata.sample_stats["diverging"]).shape
    return NutsSummary(ok=not failed, failed=failed, rhat_max=rhat, ess_bulk_min=ess_b,
                       ess_tail_min=ess_t, divergences=div, draws=D, chains=C, table=table,
                       wall_time_s=wall)


def save_netcdf(idata, path) -> None:
    """Write the InferenceData as NetCDF (h5netcdf), atomically (`io.atomic_write_netcdf`)."""
    from dormancy_model.io import atomic_write_netcdf

    atomic_write_netcdf(idata, path)
