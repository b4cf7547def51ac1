"""`dormancy trial` (replicated virtual CLEVER trials, analysis, what-ifs and the report) and
`dormancy calibrate` (typical values fitted to the published CLEVER results); the runs are
`trials.pipeline.run_trial_report` and `trials.pipeline.run_calibration`."""

from __future__ import annotations

from pathlib import Path

import typer


def trial_cmd(
    design: str = typer.Option("clever", "--design", help="trial design (clever)"),
    replicates: int = typer.Option(100, "--replicates", help="replicated trials (>= 1)"),
    seed: int = typer.Option(1, "--seed", help="random seed"),
    out: Path = typer.Option(Path("out/trial"), "--out", help="output directory"),
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    calibration: str = typer.Option(None, "--calibration",
                                    help="calibration JSON (default: the packaged "
                                    "CLEVER calibration; \"\" for none)"),
    what_if: list[str] = typer.Option(None, "--what-if", help="cycles=3,6,12 | "
                                      "dose=hcq:0.5,eve:0.5 | combo=N | sample-size[=N1,N2]"),
    method: str = typer.Option("fast", "--method", help="agent method: fast or exact"),
    discontinuation: float = typer.Option(0.0, "--discontinuation",
                                          help="probability of early stop per patient"),
):
    """Replicated virtual CLEVER trials: writes report.md, report.html, trials.csv."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dormancy_model.trials.design import get_design
    from dormancy_model.trials.pipeline import run_trial_report

    d = get_design(design)
    steps = 2 * (len(d.arms) + (d.observation_n > 0)) + 2 + len(what_if or [])
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task("virtual trial", total=steps)
        res = run_trial_report(out, design=design, replicates=replicates, seed=seed,
                               model=model, calibration=calibration, what_if=what_if,
                               method=method, discontinuation=discontinuation,
                               progress=lambda t: bar.update(task, advance=1, description=t))
    if res["agent_failures"]:
        typer.echo(f"warning: {res['agent_failures']} patients hit an agent-model limit "
                   "(agent_status != ok)")
    typer.echo(f"wrote {out}/report.md, report.html, trials.csv ({replicates} trials)")
    c = res["check"]
    for _, r in c.iterrows():
        typer.echo(f"  {r['statistic']:<18} {r['arm']:<12} reported {r['reported']:.3g}  "
                   f"simulated {r['sim_median']:.3g} [{r['sim_p05']:.3g}, {r['sim_p95']:.3g}]")


def calibrate_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    replicates: int = typer.Option(16, "--replicates", help="trials per grid point (>= 1)"),
    check_replicates: int = typer.Option(32, "--check-replicates",
                                         help="trials of the check at the optimum (>= 1)"),
    points: int = typer.Option(3, "--points", help="grid points per axis (>= 3)"),
    span: float = typer.Option(1.0, "--span", help="grid half-width in ln units, in (0, 5]"),
    seed: int = typer.Option(2026, "--seed", help="random seed"),
    out: Path = typer.Option(Path("out/clever_calibration.json"), "--out",
                             help="calibration JSON path (use it with trial --calibration)"),
):
    """Calibrate the typical delta_max and k_dr to the published CLEVER results; writes the
    calibration JSON with the reported-vs-simulated check."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from dormancy_model.trials.pipeline import run_calibration

    command = (f"dormancy calibrate --model {model} --replicates {replicates} --check-replicates "
               f"{check_replicates} --points {points} --span {span:g} --seed {seed} --out {out}")
    res, _ = run_calibration(out, model=model, replicates=replicates,
                             check_replicates=check_replicates, points=points, span=span,
                             seed=seed, command=command, progress=typer.echo)
    typer.echo(res.check.drop(columns=["source"]).to_string())
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} = {v:.4g} /day"
                                            for k, v in res.values.items()))


def register(app: typer.Typer) -> None:
    app.command("trial")(trial_cmd)
    app.command("calibrate")(calibrate_cmd)
