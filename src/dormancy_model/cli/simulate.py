"""`dormancy simulate` (the run is `model.pipeline.run_simulation`) and `dormancy schedules`."""

from __future__ import annotations

from pathlib import Path

import typer


def simulate_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    schedule: str = typer.Option("clever-combo", "--schedule", help="preset name or TOML path"),
    years: float = typer.Option(5.0, "--years", help="horizon in years, in (0, 100]"),
    out: Path = typer.Option(Path("out/simulate"), "--out", help="output directory"),
    cycles: int = typer.Option(None, "--cycles", help="override the number of cycles"),
    save_every_hours: float = typer.Option(24.0, "--save-every-hours", help="output grid (h)"),
    params: str = typer.Option(None, "--params", help="fit JSON whose estimates replace values "
                               "(a population fit: its typical values)"),
    animal: str = typer.Option(None, "--animal", help="with a population fit: simulate this "
                               "fitted animal (its empirical Bayes estimates)"),
    rtol: float = typer.Option(1e-6, "--rtol", help="relative tolerance"),
    atol: float = typer.Option(1e-9, "--atol", help="absolute tolerance (cells)"),
):
    """Simulate one individual: writes trajectory.csv, summary.json and trajectory.png.

    With --params FIT.json the fit's estimates replace the table values; a population fit
    (`dormancy fit --method laplace|nuts --random ...`) gives its typical values (the
    population's median animal), or with --animal ID that fitted animal's empirical Bayes
    estimates, and says which in its output."""
    from dormancy_model.errors import InputError
    from dormancy_model.model.integrate import SolverOptions
    from dormancy_model.model.pipeline import FILES, run_simulation

    fitted, note = None, ""
    if animal is not None and not params:
        raise InputError("--animal", "animal", "needs --params FIT.json (a population fit)")
    if params:  # the fit's values (fitting sits above model: applied here, at the edge)
        from dormancy_model.params.popfit import apply_fit_file
        from dormancy_model.params.table import load_model_parameters

        fitted, note = apply_fit_file(load_model_parameters(model), params, animal)
    res = run_simulation(out, model=model, params=fitted, schedule=schedule, cycles=cycles,
                         years=years, save_every_hours=save_every_hours,
                         options=SolverOptions(rtol=rtol, atol=atol))
    s, df = res["summary"], res["table"]
    if note:
        typer.echo(note)
    typer.echo(f"wrote {res['out_dir']}/{', '.join(FILES)} "
               f"(residual at end of treatment {s['residual_end_of_treatment']:.3g} cells, "
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
