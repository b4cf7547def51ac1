"""`dormancy demo` (`make demo`): the main job end to end, one function per stage in STAGES.

Run: dormancy demo --out out/demo [--only NAME]  (or python -m dormancy_model.cli.demo ...)
Each stage takes the output directory and returns a one-line result text.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from dormancy_model.errors import InputError

ARMS = ("observation", "clever-hcq", "clever-eve", "clever-combo")
AGENT_PATIENTS = 2000
# the SYNTHETIC mouse study of the repository checkout (not package data)
STUDY = Path(__file__).resolve().parents[3] / "data" / "mouse_synthetic"

SWEEP_SPEC = """
[sweep]
name = "demo-hcq-eve-dose-grid"
model = "human"
schedule = "clever-combo"

[schedule]
hcq_dose = [0.0, 0.25, 0.5, 1.0]
eve_dose = [0.0, 0.25, 0.5, 1.0]

[patients]
n = 4
variability = { k_dr = 0.5, delta_max = 0.3, eve_cl = 0.35 }

[outputs]
residual_days = [168]
relapse_free_years = [3]
assessment_days = [168]

[solver]
chunk = 64
"""


def stage_simulate(out: Path) -> str:
    """The three CLEVER arms and observation on the human model (simulate/)."""
    import pandas as pd

    from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_json
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.plots import plot_arms, plot_trajectory
    from dormancy_model.model.simulate import simulate
    from dormancy_model.model.summary import summarize
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.pk.presets import get_schedule

    out = Path(out) / "simulate"
    out.mkdir(parents=True, exist_ok=True)
    model, params = DormancyModel(), load_model_parameters("human")
    trajs, summaries, frames = {}, {}, []
    for arm in ARMS:
        sched = get_schedule(arm)
        tr = simulate(model, params, sched, years=5).raise_if_failed()
        trajs[arm] = tr
        summaries[arm] = summarize(tr, sched)
        df = tr.to_dataframe()
        df.insert(0, "arm", arm)
        frames.append(df)
        fig = plot_trajectory(tr, sched, title=f"{arm}: {sched.describe()}")
        atomic_savefig(fig, out / f"trajectory_{arm}.png", dpi=100)
    atomic_write_csv(out / "trajectories.csv", pd.concat(frames, ignore_index=True))
    atomic_write_json(out / "summary.json", summaries)
    atomic_savefig(plot_arms(trajs), out / "arms.png", dpi=110)
    rows = [f"{a}: residual after C6 {s['residual_after_cycle_6']:.2f}, "
            f"3y RFS {s['relapse_free_3y']:.3f}" for a, s in summaries.items()]
    return "; ".join(rows)


def stage_sweep(out: Path) -> str:
    """A small HCQ x EVE dose grid sweep on the CLEVER combination and its heatmaps (sweep/)."""
    import tomllib

    from dormancy_model.io import atomic_savefig
    from dormancy_model.sweeps.plots import heatmap
    from dormancy_model.sweeps.run import sweep
    from dormancy_model.sweeps.spec import parse_sweep

    out = Path(out) / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    store = out / "dose_grid.zarr"
    shutil.rmtree(store, ignore_errors=True)
    spec = parse_sweep(tomllib.loads(SWEEP_SPEC), str(out / "dose_grid.toml"), SWEEP_SPEC)
    (out / "dose_grid.toml").write_text(SWEEP_SPEC.lstrip())
    ds = sweep(spec, store)
    atomic_savefig(heatmap(ds, "relapse_free", "rfs_day", 0, "eve_dose", "hcq_dose"),
                   out / "rfs3y_hcq_x_eve.png", dpi=110)
    atomic_savefig(heatmap(ds, "residual", "residual_day", 0, "eve_dose", "hcq_dose"),
                   out / "residual_c6_hcq_x_eve.png", dpi=110)
    m = ds["relapse_free"].isel(rfs_day=0).mean("patient")
    return (f"{spec.size} trajectories; mean 3y RFS from {float(m.min()):.3f} to "
            f"{float(m.max()):.3f}; heatmap {out}/rfs3y_hcq_x_eve.png")


def stage_fit(out: Path, study: Path = STUDY) -> str:
    """Fit the shipped SYNTHETIC mouse study with a short setting (fit/); skipped when the
    study folder is absent (an installed package run outside the repository)."""
    if not (Path(study) / "study.toml").is_file():
        return f"skipped: the synthetic study {study} is absent (run from the repository checkout)"
    from dormancy_model.fitting.estimate import LBFGS, FitOptions
    from dormancy_model.fitting.pipeline import DEFAULT_FREE, run_fit

    out = Path(out) / "fit"
    steps = 20  # a short search for the demo; `dormancy fit` takes 60 L-BFGS steps
    options = FitOptions(starts=4, seed=0, adam_steps=10, optimizer=LBFGS(steps=steps))
    result, st, _, names = run_fit(study, "mouse", DEFAULT_FREE, options, out=out / "fit.json",
                                   figures=out)
    est = ", ".join(f"{n} {result.estimate[n]:.3g}" for n in result.names)
    best = "converged" if result.starts[0].converged else "did NOT converge"  # sorted by nll
    return (f"SYNTHETIC study, {len(st.arms)} arms: nll {result.objective:.2f} from the best of "
            f"{len(result.starts)} starts, which {best}"
            f" ({result.n_converged}/{len(result.starts)} met the gradient tolerance within the "
            f"demo's {steps} L-BFGS steps; `dormancy fit` takes 60); {est}; "
            f"{len(names)} figures")


def stage_agents(out: Path) -> str:
    """The agent model on the three CLEVER arms and observation: clearance and relapse as
    chance events per virtual patient (agents/)."""
    import jax

    from dormancy_model.agents.pipeline import POOL_LEAP_ABOVE
    from dormancy_model.agents.report import plot_agents, plot_arms_agents, summarize_agents
    from dormancy_model.agents.simulate import AgentOptions, simulate_agents
    from dormancy_model.io import atomic_savefig, atomic_write_csv, atomic_write_json
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.pk.presets import get_schedule
    from dormancy_model.units import DAYS_PER_YEAR

    out = Path(out) / "agents"
    out.mkdir(parents=True, exist_ok=True)
    model, params = DormancyModel(), load_model_parameters("human")
    t1 = 5 * DAYS_PER_YEAR
    count_days = [float(d) for d in range(0, int(t1), 28)] + [t1]
    options = AgentOptions(method="fast", count_days=count_days,
                           assess_days=(84.0, 168.0, 350.0), pool_leap_above=POOL_LEAP_ABOVE)
    results, summaries = {}, {}
    for i, arm in enumerate(ARMS):
        res = simulate_agents(model, params, get_schedule(arm), n_replicates=AGENT_PATIENTS,
                              key=jax.random.PRNGKey(i), t1=t1, options=options)
        results[arm] = res
        summaries[arm] = summarize_agents(res)
        df = res.to_dataframe()
        keep = ["replicate", "cleared", "clearance_day", "relapsed", "relapse_day"] + [
            c for c in df.columns if c.startswith("dtc_positive_day")]
        atomic_write_csv(out / f"replicates_{arm}.csv", df[keep])
        atomic_savefig(plot_agents(res, title=f"{arm}: {AGENT_PATIENTS} virtual patients"),
                       out / f"agents_{arm}.png", dpi=100)
    atomic_write_json(out / "summary.json", summaries)
    atomic_savefig(plot_arms_agents(results), out / "arms_agents.png", dpi=110)
    return "; ".join(f"{a}: cleared {s['clearance_probability']['estimate']:.2f}, "
                     f"5y RFS {s['relapse_free_5y']['estimate']:.3f}"
                     for a, s in summaries.items())


def stage_trial(out: Path) -> str:
    """A small virtual CLEVER trial and its report (trial/)."""
    from dormancy_model.trials.pipeline import run_trial_report

    out = Path(out) / "trial"
    res = run_trial_report(out, replicates=6, seed=1, chunk=128)
    c = res["check"].set_index(["statistic", "arm"])
    rfs = "/".join(f"{c.loc[('rfs_3y', a), 'sim_median']:.2f}" for a in ("HCQ", "EVE", "HCQ+EVE"))
    red = "/".join(f"{c.loc[('reduction_C3', a), 'sim_median']:.2f}"
                   for a in ("HCQ", "EVE", "HCQ+EVE"))
    warn = (f"; warning: {res['agent_failures']} patients hit an agent-model limit"
            if res["agent_failures"] else "")
    return (f"{out}/report.md: 6 trials, 3-year RFS {rfs} (reported 0.92/0.93/1.00), "
            f"DTC reduction {red} (reported 0.80/0.78/0.87){warn}")


def stage_design(out: Path) -> str:
    """A short regimen design on the virtual CLEVER population (design/): the packaged spec
    with fewer patients and one start, so it fits the demo's time."""
    from importlib import resources

    from dormancy_model.regimens.pipeline import run_design

    text = (resources.files("dormancy_model.regimens") / "data" / "clever.toml").read_text()
    text = (text.replace("patients = 1000", "patients = 200")
            .replace("search_patients = 128", "search_patients = 32")
            .replace("starts = 2", "starts = 1"))
    spec = Path(out) / "design_spec.toml"
    spec.write_text("# the demo's copy of regimens/data/clever.toml (200 patients, 1 start)\n"
                    + text)
    res = run_design(spec, Path(out) / "design", trial_replicates=4)
    r = res["result"]
    if not r.feasible:
        return f"{out}/design/report.md: infeasible (binding: {r.binding})"
    d = res["trial"]["rfs_3y_difference"] if res["trial"] is not None else None
    tail = (f"; virtual trials (4): 3-year RFS difference vs CLEVER median {d.median():+.3f}"
            if d is not None else "")
    return (f"{out}/design/report.md: best {r.best.regimen.describe()} (mean 3-year RFS "
            f"{r.best.objective:.2f}% vs CLEVER {r.reference.objective:.2f}%, which breaks "
            f"{sum(g > 1e-6 for g in r.reference.margins)} constraint(s)){tail}")


# (name, title, stage); --only picks the stages whose name or title contains its text
STAGES = [
    ("simulate", "CLEVER arms, deterministic model", stage_simulate),
    ("sweep", "HCQ x EVE dose-grid sweep", stage_sweep),
    ("fit", "Fit the synthetic mouse study", stage_fit),
    ("agents", "CLEVER arms, stochastic agents", stage_agents),
    ("trial", "Virtual CLEVER trial and report", stage_trial),
    ("design", "Regimen design within toxicity limits", stage_design),
]


def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "--out", help="output directory"),
    only: str = typer.Option(None, "--only", help="run only the stages whose name (simulate, "
                             "sweep, fit, agents, trial, design) or title contains this"),
):
    """The main job end to end: deterministic arms, a dose-grid sweep, a fit of the synthetic
    mouse study, the agent model, a virtual CLEVER trial and a regimen design (results and
    plots in --out)."""
    stages = [(t, f) for n, t, f in STAGES if not only or only.lower() in f"{n} {t}".lower()]
    if not stages:
        raise InputError("--only", "only", f"no stage matches {only!r} (stages: "
                         + ", ".join(n for n, _, _ in STAGES) + ")")
    from dormancy_model.engine.devices import use_cpu_cores
    from dormancy_model.io import prepare_out_dir

    use_cpu_cores()  # one JAX CPU device per core (the sweep stage splits its lanes over them)
    out = prepare_out_dir(out)
    for title, stage in stages:
        t0 = time.perf_counter()
        typer.echo(f"== {title}")
        result = stage(out)
        typer.echo(f"   {result} ({time.perf_counter() - t0:.1f} s)")
    typer.echo(f"demo outputs in {out}/")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


if __name__ == "__main__":
    import sys

    from dormancy_model.cli.main import main

    main(["demo", *sys.argv[1:]])
