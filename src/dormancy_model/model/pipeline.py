"""The simulate-and-write run: validate, simulate one individual, write OUT/trajectory.csv,
summary.json and trajectory.png (all inputs are validated before anything is written). Used by
`dormancy simulate` and the tests."""

from __future__ import annotations

from pathlib import Path

from dormancy_model.errors import check_range
from dormancy_model.model.integrate import SolverOptions
from dormancy_model.params.table import Parameters

FILES = ("trajectory.csv", "summary.json", "trajectory.png")


MAX_SAVED_POINTS = 1_000_000  # of the output grid (--save-every-hours)


def check_years(years) -> float:
    """`--years` as a horizon in (0, MAX_YEARS], else InputError."""
    from dormancy_model.units import MAX_YEARS

    return check_range("--years", "years", years, 0, MAX_YEARS, lo_open=True)


def check_options(years, save_every_hours, options: SolverOptions) -> None:
    """The horizon, output grid and tolerances of a run, each a finite number in a sensible
    range (InputError naming the option otherwise)."""
    from dormancy_model.units import DAYS_PER_YEAR, HOURS_PER_DAY

    years = check_years(years)
    horizon_h = years * DAYS_PER_YEAR * HOURS_PER_DAY
    check_range("--save-every-hours", "save_every_hours", save_every_hours,
                float(f"{horizon_h / MAX_SAVED_POINTS:.4g}"), horizon_h,
                note=f"(at most {MAX_SAVED_POINTS} saved points and the horizon)")
    check_range("--rtol", "rtol", options.rtol, 0, 0.1, lo_open=True)
    check_range("--atol", "atol", options.atol, 0, 1, lo_open=True)


def run_simulation(out, *, model: str = "human", params: Parameters | None = None,
                   schedule: str = "clever-combo", cycles: int | None = None,
                   years: float = 5.0, save_every_hours: float = 24.0,
                   options: SolverOptions = SolverOptions()) -> dict:
    """Simulate and write the three files of `FILES` into `out`.

    `model`: a parameter set name or TOML file; `params`: an already built parameter set to use
    instead (e.g. with a fit's estimates applied; `model` is then only its label in the
    summary). `schedule`: a preset name or schedule TOML path, `cycles` overriding its number
    of cycles. Returns the output directory (`out_dir`), the `trajectory`, its `table` (the
    CSV's data frame) and the `summary` (the JSON's dict)."""
    from dormancy_model.io import (
        atomic_savefig,
        atomic_write_csv,
        atomic_write_json,
        check_out_dir,
        output_dir,
    )
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.plots import plot_trajectory
    from dormancy_model.model.simulate import simulate
    from dormancy_model.model.summary import summarize
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.pk.presets import get_schedule

    check_options(years, save_every_hours, options)
    check_out_dir(out)
    p = load_model_parameters(model) if params is None else params
    sched = get_schedule(schedule, cycles, species=p.species)
    traj = simulate(DormancyModel(), p, sched, years=years, save_every_hours=save_every_hours,
                    options=options)
    traj.raise_if_failed()
    df = traj.to_dataframe()
    summary = summarize(traj, sched)
    summary["model"] = str(model)
    summary["years"] = years
    fig = plot_trajectory(traj, sched)
    with output_dir(out) as tmp:  # the folder appears only when every file is written
        atomic_write_csv(tmp / "trajectory.csv", df)
        atomic_write_json(tmp / "summary.json", summary)
        atomic_savefig(fig, tmp / "trajectory.png", dpi=110)
    return dict(out_dir=Path(out), trajectory=traj, table=df, summary=summary)
