"""Regimen design benchmark (issue 18): a 4-variable design (HCQ and EVE amounts in tablet
multiples, on-days per cycle, number of cycles) over 1,000 virtual CLEVER patients, with the
packaged spec `regimens/data/clever.toml`; wall time against the brute-force grid search of the
same feasible set.

The brute-force baseline evaluates every feasible grid regimen (tablet multiples x whole days x
whole cycles, constraints checked exactly first) on the same 1,000 patients with the same
accurate solver options, batched as the design's own final evaluation is. Its cost is measured
on `--grid-sample` feasible grid points drawn at random (timed after compilation) and multiplied
by the number of feasible grid points; `--grid-full` evaluates every point (hours at 1,000
patients). Either way the grid's best objective is at least the design's (the design returns a
grid point), so "the grid search that reaches the same objective value" is the full grid.

    .venv/bin/python benchmarks/design_bench.py [--patients 1000] [--search-patients 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import time
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.params.table import load_model_parameters
from dormancy_model.regimens import design, load_design_spec
from dormancy_model.regimens.optimise import _evaluate_many
from dormancy_model.regimens.problem import FINAL_OPTIONS, Problem, clever_regimen
from dormancy_model.trials.calibrate import load_calibration
from dormancy_model.trials.population import Population, sample_patients


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--search-patients", type=int, default=128)
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--grid-sample", type=int, default=8)
    ap.add_argument("--grid-full", action="store_true")
    a = ap.parse_args()
    path = resources.files("dormancy_model.regimens") / "data" / "clever.toml"
    spec = load_design_spec(str(path))
    spec = dataclasses.replace(spec, patients=a.patients, search_patients=a.search_patients,
                               starts=a.starts)
    params = load_model_parameters("human")
    pop = Population(typical=load_calibration(None, params))
    key = jax.random.key(spec.seed)
    print(f"{platform.processor() or platform.machine()}, {jax.devices()}, jax {jax.__version__}")
    t0 = time.perf_counter()
    res = design(spec, params, key=key, population=pop, reference=clever_regimen(),
                 progress=lambda s: print(f"  {time.perf_counter() - t0:7.1f} s  {s}",
                                          flush=True))
    t_design = time.perf_counter() - t0
    print(res.table().to_string())
    print(f"design: {t_design:.1f} s, {len(res.history)} objective+gradient evaluations")

    # brute force on the same feasible set
    full = sample_patients(key, spec.patients, pop, params).params.astype(jnp.float64)
    freqs = {d.drug: d.frequencies[0] for d in spec.drugs}
    prob = Problem(spec, full, freqs)
    axes = [spec.drug(d).allowed_amounts() for d in prob.drugs]
    axes += [range(int(spec.days_on.lo), int(spec.days_on.hi) + 1),
             range(int(spec.cycles.lo), int(spec.cycles.hi) + 1)]
    grid = [np.asarray(x, float) for x in itertools.product(*axes)]
    feas = [x for x in grid if np.all(prob.constraint_values(x) <= 1e-6)]
    print(f"grid: {len(grid)} regimens, {len(feas)} feasible")
    rng = np.random.default_rng(0)
    pick = feas if a.grid_full else [feas[i] for i in rng.choice(len(feas), min(
        a.grid_sample, len(feas)), replace=False)]
    _evaluate_many(prob, pick[:1], full, FINAL_OPTIONS)  # compile
    t1 = time.perf_counter()
    vals, status = _evaluate_many(prob, pick, full, FINAL_OPTIONS)
    per_point = (time.perf_counter() - t1) / len(pick)
    scores = [float(prob.score(jnp.asarray(v))) for v in vals]
    t_grid = per_point * len(feas)
    print(f"grid: {per_point:.2f} s per regimen on {spec.patients} patients "
          f"({len(pick)} {'(all)' if a.grid_full else 'sampled'}); best sampled objective "
          f"{max(scores):.4f}; full grid {t_grid:.0f} s "
          f"({'measured' if a.grid_full else 'extrapolated'})")
    print(f"design objective {res.best.objective:.4f}; speed-up vs full grid "
          f"{t_grid / t_design:.1f}x")


if __name__ == "__main__":
    main()
