"""Dormant-pool leaps (`AgentOptions.pool_leap_above`): speed and the error of the split.

Part 1: the fast method with and without pool leaps, clever-combo, human parameters (no
history, k_dr 4e-6), fixed initial pools of 1e3 / 1e4 / 1e5 dormant cells, one trait class,
`--n` replicates, 1 year; events per replicate and wall time (compile excluded: a warm-up call
on the same shapes first). Part 2 (`--split-error`): on the default grid (hourly hazard cells to
the end of treatment + 14 days, daily after; leaps of 1 day, then 7), the exact probability
that a dormant cell reactivates within a leap (the simulated process: piecewise-constant
rates per hazard cell) against the proportional-hazards split p_react = L_r / L (1 - e^-L) the
leap draws, and the largest distance (Kolmogorov) between the exact and the drawn laws of the
reactivation time within a leap.

    python benchmarks/pool_leap_bench.py [--n 256] [--above 500] [--split-error]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import dormancy_model as dm
from dormancy_model.agents.hazard import hazard_nodes, hazard_table
from dormancy_model.agents.simulate import AgentOptions, simulate_agents
from dormancy_model.pk.closed_form import Dosing


def params(**kw):
    return dm.load_model_parameters("human").replace(history_days=0.0, k_dr=4e-6, **kw)


def speed(n: int, above: float, t1: float = 365.25):
    model, sched = dm.DormancyModel(), dm.get_schedule("clever-combo")
    print(f"clever-combo, {n} replicates, {t1:g} days, fast method, pool_leap_above={above:g}")
    print(f"{'cells':>8} {'mode':>6} {'events/rep':>11} {'wall s':>8} {'speed-up':>8}")
    for d0 in (1e3, 1e4, 1e5):
        walls = {}
        for mode, thr in (("exact", float("inf")), ("leap", above)):
            opts = AgentOptions(method="fast", initial_count="fixed", pool_leap_above=thr,
                                clone_slots=32)

            def run(seed, opts=opts, d0=d0):
                res = simulate_agents(model, params(dormant_initial=d0), sched, n_replicates=n,
                                      key=jax.random.PRNGKey(seed), t1=t1, options=opts)
                assert res.ok, res.message
                return res

            run(0)  # warm-up: compile on these shapes
            t = time.perf_counter()
            res = run(1)
            walls[mode] = time.perf_counter() - t
            ratio = walls["exact"] / walls[mode]
            print(f"{d0:8.0e} {mode:>6} {res.n_events.mean():11.0f} {walls[mode]:8.2f} "
                  f"{ratio:8.1f}", flush=True)


def split_error(a: float = 1.0, rp: float = 1.0, leap_days: float = 1.0,
                late_leap_days: float = 7.0, t1: float = 365.25):
    model, sched = dm.DormancyModel(), dm.get_schedule("clever-combo")
    g = hazard_nodes(0.0, t1, sched.end_of_treatment)
    spec = np.array([0.0, g.h_fine, g.t_split, g.h_coarse, g.n_fine])
    tb = hazard_table(model, params(), Dosing.from_schedule(sched), jnp.asarray(g.nodes),
                      jnp.asarray(spec))
    nodes, rate = np.asarray(tb.nodes), np.asarray(tb.rate)
    keep = nodes <= t1
    nodes, rate = nodes[keep], rate[keep]
    r = rp * rate[:-1, 0]
    dth = rate[:-1, 1] + a * rate[:-1, 2]
    dt = np.diff(nodes)
    ends, t = [], 0.0
    while t < t1 - 1e-9:
        t = min(t + (leap_days if t < g.t_split else late_leap_days), t1)
        ends.append(t)
    worst_rel, worst_ks, start = 0.0, 0.0, 0.0
    surv, tot_exact, tot_approx = 1.0, 0.0, 0.0
    for end in ends:
        sel = (nodes[:-1] >= start - 1e-9) & (nodes[:-1] < end - 1e-9)
        rj, dj, hj = r[sel], dth[sel], dt[sel]
        tot = (rj + dj) * hj
        h_before = np.concatenate([[0.0], np.cumsum(tot)[:-1]])
        piece = np.where(rj + dj > 0, rj / np.maximum(rj + dj, 1e-300), 0.0) \
            * np.exp(-h_before) * -np.expm1(-tot)
        exact = piece.sum()
        lr, ld = (rj * hj).sum(), (dj * hj).sum()
        big = lr + ld
        approx = lr / big * -np.expm1(-big)
        worst_rel = max(worst_rel, abs(approx - exact) / exact)
        tot_exact += surv * exact
        tot_approx += surv * approx
        surv *= np.exp(-big)
        f_exact = np.cumsum(piece) / exact  # reactivation-time CDF at the hazard-cell ends
        f_drawn = np.cumsum(rj * hj) / lr  # the drawn law: the reactivation hazard's own
        worst_ks = max(worst_ks, np.max(np.abs(f_exact - f_drawn)))
        start = end
    print(f"a={a:g} rp={rp:g}: {len(ends)} leaps; largest relative error of p_react "
          f"{worst_rel:.2e}; largest Kolmogorov distance of the reactivation-time law "
          f"{worst_ks:.2e}; P(a cell reactivates within {t1:g} days) {tot_exact:.4e} exact, "
          f"relative error {(tot_approx - tot_exact) / tot_exact:+.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--above", type=float, default=500.0)
    ap.add_argument("--split-error", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    if args.split_error:
        for a in (0.2, 1.0, 5.0):
            split_error(a=a)
    if not args.no_speed:
        speed(args.n, args.above)


if __name__ == "__main__":
    main()
