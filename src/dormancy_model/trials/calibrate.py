"""Calibration of population-level parameters to the published CLEVER results.

Targets (DeMichele et al., Nat Med 2025 [S1]; ESMO 2023 244MO [S2]; ../shared/domain/clever.md):
3-year RFS 91.7 / 92.9 / 100% (HCQ / EVE / HCQ+EVE), estimated DTC reduction 80 / 78 / 87%,
HR of relapse cleared vs persistent 0.21, 30% DTC+ at screening (55/184).

Method (simulation-based, common random numbers):
1. the median DTC load is solved exactly for the screening positivity (`population.py`);
2. the typical values of `delta_max` (drug-induced death of dormant cells; drives the DTC
   reduction) and `k_dr` (reactivation; drives relapse) are varied on a grid in log space; at
   every grid point `replicates` virtual trials are simulated with the SAME key, and the median
   over trials of each statistic is recorded;
3. each statistic is fitted by a quadratic response surface in (log delta_max, log k_dr), and
   the weighted squared distance to the targets is minimised on the surface (bounded L-BFGS);
4. the optimum is checked by a fresh simulation (different key): the table "reported vs
   simulated" gives the median and 90% interval over the replicated trials.

The HR is weighted weakly (log scale, sd 1): with ~2 relapses per 51-patient trial it is hardly
estimable in one trial (published 95% CI 0.01-3.4); the surface uses the HR pooled over all
simulated patients.

`calibrate(..., mode="posterior")` (CLI `dormancy calibrate --posterior`) is the posterior
calibration instead: an explicit likelihood of each published statistic (`likelihood.py`), an
emulator of the model's quantities over a Sobol design of replicated trials, and NUTS over five
population parameters (`posterior.py`).
"""

from __future__ import annotations

import datetime as _dt
import math
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from scipy import optimize

from dormancy_model.params.table import Parameters
from dormancy_model.trials import analysis as TA
from dormancy_model.trials.design import TrialDesign
from dormancy_model.trials.population import Population
from dormancy_model.trials.protocol import trial

ARMS = ("HCQ", "EVE", "HCQ+EVE")
TARGETS = {
    "rfs_3y:HCQ": 0.917, "rfs_3y:EVE": 0.929, "rfs_3y:HCQ+EVE": 1.0,
    "reduction_C3:HCQ": 0.80, "reduction_C3:EVE": 0.78, "reduction_C3:HCQ+EVE": 0.87,
    "hr_cleared": 0.21, "screen_positivity": 55 / 184,
}
SOURCES = {
    "rfs_3y": "Nat Med 2025 abstract [S1]: landmark 3-year RFS 91.7% / 92.9% / 100%",
    "reduction_C3": "Nat Med 2025 abstract [S1]: estimated DTC reduction 80% / 78% / 87%",
    "hr_cleared": "Nat Med 2025 abstract [S1]: HR 0.21 (95% CI 0.01-3.4) cleared vs not",
    "screen_positivity": "ESMO 2023 244MO [S2]: 184/197 had baseline BMA, 55 (30%) DTC+",
}
# scale of each statistic in the loss (roughly its spread over replicated 51-patient trials)
LOSS_SCALE = {"rfs_3y": 0.05, "reduction_C3": 0.08, "hr_cleared": 1.0}
CALIBRATED = ("delta_max", "k_dr")
# the calibration shipped as package data (trials/data/), made by `dormancy calibrate` (see its
# "command"); used by `dormancy trial` when no --calibration is given
DEFAULT_CALIBRATION = "clever_calibration.json"


def trial_statistics(trials: pd.DataFrame, patients: pd.DataFrame | None = None) -> dict:
    """Median over replicated trials of each target statistic (HR pooled when patients given)."""
    out = {}
    for arm in ARMS:
        for m in ("rfs_3y", "reduction_C3"):
            out[f"{m}:{arm}"] = TA.spread(trials, m, arm)[1]
    out["screen_positivity"] = TA.spread(trials, "screen_positivity", "all treated")[1]
    if patients is not None:
        out["hr_cleared"] = TA.pooled_hazard_ratio(patients).hr
    else:
        out["hr_cleared"] = TA.spread(trials, "hr_cleared", "all treated")[1]
    return out


def loss(stats: dict, targets: dict = TARGETS) -> float:
    total = 0.0
    for k, target in targets.items():
        base = k.split(":")[0]
        if base not in LOSS_SCALE:
            continue
        v = stats.get(k, np.nan)
        if base == "hr_cleared":
            if not (np.isfinite(v) and v > 0):
                continue
            v, target = np.log(v), np.log(target)
        if np.isfinite(v):
            total += ((v - target) / LOSS_SCALE[base]) ** 2
    return float(total)


def simulate_at(theta, design: TrialDesign, params: Parameters, population: Population, *,
                key, replicates: int, method: str = "fast", chunk: int = 512):
    """(trials table, patients) at log-typical values theta = (ln delta_max, ln k_dr)."""
    typical = {**population.typical, **dict(zip(CALIBRATED, np.exp(np.asarray(theta)).tolist(),
                                                strict=True))}
    pop = population.replace(typical=typical)
    res = trial(design, params, key=key, replicates=replicates, population=pop, method=method,
                chunk=chunk)
    return res.summary(), res.patients


def _quad_features(x):
    x = np.atleast_2d(x)
    a, b = x[:, 0], x[:, 1]
    return np.column_stack([np.ones(len(x)), a, b, a * a, b * b, a * b])


@dataclass
class CalibrationResult:
    theta: np.ndarray  # ln delta_max, ln k_dr (internal units, 1/day)
    values: dict  # calibrated typical values, internal units (1/day)
    grid: pd.DataFrame  # one row per grid point: theta and statistics
    surrogate_stats: dict  # surface prediction at the optimum
    check: pd.DataFrame  # reported vs simulated at the optimum
    settings: dict = field(default_factory=dict)

    def population(self, base: Population | None = None) -> Population:
        base = base or Population()
        return base.replace(typical={**base.typical, **self.values})


def calibrate(design: TrialDesign, params: Parameters, *, key, population: Population | None
              = None, replicates: int | None = None, span: float = 1.0,
              points: int | None = None, targets: dict = TARGETS,
              check_replicates: int | None = None, method: str = "fast", progress=None,
              mode: str = "point", **posterior_options):
    """Fit the typical delta_max and k_dr (see module doc). `span`: grid half-width in ln units
    around the parameter file's values; `points` per axis (default 3); `replicates` trials per
    grid point (default 16).

    `mode="posterior"`: the posterior calibration instead (`posterior.calibrate_posterior`:
    `points` design points (default 64), `replicates` trials each (default 32); more options,
    e.g. `names`, `chains`, `warmup`, `samples`, `box_sd`, go through `posterior_options`);
    returns a `posterior.PosteriorResult`."""
    if mode == "posterior":
        from dormancy_model.trials.posterior import calibrate_posterior

        if targets is not TARGETS:
            raise ValueError("posterior mode takes `likelihood.PublishedTargets` as "
                             "posterior_options['targets']")
        kw = dict(points=64 if points is None else points,
                  replicates=32 if replicates is None else replicates, method=method,
                  progress=progress)
        return calibrate_posterior(design, params, key=key, population=population,
                                   **{**kw, **posterior_options})
    if mode != "point":
        raise ValueError(f"mode must be 'point' or 'posterior', got {mode!r}")
    replicates = 16 if replicates is None else replicates
    points = 3 if points is None else points
    population = population or Population()
    base = population.base_params(params)
    center = np.log([float(base[n]) for n in CALIBRATED])
    axis = np.linspace(-span, span, points)
    grid = np.array([[center[0] + u, center[1] + v] for u in axis for v in axis])
    rows = []
    for i, th in enumerate(grid):
        trials, pats = simulate_at(th, design, params, population, key=key,
                                   replicates=replicates, method=method)
        rows.append({"ln_delta_max": th[0], "ln_k_dr": th[1], **trial_statistics(trials, pats)})
        if progress:
            progress(i + 1, len(grid) + 1, "calibration grid")
    g = pd.DataFrame(rows)
    F = _quad_features(grid)
    coefs = {}
    for k in targets:
        if k == "screen_positivity":
            continue
        y = g[k].to_numpy(float)
        if k == "hr_cleared":
            y = np.log(np.where(y > 0, y, np.nan))
        ok = np.isfinite(y)
        if ok.sum() >= F.shape[1]:
            coefs[k] = np.linalg.lstsq(F[ok], y[ok], rcond=None)[0]

    def predict(th):
        f = _quad_features(th)[0]
        out = {}
        for k, c in coefs.items():
            v = float(f @ c)
            out[k] = float(np.exp(v)) if k == "hr_cleared" else v
        return out

    lo, hi = grid.min(axis=0), grid.max(axis=0)
    starts = [center, *grid[np.argsort([loss(r, targets) for r in rows])[:3]]]
    best = min((optimize.minimize(lambda th: loss(predict(th), targets), s, method="L-BFGS-B",
                                  bounds=list(zip(lo, hi, strict=True))) for s in starts),
               key=lambda r: r.fun)
    theta = best.x
    trials, pats = simulate_at(theta, design, params, population,
                               key=jax.random.fold_in(key, 99),
                               replicates=check_replicates or replicates, method=method)
    if progress:
        progress(len(grid) + 1, len(grid) + 1, "calibration check")
    check = reported_vs_simulated(trials, pats)
    values = dict(zip(CALIBRATED, np.exp(theta).tolist(), strict=True))
    settings = dict(replicates=replicates, span=span, points=points, method=method,
                    design=design.describe(), check_replicates=check_replicates or replicates)
    return CalibrationResult(theta, values, g, predict(theta), check, settings)


def reported_vs_simulated(trials: pd.DataFrame, patients: pd.DataFrame | None = None,
                          targets: dict = TARGETS) -> pd.DataFrame:
    """Table: statistic, arm, reported value, simulated median and 90% interval over trials."""
    rows = []
    for k, rep in targets.items():
        metric, _, arm = k.partition(":")
        arm = arm or "all treated"
        lo, med, hi = TA.spread(trials, metric, arm)
        row = dict(statistic=metric, arm=arm, reported=rep, sim_median=med, sim_p05=lo,
                   sim_p95=hi, source=SOURCES[metric])
        if metric == "hr_cleared":
            n_est = np.isfinite(trials.loc[trials["arm"] == arm, metric]).sum()
            pooled = TA.pooled_hazard_ratio(patients).hr if patients is not None else np.nan
            row["note"] = (f"estimable in {n_est}/{trials['trial'].nunique()} trials; "
                           f"pooled over all simulated patients {pooled:.3g}")
        rows.append(row)
    return pd.DataFrame(rows)


def _git_commit() -> str:
    """The commit of the code that runs: the git checkout holding this package's source (not
    the working directory's repository), with "+dirty" when it has uncommitted changes;
    "unknown" for an installed package outside a checkout."""
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    try:
        run = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", here).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def calibration_record(res: CalibrationResult, params: Parameters, seed: int) -> dict:
    """JSON-ready record with provenance."""
    spec = params.spec
    return {
        "what": "typical values of population-level parameters calibrated to CLEVER results",
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "parameter_file": params.source,
        "seed": seed,
        "method": __doc__.split("Method")[1].split("The HR")[0].strip(),
        "settings": res.settings,
        "estimates": {n: {"value": spec[n].in_file_unit(v), "unit": spec[n].unit,
                          "internal_value": v, "internal_unit": spec[n].internal_unit,
                          "prior_value": spec[n].in_file_unit(float(params[n]))}
                      for n, v in res.values.items()},
        "targets": TARGETS,
        "sources": SOURCES,
        "surrogate_at_optimum": res.surrogate_stats,
        "reported_vs_simulated": res.check.to_dict(orient="records"),
        "grid": res.grid.to_dict(orient="records"),
    }


def load_calibration(path=None, params: Parameters | None = None) -> dict:
    """Typical values (internal units) from a calibration JSON written by `calibration_record`;
    `path=None`: the packaged default calibration (`DEFAULT_CALIBRATION`). Every name must be a
    parameter (of `params` if given, whose bounds the values must then respect), every value a
    finite number >= 0; else one-line InputError naming the file and the field."""
    import json

    from dormancy_model.errors import InputError

    source = resources.files("dormancy_model.trials") / "data" / DEFAULT_CALIBRATION
    name = f"dormancy_model/trials/data/{DEFAULT_CALIBRATION}" if path is None else str(path)
    from dormancy_model.errors import suggest
    from dormancy_model.params.table import REGISTRY

    try:
        doc = json.loads(source.read_text() if path is None else Path(path).read_text())
        est = doc["estimates"]
        raw = {k: v["internal_value"] for k, v in est.items()}
    except FileNotFoundError:
        raise InputError(name, "file", "not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(name, "file", f"cannot be read ({e})") from None
    except (KeyError, TypeError, AttributeError, ValueError, json.JSONDecodeError) as e:
        raise InputError(name, "estimates", f"not a calibration file ({e})") from None
    if not raw:
        raise InputError(name, "estimates", "empty")
    known = params.values if params is not None else REGISTRY
    out = {}
    for k, v in raw.items():
        fld = f"estimates.{k}.internal_value"
        if k not in known:
            raise InputError(name, f"estimates.{k}", f"unknown parameter{suggest(k, known)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(name, fld, f"must be a finite number, got {v!r}")
        if v < 0:
            raise InputError(name, fld, f"must be >= 0, got {v!r}")
        if params is not None:
            sp = params.spec[k]
            lo, hi = sp.bounds
            if not lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12):
                raise InputError(name, fld, f"{sp.in_file_unit(v):g} {sp.unit} is outside the "
                                 f"bounds of {params.source} [{sp.in_file_unit(lo):g}, "
                                 f"{sp.in_file_unit(hi):g}] {sp.unit}")
        out[k] = float(v)
    return out
