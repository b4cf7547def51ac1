"""`fit_study_laplace`: the population fit of a mouse study, reported as a `FitResult`.

    result = fit_study_laplace(study, params, free, random=("dormant_initial", "k_dr"),
                               options=FitOptions(starts=8), laplace=LaplaceOptions(starts=2))

1. the pooled fit (`estimate.fit`, all `options.starts`) finds typical values cheaply (no
   random effects: one solve per arm);
2. the Laplace fit (`fit_laplace`) starts from the best `laplace.starts` distinct pooled
   estimates, every random-effect sd at `laplace.sd0`;
3. the result is a `FitResult` whose `estimate` holds the typical values (so that every reader
   of a fit file, `simulate --params`, sweeps, figures, keeps working) with standard errors,
   CIs and covariance from the population fit (the typical-value block of the inverse outer
   Hessian; `hessian` is its inverse, the Hessian of the objective profiled over the variance
   parameters), the Laplace objective and AIC, and a `population` block
   (`population_block`): typical values, Omega, CVs with CIs and RSE%, covariate effects
   (`covariates`: parameter, covariate, model, reference, estimate, SE, RSE%, 95% CI), EBEs per
   animal, shrinkage, objective, AIC/BIC (the betas counted), convergence flags, and the pooled
   fit it started from (no covariates: the Laplace starts have every beta at 0).
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.fitting.estimate import Z95, FitOptions, FitResult, StartResult, fit
from dormancy_model.fitting.objective import free_parameters
from dormancy_model.fitting.population.animals import animal_parts, study_problem
from dormancy_model.fitting.population.covariates import effect_rows
from dormancy_model.fitting.population.estimate import LaplaceOptions, fit_laplace
from dormancy_model.model.integrate import FixedSteps
from dormancy_model.params.transforms import SCALE_CODE, from_scale_codes, to_scale


def population_solver() -> FixedSteps:
    """The population fit's default step grid: 128 fine and 96 coarse steps (plus every dose
    time), about a third of the pooled fit's, since every animal is solved and differentiated
    to third order; stage loops bounded (`FixedSteps.scan_kind`). Measured on the shipped
    study's vehicle and combo-hcq60-eve5-chronic arms at two parameter sets: the joint
    log-likelihood within 0.07 of an adaptive solve at rtol 1e-9 (512/192: 0.014; 128/48 is
    off by 8.5: the coarse steps after treatment decide the accuracy)."""
    return FixedSteps(fine=128, coarse=96, scan_kind="bounded")


def _num(x):
    x = float(x)
    return x if np.isfinite(x) else None


def fit_study_laplace(study, params, free, random, *, options: FitOptions = FitOptions(),
                      laplace: LaplaceOptions = LaplaceOptions(starts=2, gtol=1e-3),
                      covariance: str = "diagonal", sigma: float = 0.5,
                      solver: FixedSteps | None = None, pooled: FitResult | None = None,
                      progress=None, on_iteration=None, covariates=(),
                      profile: tuple = ()) -> FitResult:
    """Population (Laplace) fit of `study`; see the module docstring. `pooled`: reuse a pooled
    fit of the same study and free parameters; `progress(i, n, f)`: the pooled fit's;
    `on_iteration(start, iteration, objective)`: the Laplace fit's; `covariates`: covariate
    effects on typical values (`population.covariates`, e.g. ``("k_dr~body_weight_g",
    "delta_max~arm")``); `profile`: random effects whose between-animal sd gets a
    profile-likelihood 95% interval (`population.profile`, several Laplace fits each)."""
    t0 = time.perf_counter()
    fp = free_parameters(params, tuple(free))
    problem = study_problem(study, params, free, random, covariance=covariance, sigma=sigma,
                            solver=solver or population_solver(), covariates=covariates)
    t_pooled = 0.0
    if pooled is None:
        pooled = fit(study, params, free, options=options, sigma=sigma, progress=progress)
        t_pooled = pooled.wall_time_s  # counted once: `population_fit_result` adds it
    T0, seen = [], set()
    for s in pooled.starts:
        if not np.isfinite(s.objective):
            continue
        row = np.array([to_scale(s.estimate[f.name], f.scale) for f in fp])
        key = tuple(np.round(row, 3))
        if key in seen:
            continue
        seen.add(key)
        lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
        row = np.clip(row, lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))
        T0.append(problem.theta0(row, np.full(problem.q, laplace.sd0)))
        if len(T0) == laplace.starts:
            break
    pop = fit_laplace(problem, options=laplace, theta0=np.array(T0) if T0 else None,
                      on_iteration=on_iteration)
    if profile:
        from dormancy_model.fitting.population.profile import profile_sd

        pop.profile = {r: profile_sd(problem, pop, r, options=laplace) for r in profile}
    return population_fit_result(pop, problem, fp, pooled, sigma,
                                 time.perf_counter() - t0 - t_pooled)


def population_fit_result(pop, problem, fp, pooled: FitResult, sigma, wall) -> FitResult:
    d = problem.d
    names = pop.names
    cov = np.asarray(pop.covariance, float)
    cov_t = cov[:d, :d]
    var = np.diag(cov_t)
    se = np.sqrt(np.where(var > 0, var, np.nan))
    try:
        hess = np.linalg.inv(cov_t)
    except np.linalg.LinAlgError:
        hess = np.full_like(cov_t, np.nan)
    codes = np.array([SCALE_CODE[f.scale] for f in fp])
    s_hat = np.array([pop.typical_scale[n] for n in names])
    lo_s, hi_s = s_hat - Z95 * se, s_hat + Z95 * se
    span = np.asarray(problem.upper) - np.asarray(problem.lower)
    ids = list(pop.eta)
    eta = np.array([pop.eta[a] for a in ids]) if problem.q else np.zeros((len(ids), 0))
    lb, lr, _ = animal_parts(problem, jnp.asarray(pop.theta), jnp.asarray(eta))
    dct = lambda v: dict(zip(names, map(float, v), strict=True))  # noqa: E731
    starts = []
    for st in pop.starts:
        t0, t1 = np.asarray(st.theta0[:d]), np.asarray(st.theta[:d])
        starts.append(StartResult(st.start, dct(from_scale_codes(t0, codes)),
                                  dct(from_scale_codes(t1, codes)), st.objective, st.converged,
                                  float("nan"), st.iterations,
                                  S.OK if np.isfinite(st.objective) else S.NONFINITE))
    settings = dict(pooled.settings)
    settings.update(method="laplace", population=pop.settings,
                    population_solver=problem.likelihood.options.describe())
    return FitResult(
        names=names, scales=tuple(f.scale for f in fp), units=tuple(f.unit for f in fp),
        unit_factors=tuple(f.factor for f in fp), estimate=dict(pop.typical),
        scale_estimate=dict(pop.typical_scale), se=dct(se),
        ci_low=dct(from_scale_codes(lo_s, codes)), ci_high=dct(from_scale_codes(hi_s, codes)),
        identifiable={n: bool(np.isfinite(se[j]) and hi_s[j] - lo_s[j] < span[j])
                      for j, n in enumerate(names)},
        objective=float(pop.objective), loglik_burden=float(np.sum(lb)),
        loglik_relapse=float(np.sum(lr)), aic=float(pop.aic), n_obs=int(pop.n_obs),
        starts=starts, hessian=hess.tolist(), covariance=cov_t.tolist(), settings=settings,
        seed=pooled.seed, wall_time_s=wall + pooled.wall_time_s,
        n_evaluations=pooled.n_evaluations,
        population=population_block(pop, problem, fp, eta, pooled, lb, lr))


def population_block(pop, problem, fp, eta, pooled: FitResult, lb, lr) -> dict:
    """The fit file's `population` block (JSON-ready; file units where a unit applies)."""
    factor = {f.name: f.factor for f in fp}
    unit = {f.name: f.unit for f in fp}
    typical = {n: dict(value=pop.typical[n] / factor[n], unit=unit[n],
                       internal_value=pop.typical[n], scale=s,
                       ci95_low=_num(pop.typical_ci_low[n] / factor[n]),
                       ci95_high=_num(pop.typical_ci_high[n] / factor[n]),
                       rse_percent=_num(pop.typical_rse[n]))
               for n, s in zip(pop.names, pop.scales, strict=True)}
    random = {}
    for r in pop.random:
        # within 1% of a bound of the sd: a Wald CI and RSE mean nothing there (None)
        at_bound = bool(min(abs(np.log(pop.sd[r] / b)) for b in problem.sd_bounds) < 0.01)
        wald = (lambda v: None) if at_bound else _num  # noqa: E731
        random[r] = dict(sd=_num(pop.sd[r]), cv=_num(pop.cv[r]),
                         cv_ci95_low=wald(pop.cv_ci_low[r]), cv_ci95_high=wald(pop.cv_ci_high[r]),
                         variance_rse_percent=wald(pop.omega_rse[r]),
                         shrinkage=_num(pop.shrinkage[r]), sd_at_bound=at_bound,
                         sd_bounds=list(problem.sd_bounds))
        pr = (pop.profile or {}).get(r)
        if pr is not None:  # profile-likelihood 95% CI (`population.profile`)
            random[r].update(cv_profile95_low=_num(pr["cv_low"]),
                             cv_profile95_high=_num(pr["cv_high"]),
                             profile_low_at_bound=pr["low_at_bound"],
                             profile_high_at_bound=pr["high_at_bound"],
                             profile_fits_converged=pr["all_fits_converged"],
                             profile_points=[{"sd": _num(q["sd"]),
                                              "delta_nll": _num(q["delta_nll"])}
                                             for q in pr["points"]])
    codes = np.array([SCALE_CODE[s] for s in pop.scales])
    ebe = {}
    for i, a in enumerate(pop.eta):
        phi = np.asarray(problem.phi(jnp.asarray(pop.theta), jnp.asarray(eta[i]),
                                     problem.design[i]))
        nat = from_scale_codes(phi, codes)
        ebe[a] = dict(eta=[_num(x) for x in pop.eta[a]],
                      eta_sd=[_num(x) for x in pop.eta_sd.get(a, [])],
                      parameters={r: _num(nat[problem.names.index(r)] / factor[r])
                                  for r in pop.random},
                      loglik=_num(lb[i] + lr[i]))
    return dict(
        method=pop.method, covariance=pop.covariance_structure, random_effects=list(pop.random),
        typical=typical, omega=[[_num(x) for x in r] for r in pop.omega],
        omega_scale="transform scale of each parameter (log: log-normal between animals)",
        random=random, covariates=_json_rows(pop.covariates),
        objective=dict(nll=_num(pop.objective), aic=_num(pop.aic), bic=_num(pop.bic),
                       n_params=pop.n_params, n_obs=pop.n_obs, n_animals=pop.n_animals),
        converged=bool(pop.converged), hessian_pd=bool(pop.hessian_pd),
        inner_converged=int(pop.inner_converged),
        starts=[dict(start=s.start, objective=_num(s.objective), converged=s.converged,
                     iterations=s.iterations, message=s.message, theta=s.theta)
                for s in pop.starts],
        theta_names=list(pop.theta_names), theta=[_num(x) for x in pop.theta],
        covariance_theta=[[_num(x) for x in r] for r in pop.covariance],
        ebe=ebe, ebe_units={r: unit[r] for r in pop.random},
        pooled=dict(nll=_num(pooled.objective), aic=_num(pooled.aic),
                    estimates={n: _num(v / factor[n]) for n, v in pooled.estimate.items()}),
        wall_time_s=pop.wall_time_s)


def _json_rows(rows) -> list:
    """Covariate rows with non-finite numbers as None (JSON)."""
    def clean(v):
        if isinstance(v, float):
            return _num(v)
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return [{k: clean(v) for k, v in r.items()} for r in rows]


def _nuts_rows(problem, idata) -> list:
    """The covariate rows of a NUTS fit: posterior mean, sd (as se), 2.5% and 97.5% quantiles
    (as the 95% interval) of every beta; RSE% = 100 sd / |mean|."""
    if not problem.p:
        return []
    rows = []
    for e in problem.covariates.effects:
        draws = np.asarray(idata.posterior[f"beta({e.label})"]).ravel()
        m, sd = float(draws.mean()), float(draws.std(ddof=1))
        row = effect_rows([e], [m], [sd])[0]
        lo, hi = np.quantile(draws, [0.025, 0.975])
        row.update(ci95_low=float(lo), ci95_high=float(hi), interval="posterior 2.5%-97.5%")
        if e.model == "categorical":
            row["fold_change_ci95"] = [float(np.exp(lo)), float(np.exp(hi))]
        rows.append(row)
    return _json_rows(rows)


def fit_study_nuts(study, params, free, random, *, options: FitOptions = FitOptions(),
                   nuts=None, covariance: str = "diagonal", sigma: float = 0.5,
                   solver: FixedSteps | None = None, pooled: FitResult | None = None,
                   progress=None, covariates=()):
    """Bayesian population fit of `study` (numpyro NUTS, `population.nuts`): chains start near
    the pooled fit's best estimate, typical-value priors centred on the parameter table's
    values. Returns (`FitResult`: estimates = posterior means on each parameter's scale,
    standard errors = posterior sds there, CIs = the 2.5% and 97.5% posterior quantiles,
    `population` = `nuts_block`; the InferenceData). `covariates`: as `fit_study_laplace`'s
    (prior Normal(0, 1) on each beta, `nuts.BETA_PRIOR_SD`); their rows in the block give
    the posterior mean, sd and 2.5% / 97.5% quantiles as estimate, se and CI."""
    from dormancy_model.fitting.population.nuts import NutsOptions, fit_nuts

    nuts = nuts or NutsOptions()
    t0 = time.perf_counter()
    fp = free_parameters(params, tuple(free))
    problem = study_problem(study, params, free, random, covariance=covariance, sigma=sigma,
                            solver=solver or population_solver(), covariates=covariates)
    if pooled is None:
        pooled = fit(study, params, free, options=options, sigma=sigma, progress=progress)
        t0 += pooled.wall_time_s  # counted once: added to the wall time below
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    start = np.array([to_scale(pooled.estimate[f.name], f.scale) for f in fp])
    start = np.clip(start, lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo))
    centre = np.array([to_scale(f.table_value, f.scale) for f in fp])
    idata, summ = fit_nuts(problem, options=nuts, prior_centre=centre,
                           theta0=problem.theta0(start, np.full(problem.q, nuts.sd0)))
    names = problem.names
    codes = np.array([SCALE_CODE[f.scale] for f in fp])
    draws = np.stack([np.asarray(idata.posterior[n]).ravel() for n in names], axis=1)
    s_draws = np.stack([to_scale(draws[:, j], f.scale) for j, f in enumerate(fp)], axis=1)
    mean_s = s_draws.mean(axis=0)
    cov = np.atleast_2d(np.cov(s_draws, rowvar=False))
    sd_s = np.sqrt(np.diag(cov))
    q_lo, q_hi = np.quantile(draws, 0.025, axis=0), np.quantile(draws, 0.975, axis=0)
    dct = lambda v: dict(zip(names, map(float, v), strict=True))  # noqa: E731
    est = dct(from_scale_codes(mean_s, codes))
    settings = dict(pooled.settings)
    settings.update(method="nuts", nuts=dict(chains=nuts.chains, warmup=nuts.warmup,
                                             draws=nuts.draws, seed=nuts.seed,
                                             target_accept=nuts.target_accept,
                                             max_tree_depth=nuts.max_tree_depth,
                                             dense_mass=nuts.dense_mass),
                    random=list(problem.random), covariance=covariance,
                    covariates=[e.label for e in problem.covariates.effects]
                    if problem.p else [],
                    population_solver=problem.likelihood.options.describe())
    k = problem.n_theta
    factor = {f.name: f.factor for f in fp}
    unit = {f.name: f.unit for f in fp}
    block = dict(
        method="nuts", covariance=covariance, random_effects=list(problem.random),
        typical={n: dict(value=est[n] / factor[n], unit=unit[n], internal_value=est[n],
                         scale=f.scale, posterior_sd_scale=_num(sd_s[j]),
                         ci95_low=_num(q_lo[j] / factor[n]),
                         ci95_high=_num(q_hi[j] / factor[n]))
                 for j, (n, f) in enumerate(zip(names, fp, strict=True))},
        random={r: dict(sd=_num(np.mean(idata.posterior[f"sd({r})"])),
                        cv=_num(np.mean(idata.posterior[f"cv({r})"])),
                        cv_ci95_low=_num(np.quantile(idata.posterior[f"cv({r})"], 0.025)),
                        cv_ci95_high=_num(np.quantile(idata.posterior[f"cv({r})"], 0.975)))
                for r in problem.random},
        covariates=_nuts_rows(problem, idata),
        covariate_prior="Normal(0, 1) on each beta (log scale of the typical value)",
        ebe={a: dict(eta=[_num(x) for x in np.asarray(
            idata.posterior["eta"]).mean(axis=(0, 1))[i]]) for i, a in
            enumerate(problem.animal_ids)},
        diagnostics=dict(ok=summ.ok, failed=summ.failed, rhat_max=_num(summ.rhat_max),
                         ess_bulk_min=_num(summ.ess_bulk_min),
                         ess_tail_min=_num(summ.ess_tail_min),
                         divergences=summ.divergences, table=summ.table),
        converged=bool(summ.ok), objective=dict(n_params=k, n_obs=problem.n_obs,
                                                n_animals=problem.n_animals),
        pooled=dict(nll=_num(pooled.objective), aic=_num(pooled.aic)),
        wall_time_s=summ.wall_time_s)
    result = FitResult(
        names=names, scales=tuple(f.scale for f in fp), units=tuple(f.unit for f in fp),
        unit_factors=tuple(f.factor for f in fp), estimate=est, scale_estimate=dct(mean_s),
        se=dct(sd_s), ci_low=dct(q_lo), ci_high=dct(q_hi),
        identifiable={n: bool(np.isfinite(sd_s[j]) and 4 * sd_s[j] < hi[j] - lo[j])
                      for j, n in enumerate(names)},
        objective=float(pooled.objective), loglik_burden=float(pooled.loglik_burden),
        loglik_relapse=float(pooled.loglik_relapse), aic=float(pooled.aic),
        n_obs=int(problem.n_obs), starts=list(pooled.starts),
        hessian=np.linalg.pinv(cov).tolist(), covariance=cov.tolist(), settings=settings,
        seed=pooled.seed, wall_time_s=time.perf_counter() - t0 + pooled.wall_time_s,
        n_evaluations=pooled.n_evaluations, population=block)
    return result, idata
