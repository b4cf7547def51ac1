"""Benchmark: replicated 51-patient virtual CLEVER trials per minute (target >= 100 on CPU).

Baseline (same run, same machine): trials simulated one at a time (`trial(replicates=1)` in a
loop), i.e. without batching patients of many trials into one agent call. Measured: the batched
runner `trial(replicates=R)` (simulation + per-trial analysis), after a warm-up that compiles
every array shape (compile time reported separately).

    python benchmarks/trial_bench.py                 # CPU: R = 32 batched, 4 one-by-one
    python benchmarks/trial_bench.py --gpu           # GPU-sized: R = 256, chunk 4096 (< 2 min)

Writes JSON to $OUT/trial_bench.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

from dormancy_model import load_model_parameters
from dormancy_model.trials.design import clever_design
from dormancy_model.trials.protocol import trial


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", action="store_true", help="GPU-sized run")
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--baseline", type=int, default=None, help="one-by-one trials")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="JAX CPU devices (default: one per core, as `dormancy trial`)")
    args = ap.parse_args(argv)
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores(args.cpu_devices)  # before any JAX operation
    R = args.replicates or (256 if args.gpu else 32)
    B = args.baseline or (2 if args.gpu else 4)
    chunk = 4096 if args.gpu else 512
    d = clever_design(observation_n=0)  # the 51 treated patients
    p = load_model_parameters("human")

    def batched(key, r):
        res = trial(d, p, key=key, replicates=r, chunk=chunk)
        return res.summary()

    # compilation is excluded: the padded call sizes depend on the random outcomes (e.g. how
    # many patients need extension cycles), so the warm-up runs the very keys of the timed runs
    # (results are deterministic given the key). Compilations that still happen inside a timed
    # run are counted and reported.
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, dur, **kw: compiles.append(dur)
        if name == "/jax/core/compile/backend_compile_duration" else None)
    t_warm = timed(lambda: batched(jax.random.key(1), R))[1]
    t_warm1 = sum(timed(lambda i=i: batched(jax.random.key(100 + i), 1))[1] for i in range(B))
    n0 = len(compiles)
    _, t_batch = timed(lambda: batched(jax.random.key(1), R))
    c_batch = compiles[n0:]
    n1 = len(compiles)
    _, t_one = timed(lambda: [batched(jax.random.key(100 + i), 1) for i in range(B)])
    c_one = compiles[n1:]
    rate = 60 * R / t_batch
    rate_one = 60 * B / t_one
    res = {
        "benchmark": "trial_bench", "device": str(jax.devices()[0]),
        "devices": jax.local_device_count(),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "replicates": R, "chunk": chunk, "patients_per_trial": d.n_treated,
        "warmup_compile_s": round(t_warm + t_warm1, 1), "batched_s": round(t_batch, 2),
        "trials_per_min_batched": round(rate, 1),
        "baseline": "one trial per call (replicates=1)", "baseline_trials": B,
        "baseline_s": round(t_one, 2), "trials_per_min_baseline": round(rate_one, 1),
        "speedup_vs_baseline": round(rate / rate_one, 2), "target_trials_per_min": 100,
        "compiles_in_timed_batched": len(c_batch),
        "compile_s_in_timed_batched": round(sum(c_batch), 2),
        "compiles_in_timed_baseline": len(c_one),
        "compile_s_in_timed_baseline": round(sum(c_one), 2),
    }
    print(json.dumps(res, indent=2))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "trial_bench.json"), "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
