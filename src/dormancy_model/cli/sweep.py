"""`dormancy sweep`, `dormancy plot-sweep`, `dormancy sensitivity`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dormancy_model.errors import InputError


def sweep_cmd(
    spec: str = typer.Argument(..., help="sweep spec (TOML)"),
    out: Path = typer.Option(..., "--out", help="output Zarr store (resumed if it exists)"),
    workers: int = typer.Option(None, "--workers", help="start a local Dask cluster of N workers"),
    scheduler: str = typer.Option(None, "--scheduler", help="existing Dask scheduler tcp://H:P"),
    chunk: int = typer.Option(None, "--chunk", help="trajectories per chunk (default: spec)"),
    fresh: bool = typer.Option(False, "--fresh", help="discard an existing store at --out and "
                               "start afresh (a store is resumed only with the same spec, "
                               "files and package version)"),
):
    """Run a parameter/schedule sweep into a Zarr store (resumable; progress bar with ETA)."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from dormancy_model.sweeps.run import sweep
    from dormancy_model.sweeps.spec import describe, load_sweep_spec

    s = load_sweep_spec(spec)
    if chunk is not None and chunk < 1:
        raise InputError("--chunk", "chunk", f"must be >= 1, got {chunk}")
    typer.echo(describe(s))
    ds = sweep(s, out, chunk=chunk, workers=workers, scheduler=scheduler,
               progress=sys.stderr.isatty(), fresh=fresh,
               log=lambda m: typer.echo(f"dormancy: note: {m}", err=True))
    bad = int((ds["status"].values != 0).sum())
    typer.echo(f"wrote {out} ({s.size:,} trajectories"
               + (f", {bad} failed: see the status variable" if bad else "") + ")")


def plot_sweep_cmd(
    store: Path = typer.Argument(..., help="sweep Zarr store"),
    out: Path = typer.Option(Path("out/sweep_plots"), "--out", help="output directory"),
):
    """Heatmaps (e.g. relapse-free probability over HCQ x EVE dose) and lines over cycles."""
    from dormancy_model.io import atomic_savefig, check_out_dir, output_dir
    from dormancy_model.sweeps.plots import sweep_figures
    from dormancy_model.sweeps.run import open_sweep

    ds = open_sweep(store)
    if not ds.attrs.get("complete"):
        raise InputError(str(store), "store", f"incomplete ({ds.attrs['missing_chunks']} chunks "
                         "missing): rerun `dormancy sweep` with the same spec to finish it")
    check_out_dir(out)
    figs = sweep_figures(ds)
    with output_dir(out) as tmp:
        for name, fig in figs.items():
            atomic_savefig(fig, tmp / name, dpi=110)
    typer.echo(f"wrote {len(figs)} figures to {out}/")


def sensitivity_cmd(
    spec: str = typer.Argument(..., help="sweep spec (TOML) with [samples] parameters"),
    out: Path = typer.Option(Path("out/sensitivity"), "--out", help="output directory"),
    n: int = typer.Option(None, "--n", help="base sample size (default: samples.n)"),
):
    """Sobol first-order and total indices of the spec's outputs, with bar plots."""
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()
    from dormancy_model.io import atomic_savefig, atomic_write_json, check_out_dir, output_dir
    from dormancy_model.sweeps.plots import sensitivity_bars
    from dormancy_model.sweeps.sensitivity import model_sensitivity
    from dormancy_model.sweeps.spec import load_sweep_spec

    s = load_sweep_spec(spec)
    if n is not None and n < 2:
        raise InputError("--n", "n", f"must be >= 2, got {n}")
    check_out_dir(out)
    res = model_sensitivity(s, n)
    out_dir = out
    with output_dir(out) as tmp:
        atomic_write_json(tmp / "sobol_indices.json", res)
        for label in res["outputs"]:
            atomic_savefig(sensitivity_bars(res, label), tmp / f"sobol_{label}.png", dpi=110)
    for label, v in res["outputs"].items():
        top = max(range(len(res["parameters"])), key=lambda i: v["ST"][i])
        typer.echo(f"{label}: largest total index {res['parameters'][top]} "
                   f"(ST {v['ST'][top]:.2f}, S1 {v['S1'][top]:.2f})")
    typer.echo(f"wrote {out_dir}/sobol_indices.json ({res['runs']} model runs)")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
    app.command("plot-sweep")(plot_sweep_cmd)
    app.command("sensitivity")(sensitivity_cmd)
