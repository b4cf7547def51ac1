"""`dormancy vpc FIT.json --out DIR`: visual predictive checks and goodness-of-fit plots of a
fit (the run is `fitting.vpc.pipeline.run_vpc`)."""

from __future__ import annotations

from pathlib import Path

import typer


def vpc_cmd(
    fit: Path = typer.Argument(..., help="fit JSON written by `dormancy fit --out`"),
    out: Path = typer.Option(Path("out/vpc"), "--out", help="output directory"),
    replicates: int = typer.Option(200, "--replicates", help="simulated replicate studies"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same result)"),
    study: Path = typer.Option(None, "--study", help="the fitted study's directory (default: "
                               "the path recorded in the fit; its data must be the fitted "
                               "ones)"),
    uncertainty: bool = typer.Option(False, "--uncertainty/--no-uncertainty",
                                     help="draw each replicate's (typical) parameter values "
                                     "from the covariance of the estimates"),
):
    """Simulate replicate studies from a fit with the study's design; writes vpc_burden.png,
    vpc_km.png, gof.png, vpc.csv, gof.csv and summary.json."""
    from dormancy_model.fitting.vpc.pipeline import run_vpc

    result, names = run_vpc(fit, out, replicates=replicates, seed=seed, study=study,
                            uncertainty=uncertainty)
    typer.echo(result.summary_line())
    typer.echo(f"wrote {out}/ ({', '.join(names)}"
               f"{'; SYNTHETIC study' if result.summary.get('synthetic') else ''})")


def register(app: typer.Typer) -> None:
    app.command("vpc")(vpc_cmd)
