"""`dormancy design SPEC.toml --out DIR`: regimen design (`regimens.pipeline.run_design`)."""

from __future__ import annotations

from pathlib import Path

import typer


def design_cmd(
    spec: str = typer.Argument(..., help="design spec TOML (see "
                               "src/dormancy_model/regimens/data/clever.toml)"),
    out: Path = typer.Option(Path("out/design"), "--out", help="output directory"),
    seed: int = typer.Option(None, "--seed", help="random seed (default: the spec's)"),
    trial_replicates: int = typer.Option(20, "--trial-replicates",
                                         help="virtual trials comparing the best regimen with "
                                         "CLEVER's (0: none)"),
):
    """Optimise a treatment regimen within toxicity limits; writes schedules, a table, figures
    and a virtual-trial comparison with the CLEVER regimen."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dormancy_model.regimens.pipeline import run_design
    from dormancy_model.regimens.spec import load_design_spec

    s = load_design_spec(spec)  # bad specs are refused before anything runs
    steps = (len(s.frequency_options()) * len(s.cycle_choices) * s.starts + 3
             + (trial_replicates > 0))
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("design", total=steps)
        res = run_design(spec, out, seed=seed, trial_replicates=trial_replicates,
                         progress=lambda t: bar.update(task, advance=1, description=t))
    r = res["result"]
    if not r.feasible:
        typer.echo(f"infeasible: no regimen meets every constraint; binding: {r.binding}")
    else:
        typer.echo(res["table"][["regimen", "description", "objective", "feasible"]]
                   .to_string(index=False))
    typer.echo(f"wrote {out}/report.md")


def register(app: typer.Typer) -> None:
    app.command("design")(design_cmd)
