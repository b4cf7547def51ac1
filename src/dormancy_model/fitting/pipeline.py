"""The fit-and-figures run: load and validate a study and a parameter set, fit, write the fit
JSON and the figures (all inputs are validated before anything is written). Used by
`dormancy fit`, the demo and the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dormancy_model.errors import InputError, check_seed

DEFAULT_FREE = "dormant_initial,k_dr,delta_max,hcq_ic50,eve_ic50,burden_sigma"


def write_fit_figures(result, study, params, fig_dir: Path) -> list[str]:
    """Write the fit figures into `fig_dir`; returns the file names."""
    from dormancy_model.fitting.estimate import PROFILE_DROP
    from dormancy_model.fitting.likelihood import predict_arms
    from dormancy_model.fitting.plots import (
        plot_burden_dose,
        plot_burden_vs_rfs,
        plot_km,
        plot_profiles,
        plot_waterfall,
    )
    from dormancy_model.io import atomic_savefig

    fitted = result.apply(params)
    t_end = float(max(study.survival.day.max(), study.burden.day.max()))
    days = np.unique(np.concatenate([np.linspace(0.0, t_end, 301), study.burden.day]))
    residual, rfs = predict_arms(study, fitted, days)
    sigma = result.estimate.get("burden_sigma", result.settings.get("sigma_fixed") or 0.5)
    figs = {
        "burden_vs_dose.png": plot_burden_dose(study, days, residual, sigma),
        "kaplan_meier.png": plot_km(study, days, rfs),
        "burden_vs_rfs.png": plot_burden_vs_rfs(study, days, residual, rfs),
        "waterfall.png": plot_waterfall([s.objective for s in result.starts],
                                        [s.converged for s in result.starts]),
    }
    if getattr(result, "population", None):
        from dormancy_model.fitting.plots import plot_eta_distributions

        figs["eta_distributions.png"] = plot_eta_distributions(result.population)
    if result.profiles:
        figs["profiles.png"] = plot_profiles(result.profiles, result.estimate, result.objective,
                                             PROFILE_DROP)
    fig_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt

    for name, fig in figs.items():
        atomic_savefig(fig, fig_dir / name, dpi=100)
        plt.close(fig)
    return list(figs)


def parse_arms(text: str) -> list[str]:
    """`--arms a,b` as a list of arm names ("" for all arms: []); an empty name (`a,,b`, `,`)
    or a repeated one is an InputError."""
    if not text.strip():
        return []
    names = [a.strip() for a in text.split(",")]
    if "" in names:
        raise InputError("--arms", "arms", f"empty arm name in {text!r}")
    for i, a in enumerate(names):
        if a in names[:i]:
            raise InputError("--arms", "arms", f"duplicate arm {a!r} in {text!r}")
    return names


METHODS = ("pooled", "laplace", "nuts")


def _names(v) -> tuple:
    if isinstance(v, str):
        v = v.split(",")
    return tuple(n.strip() for n in v if n.strip())


def pk_sigmas(study, free) -> tuple:
    """The PK residual sds to fit along `free` (names): ``pk_sigma_<drug>`` of each drug
    measured in the study's pk.csv, unless `free` names it already (then none is added)."""
    from dormancy_model.fitting.study import PK_DRUGS

    if study.pk is None:
        return ()
    return tuple(f"pk_sigma_{d}" for i, d in enumerate(PK_DRUGS)
                 if np.any(study.pk.drug == i) and f"pk_sigma_{d}" not in free)


def run_fit(study_path, model_path, free, options=None, *, out, figures=None, arms=None,
            progress=None, method="pooled", random=(), covariance="diagonal", laplace=None,
            on_iteration=None, nuts=None, covariates=()):
    """Load, validate, fit, write `out` (JSON) and figures (default directory: `out` without
    .json). `study_path`: a study directory; `model_path`: a parameter set name or file; `free`:
    names (a list or a comma-separated string); `options`: the search (`FitOptions`: starts,
    seed, Adam and L-BFGS steps, prior, profiles, solver; default `FitOptions()`); `arms`: fit
    only these arms. `method`: "pooled" (one parameter set for all mice) or "laplace" (random
    effects per animal on `random`, a subset of `free`, `covariance` "diagonal" or "full";
    `laplace`: its `LaplaceOptions`; `population.study_fit`) or "nuts" (the same model sampled
    by numpyro NUTS, `nuts`: its `NutsOptions`; the posterior is written next to `out` as
    NetCDF, `out` with .nc). `covariates`: covariate effects on typical values for laplace and
    nuts (`population.covariates`: strings ``PARAM~COLUMN[:MODEL][@REFERENCE]``, repeated or
    comma-separated). Returns (result, study, fig_dir, fig names)."""
    from dormancy_model.fitting.estimate import FitOptions, fit, fit_batch
    from dormancy_model.fitting.files import write_fit
    from dormancy_model.fitting.objective import Objective
    from dormancy_model.fitting.study import load_study
    from dormancy_model.params.table import load_model_parameters

    options = FitOptions() if options is None else options
    check_seed("--seed", "seed", options.seed)
    study = load_study(study_path)
    if arms:
        study = study.subset(list(arms), source="--arms")
    params = load_model_parameters(model_path)
    if params.species != study.species:
        raise InputError(str(model_path), "meta.species",
                         f"{params.species!r} does not match the study's {study.species!r}")
    bw_spec = params.spec["body_weight"]
    lo, hi = bw_spec.bounds
    if not lo * (1 - 1e-12) <= study.body_weight_kg <= hi * (1 + 1e-12):
        raise InputError(str(Path(study.path) / "study.toml"), "study.body_weight_g",
                         f"{study.body_weight_kg * 1000:g} g is outside the body_weight bounds "
                         f"of {model_path} [{bw_spec.in_file_unit(lo):g}, "
                         f"{bw_spec.in_file_unit(hi):g}] {bw_spec.unit}")
    free = tuple(n.strip() for n in free) if not isinstance(free, str) else tuple(
        n.strip() for n in free.split(",") if n.strip())
    free = free + pk_sigmas(study, free)
    random = _names(random)
    if method not in METHODS:
        raise InputError("--method", "method", f"unknown method {method!r} "
                         f"(one of: {', '.join(METHODS)})")
    if method == "pooled" and random:
        raise InputError("--random", "random", "random effects need --method laplace or nuts")
    if method == "pooled" and any(str(c).strip() for c in (
            [covariates] if isinstance(covariates, str) else covariates)):
        raise InputError("--covariate", "covariate", "covariate effects need --method laplace "
                         "or nuts (with --random)")
    if method in ("laplace", "nuts"):
        from dormancy_model.fitting.objective import free_parameters
        from dormancy_model.fitting.population.animals import animal_table, check_random
        from dormancy_model.fitting.population.covariates import (
            check_covariates,
            study_covariates,
        )
        from dormancy_model.fitting.population.problem import COVARIANCES

        if not random:
            raise InputError("--random", "random", f"--method {method} needs random effects "
                             "(e.g. --random dormant_initial,k_dr)")
        if covariance not in COVARIANCES:
            raise InputError("--covariance", "covariance", f"unknown covariance "
                             f"{covariance!r} (one of: {', '.join(COVARIANCES)})")
        free_parameters(params, free)
        check_random(random, free, params)
        ids, arm_of, _, _ = animal_table(study)
        fp = free_parameters(params, free)
        names = tuple(f.name for f in fp)
        covariates = check_covariates(covariates, names, params)
        study_covariates(study, ids, arm_of, covariates, names, tuple(f.scale for f in fp))
        if options.profile and method == "nuts":
            raise InputError("--profile", "profile", "profiles are for --method pooled "
                             "(parameters) or laplace (between-animal CVs)")
        for n in options.profile:  # laplace: profile-likelihood CIs of these random effects
            if n not in random:
                raise InputError("--profile", "profile", f"{n!r} has no random effect: with "
                                 "--method laplace, --profile names --random parameters")
    for n in options.profile:
        if n not in free:
            raise InputError("--profile", "profile", f"{n!r} is not among --free")
    out = Path(out)
    if out.suffix != ".json":
        raise InputError(str(out), "--out", "must be a .json file path")
    fig_dir = Path(figures) if figures else out.with_suffix("")
    from dormancy_model.io import check_out_dir, check_out_file, output_dir

    check_out_file(out)
    check_out_dir(fig_dir, "--figures")

    obj = Objective(study, params, free, batch=fit_batch(options.starts), options=options.solver,
                    prior=options.prior)  # validates the free names before any work or output
    if method == "laplace":
        from dormancy_model.fitting.population.study_fit import fit_study_laplace

        pooled = fit(study, params, free, options=options, objective=obj, progress=progress)
        kw = {} if laplace is None else dict(laplace=laplace)
        result = fit_study_laplace(study, params, free, random, options=options,
                                   covariance=covariance, pooled=pooled,
                                   on_iteration=on_iteration, covariates=covariates,
                                   profile=tuple(options.profile), **kw)
    elif method == "nuts":
        from dormancy_model.fitting.population.nuts import save_netcdf
        from dormancy_model.fitting.population.study_fit import fit_study_nuts

        pooled = fit(study, params, free, options=options, objective=obj, progress=progress)
        result, idata = fit_study_nuts(study, params, free, random, options=options, nuts=nuts,
                                       covariance=covariance, pooled=pooled,
                                       covariates=covariates)
        nc = out.with_suffix(".nc")
        result.population["posterior_netcdf"] = nc.name
    else:
        result = fit(study, params, free, options=options, objective=obj, progress=progress)
    # nothing is written before the fit succeeds; the figures appear all at once, then the JSON
    with output_dir(fig_dir, "--figures") as tmp:
        names = write_fit_figures(result, study, params, tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
    if method == "nuts":
        save_netcdf(idata, nc)
    write_fit(out, result, study, str(model_path), params)
    return result, study, fig_dir, names
