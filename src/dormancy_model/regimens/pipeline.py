"""`run_design`: a design spec to recommended schedules, a table, figures and a virtual-trial
comparison with the CLEVER combination arm. Used by `dormancy design`, the demo and the tests.

Outputs in OUT (written to a temporary sibling and moved into place on success):
  regimen_1.toml ...   the recommended regimens as schedule files (`simulate`, `agents`,
                       `trial`-compatible)
  design.csv           objective and constraint margins of each, beside the CLEVER regimen
  history.csv          every objective evaluation of the continuous search
  pareto.png           objective against the most binding toxicity measure: each drug's
                       allowed amounts scanned with the other variables at the recommendation
  exposure.png         the best regimen's per-patient troughs and objective values
  trial.csv            virtual trials (agent model, full protocol): the recommended regimen vs
                       CLEVER's in the combination arm, same patients and keys
  report.md            all of it in words
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from dormancy_model.errors import InputError, check_seed
from dormancy_model.regimens.optimise import problem_key


def _schedule_toml(regimen, name: str, provenance: str) -> str:
    lines = [f"# {provenance}", f'name = "{name}"',
             f'description = "{regimen.describe()}"', ""]
    from dormancy_model.pk.schedule import DRUGS

    for d in DRUGS:
        if d not in regimen.amounts:
            continue
        lines += ["[[dose]]", f'drug = "{d}"', f"amount = {regimen.amounts[d]:g}", 'unit = "mg"',
                  'route = "oral"', f'frequency = "{regimen.frequencies[d]}"',
                  f'days_on = "1-{int(round(regimen.days_on))}"',
                  f"cycle_days = {regimen.cycle_days}", f"cycles = {int(round(regimen.cycles))}",
                  ""]
    return "\n".join(lines)


def _scan(res, best):
    """Objective and constraint margins along each drug's allowed amounts (others at best),
    all in one batched evaluation."""
    import jax.numpy as jnp

    from dormancy_model.regimens.optimise import _check_status, _evaluate_many
    from dormancy_model.regimens.problem import FINAL_OPTIONS

    prob = res.problems[problem_key(best.regimen.frequencies, best.regimen.cycle_days)]
    reg = best.regimen
    rows, xs = [], []
    for d, amount in reg.amounts.items():
        for a in res.spec.drug(d).allowed_amounts():
            amounts = {**reg.amounts, d: a}
            xs.append(np.asarray([amounts[k] for k in prob.drugs] + [reg.days_on, reg.cycles]))
            rows.append({"drug": d, "amount_mg": a, "best": a == amount})
    vals, status = _evaluate_many(prob, xs, prob.params, FINAL_OPTIONS)
    _check_status(status)
    for row, x, v in zip(rows, xs, vals, strict=True):
        g = prob.constraint_values(x)
        row.update(objective=float(prob.score(jnp.asarray(v))), feasible=bool(np.all(g <= 1e-6)),
                   **{n: gi for n, gi in zip(res.constraint_names, g, strict=True)})
    return pd.DataFrame(rows)


def _figures(res, scan, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dormancy_model.io import atomic_savefig

    best = res.best
    written = []
    fig, axes = plt.subplots(1, max(1, scan["drug"].nunique()), figsize=(5.5 * max(
        1, scan["drug"].nunique()), 4), squeeze=False)
    for ax, (d, g) in zip(axes[0], scan.groupby("drug", sort=False), strict=False):
        tox = [n for n in res.constraint_names if n.startswith(d)]
        xcol = tox[0] if tox else "amount_mg"
        x = g[xcol] if tox else g["amount_mg"]
        ax.plot(x, g["objective"], "-", color="0.6")
        ax.scatter(x[g["feasible"]], g["objective"][g["feasible"]], color="C0", label="feasible")
        ax.scatter(x[~g["feasible"]], g["objective"][~g["feasible"]], color="C3", marker="x",
                   label="infeasible")
        ax.scatter(x[g["best"]], g["objective"][g["best"]], s=120, facecolors="none",
                   edgecolors="k", label="recommended")
        for xi, yi, a in zip(x, g["objective"], g["amount_mg"], strict=True):
            ax.annotate(f"{a:g} mg", (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if tox:
            ax.axvline(0.0, color="C3", lw=0.8, ls="--")
            ax.set_xlabel(f"margin used: g = value / limit - 1\n({xcol})")
        else:
            ax.set_xlabel(f"{d} mg per administration")
        ax.set_ylabel(_objective_label(res.spec))
        ax.set_title(f"{d.upper()} amount: efficacy vs toxicity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, out / "pareto.png", dpi=110)
    plt.close(fig)
    written.append("pareto.png")
    prob = res.problems[problem_key(best.regimen.frequencies, best.regimen.cycle_days)]
    x = np.asarray([best.regimen.amounts[d] for d in prob.drugs], float)
    troughs = {d: prob.unit_trough(d) * x[i] for i, d in enumerate(prob.drugs)}
    fig, axes = plt.subplots(1, len(troughs) + 1, figsize=(4.5 * (len(troughs) + 1), 3.6))
    for ax, (d, tr) in zip(axes, troughs.items(), strict=False):
        ax.hist(tr, bins=40, color="C0", alpha=0.8)
        for c in res.spec.constraints:
            if c.kind == "trough" and c.drug == d:
                ax.axvline(c.limit, color="C3", ls="--", label=f"limit {c.limit:g} ng/mL")
                ax.legend(fontsize=7)
        ax.set_xlabel(f"{d.upper()} steady-state trough (ng/mL)")
        ax.set_ylabel("patients")
    v = np.asarray(best.per_patient, float)
    axes[-1].hist(v, bins=40, color="C2", alpha=0.8, label=_objective_label(res.spec, True))
    eot = best.regimen.cycles * best.regimen.cycle_days
    clear = _clearance_at(res, best, eot)
    axes[-1].hist(clear, bins=40, color="C1", alpha=0.6,
                  label=f"P(no DTC left) at the end of treatment (day {eot:g})")
    axes[-1].set_xlabel("probability per patient")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"best regimen: {best.regimen.describe()}", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, out / "exposure.png", dpi=110)
    plt.close(fig)
    written.append("exposure.png")
    return written


def _clearance_at(res, best, day) -> np.ndarray:
    """Per-patient probability that no DTC is left at `day` under the best regimen (the
    clearance objective's law, exp(-N(day)))."""
    import jax.numpy as jnp

    from dormancy_model.regimens.optimise import _check_status, _evaluate_many
    from dormancy_model.regimens.problem import FINAL_OPTIONS, Problem

    prob = res.problems[problem_key(best.regimen.frequencies, best.regimen.cycle_days)]
    spec = dataclasses.replace(prob.spec, objective="clearance", day=float(day))
    clear = Problem(spec, prob.params, prob.frequencies, model=prob.model)
    x = [best.regimen.amounts[d] for d in clear.drugs] + [best.regimen.days_on,
                                                          best.regimen.cycles]
    vals, status = _evaluate_many(clear, [jnp.asarray(x)], clear.params, FINAL_OPTIONS)
    _check_status(status)
    return vals[0]


def _objective_label(spec, per_patient=False) -> str:
    if spec.objective == "rfs":
        return (f"{spec.years:g}-year relapse-free probability" if per_patient
                else f"mean {spec.years:g}-year RFS (%)")
    if spec.objective == "clearance":
        return (f"P(no DTC left) at day {spec.objective_day:g}" if per_patient
                else f"mean P(no DTC left) at day {spec.objective_day:g} (%)")
    return (f"residual DTCs at day {spec.objective_day:g}" if per_patient
            else f"minus mean residual DTCs at day {spec.objective_day:g}")


def compare_in_trial(regimen, params, population, *, key, replicates: int) -> pd.DataFrame:
    """Virtual CLEVER trials (agent model, full protocol incl. extension cycles) of the
    combination arm under `regimen` and under CLEVER's regimen, same patients and keys:
    per-replicate 3-year RFS and C6 clearance of each and their paired difference."""
    from dormancy_model.trials.design import Arm, clever_design
    from dormancy_model.trials.protocol import trial

    base = clever_design(observation_n=0)
    base = base.replace(arms=(Arm("HCQ+EVE", ("hcq", "eve"), 21),))
    sched = regimen.schedule("recommended")
    cycles = int(round(regimen.cycles))
    new = base.replace(regimen=sched, name="recommended")
    new = new.with_cycles(cycles) if cycles != base.cycles else new
    rows = []
    for label, d in (("CLEVER", base), ("recommended", new)):
        tr = trial(d, params, key=key, replicates=replicates, population=population).summary()
        tr = tr[tr["arm"] == "HCQ+EVE"].set_index("trial")
        rows.append(tr[["rfs_3y", "cleared_true_eot"]].add_prefix(f"{label}_"))
    df = pd.concat(rows, axis=1).reset_index()
    df["rfs_3y_difference"] = df["recommended_rfs_3y"] - df["CLEVER_rfs_3y"]
    return df


def run_design(spec_path, out: Path, *, seed: int | None = None, trial_replicates: int = 20,
               progress=None) -> dict:
    """Load, optimise, write OUT (see the module doc). Returns the result and headline rows."""
    import jax

    from dormancy_model.io import atomic_write_csv, atomic_write_text, check_out_dir, output_dir
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.regimens.optimise import design
    from dormancy_model.regimens.problem import clever_regimen
    from dormancy_model.regimens.spec import load_design_spec
    from dormancy_model.trials.calibrate import load_calibration
    from dormancy_model.trials.population import Population

    spec = load_design_spec(spec_path)
    if seed is not None:
        spec = dataclasses.replace(spec, seed=check_seed("--seed", "seed", seed))
    if trial_replicates < 0:
        raise InputError("--trial-replicates", "trial_replicates",
                         f"must be >= 0, got {trial_replicates}")
    params = load_model_parameters(spec.model)
    typical = load_calibration(spec.calibration or None, params) if spec.calibration != "" else {}
    pop = Population(typical=typical)
    check_out_dir(out)
    tick = progress or (lambda text: None)
    key = jax.random.key(spec.seed)
    res = design(spec, params, key=key, population=pop, reference=clever_regimen(),
                 progress=tick)
    with output_dir(out) as o:
        table = res.table()
        atomic_write_csv(o / "design.csv", table)
        atomic_write_csv(o / "history.csv", res.history)
        atomic_write_csv(o / "continuous.csv", res.continuous)
        lines = [f"# Regimen design: {spec.name}", "",
                 f"Spec `{spec_path}`; {spec.patients} virtual CLEVER patients (enrolled, "
                 f"DTC+), search on the first {spec.search_patients}; seed {spec.seed}; "
                 f"objective: {_objective_label(spec)}; {res.seconds:.0f} s.", ""]
        lines += ["## Constraints", ""] + [f"- {c.name}: {c.source}" for c in spec.constraints]
        trial_df = None
        if not res.feasible:
            lines += ["", "## Result: infeasible", "",
                      f"No regimen in the feasible sets meets every constraint; the binding "
                      f"constraint is **{res.binding}**."]
        else:
            for i, c in enumerate(res.regimens):
                prov = (f"recommended regimen {i + 1} of dormancy design {spec_path} (seed "
                        f"{spec.seed}): objective {c.objective:.4g}")
                atomic_write_text(o / f"regimen_{i + 1}.toml",
                                  _schedule_toml(c.regimen, f"regimen-{i + 1}", prov))
            scan = _scan(res, res.best)
            atomic_write_csv(o / "scan.csv", scan)
            figs = _figures(res, scan, o)
            lines += ["", "## Recommended regimens", "", _md(table), "",
                      "Margins are 1 - value / limit (>= 0 is within the limit). Schedules: "
                      + ", ".join(f"`regimen_{i + 1}.toml`" for i in range(len(res.regimens)))
                      + "."]
            if trial_replicates > 0 and set(res.best.regimen.amounts) != {"hcq", "eve"}:
                lines += ["", "No virtual trial: the CLEVER combination arm needs both drugs."]
            elif trial_replicates > 0:
                tick("virtual trials")
                trial_df = compare_in_trial(res.best.regimen, params, pop,
                                            key=jax.random.fold_in(key, 11),
                                            replicates=trial_replicates)
                atomic_write_csv(o / "trial.csv", trial_df)
                d = trial_df["rfs_3y_difference"]
                lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95])
                lines += ["", "## Virtual trial: recommended vs CLEVER regimen (HCQ+EVE arm)",
                          "", f"{trial_replicates} replicated trials of the combination arm "
                          "(n = 21, agent model, full protocol with the extension cycles), the "
                          "same patients and random keys under both regimens. 3-year RFS: "
                          f"CLEVER {trial_df['CLEVER_rfs_3y'].median():.3f}, recommended "
                          f"{trial_df['recommended_rfs_3y'].median():.3f}; paired difference "
                          f"median {med:+.3f} (90% of trials in [{lo:+.3f}, {hi:+.3f}]; the "
                          "spread is trial-to-trial sampling of 21 patients, not parameter "
                          "uncertainty). True clearance at the end of treatment (no cell left): "
                          f"CLEVER {trial_df['CLEVER_cleared_true_eot'].median():.3f}, "
                          f"recommended {trial_df['recommended_cleared_true_eot'].median():.3f}."]
            lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figs]
        lines += ["", "## Method", "", "Augmented Lagrangian (PHR) with L-BFGS-B inner solves on "
                  "a smooth relaxation, exact forward-mode gradients through the ODE, then "
                  "projection to tablet multiples and whole days and cycles, every constraint "
                  "re-checked exactly; see `dormancy_model.regimens.optimise`."]
        atomic_write_text(o / "report.md", "\n".join(lines) + "\n")
    return {"result": res, "table": table, "trial": trial_df}


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(fmt(v) for v in r) + " |"
                        for r in df.itertuples(index=False)])
