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
    posterior: str = typer.Option(None, "--posterior",
                                  help="posterior calibration JSON the what-ifs draw parameter "
                                  "sets from (default: fits/clever_posterior.json if it "
                                  "exists; none: replicate noise at the calibration only)"),
    posterior_draws: int = typer.Option(20, "--posterior-draws",
                                        help="what-ifs: posterior draws (>= 2)"),
    posterior_replicates: int = typer.Option(None, "--posterior-replicates",
                                             help="what-ifs: trials per posterior draw (>= 2; "
                                             "default max(2, replicates // 20))"),
):
    """Replicated virtual CLEVER trials: writes report.md, report.html, trials.csv. What-ifs
    carry the posterior (parameter uncertainty with replicate noise) when one is given or
    fits/clever_posterior.json exists."""
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
                               posterior=posterior, posterior_draws=posterior_draws,
                               posterior_replicates=posterior_replicates,
                               progress=lambda t: bar.update(task, advance=1, description=t))
    if res["agent_failures"]:
        typer.echo(f"warning: {res['agent_failures']} patients hit an agent-model limit "
                   "(agent_status != ok)")
    typer.echo(f"wrote {out}/report.md, report.html, trials.csv ({replicates} trials)")
    c = res["check"]
    for _, r in c.iterrows():
        typer.echo(f"  {r['statistic']:<18} {r['arm']:<12} reported {r['reported']:.3g}  "
                   f"simulated {r['sim_median']:.3g} [{r['sim_p05']:.3g}, {r['sim_p95']:.3g}]")
    for note in res.get("notes", []):
        if note.startswith(("what-if", "cycles:", "dose:", "combo", "sample-size:",
                            "confirmatory", "posterior")):
            typer.echo(f"note: {note}")


def calibrate_cmd(
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    posterior: bool = typer.Option(False, "--posterior",
                                   help="posterior calibration (emulator + NUTS) of the "
                                   "population parameters, written with its draws"),
    replicates: int = typer.Option(None, "--replicates", help="trials per grid / design point "
                                   "(default 16; 32 with --posterior, >= 3)"),
    check_replicates: int = typer.Option(None, "--check-replicates",
                                         help="trials of the check at the optimum (default 32)"),
    points: int = typer.Option(None, "--points", help="grid points per axis (>= 3, default 3)"),
    span: float = typer.Option(None, "--span", help="grid half-width in ln units, in (0, 5] "
                               "(default 1)"),
    design_points: int = typer.Option(None, "--design-points",
                                      help="--posterior: Sobol design points (default 64)"),
    parameters: str = typer.Option(None, "--parameters",
                                   help="--posterior: comma-separated calibrated parameters "
                                   "(default delta_max,k_dr,load_median,load_sigma,"
                                   "cv_delta_max; also cv_k_dr)"),
    chains: int = typer.Option(None, "--chains", help="--posterior: NUTS chains (default 4)"),
    warmup: int = typer.Option(None, "--warmup", help="--posterior: warm-up draws per chain "
                               "(default 500)"),
    samples: int = typer.Option(None, "--samples", help="--posterior: draws per chain "
                                "(default 500)"),
    box_sd: float = typer.Option(None, "--box-sd", help="--posterior: design box half-width "
                                 "in prior SDs, in (0, 4] (default 2.5)"),
    untreated: int = typer.Option(None, "--untreated",
                                  help="--posterior: screened candidates per design point in "
                                  "the untreated cohort of the prognosis terms (default 1000, "
                                  ">= 100)"),
    refine_points: int = typer.Option(None, "--refine-points",
                                      help="--posterior: points of a second design wave "
                                      "inside the first posterior, where the emulator is "
                                      "refitted (default 0: one wave)"),
    refine_margin: float = typer.Option(None, "--refine-margin",
                                        help="--posterior: the second wave's box is the first "
                                        "posterior's central 99% widened by this fraction of "
                                        "its width on each side, in [0, 2] (default 0.25)"),
    first_wave: Path = typer.Option(None, "--first-wave",
                                    help="--posterior: reuse the first wave's simulations from "
                                    "an earlier posterior JSON made with the same settings"),
    netcdf: bool = typer.Option(True, "--netcdf/--no-netcdf",
                                help="--posterior: also write the arviz NetCDF (OUT.nc)"),
    seed: int = typer.Option(2026, "--seed", help="random seed"),
    out: Path = typer.Option(None, "--out",
                             help="JSON path (default out/clever_calibration.json; "
                             "fits/clever_posterior.json with --posterior)"),
):
    """Calibrate the typical delta_max and k_dr to the published CLEVER results (writes the
    calibration JSON with the reported-vs-simulated check), or with --posterior the posterior
    over the population parameters (writes the draws with diagnostics and provenance)."""
    from dormancy_model.errors import InputError

    point_only = {"--points": points, "--span": span, "--check-replicates": check_replicates}
    post_only = {"--design-points": design_points, "--parameters": parameters,
                 "--chains": chains, "--warmup": warmup, "--samples": samples,
                 "--box-sd": box_sd, "--untreated": untreated,
                 "--refine-points": refine_points, "--refine-margin": refine_margin,
                 "--first-wave": first_wave}
    wrong = point_only if posterior else post_only
    for flag, v in wrong.items():
        if v is not None:
            raise InputError(flag, flag[2:].replace("-", "_"),
                             "only without --posterior" if posterior else "only with --posterior")
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    if posterior:
        _posterior_cmd(model, replicates, design_points, parameters, chains, warmup, samples,
                       box_sd, untreated, netcdf, seed, out,
                       dict(refine_points=refine_points or 0, refine_margin=refine_margin,
                            first_wave=first_wave))
        return
    from dormancy_model.trials.pipeline import run_calibration

    replicates = 16 if replicates is None else replicates
    check_replicates = 32 if check_replicates is None else check_replicates
    points = 3 if points is None else points
    span = 1.0 if span is None else span
    out = Path("out/clever_calibration.json") if out is None else out
    command = (f"dormancy calibrate --model {model} --replicates {replicates} --check-replicates "
               f"{check_replicates} --points {points} --span {span:g} --seed {seed} --out {out}")
    res, _ = run_calibration(out, model=model, replicates=replicates,
                             check_replicates=check_replicates, points=points, span=span,
                             seed=seed, command=command, progress=typer.echo)
    typer.echo(res.check.drop(columns=["source"]).to_string())
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} = {v:.4g} /day"
                                            for k, v in res.values.items()))


def _posterior_cmd(model, replicates, design_points, parameters, chains, warmup, samples,
                   box_sd, untreated, netcdf, seed, out, refine):
    from dormancy_model.trials import posterior as P
    from dormancy_model.trials.pipeline import run_posterior_calibration

    names = (P.DEFAULT_PARAMETERS if parameters is None
             else tuple(s.strip() for s in parameters.split(",")))
    kw = dict(points=64 if design_points is None else design_points,
              replicates=32 if replicates is None else replicates,
              chains=4 if chains is None else chains, warmup=500 if warmup is None else warmup,
              samples=500 if samples is None else samples,
              box_sd=2.5 if box_sd is None else box_sd,
              untreated=P.DEFAULT_UNTREATED if untreated is None else untreated)
    out = Path("fits/clever_posterior.json") if out is None else out
    command = (f"dormancy calibrate --posterior --model {model} --design-points {kw['points']} "
               f"--replicates {kw['replicates']} --parameters {','.join(names)} --chains "
               f"{kw['chains']} --warmup {kw['warmup']} --samples {kw['samples']} --box-sd "
               f"{kw['box_sd']:g} --untreated {kw['untreated']} "
               f"--{'' if netcdf else 'no-'}netcdf --seed {seed} --out {out}")
    if refine["refine_points"]:
        command += f" --refine-points {refine['refine_points']}"
        if refine["refine_margin"] is not None:
            command += f" --refine-margin {refine['refine_margin']:g}"
    if refine["first_wave"] is not None:
        command += f" --first-wave {refine['first_wave']}"
    res, rec = run_posterior_calibration(out, model=model, parameters=names, seed=seed,
                                         netcdf=netcdf, command=command, progress=typer.echo,
                                         **kw, **refine)
    typer.echo(res.summary.to_string(index=False))
    d = rec["diagnostics"]
    typer.echo(f"R-hat max {d['max_rhat']:.3f}, bulk ESS min {d['min_ess_bulk']:.0f}, "
               f"{d['divergences']} divergences; emulator LOO RMSE "
               + ", ".join(f"{c['output']} {c['loo_rmse']:.2g}" for c in rec["emulator_cv"]))
    for c in d.get("first_wave_error", []):
        typer.echo(f"first-wave emulator at the second wave's points: {c['output']} RMSE "
                   f"{c['rmse']:.2g}, bias {c['bias']:+.2g}, z-RMS {c['z_rms']:.2g}")
    for w in d["warnings"]:
        typer.echo(f"warning: {w}")
    typer.echo(f"wrote {out}" + (f" and {out.with_suffix('.nc')}" if netcdf else "")
               + f" ({rec['wall_seconds']:.0f} s)")


def register(app: typer.Typer) -> None:
    app.command("trial")(trial_cmd)
    app.command("calibrate")(calibrate_cmd)
