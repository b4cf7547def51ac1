"""`dormancy fit`: fit free parameters of a model to a mouse study; writes the fit JSON and
figures (the run is `fitting.pipeline.run_fit`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from dormancy_model.fitting.pipeline import DEFAULT_FREE


def fit_cmd(
    study: Path = typer.Option(Path("data/mouse_synthetic"), "--study", help="study directory"),
    model: str = typer.Option("mouse", "--model", help="parameter set name or TOML file"),
    free: str = typer.Option(DEFAULT_FREE, "--free", help="comma-separated parameter names "
                             "(burden_sigma = log-normal noise sd of the counts)"),
    starts: int = typer.Option(16, "--starts", help="number of multistart points"),
    seed: int = typer.Option(0, "--seed", help="seed of the Sobol start points"),
    out: Path = typer.Option(Path("fits/mouse_synthetic.json"), "--out", help="fit JSON path"),
    figures: Path = typer.Option(None, "--figures", help="figure directory (default: --out "
                                 "without .json)"),
    adam_steps: int = typer.Option(30, "--adam-steps", help="optax Adam steps per start"),
    lbfgs_steps: int = typer.Option(60, "--lbfgs-steps", help="max L-BFGS iterations"),
    profile: str = typer.Option("", "--profile", help="comma-separated free parameters to "
                                "profile (--method laplace: --random parameters, whose "
                                "between-animal CV gets a profile-likelihood 95% CI)"),
    prior: bool = typer.Option(False, "--prior/--no-prior", help="add priors from the table"),
    arms: str = typer.Option("", "--arms", help="fit only these arms (comma-separated)"),
    method: str = typer.Option("pooled", "--method", help="pooled (one parameter set for all "
                               "mice), laplace (random effects per animal, Laplace marginal "
                               "likelihood; starts from the pooled fit) or nuts (the same "
                               "model sampled by NUTS; posterior saved as NetCDF)"),
    random: str = typer.Option("", "--random", help="free parameters with a log-normal random "
                               "effect per animal (comma-separated; --method laplace)"),
    covariance: str = typer.Option("diagonal", "--covariance", help="random-effect covariance: "
                                   "diagonal or full"),
    covariate: list[str] = typer.Option(
        [], "--covariate", metavar="PARAM~COLUMN", help="covariate effect on a typical value "
        "(--method laplace or nuts): PARAM~COLUMN, optionally followed by :power or "
        ":categorical and by @REFERENCE; repeat the option or separate with commas. A "
        "column of the study's animals.csv is a power model, theta_i = theta * (c_i / "
        "ref)^beta (reference: the median of the animals unless @REF), e.g. "
        "k_dr~body_weight_g; 'arm' (the dose group) and :categorical columns get one fold "
        "change exp(beta) per level (reference: the arm without drug if exactly one, else "
        "the first in study.toml; a column's first level in animals.csv), e.g. "
        "delta_max~arm@vehicle. NUTS prior on each beta: Normal(0, 1)"),
    laplace_starts: int = typer.Option(2, "--laplace-starts", help="Laplace starts (the best "
                                       "distinct pooled estimates)"),
    chains: int = typer.Option(4, "--chains", help="NUTS chains (--method nuts)"),
    warmup: int = typer.Option(500, "--warmup", help="NUTS warm-up iterations per chain"),
    draws: int = typer.Option(500, "--draws", help="NUTS draws per chain"),
    max_tree_depth: int = typer.Option(8, "--max-tree-depth", help="NUTS: at most "
                                       "2^depth leapfrog steps per draw"),
):
    """Fit free parameters to a mouse study (residual burden + relapse) by multistart
    gradient descent; writes the fit JSON and figures. With --method laplace and --random:
    a population fit (typical values, between-animal CVs, per-animal estimates), with
    --covariate: covariate effects on the typical values (body weight, dose group)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dormancy_model.errors import InputError, check_seed
    from dormancy_model.fitting.estimate import LBFGS, FitOptions
    from dormancy_model.fitting.pipeline import parse_arms, run_fit

    for flag, v, low in (("--starts", starts, 1), ("--adam-steps", adam_steps, 0),
                         ("--lbfgs-steps", lbfgs_steps, 1),
                         ("--laplace-starts", laplace_starts, 1), ("--chains", chains, 1),
                         ("--warmup", warmup, 1), ("--draws", draws, 2),
                         ("--max-tree-depth", max_tree_depth, 1)):
        if v < low:
            raise InputError(flag, flag[2:].replace("-", "_"), f"must be >= {low}, got {v}")
    check_seed("--seed", "seed", seed)
    arm_names = parse_arms(arms)
    options = FitOptions(starts=starts, seed=seed, adam_steps=adam_steps,
                         optimizer=LBFGS(steps=lbfgs_steps), prior=prior, profile=profile)
    from dormancy_model.fitting.population.estimate import LaplaceOptions
    from dormancy_model.fitting.population.nuts import NutsOptions

    laplace = LaplaceOptions(starts=laplace_starts, seed=seed, iterations=lbfgs_steps, gtol=1e-3)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("fit (pooled)", total=options.steps, best="-")
        pop_task = []

        def progress(i, n, f):
            finite = np.asarray(f)[np.isfinite(f)]
            bar.update(task, completed=i, best=f"{finite.min():.3f}" if finite.size else "-")

        def on_iteration(start, it, f):
            if not pop_task:
                pop_task.append(bar.add_task("fit (laplace)", best="-",
                                             total=laplace_starts * lbfgs_steps))
            bar.update(pop_task[0], completed=start * lbfgs_steps + it,
                       best=f"start {start + 1}: -loglik {f:.3f}")

        result, st, fig_dir, names = run_fit(
            study, model, free, options, out=out, figures=figures,
            arms=arm_names, progress=progress, method=method,
            random=random, covariance=covariance, laplace=laplace, on_iteration=on_iteration,
            covariates=covariate,
            nuts=NutsOptions(chains=chains, warmup=warmup, draws=draws, seed=seed,
                             max_tree_depth=max_tree_depth))
    typer.echo(result.summary())
    typer.echo(f"wrote {out} and {len(names)} figures in {fig_dir}/ "
               f"({result.wall_time_s:.1f} s{', SYNTHETIC study' if st.synthetic else ''})")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit_cmd)
