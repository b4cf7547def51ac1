"""Sweep throughput: the lock-step engine against `jax.vmap(diffeqsolve)`, same run, same device.

Cases
  model   CLEVER combination (HCQ 600 mg BID + EVE 10 mg QD, 6 cycles), 5-year horizon,
          virtual patients (log-normal k_dr, delta_max, eve_cl, hcq_cl); outputs residual at
          days 84/168, relapse-free at 3 and 5 years, P(DTC+) at days 84/168.
          (a) naive: jax.jit(jax.vmap(simulate)) = diffrax Tsit5 + PIDController with the dose
              times as jump_ts, float32, same rtol/atol;
          (b) engine: `batch_model.solve_outputs` (Tsit5, per-lane error control), float32;
              on a GPU its loop is one Pallas kernel (`engine_pallas`), elsewhere the XLA
              lock-step loop.
          Error: max over a subset of lanes against float64 `simulate` at rtol 1e-10.
  lorenz  the adaptive case of the published GPU ODE benchmark (Utkarsh et al. 2024):
          rho = linspace(0, 21, N), sigma 10, beta 8/3, u0 (1, 0, 0), t in [0, 1],
          Tsit5, rtol = atol = 1e-8, float32; naive vmap(diffeqsolve) vs the engine.
  bounded a chunked sweep streamed to Zarr: peak RSS stays flat as N grows (--bounded N ...).

Usage
  python benchmarks/sweep_bench.py                  # CPU sizes (a few minutes)
  python benchmarks/sweep_bench.py --gpu            # GPU sizes (< ~2 min), JSON to $OUT
  python benchmarks/sweep_bench.py --bounded 4000 16000
  python benchmarks/sweep_bench.py --body-cost 4000   # ns per lane and step attempt, fusions
CPU devices: by default the process asks JAX for one CPU device per core
(`dormancy_model.engine.devices.use_cpu_cores`, as `dormancy sweep` does), so the engine splits its
lanes over the cores with `shard_map`; the naive solver is the plain vmap the issue names and runs
on one device (XLA still spreads its fused loops over the cores' thread pool). `--cpu-devices 1`
measures the engine on one device.
Timings exclude compilation (one warm-up call per size) and are the best of 3 engine / 2 naive
repeats; the ratio is engine/naive traj/s.
--extra-engine METHOD:RTOL[:BACKEND[:BLOCK]] (default rk4:1e-3; with --gpu also tsit5:1e-6:xla)
adds engine runs, e.g. at a tolerance chosen to match the naive solver's error or with the XLA
loop instead of the Pallas kernel (the GPU default); errors are printed beside speeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import dormancy_model as dm
from dormancy_model.engine.rk import AbstractLaneProblem, EngineOptions, solve_sharded
from dormancy_model.pk.closed_form import Dosing
from dormancy_model.sweeps.lanes import OutputDays, ScheduleTable, solve_outputs

DAYS = OutputDays((84.0, 168.0), (3 * 365.25, 5 * 365.25), (84.0, 168.0))
TS = np.array([0.0, 84.0, 168.0, 3 * 365.25, 5 * 365.25])
T0 = time.perf_counter()
BUDGET = [float("inf")]  # seconds; later cases are skipped once exceeded (--budget)
VAR = {"k_dr": 0.5, "delta_max": 0.3, "eve_cl": 0.35, "hcq_cl": 0.3}


def peak_memory_mb():
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        st = dev.memory_stats() or {}
        return st.get("peak_bytes_in_use", 0) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def patients(p, n, seed=0):
    z = np.random.default_rng(seed).standard_normal((n, len(VAR)))  # row i = patient i
    out = {}
    for j, (k, cv) in enumerate(VAR.items()):
        lo, hi = p.spec[k].bounds
        w = np.sqrt(np.log1p(cv**2))
        out[k] = np.clip(float(p[k]) * np.exp(w * z[:, j]), lo, hi)
    return out


def timed(f, *a, repeats=1):
    out = f(*a)
    jax.block_until_ready(out)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f(*a)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return out, best


def model_case(sizes_naive, sizes_engine, rtol, atol, n_ref=32, extra_engines=()):
    p = dm.load_model_parameters("human")
    sched = dm.get_schedule("clever-combo")
    model = dm.DormancyModel()
    dosing32 = Dosing.from_schedule(sched, jnp.float32)
    opts_naive = dm.SolverOptions(rtol=rtol, atol=atol, dtype="float32", max_steps=20_000)

    @jax.jit
    def naive(vals):
        def one(v):
            tr = dm.simulate(model, p.replace(**v), dosing32, ts=TS, options=opts_naive)
            return tr.residual[1:3], tr.relapse_free[3:], tr.p_dtc_positive[1:3], tr.num_steps
        return jax.vmap(one)(vals)

    table = ScheduleTable.build([sched])
    eng_opts = EngineOptions(rtol=rtol, atol=atol, dtype="float32")

    def engine(vals, opts=eng_opts):
        n = len(next(iter(vals.values())))
        return solve_outputs(vals, p, table, jnp.zeros(n, jnp.int32), DAYS, opts)

    # float64 reference on the first n_ref lanes
    # (computed on the CPU: a float64 solve at rtol 1e-10 is many small sequential steps)
    ref_vals = patients(p, n_ref)
    ref = []
    with jax.default_device(jax.devices("cpu")[0]):
        for i in range(n_ref):
            tr = dm.simulate(model, p.replace(**{k: v[i] for k, v in ref_vals.items()}), sched,
                             ts=TS, options=dm.SolverOptions(rtol=1e-10, atol=1e-12))
            ref.append((np.asarray(tr.residual)[1:3], np.asarray(tr.relapse_free)[3:],
                        np.asarray(tr.p_dtc_positive)[1:3]))
    ref = [np.array(x) for x in zip(*ref, strict=True)]
    print(f"float64 reference ({n_ref} lanes): {time.perf_counter() - T0:.1f} s", flush=True)

    def errors(res, rfs, pdtc):
        return dict(residual_rel=float(np.max(np.abs(np.asarray(res)[:n_ref] / ref[0] - 1))),
                    rfs_abs=float(np.max(np.abs(np.asarray(rfs)[:n_ref] - ref[1]))),
                    pdtc_abs=float(np.max(np.abs(np.asarray(pdtc)[:n_ref] - ref[2]))))

    rows = []
    for n in sorted(set(sizes_naive) | set(sizes_engine)):
        if time.perf_counter() - T0 > BUDGET[0]:
            print(json.dumps({"case": "model", "n": n, "skipped": "time budget"}), flush=True)
            continue
        vals = patients(p, n)
        row = {"case": "model", "n": n}
        if n in sizes_engine:
            print(f"engine n={n} ({time.perf_counter() - T0:.0f} s)", flush=True)
            try:
                out, dt = timed(engine, vals, repeats=3)
            except Exception as e:  # a failed backend must not lose the other rows
                out, row["engine_error"] = None, f"{type(e).__name__}: {str(e)[:1500]}"
                print(row["engine_error"], flush=True)
        if n in sizes_engine and out is not None:
            row.update(engine_s=dt, engine_traj_s=n / dt,
                       engine_err=errors(out["residual"], out["relapse_free"],
                                         out["p_dtc_positive"]),
                       engine_mean_steps=float(np.mean(out["steps"])),
                       engine_mean_rejected=float(np.mean(out["rejected"])),
                       engine_failed=int(np.sum(np.asarray(out["status"]) != 0)),
                       engine_peak_mb=peak_memory_mb())
        for method, e_rtol, backend, block in extra_engines if n in sizes_engine else ():
            # another engine method or backend, e.g. at a tolerance chosen to match the naive
            # solver's error
            tag = f"{method}@{e_rtol:g}" + (f"/{backend}" if backend != "auto" else "") + (
                f"/b{block}" if block else "")
            print(f"engine {tag} n={n} ({time.perf_counter() - T0:.0f} s)", flush=True)
            o = EngineOptions(method=method, rtol=e_rtol, atol=atol * e_rtol / rtol,
                              dtype="float32", backend=backend, block=block or 128)
            try:
                out, dt = timed(engine, vals, o, repeats=3)
            except Exception as e:
                row[tag] = dict(error=f"{type(e).__name__}: {str(e)[:1500]}")
                print(row[tag]["error"], flush=True)
                continue
            row[tag] = dict(traj_s=n / dt, seconds=dt,
                            err=errors(out["residual"], out["relapse_free"],
                                       out["p_dtc_positive"]),
                            mean_steps=float(np.mean(out["steps"])),
                            mean_rejected=float(np.mean(out["rejected"])),
                            failed=int(np.sum(np.asarray(out["status"]) != 0)))
        if n in sizes_naive:
            print(f"naive n={n} ({time.perf_counter() - T0:.0f} s)", flush=True)
            (res, rfs, pdtc, steps), dt = timed(naive, vals, repeats=2)
            row.update(naive_s=dt, naive_traj_s=n / dt, naive_err=errors(res, rfs, pdtc),
                       naive_mean_steps=float(np.mean(steps)), naive_peak_mb=peak_memory_mb())
        if "naive_traj_s" in row and "engine_traj_s" in row:
            row["ratio"] = row["engine_traj_s"] / row["naive_traj_s"]
            for k in [k for k in row if "@" in k and "traj_s" in row[k]]:
                row[k]["ratio"] = row[k]["traj_s"] / row["naive_traj_s"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ Lorenz


class Lorenz(AbstractLaneProblem):
    def rhs(self, t, y, x, s, lane, shared):
        u, v, w = y
        return (10.0 * (v - u), u * (lane["rho"] - w) - v, u * v - (8.0 / 3.0) * w)


def lorenz_case(sizes, tol=1e-8):
    import diffrax as dfx

    def naive_one(rho, dtype):
        f = lambda t, y, a: jnp.stack([10.0 * (y[1] - y[0]), y[0] * (a - y[2]) - y[1],  # noqa
                                       y[0] * y[1] - (8.0 / 3.0) * y[2]])
        sol = dfx.diffeqsolve(dfx.ODETerm(f), dfx.Tsit5(), jnp.asarray(0.0, dtype),
                              jnp.asarray(1.0, dtype), jnp.asarray(0.001, dtype),
                              jnp.array([1.0, 0.0, 0.0], dtype), args=rho,
                              stepsize_controller=dfx.PIDController(rtol=tol, atol=tol),
                              max_steps=100_000)
        return sol.ys[-1]

    naive = jax.jit(jax.vmap(lambda r: naive_one(r, jnp.float32)))
    ref_f = jax.jit(jax.vmap(lambda r: dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, a: jnp.stack([10.0 * (y[1] - y[0]), y[0] * (a - y[2]) - y[1],
                                              y[0] * y[1] - (8.0 / 3.0) * y[2]])),
        dfx.Tsit5(), 0.0, 1.0, 0.001, jnp.array([1.0, 0.0, 0.0]), args=r,
        stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100_000).ys[-1]))
    opts = EngineOptions(rtol=tol, atol=tol, dtype="float32", h0=0.001)
    opts_xla = EngineOptions(rtol=tol, atol=tol, dtype="float32", h0=0.001, backend="xla")

    @functools.partial(jax.jit, static_argnums=1)
    def engine(rho, opts=opts):
        n = rho.shape[0]
        one = jnp.ones((n,), jnp.float32)
        y0 = (one, 0 * one, 0 * one)
        sol = solve_sharded(Lorenz(), y0, (), (), jnp.float32(0.0), one[:, None], {"rho": rho},
                          None, opts)
        return jnp.stack([v[:, 0] for v in sol.ys], axis=1), sol.accepted

    rows = []
    for n in sizes:
        if time.perf_counter() - T0 > BUDGET[0]:
            print(json.dumps({"case": "lorenz", "n": n, "skipped": "time budget"}), flush=True)
            continue
        rho = jnp.linspace(0.0, 21.0, n, dtype=jnp.float32)
        sub = np.linspace(0, n - 1, min(n, 256)).astype(int)
        ref = np.asarray(ref_f(jnp.asarray(np.asarray(rho)[sub], jnp.float64)))
        scale = np.abs(ref) + 1.0
        ys_n, dt_n = timed(naive, rho)
        (ys_e, acc), dt_e = timed(engine, rho)
        xla = {}
        if jax.default_backend() == "gpu":  # the XLA loop beside the default Pallas kernel
            (ys_x, _), dt_x = timed(engine, rho, opts_xla)
            xla = dict(engine_xla_traj_s=n / dt_x, engine_xla_ratio=dt_n / dt_x,
                       engine_xla_err=float(np.max(np.abs(np.asarray(ys_x)[sub] - ref)
                                                   / scale)))
        row = dict(case="lorenz", n=n, naive_s=dt_n, naive_traj_s=n / dt_n,
                   engine_s=dt_e, engine_traj_s=n / dt_e, ratio=dt_n / dt_e,
                   naive_err=float(np.max(np.abs(np.asarray(ys_n)[sub] - ref) / scale)),
                   engine_err=float(np.max(np.abs(np.asarray(ys_e)[sub] - ref) / scale)),
                   engine_mean_steps=float(np.mean(acc)), peak_mb=peak_memory_mb(), **xla)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ body cost


def body_cost(n, methods=(("rk4", 3e-5), ("tsit5", 1e-6)), iters=1000):
    """Cost of one step attempt of the XLA loop: the loop body run `iters` times over n lanes
    with every lane active (`engine.compacting_loop` replaced by a fixed-count loop), minus the
    same call with 0 iterations; and the number of fusions in the compiled body."""
    import re

    from dormancy_model.engine import rk as eng
    from dormancy_model.sweeps.lanes import constant_base, solve_outputs_impl

    p = dm.load_model_parameters("human")
    table = ScheduleTable.build([dm.get_schedule("clever-combo")])
    vals = patients(p, n)
    real, count = eng.compacting_loop, [0]

    def fixed(body, active, carry, consts, min_width, shrink=4):
        return jax.lax.fori_loop(0, count[0], lambda i, c: body(consts, c), carry)

    rows = []
    eng.compacting_loop = fixed
    try:
        for method, rtol in methods:
            o = EngineOptions(method=method, rtol=rtol, atol=1e-8 * rtol / 1e-6, dtype="float32",
                              backend="xla")
            secs = {}
            for count[0] in (0, iters):
                # as `solve_outputs` calls it: the fixed parameters are constants
                f = jax.jit(lambda v, o=o: solve_outputs_impl(v, constant_base(p, v), table,
                                                              jnp.zeros(n, jnp.int32), DAYS, o))
                _, secs[count[0]] = timed(f, vals, repeats=3)
            hlo = f.lower(vals).compile().as_text()
            m = re.search(r"body=(%[\w.\-]+)", hlo)
            body = hlo.split("\n" + m.group(1) + " ", 1)[1].split("\n}\n", 1)[0] if m else ""
            row = dict(case="body_cost", method=method, n=n, iterations=iters,
                       ns_per_lane_iteration=(secs[iters] - secs[0]) / iters / n * 1e9,
                       fusions_in_body=body.count(" fusion("))
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        eng.compacting_loop = real
    return rows


# ------------------------------------------------------------------------------ bounded


def bounded_case(sizes, chunk):
    """Chunked sweeps streamed to Zarr: peak RSS against N (it must not grow with N)."""
    import shutil
    import tempfile
    import tomllib

    from dormancy_model.sweeps.run import sweep
    from dormancy_model.sweeps.spec import parse_sweep

    rows = []
    for n in sizes:
        text = (f"[sweep]\nschedule = 'clever-combo'\n[patients]\nn = {n}\n"
                "variability = { k_dr = 0.5, eve_cl = 0.35 }\n[outputs]\n"
                "residual_days = [168]\nrelapse_free_years = [3, 5]\n"
                f"[solver]\nchunk = {chunk}\n")
        spec = parse_sweep(tomllib.loads(text), "bench.toml", text)
        d = tempfile.mkdtemp()
        t0 = time.perf_counter()
        ds = sweep(spec, os.path.join(d, "s.zarr"))
        dt = time.perf_counter() - t0
        row = dict(case="bounded", n=n, chunk=chunk, seconds=dt, traj_s=n / dt,
                   complete=ds.attrs["complete"], peak_mb=peak_memory_mb())
        shutil.rmtree(d)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="GPU sizes (< ~2 min), JSON to $OUT")
    ap.add_argument("--sizes", type=float, nargs="*", help="model-case N for both solvers")
    ap.add_argument("--engine-sizes", type=float, nargs="*", help="extra engine-only N")
    ap.add_argument("--lorenz", type=float, nargs="*", help="Lorenz N")
    ap.add_argument("--bounded", type=float, nargs="*", help="chunked streamed sweep N")
    ap.add_argument("--body-cost", type=int, default=None, metavar="N",
                    help="only: cost per lane and step attempt of the XLA loop body at N lanes")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--budget", type=float, default=None, help="skip cases after this many s")
    ap.add_argument("--extra-engine", nargs="*", default=None,
                    help="more engine runs as METHOD:RTOL[:BACKEND[:BLOCK]] (atol scaled "
                         "alike), e.g. rk4:3e-5 or tsit5:1e-6:xla; default rk4:1e-3, on a GPU "
                         "also tsit5:1e-6:xla (the XLA loop beside the Pallas kernel)")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="JAX CPU devices (default: one per core; 1 = a single device)")
    args = ap.parse_args(argv)
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores(args.cpu_devices)  # before any JAX operation
    BUDGET[0] = args.budget or (100.0 if args.gpu else float("inf"))
    dev = jax.devices()[0]
    info = dict(device=str(dev), platform=dev.platform, jax=jax.__version__,
                machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                devices=jax.local_device_count(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), argv=sys.argv[1:])
    print(json.dumps(info), flush=True)
    if args.body_cost:
        body_cost(args.body_cost)
        return
    if args.gpu and not args.sizes:
        naive_n, eng_n = [10_000, 100_000], [10_000, 100_000, 1_000_000]
        lor = [int(x) for x in (args.lorenz or [131_072, 1_048_576])]
        bounded = args.bounded or []
    else:
        naive_n = [int(x) for x in (args.sizes or [1000, 4000])]
        eng_n = naive_n + [int(x) for x in (args.engine_sizes or [16000])]
        lor = [int(x) for x in (args.lorenz or [8192])]
        bounded = args.bounded or []
    extra = []
    for x in (args.extra_engine if args.extra_engine is not None else
              (["tsit5:1e-6:xla", "rk4:1e-3"] if args.gpu else ["rk4:1e-3"])):
        m, r, *rest = x.split(":")
        extra.append((m, float(r), rest[0] if rest else "auto", int(rest[1]) if len(rest) > 1
                      else 0))
    rows = model_case(naive_n, eng_n, args.rtol, args.atol, extra_engines=extra)
    try:
        rows += lorenz_case(lor)
    except Exception as e:
        print(f"lorenz failed: {type(e).__name__}: {str(e)[:1500]}", flush=True)
    if bounded:
        rows += bounded_case([int(x) for x in bounded], args.chunk)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "sweep_bench.json"), "w") as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
