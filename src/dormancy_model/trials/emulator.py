"""Differentiable emulator of per-parameter-point model quantities: quadratic regression.

Each output y (already on an unbounded scale: logit of a probability, log HR, ...) is fitted by
least squares on the full quadratic in the design coordinates u = (theta - centre) / half_width
(1 + d + d(d+1)/2 coefficients). The prediction at u is f(u)' beta (JAX, differentiable), with
variance

    var(u) = s^2 f(u)' (F'F)^-1 f(u)  +  max(s^2, mean MC variance)

where s^2 is the residual variance (lack of fit and Monte-Carlo noise of the design points) and
the second term is the error the emulated surface carries at every point: with common random
numbers the replicated trials' shared realisation shifts all design points alike and is not
averaged away by the regression, so the per-point Monte-Carlo variance is kept as a floor.
Leave-one-out cross-validation is closed form for least squares (e_i / (1 - h_ii)).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


def quadratic_features(u):
    """[1, u_1..u_d, u_i u_j (i <= j)] for points u (..., d); works on NumPy and JAX arrays."""
    xp = jnp if isinstance(u, jax.Array) else np
    d = u.shape[-1]
    cols = [xp.ones(u.shape[:-1])] + [u[..., i] for i in range(d)]
    cols += [u[..., i] * u[..., j] for i in range(d) for j in range(i, d)]
    return xp.stack(cols, axis=-1)


def n_features(d: int) -> int:
    return 1 + d + d * (d + 1) // 2


@dataclass(frozen=True)
class OutputFit:
    name: str
    beta: np.ndarray
    xtx_inv: np.ndarray
    s2: float
    mc_var: float
    loo_rmse: float
    loo_z_rms: float  # RMS of LOO errors / their predictive sd (about 1 if the variance is right)
    y_sd: float  # spread of the output over the design (for scale)
    n_used: int


@dataclass(frozen=True)
class QuadraticEmulator:
    centre: np.ndarray
    half_width: np.ndarray
    outputs: dict  # name -> OutputFit

    def to_unit(self, theta):
        return (theta - self.centre) / self.half_width

    def predict(self, theta) -> dict:
        """{name: mean, name + ':var': variance} at theta (JAX, differentiable; theta may carry
        leading batch axes). All outputs in one matrix product."""
        names = list(self.outputs)
        o = [self.outputs[k] for k in names]
        B = jnp.asarray(np.stack([x.beta for x in o], -1))  # (p, K)
        A = jnp.asarray(np.stack([x.xtx_inv for x in o]))  # (K, p, p)
        s2 = jnp.asarray([x.s2 for x in o])
        floor = jnp.asarray([max(x.s2, x.mc_var) for x in o])
        f = quadratic_features(jnp.asarray(self.to_unit(jnp.asarray(theta))))
        mean = f @ B
        var = s2 * jnp.einsum("...i,kij,...j->...k", f, A, f) + floor
        out = {}
        for i, k in enumerate(names):
            out[k] = mean[..., i]
            out[k + ":var"] = var[..., i]
        return out

    def cv_table(self) -> list[dict]:
        return [dict(output=o.name, loo_rmse=o.loo_rmse, loo_z_rms=o.loo_z_rms,
                     design_sd=o.y_sd, residual_sd=float(np.sqrt(o.s2)),
                     mc_sd=float(np.sqrt(o.mc_var)), points=o.n_used)
                for o in self.outputs.values()]


def fit_emulator(theta, values: dict, mc_var: dict | None = None, *, centre=None,
                 half_width=None) -> QuadraticEmulator:
    """Fit every output of `values` ({name: (n,) array, NaN = missing}) on design points
    `theta` (n, d). `mc_var`: per-point Monte-Carlo variances of each output (optional)."""
    theta = np.asarray(theta, float)
    n, d = theta.shape
    centre = theta.mean(0) if centre is None else np.asarray(centre, float)
    half_width = (np.ptp(theta, 0) / 2 if half_width is None else np.asarray(half_width, float))
    F_all = quadratic_features((theta - centre) / half_width)
    p = F_all.shape[1]
    outs = {}
    for name, y in values.items():
        y = np.asarray(y, float)
        ok = np.isfinite(y)
        if ok.sum() < p + 1:
            raise ValueError(f"emulator output {name!r}: {int(ok.sum())} usable design points, "
                             f"need >= {p + 1} for {p} quadratic coefficients")
        F, yy = F_all[ok], y[ok]
        xtx_inv = np.linalg.pinv(F.T @ F)
        beta = xtx_inv @ F.T @ yy
        resid = yy - F @ beta
        m = ok.sum()
        s2 = float(resid @ resid / (m - p))
        h = np.einsum("ij,jk,ik->i", F, xtx_inv, F)
        loo = resid / np.clip(1 - h, 1e-9, None)
        mv = 0.0
        if mc_var is not None and name in mc_var:
            v = np.asarray(mc_var[name], float)[ok]
            mv = float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else 0.0
        # LOO predictive variance: refit's parameter uncertainty s2 h/(1-h) + the point's noise
        loo_var = s2 * h / np.clip(1 - h, 1e-9, None) + max(s2, mv)
        outs[name] = OutputFit(name, beta, xtx_inv, s2, mv, float(np.sqrt(np.mean(loo ** 2))),
                               float(np.sqrt(np.mean(loo ** 2 / loo_var))), float(np.std(yy)),
                               int(m))
    return QuadraticEmulator(centre, half_width, outs)
