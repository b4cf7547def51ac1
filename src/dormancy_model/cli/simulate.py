"""`dormancy simulate` and `dormancy schedules`."""

from __future__ import annotations

from pathlib import Path

import typer

from dormancy_model.errors import InputError


def load_model_and_params(model: str, params: str | None = None):
    """(DormancyModel, Parameters) from a parameter file, optionally updated by a fit JSON."""
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.params.table import load_model_parameters

    p = load_model_parameters(model)
    if params:
        from dormancy_model.fitting.files import apply_fit  # provided by the fitting feature

        p = apply_fit(p, params)
    return DormancyModel(), p


def simulate_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    schedule: str = typer.Option("clever-combo", "--schedule", help="preset name or TOML path"),
    years: float = typer.Option(5.0, "--years", help="horizon in years (> 0)"),
    out: Path = typer.Option(Path("out/simulate"), "--out", help="output directory"),
    cycles: int = typer.Option(None, "--cycles", help="override the number of cycles"),
    save_every_hours: float = typer.Option(24.0, "--save-every-hours", help="output grid (h)"),
    params: str = typer.Option(None, "--params", help="fit JSON whose estimates replace values"),
    rtol: float = typer.Option(1e-6, "--rtol", help="relative tolerance"),
    atol: float = typer.Option(1e-9, "--atol", help="absolute tolerance (cells)"),
):
    """Simulate one individual: writes trajectory.csv, summary.json and trajectory.png."""
    from dormancy_model.io import (
        atomic_savefig,
        atomic_write_csv,
        atomic_write_json,
        check_out_dir,
        prepare_out_dir,
    )
    from dormancy_model.model.integrate import SolverOptions
    from dormancy_model.model.plots import plot_trajectory
    from dormancy_model.model.simulate import simulate
    from dormancy_model.model.summary import summarize
    from dormancy_model.pk.presets import get_schedule

    if not years > 0:
        raise InputError("--years", "years", f"must be > 0, got {years:g}")
    if not save_every_hours > 0:
        raise InputError("--save-every-hours", "save_every_hours",
                         f"must be > 0, got {save_every_hours:g}")
    if not (0 < rtol < 1 and atol > 0):
        raise InputError("--rtol/--atol", "tolerance", "rtol must be in (0, 1) and atol > 0")
    check_out_dir(out)
    m, p = load_model_and_params(model, params)
    sched = get_schedule(schedule, cycles)
    options = SolverOptions(rtol=rtol, atol=atol)
    traj = simulate(m, p, sched, years=years, save_every_hours=save_every_hours, options=options)
    traj.raise_if_failed()
    df = traj.to_dataframe()
    summary = summarize(traj, sched)
    summary["model"] = str(model)
    summary["years"] = years
    out_dir = prepare_out_dir(out)
    fig = plot_trajectory(traj, sched)
    atomic_write_csv(out_dir / "trajectory.csv", df)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_savefig(fig, out_dir / "trajectory.png", dpi=110)
    typer.echo(f"wrote {out_dir}/trajectory.csv, summary.json, trajectory.png "
               f"(residual at end of treatment {summary['residual_end_of_treatment']:.3g} cells, "
               f"relapse-free at {years:g} y {float(df['relapse_free'].iloc[-1]):.3f})")


def schedules_cmd():
    """List the schedule presets, one line each."""
    from dormancy_model.pk.presets import PRESETS

    width = max(len(n) for n in PRESETS)
    for name, s in PRESETS.items():
        typer.echo(f"{name:<{width}}  {s.describe()}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
    app.command("schedules")(schedules_cmd)
