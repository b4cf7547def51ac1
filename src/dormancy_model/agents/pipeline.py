"""The agents-and-write run: validate, simulate the virtual patients with the agent model,
write OUT/replicates.csv, summary.json and agents.png (all inputs are validated before anything
is written). Used by `dormancy agents` and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dormancy_model.errors import InputError, check_seed

# Dormant pools above this many cells advance by binomial leaps in the packaged runs (the agents
# CLI, the demo and the trials; fast method, `AgentOptions.pool_leap_above`): since the DTC load
# is counted in cells (aspirate_fraction = aspirate_cells / marrow_cells) the human marrow holds
# ~1e5 DTCs, one exact event per dormant death would cost ~1e5 events per patient under drug.
# Why 30 (1e3 before, issue 15): the leap's two approximations are per cell (the split of a
# cell's leaving probability between reactivation and death, `loops.pool_leap_counts`, and the
# law of a reactivation time within the leap, `loops.pool_react_time`); given them the counts
# of a leap are the exact multinomial of independent cells, for any pool size, so the threshold
# moves no approximation. It only decides where exact events take over: the last cells of a
# pool die at their own times (the clearance day is exact as long as no leap takes a pool from
# above the threshold to 0: from 31 cells that needs 31 deaths in one leap, probability
# p_leave^31, < 3e-26 even at p_leave = 0.15 per daily leap, ~4x the calibrated delta_max of
# 0.0371/day). Under treatment every pool crosses the threshold, and below it every death was
# one lock-step iteration: with 1e3 the slowest lanes
# of a trial's phase A made ~1,200 iterations (~170 leaps + ~1,000 deaths), with 30 ~340-510
# (benchmarks/RESULTS.md, issue 15). tests/agents/test_pool_leap.py compares leaps above this
# threshold with exact events (seeded two-sample test).
POOL_LEAP_ABOVE = 30.0

if TYPE_CHECKING:  # importing this module stays light (no JAX): the CLI reads its constants
    from dormancy_model.agents.simulate import AgentOptions, Heterogeneity

FILES = ("replicates.csv", "summary.json", "agents.png")
CLEVER_ASSESS_DAYS = (84.0, 168.0, 350.0)  # after cycles 3 and 6, and ~6 months after treatment
COUNT_EVERY_DAYS = 28  # the default grid of recorded cell counts
# the columns of replicates.csv besides the per-day ones (dtc_positive_day*, aspirate_count_day*)
COLUMNS = ("replicate", "cleared", "clearance_day", "relapsed", "relapse_day")


def count_grid(t1: float) -> list[float]:
    """Every `COUNT_EVERY_DAYS` days from 0 and the horizon `t1`."""
    return sorted(set(list(range(0, int(t1), COUNT_EVERY_DAYS)) + [t1]))


def run_agents(out, *, model: str = "human", schedule: str = "clever-combo",
               cycles: int | None = None, replicates: int = 1000, seed: int = 0,
               years: float = 5.0, heterogeneity: Heterogeneity | None = None,
               options: AgentOptions | None = None, progress=None) -> dict:
    """Simulate `replicates` virtual patients and write the three files of `FILES` into `out`.

    `model`: a parameter set name or TOML file; `schedule`: a preset name or schedule TOML
    path, `cycles` overriding its number of cycles; `seed`: the PRNG seed (same seed, same
    result). `options`: the method and numerics (`AgentOptions`; default: the fast method,
    aspirates on `CLEVER_ASSESS_DAYS`); empty `count_days` mean `count_grid(t1)`.
    `progress(done, total)` is called after each chunk of replicates. Returns the output
    directory (`out_dir`), the `result` (`AgentResult`), the CSV's `table` and the
    `summary`."""
    import dataclasses

    import jax

    from dormancy_model.agents.report import plot_agents, summarize_agents
    from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents
    from dormancy_model.io import (
        atomic_savefig,
        atomic_write_csv,
        atomic_write_json,
        check_out_dir,
        output_dir,
    )
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.pipeline import check_years
    from dormancy_model.model.simulate import SolveError
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.pk.presets import get_schedule
    from dormancy_model.units import DAYS_PER_YEAR

    het = heterogeneity or Heterogeneity()
    options = options or AgentOptions(method="fast", assess_days=CLEVER_ASSESS_DAYS,
                                      pool_leap_above=POOL_LEAP_ABOVE)
    if replicates < 1:
        raise InputError("--replicates", "replicates", f"must be >= 1, got {replicates}")
    check_seed("--seed", "seed", seed)
    years = check_years(years)
    for flag, v in (("--autophagy-cv", het.autophagy_cv),
                    ("--reactivation-cv", het.reactivation_cv)):
        if not v >= 0:
            raise InputError(flag, flag[2:].replace("-", "_"), f"must be >= 0, got {v:g}")
    t1 = years * DAYS_PER_YEAR
    for d in options.assess_days:
        if not 0 <= d <= t1:
            raise InputError("--assess-days", "assess_days",
                             f"day {d:g} is outside the horizon [0, {t1:g}]")
    if not options.count_days:
        options = dataclasses.replace(options, count_days=count_grid(t1))
    p = load_model_parameters(model)
    sched = get_schedule(schedule, cycles, species=p.species)
    check_out_dir(out)  # nothing is created until the run succeeds (output_dir below)
    res = simulate_agents(DormancyModel(), p, sched, n_replicates=replicates,
                          key=jax.random.PRNGKey(seed), t1=t1, heterogeneity=het,
                          options=options, progress=progress)
    if not res.ok:
        raise SolveError(res.message)
    df = res.to_dataframe()
    keep = list(COLUMNS) + [
        c for c in df.columns if c.startswith(("dtc_positive_day", "aspirate_count_day"))]
    summary = summarize_agents(res)
    summary.update(model=str(model), schedule=schedule, seed=seed, years=years,
                   heterogeneity={"autophagy_cv": het.autophagy_cv,
                                  "reactivation_cv": het.reactivation_cv},
                   switch_size=options.switch_size)
    fig = plot_agents(res, title=f"{schedule}: {replicates} virtual patients "
                                 f"({options.method})")
    with output_dir(out) as tmp:
        atomic_write_csv(tmp / "replicates.csv", df[keep])
        atomic_write_json(tmp / "summary.json", summary)
        atomic_savefig(fig, tmp / "agents.png", dpi=110)
    return dict(out_dir=Path(out), result=res, table=df[keep], summary=summary)
