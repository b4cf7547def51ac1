"""Variance-based (Sobol) sensitivity: first-order and total indices.

Design (Saltelli 2010): two independent base samples A, B (n x d, quasi-random Sobol points in
the unit cube) and, for each input i, AB_i = A with column i taken from B; n (d + 2) model runs.
Estimators: first order S_i = mean(f(B) (f(AB_i) - f(A))) / V (Saltelli 2010), total order
ST_i = mean((f(A) - f(AB_i))^2) / (2 V) (Jansen 1999), V the variance of f over A and B.

For the dormancy model (`dormancy sensitivity SPEC.toml`), the inputs are the spec's
`[samples] parameters`, uniform on each parameter's scale (log / logit / lin) within its bounds,
and the outputs are the spec's outputs, computed with the sweep engine on the spec's base
schedule (the first schedule of the sweep).
"""

from __future__ import annotations

import numpy as np


def saltelli_design(d: int, n: int, seed: int = 0) -> np.ndarray:
    """(n (d + 2), d) points in [0, 1)^d: rows A, B, AB_1, ..., AB_d (blocks of n)."""
    from scipy.stats import qmc

    ab = qmc.Sobol(2 * d, scramble=True, seed=seed).random(n)
    A, B = ab[:, :d], ab[:, d:]
    blocks = [A, B]
    for i in range(d):
        x = A.copy()
        x[:, i] = B[:, i]
        blocks.append(x)
    return np.concatenate(blocks)


def sobol_indices(y: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """First-order and total indices from outputs `y` (n (d + 2),) or (n (d + 2), k) of the
    design of `saltelli_design`; returns arrays (d,) or (d, k)."""
    y = np.asarray(y, float)
    n = y.shape[0] // (d + 2)
    fa, fb = y[:n], y[n:2 * n]
    var = np.var(np.concatenate([fa, fb]), axis=0)
    var = np.where(var > 0, var, np.nan)
    s1, st = [], []
    for i in range(d):
        fab = y[(2 + i) * n:(3 + i) * n]
        s1.append(np.mean(fb * (fab - fa), axis=0) / var)
        st.append(0.5 * np.mean((fa - fab) ** 2, axis=0) / var)
    return np.array(s1), np.array(st)


def ishigami(x: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    """Ishigami function on x in [-pi, pi]^3."""
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def ishigami_indices(a: float = 7.0, b: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Analytic first-order and total indices of the Ishigami function."""
    v1 = 0.5 * (1 + b * np.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1, v2, 0.0]) / v, np.array([v1 + v13, v2, v13]) / v


def model_sensitivity(spec, n: int | None = None, seed: int | None = None) -> dict:
    """Sobol indices of every output of a sweep spec over its `[samples] parameters`.

    Returns {"parameters": [...], "n_base": n, "runs": n (d + 2), "outputs": {label: {"S1":
    [...], "ST": [...]}}} with labels such as "relapse_free@1096d"."""
    import jax.numpy as jnp

    from dormancy_model.engine.rk import pad_lanes
    from dormancy_model.errors import InputError
    from dormancy_model.params.transforms import from_scale, to_scale
    from dormancy_model.sweeps.lanes import ScheduleTable, solve_outputs

    names = list(spec.samples)
    if not names:
        raise InputError(spec.source, "samples.parameters",
                         "sensitivity needs [samples] with method sobol or lhs and parameters")
    d = len(names)
    n = n or len(next(iter(spec.samples.values())))
    u = saltelli_design(d, n, 0 if seed is None else seed)
    vals = {}
    for j, nm in enumerate(names):
        sp = spec.params.spec[nm]
        lo, hi = sp.bounds
        zlo, zhi = to_scale(lo, sp.scale), to_scale(hi, sp.scale)
        vals[nm] = np.clip(from_scale(zlo + (zhi - zlo) * u[:, j], sp.scale), lo, hi)
    table = ScheduleTable.build([spec.schedules[0]])
    total = u.shape[0]
    batch = min(pad_lanes(total, 8), pad_lanes(spec.chunk, 8))
    results: dict[str, list] = {}
    for start in range(0, total, batch):
        idx = np.arange(start, start + batch) % total
        res = solve_outputs({k: v[idx] for k, v in vals.items()}, spec.params, table,
                            jnp.zeros(batch, jnp.int32), spec.outputs, spec.options)
        keep = min(batch, total - start)
        for k in ("residual", "relapse_free", "p_dtc_positive"):
            results.setdefault(k, []).append(np.asarray(res[k], float)[:keep])
    days = {"residual": spec.outputs.residual_days, "relapse_free": spec.outputs.rfs_days,
            "p_dtc_positive": spec.outputs.assessment_days}
    out = {}
    for k, chunks in results.items():
        y = np.concatenate(chunks)
        if y.shape[1] == 0:
            continue
        s1, st = sobol_indices(y, d)
        for j, day in enumerate(days[k]):
            out[f"{k}@{day:g}d"] = {"S1": [float(v) for v in s1[:, j]],
                                    "ST": [float(v) for v in st[:, j]]}
    return {"parameters": names, "n_base": n, "runs": total, "outputs": out}
