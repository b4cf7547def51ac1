"""`dormancy agents`: stochastic agent model of individual DTCs."""

from __future__ import annotations

from pathlib import Path

import typer

from dormancy_model.errors import InputError

CLEVER_ASSESS_DAYS = "84,168,350"  # after cycles 3 and 6, and ~6 months after treatment


def parse_days(text: str, flag: str, horizon: float) -> list[float]:
    if not text.strip():
        return []
    try:
        days = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(flag, flag.lstrip("-").replace("-", "_"),
                         f"expected comma-separated days, got {text!r}") from None
    for d in days:
        if not 0 <= d <= horizon:
            raise InputError(flag, flag.lstrip("-").replace("-", "_"),
                             f"day {d:g} is outside the horizon [0, {horizon:g}]")
    return sorted(set(days))


def agents_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    schedule: str = typer.Option("clever-combo", "--schedule", help="preset name or TOML path"),
    replicates: int = typer.Option(1000, "--replicates", help="number of virtual patients"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same result)"),
    years: float = typer.Option(5.0, "--years", help="horizon in years (> 0)"),
    out: Path = typer.Option(Path("out/agents"), "--out", help="output directory"),
    method: str = typer.Option("fast", "--method", help="fast (pooled + leaps) or exact"),
    cycles: int = typer.Option(None, "--cycles", help="override the number of cycles"),
    assess_days: str = typer.Option(CLEVER_ASSESS_DAYS, "--assess-days",
                                    help="bone-marrow aspirate days, comma-separated"),
    autophagy_cv: float = typer.Option(0.0, "--autophagy-cv",
                                       help="log-normal CV of autophagy dependence"),
    reactivation_cv: float = typer.Option(0.0, "--reactivation-cv",
                                          help="log-normal CV of reactivation propensity"),
    switch_size: float = typer.Option(1e4, "--switch-size",
                                      help="clone size that continues deterministically"),
    leap_days: float = typer.Option(1.0, "--leap-days", help="fast method: clone leap (days)"),
    initial_count: str = typer.Option("poisson", "--initial-count", help="poisson or fixed"),
):
    """Per-patient clearance and relapse as chance events: writes replicates.csv,
    summary.json and agents.png."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from dormancy_model.agents.report import plot_agents, summarize_agents
    from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents
    from dormancy_model.cli.simulate import load_model_and_params
    from dormancy_model.io import (
        atomic_savefig,
        atomic_write_csv,
        atomic_write_json,
        prepare_out_dir,
    )
    from dormancy_model.pk.presets import get_schedule
    from dormancy_model.units import DAYS_PER_YEAR

    if replicates < 1:
        raise InputError("--replicates", "replicates", f"must be >= 1, got {replicates}")
    if seed < 0:
        raise InputError("--seed", "seed", f"must be >= 0, got {seed}")
    if not years > 0:
        raise InputError("--years", "years", f"must be > 0, got {years:g}")
    if method not in ("fast", "exact"):
        raise InputError("--method", "method", f"must be 'fast' or 'exact', got {method!r}")
    if initial_count not in ("poisson", "fixed"):
        raise InputError("--initial-count", "initial_count",
                         f"must be 'poisson' or 'fixed', got {initial_count!r}")
    for flag, v in (("--autophagy-cv", autophagy_cv), ("--reactivation-cv", reactivation_cv)):
        if not v >= 0:
            raise InputError(flag, flag[2:].replace("-", "_"), f"must be >= 0, got {v:g}")
    if not switch_size >= 2:
        raise InputError("--switch-size", "switch_size", f"must be >= 2, got {switch_size:g}")
    if not leap_days > 0:
        raise InputError("--leap-days", "leap_days", f"must be > 0, got {leap_days:g}")
    t1 = years * DAYS_PER_YEAR
    assess = parse_days(assess_days, "--assess-days", t1)
    m, p = load_model_and_params(model)
    sched = get_schedule(schedule, cycles)
    out_dir = prepare_out_dir(out)
    count_days = sorted(set(list(range(0, int(t1), 28)) + [t1]))

    import jax
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"{replicates} virtual patients ({method})", total=replicates)
        options = AgentOptions(method=method, count_days=count_days, assess_days=assess,
                               switch_size=switch_size, leap_days=leap_days,
                               initial_count=initial_count)
        res = simulate_agents(
            m, p, sched, n_replicates=replicates, key=jax.random.PRNGKey(seed), t1=t1,
            heterogeneity=Heterogeneity(autophagy_cv, reactivation_cv), options=options,
            progress=lambda done, total: bar.update(task, completed=done))
    if not res.ok:
        from dormancy_model.model.simulate import SolveError

        raise SolveError(res.message)
    df = res.to_dataframe()
    keep = ["replicate", "cleared", "clearance_day", "relapsed", "relapse_day"] + [
        c for c in df.columns if c.startswith(("dtc_positive_day", "aspirate_count_day"))]
    summary = summarize_agents(res)
    summary.update(model=str(model), schedule=schedule, seed=seed, years=years,
                   heterogeneity={"autophagy_cv": autophagy_cv,
                                  "reactivation_cv": reactivation_cv},
                   switch_size=switch_size)
    fig = plot_agents(res, title=f"{schedule}: {replicates} virtual patients ({method})")
    atomic_write_csv(out_dir / "replicates.csv", df[keep])
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_savefig(fig, out_dir / "agents.png", dpi=110)
    cp = summary["clearance_probability"]
    rfs = summary["relapse_free_5y"] or summary["relapse_free_3y"]
    rfs_txt = f", relapse-free at 5 y {rfs['estimate']:.3f}" if rfs else ""
    typer.echo(f"wrote {out_dir}/replicates.csv, summary.json, agents.png (cleared "
               f"{cp['estimate']:.3f} [{cp['ci95'][0]:.3f}, {cp['ci95'][1]:.3f}]{rfs_txt})")


def register(app: typer.Typer) -> None:
    app.command("agents")(agents_cmd)
