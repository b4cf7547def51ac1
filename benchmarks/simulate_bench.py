"""Benchmark `simulate` (clever-combo, 5 years) against scipy solve_ivp (LSODA) at equal accuracy.

Both solve the same model (tests/scipy_reference.py is an independent NumPy implementation with
the PK as ordinary ODE states and doses as state jumps between segments). Accuracy of every run
is measured against a tight LSODA reference (rtol 1e-12): error = max over D, R, P and the
relapse hazard of max |x - x_ref| / max |x_ref|. For each error target the fastest setting of
each solver that meets it is compared.

Usage: python benchmarks/simulate_bench.py [--repeats 5] [--quick]
Writes JSON to $OUT/simulate_bench.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

FIRST_CALL = """
import time, dormancy_model as dm
m = dm.DormancyModel(); p = dm.load_parameters('src/dormancy_model/params/data/human.toml')
s = dm.get_schedule('clever-combo')
t0 = time.perf_counter(); tr = dm.simulate(m, p, s, years=5); tr.residual.block_until_ready()
print(time.perf_counter() - t0)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import jax

    import dormancy_model as dm
    from scipy_reference import ReferenceModel

    first = float(subprocess.run([sys.executable, "-c", FIRST_CALL], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1])
    m = dm.DormancyModel()
    p = dm.load_parameters(ROOT / "src/dormancy_model/params/data/human.toml")
    s = dm.get_schedule("clever-combo")
    ts = dm.simulate.__globals__["save_grid"](5 * 365.25, 24.0)
    ref_model = ReferenceModel({k: float(v) for k, v in p.values.items()})
    t0 = time.perf_counter()
    ref_states, ref_hazard = ref_model.solve(s, ts, method="LSODA", rtol=1e-12, atol=1e-14)
    t_ref = time.perf_counter() - t0
    ref = np.column_stack([ref_states[:, :3], ref_hazard])

    def error(cols):
        return float(max(np.max(np.abs(cols[:, i] - ref[:, i])) / np.max(np.abs(ref[:, i]))
                         for i in range(4)))

    rows = []
    tols = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8] if not args.quick else [1e-5, 1e-6]
    for rtol in tols:
        opt = dm.SolverOptions(rtol=rtol, atol=rtol * 1e-3)
        tr = dm.simulate(m, p, s, ts=ts, options=opt)
        tr.residual.block_until_ready()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tr = dm.simulate(m, p, s, ts=ts, options=opt)
            tr.residual.block_until_ready()
            times.append(time.perf_counter() - t0)
        cols = np.column_stack([np.asarray(tr.dormant), np.asarray(tr.reactivating),
                                np.asarray(tr.proliferating), np.asarray(tr.hazard)])
        rows.append(dict(solver="dormancy_model (diffrax Tsit5, closed-form PK)", rtol=rtol,
                         seconds=float(np.median(times)), error=error(cols),
                         steps=int(tr.num_steps)))
        print(rows[-1], flush=True)
    for rtol in ([1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8] if not args.quick else [1e-4, 1e-6]):
        times = []
        for _ in range(max(1, args.repeats // 2)):
            t0 = time.perf_counter()
            st, hz = ref_model.solve(s, ts, method="LSODA", rtol=rtol, atol=rtol * 1e-3)
            times.append(time.perf_counter() - t0)
        cols = np.column_stack([st[:, :3], hz])
        rows.append(dict(solver="scipy solve_ivp LSODA (PK as ODE, segments at doses)",
                         rtol=rtol, seconds=float(np.median(times)), error=error(cols),
                         nfev=int(ref_model.nfev)))
        print(rows[-1], flush=True)
    ours = [r for r in rows if r["solver"].startswith("dormancy")]
    lsoda = [r for r in rows if r["solver"].startswith("scipy")]
    ratios = []
    for target in (1e-4, 1e-5, 1e-6):
        o = [r for r in ours if r["error"] <= target]
        b = [r for r in lsoda if r["error"] <= target]
        if o and b:
            fo = min(o, key=lambda r: r["seconds"])
            fb = min(b, key=lambda r: r["seconds"])
            ratios.append(dict(error_target=target, ours_s=fo["seconds"], ours_rtol=fo["rtol"],
                               lsoda_s=fb["seconds"], lsoda_rtol=fb["rtol"],
                               speedup=fb["seconds"] / fo["seconds"]))
    print()
    print(f"first call (compile + solve, fresh process): {first:.2f} s (target <= 10 s)")
    print(f"reference LSODA rtol 1e-12: {t_ref:.2f} s")
    print("error target | ours (rtol, s) | LSODA (rtol, s) | speed-up (target >= 30x)")
    for r in ratios:
        print(f"{r['error_target']:.0e} | {r['ours_rtol']:.0e}, {r['ours_s'] * 1e3:.1f} ms | "
              f"{r['lsoda_rtol']:.0e}, {r['lsoda_s']:.3f} s | {r['speedup']:.1f}x")
    result = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                  device=str(jax.devices()[0]), date=time.strftime("%Y-%m-%d"),
                  first_call_s=first, rows=rows, ratios=ratios)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "simulate_bench.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
