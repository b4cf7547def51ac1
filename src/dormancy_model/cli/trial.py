"""`dormancy trial`: replicated virtual CLEVER trials, analysis, what-ifs and the report."""

from __future__ import annotations

from pathlib import Path

import typer

from dormancy_model.errors import InputError

DEFAULT_CALIBRATION = "fits/clever_calibration.json"


def run_trial_report(out: Path, *, design: str = "clever", replicates: int = 100, seed: int = 1,
                     model: str = "human", calibration: str | None = None,
                     what_if: list[str] | None = None, method: str = "fast",
                     discontinuation: float = 0.0, chunk: int = 512, echo=print,
                     progress=None) -> dict:
    """Run, analyse and write OUT/report.md, report.html, trials.csv (+ figures, whatif_*.csv).

    `progress(advance_text)` is called as work proceeds. Returns headline numbers.
    """
    import jax

    from dormancy_model.io import atomic_write_csv, prepare_out_dir
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.trials import whatif as W
    from dormancy_model.trials.calibrate import load_calibration, reported_vs_simulated
    from dormancy_model.trials.design import get_design
    from dormancy_model.trials.population import Population
    from dormancy_model.trials.protocol import trial
    from dormancy_model.trials.report import write_report

    if replicates < 1:
        raise InputError("--replicates", "replicates", f"must be >= 1, got {replicates}")
    if method not in ("fast", "exact"):
        raise InputError("--method", "method", f"must be fast or exact, got {method!r}")
    specs = [W.parse_whatif(s) for s in (what_if or [])]  # validate before any work
    d = get_design(design).replace(discontinuation_prob=discontinuation)
    params = load_model_parameters(model)
    pop = Population()
    notes = []
    cal_path = calibration if calibration is not None else (
        DEFAULT_CALIBRATION if Path(DEFAULT_CALIBRATION).exists() else None)
    if cal_path:
        typical = load_calibration(cal_path)
        pop = pop.replace(typical=typical)
        notes.append(f"population typical values from {cal_path}: " + ", ".join(
            f"{k} = {v:.4g} /day" for k, v in typical.items()))
    else:
        notes.append("no calibration file: parameter-file typical values")
    out_dir = prepare_out_dir(out)
    key = jax.random.key(seed)
    tick = progress or (lambda text: None)
    res = trial(d, params, key=key, replicates=replicates, population=pop, method=method,
                chunk=chunk, progress=lambda i, n, t: tick(f"simulate {t}"))
    trials = res.summary()
    tick("analysis")
    check = reported_vs_simulated(trials, res.patients)
    whatifs = {}
    wkey = jax.random.fold_in(key, 7)
    wrep = max(2, replicates // 4)
    for name, vals in specs:
        if name == "cycles":
            tab = W.compare_designs(W.cycles_designs(d, vals), params, key=wkey,
                                    replicates=wrep, population=pop, method=method)
        elif name == "dose":
            tab = W.compare_designs(W.dose_designs(d, vals), params, key=wkey, replicates=wrep,
                                    population=pop, method=method)
        elif name == "combo":
            tab, best = W.combo_vs_single(d, params, n_per_arm=vals[0], key=wkey,
                                          replicates=wrep, population=pop, method=method)
            notes.append(f"combo n={vals[0]} per arm: P(HCQ+EVE best of the three arms) = "
                         + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
        else:
            tab, summ = W.sample_size(d, params, key=wkey, population=pop, sizes=vals,
                                      method=method)
            notes.append("confirmatory trial HCQ+EVE vs observation (3-year RFS "
                         f"{summ['rfs_3y_treated']:.3f} vs {summ['rfs_3y_observation']:.3f}): "
                         f"n per arm for 80% power, Schoenfeld {summ['n_per_arm_schoenfeld']:g}"
                         f", resampled log-rank {summ['n_per_arm_resampled']}")
        atomic_write_csv(out_dir / f"whatif_{name}.csv", tab)
        whatifs[f"{name} ({wrep} replicates)" if name != "sample-size" else name] = tab
        tick(f"what-if {name}")
    head = write_report(res, trials, out_dir, check=check, whatifs=whatifs, notes=notes)
    tick("report")
    import numpy as np

    failed = int(np.sum(res.patients["agent_status"] != "ok"))
    if failed:
        echo(f"warning: {failed} patients hit an agent-model limit (agent_status != ok)")
    return {"check": check, "trials": trials, **head}


def trial_cmd(
    design: str = typer.Option("clever", "--design", help="trial design (clever)"),
    replicates: int = typer.Option(100, "--replicates", help="replicated trials (>= 1)"),
    seed: int = typer.Option(1, "--seed", help="random seed"),
    out: Path = typer.Option(Path("out/trial"), "--out", help="output directory"),
    model: str = typer.Option("human", "--model", help="parameter set name or TOML file"),
    calibration: str = typer.Option(None, "--calibration",
                                    help=f"calibration JSON (default {DEFAULT_CALIBRATION} "
                                    "if present)"),
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

    if not 0 <= discontinuation <= 1:
        raise InputError("--discontinuation", "discontinuation", "must be in [0, 1]")
    d = get_design(design)
    steps = 2 * (len(d.arms) + (d.observation_n > 0)) + 2 + len(what_if or [])
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task("virtual trial", total=steps)
        res = run_trial_report(out, design=design, replicates=replicates, seed=seed,
                               model=model, calibration=calibration, what_if=what_if,
                               method=method, discontinuation=discontinuation, echo=typer.echo,
                               progress=lambda t: bar.update(task, advance=1, description=t))
    typer.echo(f"wrote {out}/report.md, report.html, trials.csv ({replicates} trials)")
    c = res["check"]
    for _, r in c.iterrows():
        typer.echo(f"  {r['statistic']:<18} {r['arm']:<12} reported {r['reported']:.3g}  "
                   f"simulated {r['sim_median']:.3g} [{r['sim_p05']:.3g}, {r['sim_p95']:.3g}]")


def register(app: typer.Typer) -> None:
    app.command("trial")(trial_cmd)
