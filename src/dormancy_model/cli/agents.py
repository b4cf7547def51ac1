"""`dormancy agents`: stochastic agent model of individual DTCs (the run is
`agents.pipeline.run_agents`)."""

from __future__ import annotations

from pathlib import Path

import typer

from dormancy_model.agents.pipeline import CLEVER_ASSESS_DAYS
from dormancy_model.errors import InputError
from dormancy_model.model.observables import SWITCH_SIZE


def parse_days(text: str, flag: str) -> list[float]:
    """Comma-separated days, sorted and unique (the pipeline checks them against the
    horizon)."""
    if not text.strip():
        return []
    try:
        days = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(flag, flag.lstrip("-").replace("-", "_"),
                         f"expected comma-separated days, got {text!r}") from None
    return sorted(set(days))


def agents_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    schedule: str = typer.Option("clever-combo", "--schedule", help="preset name or TOML path"),
    replicates: int = typer.Option(1000, "--replicates", help="number of virtual patients"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same result)"),
    years: float = typer.Option(5.0, "--years", help="horizon in years, in (0, 100]"),
    out: Path = typer.Option(Path("out/agents"), "--out", help="output directory"),
    method: str = typer.Option("fast", "--method", help="fast (pooled + leaps) or exact"),
    cycles: int = typer.Option(None, "--cycles", help="override the number of cycles"),
    assess_days: str = typer.Option(",".join(f"{d:g}" for d in CLEVER_ASSESS_DAYS),
                                    "--assess-days",
                                    help="bone-marrow aspirate days, comma-separated"),
    autophagy_cv: float = typer.Option(0.0, "--autophagy-cv",
                                       help="log-normal CV of autophagy dependence"),
    reactivation_cv: float = typer.Option(0.0, "--reactivation-cv",
                                          help="log-normal CV of reactivation propensity"),
    switch_size: float = typer.Option(SWITCH_SIZE, "--switch-size",
                                      help="clone size that continues deterministically"),
    leap_days: float = typer.Option(1.0, "--leap-days", help="fast method: clone leap (days)"),
    initial_count: str = typer.Option("poisson", "--initial-count", help="poisson or fixed"),
):
    """Per-patient clearance and relapse as chance events: writes replicates.csv,
    summary.json and agents.png."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from rich.progress import Progress

    from dormancy_model.agents.pipeline import FILES, POOL_LEAP_ABOVE, run_agents
    from dormancy_model.agents.simulate import AgentOptions, Heterogeneity

    if method not in ("fast", "exact"):
        raise InputError("--method", "method", f"must be 'fast' or 'exact', got {method!r}")
    if initial_count not in ("poisson", "fixed"):
        raise InputError("--initial-count", "initial_count",
                         f"must be 'poisson' or 'fixed', got {initial_count!r}")
    if not switch_size >= 2:
        raise InputError("--switch-size", "switch_size", f"must be >= 2, got {switch_size:g}")
    if not leap_days > 0:
        raise InputError("--leap-days", "leap_days", f"must be > 0, got {leap_days:g}")
    options = AgentOptions(method=method, assess_days=parse_days(assess_days, "--assess-days"),
                           switch_size=switch_size, leap_days=leap_days,
                           initial_count=initial_count,
                           pool_leap_above=POOL_LEAP_ABOVE if method == "fast" else float("inf"))
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{replicates} virtual patients ({method})", total=replicates)
        res = run_agents(out, model=model, schedule=schedule, cycles=cycles,
                         replicates=replicates, seed=seed, years=years,
                         heterogeneity=Heterogeneity(autophagy_cv, reactivation_cv),
                         options=options,
                         progress=lambda done, total: bar.update(task, completed=done))
    summary = res["summary"]
    cp = summary["clearance_probability"]
    rfs = summary["relapse_free_5y"] or summary["relapse_free_3y"]
    rfs_txt = f", relapse-free at 5 y {rfs['estimate']:.3f}" if rfs else ""
    typer.echo(f"wrote {res['out_dir']}/{', '.join(FILES)} (cleared "
               f"{cp['estimate']:.3f} [{cp['ci95'][0]:.3f}, {cp['ci95'][1]:.3f}]{rfs_txt})")


def register(app: typer.Typer) -> None:
    app.command("agents")(agents_cmd)
