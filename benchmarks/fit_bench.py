"""Benchmark: fit the shipped SYNTHETIC mouse study (19 arms, 6 free parameters) with 16 starts.

dormancy_model: `fit` (one compiled vmapped objective+gradient through diffrax, optax Adam then
L-BFGS, all starts batched). Baseline: the same likelihood on the independent NumPy/SciPy model
(`tests/scipy_reference.py`: PK as ODE states, `solve_ivp` LSODA between doses) minimised by
`scipy.optimize.minimize` (L-BFGS-B, finite-difference gradients) in the same scale space and
bounds, from the same Sobol start points. The baseline is far too slow to run 16 starts here, so
it runs `--scipy-starts` starts (default 1) for at most `--scipy-budget` seconds each; the
16-start baseline time is extrapolated as 16 x (measured seconds per start), a LOWER bound when
a start hit the budget before converging (stated in the output).

Run:  python benchmarks/fit_bench.py [--starts 16] [--scipy-starts 1] [--scipy-budget 300]
      python benchmarks/fit_bench.py --gpu     # JAX part only, 16 and 64 starts; JSON to $OUT
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
sys.path.insert(0, str(ROOT / "tests"))

FREE = ["dormant_initial", "k_dr", "delta_max", "hcq_ic50", "eve_ic50", "burden_sigma"]


def jax_fit(study, params, starts, seed):
    from dormancy_model.fitting.estimate import fit

    t0 = time.perf_counter()
    r = fit(study, params, FREE, starts=starts, seed=seed)
    return r, time.perf_counter() - t0


class ScipyObjective:
    """The same negative log-likelihood as `fit_objective.Objective`, on the NumPy model."""

    def __init__(self, study, params, obj, rtol=1e-4):
        from scipy_reference import ReferenceModel  # noqa: F401 (checked here)

        self.study, self.obj, self.rtol = study, obj, rtol
        self.base = {k: float(np.asarray(v)) for k, v in obj.base.values.items()}
        self.per_kg = obj.base.pk_per_kg
        self.grid = np.asarray(obj.arrays.grid)
        self.nfev = 0

    def nll(self, s):
        from scipy.stats import norm

        from scipy_reference import ReferenceModel

        self.nfev += 1
        x = self.obj.natural(np.asarray(s))
        vals = dict(zip(self.obj.names, x, strict=True))
        p = dict(self.base)
        p.update({k: v for k, v in vals.items() if k in p})
        sigma = vals["burden_sigma"]
        m = ReferenceModel(p, per_kg=self.per_kg)
        lag = np.log(p["detection_size"]) / p["lesion_growth_rate"]
        p_found = 1.0 - p["delta_p"] / p["lambda_p"]
        lagged = np.maximum(self.grid - lag, 0.0)
        ts = np.unique(np.concatenate([self.grid, lagged]))
        b, sv = self.study.burden, self.study.survival
        ll = 0.0
        try:
            for i, arm in enumerate(self.study.arms):
                states, _ = m.solve(arm.schedule, ts, method="LSODA", rtol=self.rtol, atol=1e-6)
                at = {float(t): y for t, y in zip(ts, states, strict=True)}
                sel = b.arm == i
                res = np.array([at[float(d)][:3].sum() for d in b.day[sel]])
                mu = np.log(np.maximum(res, 1e-300)) + np.log(b.sampled_fraction[sel])
                cens = b.censored[sel]
                ly = np.log(np.where(cens, 1.0, b.cells[sel]))
                dens = norm.logpdf(ly, mu, sigma) - ly
                cl = norm.logcdf((np.log(b.detection_limit[sel]) - mu) / sigma)
                ll += np.sum(np.where(cens, cl, dens))
                sel = sv.arm == i
                for d, e in zip(sv.day[sel], sv.event[sel], strict=True):
                    if d <= lag:
                        lam, rate = 0.0, 0.0
                    else:
                        yl = at[float(max(d - lag, 0.0))]
                        lam = p_found * yl[3]
                        rate = p_found * m.rhs(d - lag, yl)[3]
                    ll += e * np.log(max(rate, 1e-300)) - lam
        except RuntimeError:
            return np.inf
        return -ll


def scipy_fit(sobj, s0, budget):
    from scipy.optimize import minimize

    bounds = list(zip(sobj.obj.s_lo, sobj.obj.s_hi, strict=True))
    t0 = time.perf_counter()
    best = {"f": np.inf, "x": s0}

    class Budget(Exception):
        pass

    def f(s):
        v = sobj.nll(s)
        if v < best["f"]:
            best.update(f=v, x=np.array(s))
        if time.perf_counter() - t0 > budget:
            raise Budget
        return v

    converged = False
    try:
        r = minimize(f, s0, method="L-BFGS-B", bounds=bounds, options=dict(maxiter=200))
        converged = bool(r.success)
    except Budget:
        pass
    return dict(f=best["f"], x=best["x"].tolist(), seconds=time.perf_counter() - t0,
                converged=converged, nfev=sobj.nfev)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scipy-starts", type=int, default=1)
    ap.add_argument("--scipy-budget", type=float, default=300.0)
    ap.add_argument("--gpu", action="store_true", help="JAX part only (16 and 64 starts)")
    a = ap.parse_args(argv)

    import jax

    from dormancy_model.fitting.estimate import start_points
    from dormancy_model.fitting.study import load_study
    from dormancy_model.params.table import load_model_parameters

    study = load_study(ROOT / "data" / "mouse_synthetic")
    params = load_model_parameters("mouse")
    out = {"machine": platform.platform(), "device": str(jax.devices()[0]),
           "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "study": "data/mouse_synthetic (SYNTHETIC, 19 arms)", "free": FREE}
    runs = [a.starts] if not a.gpu else [16, 64]
    for n in runs:
        r, secs = jax_fit(study, params, n, a.seed)
        out[f"jax_{n}_starts"] = dict(seconds=secs, nll=r.objective, converged=r.n_converged,
                                      evaluations=r.n_evaluations, estimate=r.estimate)
        print(f"dormancy_model fit, {n} starts: {secs:.1f} s (compile included), best nll "
              f"{r.objective:.4f}, {r.n_converged}/{n} converged, {r.n_evaluations} "
              "point-evaluations", flush=True)
    if not a.gpu:
        from dormancy_model.fitting.objective import Objective

        obj = Objective(study, params, FREE, batch=1)
        sobj = ScipyObjective(study, params, obj)
        S0 = start_points(obj, a.starts, a.seed)
        f_jax = float(obj.evaluate_scale(S0[:1])[0][0])
        t0 = time.perf_counter()
        f_np = sobj.nll(S0[0])
        out["objective_check"] = dict(jax=f_jax, scipy=f_np, scipy_eval_s=time.perf_counter() - t0)
        print(f"same objective at start 0: JAX {f_jax:.4f}, scipy {f_np:.4f} "
              f"(one scipy evaluation {time.perf_counter() - t0:.1f} s)", flush=True)
        sc = []
        for k in range(a.scipy_starts):
            sobj.nfev = 0
            sc.append(scipy_fit(sobj, S0[k], a.scipy_budget))
            print(f"scipy start {k}: {sc[-1]['seconds']:.1f} s, nll {sc[-1]['f']:.4f}, "
                  f"converged {sc[-1]['converged']}, {sc[-1]['nfev']} objective evaluations",
                  flush=True)
        per_start = float(np.mean([s["seconds"] for s in sc]))
        all_conv = all(s["converged"] for s in sc)
        est16 = per_start * a.starts
        jx = out[f"jax_{a.starts}_starts"]
        out["scipy"] = dict(starts_run=a.scipy_starts, budget_s=a.scipy_budget, runs=sc,
                            seconds_per_start=per_start,
                            extrapolated_seconds=est16, lower_bound=not all_conv)
        out["speedup"] = est16 / jx["seconds"]
        out["jax_vs_scipy_best_nll"] = jx["nll"] - min(s["f"] for s in sc)
        print(f"scipy baseline: {per_start:.1f} s per start -> {a.starts} starts ~ {est16:.0f} s"
              f"{' (LOWER bound: budget hit before convergence)' if not all_conv else ''}")
        print(f"speedup {'>= ' if not all_conv else ''}{out['speedup']:.1f}x; best nll JAX "
              f"{jx['nll']:.4f} vs scipy {min(s['f'] for s in sc):.4f} "
              f"(difference {out['jax_vs_scipy_best_nll']:+.4f}, negative = JAX better)")
    target = Path(os.environ.get("OUT", ROOT / "out" / "bench"))
    target.mkdir(parents=True, exist_ok=True)
    (target / "fit_bench.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {target / 'fit_bench.json'}")


if __name__ == "__main__":
    main()
