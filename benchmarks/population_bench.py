"""Benchmark: population fit of the shipped SYNTHETIC mouse study with random effects on 3
parameters (issue 16, "Benchmark").

Parts (each optional, all on the same problem: free = dormant_initial, k_dr, delta_max,
hcq_ic50, eve_ic50, burden_sigma; random = dormant_initial, k_dr, delta_max; diagonal Omega;
the population step grid `study_fit.population_solver()`):

* ``--laplace``: `fit_study_laplace` (pooled fit with ``--pooled-starts`` starts, then the
  Laplace fit from the best ``--starts`` distinct pooled estimates, at most ``--iterations``
  L-BFGS iterations each, gradient tolerance 1e-3 as `dormancy fit`): wall time, objective,
  per-start iterations and convergence (target: <= 600 s with 8 starts on the 2-core CPU);
* ``--eval``: one Laplace objective + implicit gradient (`laplace_value_and_grad`): compile,
  then cold (modes from 0) and warm (modes from the last call) evaluations, with the shared
  drug-signal table (`StudyAnimalLikelihood.shared`) and without (``tabulate=False``);
* ``--nuts``: `fit_study_nuts` with ``--chains`` x (``--warmup`` + ``--draws``): wall time,
  R-hat, ESS, divergences (target: <= 30 min, R-hat < 1.01);
* ``--baseline``: the NUTS log density and its gradient (what every leapfrog step costs), with
  the fixed step grid (with the shared drug-signal table, and without it) against a plain
  adaptive diffrax `diffeqsolve` per animal
  (`integrate.SolverOptions`, rtol 1e-6), median of ``--repeats`` calls after compilation, and
  the speed-up.

Run:  python benchmarks/population_bench.py --eval --baseline
      python benchmarks/population_bench.py --laplace --starts 8
      python benchmarks/population_bench.py --nuts --chains 4 --warmup 500 --draws 500
Prints one JSON object (also written to --json if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "data" / "mouse_synthetic"
FREE = ("dormant_initial", "k_dr", "delta_max", "hcq_ic50", "eve_ic50", "burden_sigma")
RANDOM = ("dormant_initial", "k_dr", "delta_max")


def _setup():
    import jax

    jax.config.update("jax_enable_x64", True)
    from dormancy_model.fitting.study import load_study
    from dormancy_model.params.table import load_model_parameters

    return load_study(STUDY), load_model_parameters("mouse")


def _table_theta(problem, params, sd=0.3):
    from dormancy_model.fitting.objective import free_parameters
    from dormancy_model.params.transforms import to_scale

    fp = free_parameters(params, FREE)
    return problem.theta0(np.array([to_scale(f.table_value, f.scale) for f in fp]),
                          np.full(problem.q, sd))


def _timed(fn, *args):
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def bench_eval(study, params, tabulate: bool) -> dict:
    import jax.numpy as jnp

    from dormancy_model.fitting.population.animals import study_problem
    from dormancy_model.fitting.population.laplace import InnerOptions, laplace_value_and_grad
    from dormancy_model.fitting.population.study_fit import population_solver

    prob = study_problem(study, params, FREE, RANDOM, solver=population_solver(),
                         tabulate=tabulate)
    theta = jnp.asarray(_table_theta(prob, params))
    eta0 = jnp.zeros((prob.n_animals, prob.q))
    vg = lambda e: laplace_value_and_grad(prob, theta, e, InnerOptions())  # noqa: E731
    out, first = _timed(vg, eta0)
    cold = min(_timed(vg, eta0)[1] for _ in range(2))
    warm = min(_timed(vg, out[2])[1] for _ in range(2))
    return dict(tabulate=tabulate, n_animals=prob.n_animals, first_call_s=first,
                cold_s=cold, warm_s=warm, objective=float(out[0]))


def bench_laplace(study, params, starts, pooled_starts, iterations) -> dict:
    from dormancy_model.fitting.estimate import LBFGS, FitOptions
    from dormancy_model.fitting.population.estimate import LaplaceOptions
    from dormancy_model.fitting.population.study_fit import fit_study_laplace

    evals = []

    def tick(start, it, f):
        evals.append((start, it, f, time.perf_counter()))
        print(f"laplace start {start} iteration {it} nll {f:.4f} "
              f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)

    t = time.perf_counter()
    r = fit_study_laplace(study, params, FREE, RANDOM,
                          options=FitOptions(starts=pooled_starts, seed=0,
                                             optimizer=LBFGS(steps=60)),
                          laplace=LaplaceOptions(starts=starts, iterations=iterations,
                                                 gtol=1e-3),
                          on_iteration=tick)
    wall = time.perf_counter() - t
    pop = r.population
    return dict(wall_s=wall, pooled_and_assembly_s=wall - pop["wall_time_s"],
                distinct_starts=len(pop["starts"]),
                laplace_s=pop["wall_time_s"], objective=pop["objective"]["nll"],
                converged=pop["converged"], inner_converged=pop["inner_converged"],
                starts=[dict(objective=s["objective"], converged=s["converged"],
                             iterations=s["iterations"]) for s in pop["starts"]],
                cv={k: v["cv"] for k, v in pop["random"].items()},
                typical={k: v["value"] for k, v in pop["typical"].items()})


def bench_nuts(study, params, chains, warmup, draws) -> dict:
    from dormancy_model.fitting.estimate import FitOptions
    from dormancy_model.fitting.population.nuts import NutsOptions
    from dormancy_model.fitting.population.study_fit import fit_study_nuts

    t = time.perf_counter()
    r, _ = fit_study_nuts(study, params, FREE, RANDOM, options=FitOptions(starts=8, seed=0),
                          nuts=NutsOptions(chains=chains, warmup=warmup, draws=draws, seed=0))
    d = r.population["diagnostics"]
    return dict(wall_s=time.perf_counter() - t, chains=chains, warmup=warmup, draws=draws,
                rhat_max=d["rhat_max"], ess_bulk_min=d["ess_bulk_min"],
                divergences=d["divergences"], ok=d["ok"])


def bench_baseline(study, params, repeats) -> dict:
    """NUTS log density + gradient: fixed grid (shared signals) vs adaptive diffeqsolve."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from dormancy_model.fitting.population.animals import study_problem
    from dormancy_model.fitting.population.estimate import BoundedCoordinates
    from dormancy_model.fitting.population.nuts import _Posterior  # noqa: PLC2701
    from dormancy_model.fitting.population.study_fit import population_solver
    from dormancy_model.model.integrate import SolverOptions

    out = {}
    for name, solver, tab in (
            ("fixed_grid", population_solver(), True),
            ("fixed_grid_untabulated", population_solver(), False),
            ("adaptive_diffeqsolve", SolverOptions(rtol=1e-6, atol=1e-9), False)):
        prob = study_problem(study, params, FREE, RANDOM, solver=solver, tabulate=tab)
        lo, hi = np.asarray(prob.lower), np.asarray(prob.upper)
        coords = BoundedCoordinates(prob.theta_bounds())
        theta0 = _table_theta(prob, params)
        dens = _Posterior(prob, jnp.asarray(coords.lo), jnp.asarray(coords.hi),
                          jnp.asarray(coords.bounded), jnp.asarray(theta0[:prob.d]),
                          jnp.asarray((hi - lo) / 4.0))
        x = jnp.concatenate([jnp.asarray(coords.z(theta0)),
                             0.1 * jax.random.normal(jax.random.PRNGKey(0),
                                                     (prob.n_animals * prob.q,))])
        f = eqx.filter_jit(jax.value_and_grad(dens.log_density))
        (val, _), first = _timed(f, x)
        times = [_timed(f, x)[1] for _ in range(repeats)]
        out[name] = dict(first_call_s=first, median_s=float(np.median(times)),
                         log_density=float(val))
    out["speedup"] = out["adaptive_diffeqsolve"]["median_s"] / out["fixed_grid"]["median_s"]
    return out


def versions() -> dict:
    import diffrax
    import equinox
    import jax
    import numpyro

    import dormancy_model

    return dict(python=platform.python_version(), jax=jax.__version__,
                diffrax=diffrax.__version__, equinox=equinox.__version__,
                numpyro=numpyro.__version__, dormancy_model=dormancy_model.__version__)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laplace", action="store_true")
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--nuts", action="store_true")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--pooled-starts", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    study, params = _setup()
    import jax

    res = dict(machine=platform.platform(), cpus=os.cpu_count(),
               device=str(jax.devices()[0]), versions=versions(),
               load_average=os.getloadavg(), date=time.strftime("%Y-%m-%d %H:%M"))
    if a.eval:
        res["eval"] = [bench_eval(study, params, t) for t in (True, False)]
    if a.baseline:
        res["baseline"] = bench_baseline(study, params, a.repeats)
    if a.laplace:
        res["laplace"] = bench_laplace(study, params, a.starts, a.pooled_starts, a.iterations)
    if a.nuts:
        res["nuts"] = bench_nuts(study, params, a.chains, a.warmup, a.draws)
    res["load_average_end"] = os.getloadavg()
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()
