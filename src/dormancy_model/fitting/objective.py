"""The fitting objective: free parameters by name, transforms, one compiled batched gradient.

Each free parameter lives in three spaces:

* natural: internal units (what `Parameters` holds);
* scale: log x, logit x or x, per the parameter table's `scale` (standard errors, CIs, profiles
  and priors live here);
* unconstrained z: scale = lo + (hi - lo) * sigmoid(z), with lo/hi the bounds in scale space, so
  every z is inside the bounds (optimisers work here).

`Objective.evaluate(Z)` returns negative log-likelihoods, gradients with respect to z and the two
likelihood parts for a batch of points (`evaluate_status` adds each point's status code). It is
one `jax.jit(jax.vmap(jax.value_and_grad(...)))` compiled for a fixed batch size; smaller batches
are padded and larger ones chunked, so a fit (starts, Hessian, profiles) compiles the ODE gradient
once.

Layout independence: a point's value and gradient do not depend on the batch it is evaluated in
(its position, its neighbours, the padding, the batch size), so `fit` gives bitwise the same
estimates for any `batch`. Measured on the CPU (x86-64, float64): a point gives bitwise the same
result at any position of any batch of 4, 5, 7, 8, 16, 32 or 64 lanes, and in batches of 1-3
lanes, but XLA compiles batches of 1-3 lanes to other arithmetic (gradients 1 ulp apart, which
L-BFGS can amplify); so every call is padded to at least `MIN_LANES` = 4 lanes. Not measured
on a GPU.
`tests/fitting/test_fit.py::test_fit_estimates_do_not_depend_on_batch_size` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S
from dormancy_model.errors import InputError, suggest
from dormancy_model.fitting.likelihood import joint_loglik, log_prior
from dormancy_model.fitting.study import Study, study_arrays
from dormancy_model.model.integrate import SolverOptions
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import (
    SCALE_CODE,
    from_scale_codes,
    from_scale_codes_jnp,
    to_scale,
)

# Every compiled call evaluates at least this many lanes (padded): XLA compiles batches of 1-3
# lanes to arithmetic that differs in the last bit from batches of 4 or more (module docstring).
MIN_LANES = 4

# Nuisance parameters of the observation model (not in the parameter table).
NUISANCE = {
    "burden_sigma": dict(value=0.5, bounds=(0.05, 3.0), scale="log", unit="1",
                         source="sd of log residual count (log-normal measurement noise)"),
    "pk_sigma_hcq": dict(value=0.3, bounds=(0.01, 3.0), scale="log", unit="1",
                         source="sd of log HCQ concentration (pk.csv; proportional error)"),
    "pk_sigma_eve": dict(value=0.3, bounds=(0.01, 3.0), scale="log", unit="1",
                         source="sd of log EVE concentration (pk.csv; proportional error)"),
}
PK_SIGMAS = ("pk_sigma_hcq", "pk_sigma_eve")


@dataclass(frozen=True)
class FreeParameter:
    name: str
    scale: str
    lower: float  # natural, internal units
    upper: float
    table_value: float
    unit: str  # unit in the parameter file
    factor: float  # file value = internal / factor
    nuisance: bool = False


def free_parameters(params: Parameters, names, source: str = "--free") -> tuple[FreeParameter, ...]:
    """Validate names (model parameters or nuisance) and read scale/bounds from the table."""
    out = []
    if not names:
        raise InputError(source, "free", "no free parameter given")
    if len(set(names)) != len(names):
        raise InputError(source, "free", "a parameter is named twice")
    for n in names:
        if n in NUISANCE:
            d = NUISANCE[n]
            out.append(FreeParameter(n, d["scale"], d["bounds"][0], d["bounds"][1], d["value"],
                                     d["unit"], 1.0, True))
            continue
        if n not in params.spec:
            raise InputError(source, "free", f"unknown parameter {n!r}"
                             f"{suggest(n, list(params.spec) + list(NUISANCE))}")
        s = params.spec[n]
        lo, hi = s.bounds
        if not lo < hi:
            raise InputError(source, "free", f"{n} has equal bounds; it cannot be fitted")
        if s.scale == "log" and lo <= 0:
            raise InputError(source, "free", f"{n}: log scale needs a positive lower bound")
        out.append(FreeParameter(n, s.scale, lo, hi, float(np.asarray(params[n])), s.unit,
                                 s.factor))
    return tuple(out)


class ObjectiveData(eqx.Module):
    """Everything the compiled objective needs, as one PyTree: arrays are leaves, names and
    solver settings static, so two `Objective`s of the same shapes share one compilation."""

    arrays: object
    base: Parameters
    codes: jax.Array
    s_lo: jax.Array
    s_hi: jax.Array
    s_table: jax.Array
    sigma_fixed: jax.Array
    pk_sigma_fixed: jax.Array  # (2,) sd of log HCQ and EVE concentrations when not free
    names: tuple = eqx.field(static=True)
    model_names: tuple = eqx.field(static=True)
    options: SolverOptions = eqx.field(static=True)
    model: DormancyModel = eqx.field(static=True)
    use_prior: bool = eqx.field(static=True)


def _nll_z(data: ObjectiveData, z):
    """(nll, (burden loglik, relapse loglik, status)) at one unconstrained point z (d,)."""
    s = data.s_lo + (data.s_hi - data.s_lo) * jax.nn.sigmoid(z)
    x = from_scale_codes_jnp(s, data.codes)
    vals = dict(zip(data.names, list(x), strict=True))
    p = data.base.replace(**{n: vals[n] for n in data.model_names})
    sigma = vals.get("burden_sigma", data.sigma_fixed)
    pk_sigma = tuple(vals.get(n, data.pk_sigma_fixed[i]) for i, n in enumerate(PK_SIGMAS))
    ll, lb, lr, status = joint_loglik(data.model, p, data.arrays, sigma, data.options,
                                      pk_sigma=pk_sigma)
    nll = -ll
    if data.use_prior:
        nll = nll - log_prior(s, data.s_table, data.s_hi - data.s_lo)
    bad = (status != 0) | ~jnp.isfinite(nll)
    return jnp.where(bad, jnp.inf, nll), (lb, lr, status)


@eqx.filter_jit
def _batched_value_and_grad(data: ObjectiveData, Z):
    vg = jax.value_and_grad(_nll_z, argnums=1, has_aux=True)
    return jax.vmap(vg, in_axes=(None, 0))(data, Z)


class Objective:
    """Negative log-likelihood (+ optional negative log-prior) of a study, batched over points.

    `study`: a `Study`; `params`: the full parameter set (values of the fixed parameters; body
    weight is replaced by the study's); `free`: names (model parameters and/or `burden_sigma`;
    when `burden_sigma` is not free it is fixed at `sigma`; `pk_sigma_hcq`, `pk_sigma_eve`:
    the sd of the log concentrations of a study with pk.csv, fixed at their `NUISANCE`
    values when not free). `batch`: points per compiled call
    (at least `MIN_LANES`: smaller batches are padded); the results do not depend on it.
    """

    def __init__(self, study: Study, params: Parameters, free, *, batch: int = 16,
                 options: SolverOptions | None = None, prior: bool = False,
                 sigma: float = 0.5, model: DormancyModel | None = None):
        self.study = study
        self.free = free_parameters(params, tuple(free))
        self.names = tuple(f.name for f in self.free)
        if int(batch) < 1:
            raise ValueError("Objective needs batch >= 1")
        self.batch = max(int(batch), MIN_LANES)
        self.options = options or SolverOptions()
        self.prior = bool(prior)
        self.model = model or DormancyModel()
        self.base = params.replace(body_weight=study.body_weight_kg)
        self.arrays = study_arrays(study)
        self.codes = np.array([SCALE_CODE[f.scale] for f in self.free])
        self.s_lo = np.array([to_scale(f.lower, f.scale) for f in self.free])
        self.s_hi = np.array([to_scale(f.upper, f.scale) for f in self.free])
        self.s_table = np.array([to_scale(f.table_value, f.scale) for f in self.free])
        self.n_pk = (0 if self.arrays.pk_mask is None
                     else int(np.asarray(self.arrays.pk_mask).sum()))
        self.n_obs = int(np.asarray(self.arrays.burden_mask).sum()
                         + np.asarray(self.arrays.surv_mask).sum()) + self.n_pk
        self.data = ObjectiveData(
            arrays=self.arrays, base=self.base, codes=jnp.asarray(self.codes),
            s_lo=jnp.asarray(self.s_lo), s_hi=jnp.asarray(self.s_hi),
            s_table=jnp.asarray(self.s_table), sigma_fixed=jnp.asarray(float(sigma)),
            pk_sigma_fixed=jnp.asarray([NUISANCE[n]["value"] for n in PK_SIGMAS]),
            names=self.names, model_names=tuple(f.name for f in self.free if not f.nuisance),
            options=self.options, model=self.model, use_prior=self.prior)
        self.n_evaluations = 0

    # --------------------------------------------------------------- spaces
    def z_to_scale(self, Z):
        return self.s_lo + (self.s_hi - self.s_lo) / (1.0 + np.exp(-np.asarray(Z, float)))

    def scale_to_z(self, S):
        u = (np.asarray(S, float) - self.s_lo) / (self.s_hi - self.s_lo)
        u = np.clip(u, 1e-12, 1 - 1e-12)
        return np.log(u / (1.0 - u))

    def dz_ds(self, Z):
        u = 1.0 / (1.0 + np.exp(-np.asarray(Z, float)))
        return 1.0 / ((self.s_hi - self.s_lo) * u * (1.0 - u))

    def natural(self, S):
        return from_scale_codes(S, self.codes)

    def parameters(self, S) -> Parameters:
        """The full parameter set with the free model parameters set from scale values `S`."""
        x = self.natural(S)
        upd = {f.name: float(v) for f, v in zip(self.free, x, strict=True) if not f.nuisance}
        return self.base.replace(**upd)

    # --------------------------------------------------------------- evaluation
    def evaluate(self, Z):
        """(nll (n,), grad wrt z (n, d), burden loglik (n,), relapse loglik (n,)) as numpy."""
        return self.evaluate_status(Z)[:4]

    def evaluate_status(self, Z):
        """`evaluate` and the status of each point (n,): a code of `dormancy_model.status`,
        the solver's where a solve failed, `NONFINITE` where the nll is not finite otherwise,
        `OK` where the nll (then finite) is usable."""
        Z = np.atleast_2d(np.asarray(Z, float))
        n, B = Z.shape[0], self.batch
        outs = []
        for i in range(0, n, B):
            chunk = Z[i:i + B]
            m = chunk.shape[0]
            if m < B:
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], B - m, axis=0)])
            (f, (lb, lr, st)), g = _batched_value_and_grad(self.data, jnp.asarray(chunk))
            self.n_evaluations += m
            outs.append((np.asarray(f)[:m], np.asarray(g)[:m], np.asarray(lb)[:m],
                         np.asarray(lr)[:m], np.asarray(st)[:m]))
        f, g, lb, lr, st = (np.concatenate(x) for x in zip(*outs, strict=True))
        g = np.where(np.isfinite(g), g, 0.0)
        st = np.where((st == S.OK) & ~np.isfinite(f), S.NONFINITE, st).astype(int)
        return f, g, lb, lr, st

    def evaluate_scale(self, S):
        """(nll, gradient with respect to the scale values) at scale points S (n, d)."""
        Z = self.scale_to_z(S)
        f, g, _, _ = self.evaluate(Z)
        return f, g * self.dz_ds(Z)
