"""Agent model throughput: virtual-patient histories per second.

Part 1 (issue 3 target): clever-combo, 100 initial DTCs (fixed), 5 years, human parameters;
fast and exact variants; compile time excluded (a warm-up call on the same shapes first).
Part 2: constant-rate birth-death (N0 = 100, b = 0.10, d = 0.12 /day, 0-1825 days), the same
model in GillesPy2's C++ SSA (baseline, same machine, same run) and in our exact variant; the
printed ratio is ours / GillesPy2 (trajectories per second).

    python benchmarks/agents_bench.py            # CPU sizes, both parts
    python benchmarks/agents_bench.py --gpu      # accelerator sizes, part 1 only (< ~2 min);
                                                 # writes $OUT/agents_bench.json when OUT is set
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import dormancy_model as dm
from dormancy_model.agents import simulate as agents
from dormancy_model.agents.simulate import AgentOptions, simulate_agents

T5 = 5 * 365.25


def timed(fn, repeats=2):
    fn()  # warm-up: compile on these shapes
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


class LoopTimer:
    """Wraps `agents._run_chunk` to time the event loops (device work) apart from the set-up
    and outcome bookkeeping around them."""

    def __init__(self):
        self.seconds = 0.0
        self.inner = agents._run_chunk

    def __call__(self, *args):
        t = time.perf_counter()
        out = jax.block_until_ready(self.inner(*args))
        self.seconds += time.perf_counter() - t
        return out


LOOP = LoopTimer()
agents._run_chunk = LOOP


def clever_combo(method, n, chunk, seed=0, backend="auto", block=64):
    p = dm.load_model_parameters("human")
    s = dm.get_schedule("clever-combo")

    def go():
        return simulate_agents(dm.DormancyModel(), p, s, n_replicates=n,
                               key=jax.random.PRNGKey(seed), t1=T5, options=AgentOptions(
                                   method=method, initial_count="fixed",
                                   assess_days=(84.0, 168.0, 350.0), chunk_size=chunk,
                                   backend=backend, kernel_block=block))

    repeats = 1 if method == "exact" else 3 if n > 100_000 else 5
    go()  # warm-up: compile on these shapes
    LOOP.seconds, secs = 0.0, np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        res = go()
        secs = min(secs, time.perf_counter() - t)
    loop_s = LOOP.seconds / repeats  # mean time in the event loops per call
    return dict(case="clever-combo 100 DTCs 5 y", method=method, backend=backend,
                block=block, replicates=n, chunk=chunk,
                seconds=secs, histories_per_s=n / secs, loop_seconds=loop_s,
                max_events=int(res.n_events.max()),
                mean_events=float(res.n_events.mean()), cleared=float(res.cleared.mean()),
                relapsed=float(res.relapsed.mean()), status=res.message)


def birth_death_ours(n, method="exact"):
    p = dm.load_model_parameters("human").replace(
        k_dr=0.0, k_pd=0.0, dormant_initial=0.0, reactivating_initial=0.0,
        proliferating_initial=100.0, lambda_p=0.10, delta_p=0.12)
    s = dm.get_schedule("observation")

    def go():
        return simulate_agents(dm.DormancyModel(), p, s, n_replicates=n,
                               key=jax.random.PRNGKey(1), t1=1825.0, options=AgentOptions(
                                   method=method, initial_count="fixed", switch_size=1e12,
                                   count_days=(1825.0,)))

    secs, res = timed(go)
    return dict(case="birth-death N0=100 b=0.10 d=0.12 0-1825 d", method=f"dormancy {method}",
                replicates=n, seconds=secs, histories_per_s=n / secs,
                mean_final=float(res.counts[:, 0, 2].mean()),
                extinct=float(res.cleared.mean()))


def birth_death_gillespy2(n):
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    import tempfile

    import gillespy2

    m = gillespy2.Model(name="birthdeath")
    m.add_parameter([gillespy2.Parameter(name="b", expression=0.10),
                     gillespy2.Parameter(name="d", expression=0.12)])
    x = gillespy2.Species(name="X", initial_value=100, mode="discrete")
    m.add_species([x])
    m.add_reaction([gillespy2.Reaction(name="birth", reactants={x: 1}, products={x: 2},
                                       rate="b"),
                    gillespy2.Reaction(name="death", reactants={x: 1}, products={}, rate="d")])
    m.timespan(np.array([0.0, 1825.0]))
    solver = gillespy2.SSACSolver(model=m, output_directory=os.path.join(tempfile.mkdtemp(), "ssa"))

    def go():
        return m.run(solver=solver, number_of_trajectories=n, seed=7)

    secs, res = timed(go)
    final = np.array([r["X"][-1] for r in res])
    return dict(case="birth-death N0=100 b=0.10 d=0.12 0-1825 d", method="GillesPy2 SSACSolver",
                replicates=n, seconds=secs, histories_per_s=n / secs,
                mean_final=float(final.mean()), extinct=float(np.mean(final == 0)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", action="store_true", help="accelerator sizes, part 1 only")
    ap.add_argument("--fast-n", type=int, default=None)
    ap.add_argument("--exact-n", type=int, default=None)
    ap.add_argument("--bd-n", type=int, default=1000)
    ap.add_argument("--backends", nargs="*", default=["auto", "xla"],
                    help="with --gpu: fast-variant backends (auto = the kernel on a GPU)")
    ap.add_argument("--blocks", type=int, nargs="*", default=[64],
                    help="with --gpu: replicates per kernel program")
    ap.add_argument("--fast-chunks", type=int, nargs="*", default=[],
                    help="with --gpu: also time the fast variant at these chunk sizes")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="JAX CPU devices (default: one per core, as `dormancy agents`)")
    args = ap.parse_args(argv)
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores(args.cpu_devices)  # before any JAX operation
    rows = []
    info = dict(backend=jax.default_backend(), device=str(jax.devices()[0]),
                devices=jax.local_device_count(),
                machine=platform.machine(), cpus=os.cpu_count(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(info, flush=True)
    if args.gpu:
        nf = args.fast_n or 1_048_576
        sizes = [(nf, "fast", 262_144, b, k) for b in args.backends for k in
                 (args.blocks if b != "xla" else [64])]
        sizes += [(65_536 if args.exact_n is None else args.exact_n, "exact", 65_536, "xla", 64)]
        sizes += [(nf, "fast", c, "auto", 64) for c in args.fast_chunks]
    else:
        sizes = [(args.fast_n or 8192, "fast", 8192, "auto", 64),
                 (args.exact_n or 512, "exact", 128, "auto", 64)]
    for n, method, chunk, backend, block in sizes:
        if n == 0:
            continue
        try:
            r = clever_combo(method, n, chunk, backend=backend, block=block)
        except Exception as e:  # a failed backend must not lose the other rows
            print(f"{method} {backend} block {block}: {type(e).__name__}: {str(e)[:1500]}",
                  flush=True)
            continue
        rows.append(r)
        print(f"{r['case']:<28} {method:<6} {backend}/{block} n={n:<8} {r['seconds']:8.2f} s "
              f"{r['histories_per_s']:12.1f} histories/s  (event loops {r['loop_seconds']:.2f} s; "
              f"max events {r['max_events']}, "
              f"cleared {r['cleared']:.3f}, relapsed {r['relapsed']:.4f}, {r['status']})",
              flush=True)
    if not args.gpu:
        g = birth_death_gillespy2(args.bd_n)
        o = birth_death_ours(args.bd_n, "exact")
        f = birth_death_ours(args.bd_n, "fast")
        for r in (g, o, f):
            rows.append(r)
            print(f"{r['case']:<42} {r['method']:<22} {r['seconds']:7.2f} s "
                  f"{r['histories_per_s']:10.1f} traj/s  mean X(1825) {r['mean_final']:.2f} "
                  f"extinct {r['extinct']:.3f}", flush=True)
        print(f"ratio dormancy exact / GillesPy2 = {o['histories_per_s'] / g['histories_per_s']:.3f}"
              f"; dormancy fast / GillesPy2 = {f['histories_per_s'] / g['histories_per_s']:.3f}")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "agents_bench.json").write_text(json.dumps(dict(info=info, rows=rows),
                                                                indent=2))


if __name__ == "__main__":
    main()
