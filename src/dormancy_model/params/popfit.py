"""Population fits in a fit JSON: the typical animal, one fitted animal, virtual animals.

A population fit (`dormancy fit --method laplace|nuts --random ...`) writes the typical values
as `estimates` and a `population` block (`fitting.population.study_fit.population_block`):
`typical` (per parameter: internal_value, scale), `random_effects` (q names), `omega` (q x q,
on each parameter's transform scale; NUTS files with a diagonal covariance hold only the
posterior-mean sd per random effect, `random.NAME.sd`), `covariance` (diagonal | full), `ebe`
(animal id -> `eta`, and for Laplace the animal's `parameters` in file units) and, for Laplace,
the outer vector `theta` / `theta_names` with its covariance `covariance_theta`.

* `read_population(doc, params, src)`: the block as a `PopulationFit`, checked; None for a
  pooled fit (no block).
* `typical_parameters(pf, params)`: `params` with the typical values (the population's median
  animal on a log scale).
* `animal_parameters(pf, params, animal)`: `params` with one fitted animal's empirical Bayes
  estimates (its `parameters` where the file has them, else typical + eta).
* `draw_animals(pf, params, n, rng, uncertainty=False)`: n virtual animals,
  phi_i = typical + E eta_i with eta_i ~ N(0, Omega) on each parameter's scale (log scale:
  theta_i = typical * exp(eta_i)), clipped to the bounds; `uncertainty`: each animal's typical
  values (and Omega, where the file has `covariance_theta`) drawn first from their estimation
  covariance.

Nuisance parameters (burden_sigma) are left out everywhere. Every problem is one `InputError`
naming the file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dormancy_model.errors import InputError, suggest
from dormancy_model.params.fitfile import (
    NUISANCE,
    apply_fit,
    check_fit_model,
    fit_covariance,
    read_fit,
)
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import SCALES, from_scale, to_scale


@dataclass(frozen=True)
class PopulationFit:
    """Fitted model parameters `names` (d) on `scales` with typical values `values` (internal
    units, as read) and `typical` ((d,), transform scale); random effects `random` (q names
    among `names`) with covariance `omega` ((q, q), transform scale) of `structure` diagonal |
    full; `ebe`: the block's per-animal entries by animal id (read by `animal_parameters`)."""

    src: str
    method: str
    names: tuple
    scales: tuple
    values: tuple
    typical: np.ndarray
    random: tuple
    omega: np.ndarray
    structure: str
    ebe: dict
    doc: dict  # the whole fit document (estimation covariances, read on demand)

    @property
    def random_index(self) -> tuple:
        return tuple(self.names.index(r) for r in self.random)

    def describe(self) -> str:
        """One line: method, animals, between-animal sds (transform scale), Omega's form."""
        sds = ", ".join(f"{r} {math.sqrt(self.omega[k, k]):.3g}"
                        for k, r in enumerate(self.random))
        return (f"population fit ({self.method}, {len(self.ebe)} animals; between-animal sd "
                f"{sds}, {self.structure} Omega)")


def _finite(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _matrix(src, fld, m, k, keep=None, what="matrix"):
    """The rows and columns `keep` (default all) of a k x k JSON matrix, checked finite,
    symmetric and positive semi-definite there (other entries may be null)."""
    if (not isinstance(m, list) or len(m) != k
            or not all(isinstance(r, list) and len(r) == k for r in m)):
        raise InputError(src, fld, f"missing or not a {k} x {k} {what}")
    keep = list(range(k)) if keep is None else list(keep)
    sub = [[m[i][j] for j in keep] for i in keep]
    if not all(_finite(x) for r in sub for x in r):
        raise InputError(src, fld, f"has missing or non-finite entries ({what})")
    c = np.asarray(sub, float).reshape(len(keep), len(keep))
    size = float(np.abs(c).max()) if keep else 0.0
    if keep and not np.allclose(c, c.T, rtol=0, atol=1e-9 * (size or 1.0)):
        raise InputError(src, fld, "not symmetric")
    if keep and np.linalg.eigvalsh(0.5 * (c + c.T)).min() < -1e-9 * (size or 1.0):
        raise InputError(src, fld, f"not positive semi-definite ({what})")
    return 0.5 * (c + c.T)


def psd_factor(cov: np.ndarray) -> np.ndarray:
    """A (k, k) with A A^T = cov for a symmetric positive semi-definite `cov`."""
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return v * np.sqrt(np.maximum(w, 0.0))


def read_population(doc: dict, params: Parameters, src: str) -> PopulationFit | None:
    """The `PopulationFit` of a read fit document (`fitfile.read_fit`, model already checked
    with `check_fit_model`), or None when it has no `population` block (a pooled fit)."""
    if "population" not in doc:
        return None
    pop = doc["population"]
    if not isinstance(pop, dict):
        raise InputError(src, "population", "not a table")
    typ = pop.get("typical")
    if not isinstance(typ, dict) or not typ:
        raise InputError(src, "population.typical", "missing or empty")
    names, scales, values, typical = [], [], [], []
    for n, e in typ.items():
        if n in NUISANCE:
            continue
        fld = f"population.typical.{n}"
        if n not in params.spec:
            raise InputError(src, fld, f"not a parameter of {params.name}"
                                       f"{suggest(n, params.spec)}")
        v = e.get("internal_value") if isinstance(e, dict) else None
        if not _finite(v):
            raise InputError(src, f"{fld}.internal_value", "missing or not a number")
        scale = e.get("scale", params.spec[n].scale)
        if scale not in SCALES:
            raise InputError(src, f"{fld}.scale", f"must be one of {', '.join(SCALES)}, "
                             f"got {scale!r}")
        lo, hi = params.spec[n].bounds
        if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9) or (scale == "log" and v <= 0) or (
                scale == "logit" and not 0 < v < 1):
            raise InputError(src, f"{fld}.internal_value", f"{v:g} is outside the bounds "
                             f"[{lo:g}, {hi:g}] of {params.name} or its {scale} scale")
        names.append(n)
        scales.append(scale)
        values.append(float(v))
        typical.append(float(to_scale(v, scale)))
    if not names:
        raise InputError(src, "population.typical", "no model parameter was fitted")
    random = pop.get("random_effects")
    if (not isinstance(random, list) or not random
            or not all(isinstance(r, str) for r in random) or len(set(random)) != len(random)):
        raise InputError(src, "population.random_effects",
                         "missing or not a list of distinct parameter names")
    for r in random:
        if r not in names:
            raise InputError(src, "population.random_effects",
                             f"{r!r} is not a typical value of the fit{suggest(r, names)}")
    q = len(random)
    structure = pop.get("covariance", "diagonal")
    if structure not in ("diagonal", "full"):
        raise InputError(src, "population.covariance",
                         f"must be diagonal or full, got {structure!r}")
    if "omega" in pop:
        omega = _matrix(src, "population.omega", pop["omega"], q)
    elif structure == "diagonal":  # NUTS: the posterior-mean sd of each random effect
        rnd = pop.get("random")
        sds = [(rnd.get(r) or {}).get("sd") if isinstance(rnd, dict) else None for r in random]
        if not all(_finite(s) and s >= 0 for s in sds):
            raise InputError(src, "population.omega", "missing (and no random.NAME.sd for "
                             "every random effect)")
        omega = np.diag(np.square(sds))
    else:
        raise InputError(src, "population.omega", "missing: a full between-animal covariance "
                         "needs its matrix (the file records only the sds)")
    ebe = pop.get("ebe", {})
    if not isinstance(ebe, dict):
        raise InputError(src, "population.ebe", "not a table of animals")
    return PopulationFit(src, str(pop.get("method", doc.get("method", "population"))),
                         tuple(names), tuple(scales), tuple(values), np.array(typical),
                         tuple(random), omega,
                         structure, {str(a): e for a, e in ebe.items()}, doc)


def typical_parameters(pf: PopulationFit, params: Parameters) -> Parameters:
    """`params` with the typical values of every fitted model parameter (as read: no round
    trip through the scale)."""
    return params.replace(**dict(zip(pf.names, pf.values, strict=True)))


def animal_parameters(pf: PopulationFit, params: Parameters, animal: str,
                      flag: str = "--animal") -> Parameters:
    """`params` with the typical values and animal `animal`'s empirical Bayes estimates of its
    random-effect parameters: the block's `parameters` (file units) where given, else the
    typical value plus the animal's `eta` on each parameter's scale."""
    if animal not in pf.ebe:
        ids = sorted(pf.ebe)
        shown = ", ".join(ids[:6]) + (f", ... ({len(ids)} in all)" if len(ids) > 6 else "")
        raise InputError(pf.src, flag, f"no animal {animal!r} in the fit"
                         f"{suggest(animal, ids)}; its animals: {shown or 'none'}")
    fld = f"population.ebe.{animal}"
    e = pf.ebe[animal]
    if not isinstance(e, dict):
        raise InputError(pf.src, fld, "not a table")
    upd = {}
    if isinstance(e.get("parameters"), dict):
        for r, v in e["parameters"].items():
            if r not in pf.random:
                raise InputError(pf.src, f"{fld}.parameters.{r}", "not a random effect of "
                                 "the fit")
            if not _finite(v):
                raise InputError(pf.src, f"{fld}.parameters.{r}", "missing or not a number")
            upd[r] = float(v) * params.spec[r].factor
    else:
        eta = e.get("eta")
        if not isinstance(eta, list) or len(eta) != len(pf.random) or not all(
                _finite(x) for x in eta):
            raise InputError(pf.src, f"{fld}.eta", f"not a list of {len(pf.random)} numbers")
        for k, j in enumerate(pf.random_index):
            upd[pf.names[j]] = float(from_scale(pf.typical[j] + eta[k], pf.scales[j]))
    new = typical_parameters(pf, params).replace(**upd)
    new.check_bounds(pf.src)
    return new


def draw_animals(pf: PopulationFit, params: Parameters, n: int, rng: np.random.Generator, *,
                 uncertainty: bool = False) -> dict:
    """n virtual animals (module docstring): name -> (n,) internal values of the random-effect
    parameters (`uncertainty`: of every fitted model parameter), clipped to `params`' bounds.
    One `rng` stream: the same generator state gives the same draws."""
    d, q = len(pf.names), len(pf.random)
    if uncertainty:
        typical, chol = _estimation_draws(pf, params, n, rng)  # (n, d), (n, q, q)
    else:
        typical = np.broadcast_to(pf.typical, (n, d))
        chol = np.broadcast_to(psd_factor(pf.omega), (n, q, q))
    z = rng.standard_normal((n, q))
    eta = np.einsum("nij,nj->ni", chol, z)
    phi = np.array(typical, float)
    phi[:, list(pf.random_index)] += eta
    out = {}
    for j, nm in enumerate(pf.names):
        if nm not in pf.random and not uncertainty:
            continue
        lo, hi = params.spec[nm].bounds
        out[nm] = np.clip(from_scale(phi[:, j], pf.scales[j]), lo, hi)
    return out


def _estimation_draws(pf: PopulationFit, params: Parameters, n: int, rng):
    """Per animal: typical values (n, d) and a factor L (n, q, q) of Omega = L L^T drawn from
    the estimates' normal approximation: the Laplace outer vector [typical, log sd, correlation
    factors] from `covariance_theta` (Omega as in `fitting.population.problem`), or, where the
    file has none (NUTS), the typical values from `covariance_scale` and Omega fixed."""
    pop, src = pf.doc["population"], pf.src
    d, q = len(pf.names), len(pf.random)
    tn = pop.get("theta_names")
    if "covariance_theta" not in pop:
        names, _, mean, cov = fit_covariance(pf.doc, params, src)
        order = [names.index(nm) for nm in pf.names if nm in names]
        if len(order) != d:
            raise InputError(src, "covariance_scale", "does not cover every typical value")
        t = mean[order] + rng.standard_normal((n, d)) @ psd_factor(cov[np.ix_(order, order)]).T
        return t, np.broadcast_to(psd_factor(pf.omega), (n, q, q))
    if not isinstance(tn, list) or not all(isinstance(x, str) for x in tn):
        raise InputError(src, "population.theta_names", "missing or not a list of names")
    theta = pop.get("theta")
    if not isinstance(theta, list) or len(theta) != len(tn) or not all(_finite(x)
                                                                       for x in theta):
        raise InputError(src, "population.theta", f"missing or not {len(tn)} numbers")
    pairs = [(i, j) for i in range(q) for j in range(i)] if pf.structure == "full" else []
    want = ([*pf.names] + [f"log_sd({r})" for r in pf.random]
            + [f"corr_chol({pf.random[i]},{pf.random[j]})" for i, j in pairs])
    for w in want:
        if w not in tn:
            raise InputError(src, "population.theta_names", f"has no {w!r}")
    idx = [tn.index(w) for w in want]
    cov = _matrix(src, "population.covariance_theta", pop["covariance_theta"], len(tn), idx,
                  "the estimates' covariance: refit, or draw with uncertainty = false")
    mean = np.asarray(theta, float)[idx]
    mean[:d] = pf.typical  # the typical values as read (theta holds the same numbers)
    om = _omega_of(mean[None, d:], q, pairs)[0]
    if not np.allclose(om @ om.T, pf.omega, rtol=1e-6, atol=1e-12):
        raise InputError(src, "population.theta", "its log sds and correlation factors do not "
                         "give population.omega")
    u = mean + rng.standard_normal((n, len(idx))) @ psd_factor(cov).T
    return u[:, :d], _omega_of(u[:, d:], q, pairs)


def _omega_of(v, q, pairs):
    """L (n, q, q) from rows [log sd (q), correlation factors (len(pairs))]: the unit-diagonal
    lower factor's rows normalised (a correlation matrix C C^T), scaled by the sds."""
    n = v.shape[0]
    C = np.broadcast_to(np.eye(q), (n, q, q)).copy()
    for k, (i, j) in enumerate(pairs):
        C[:, i, j] = v[:, q + k]
    C /= np.linalg.norm(C, axis=2, keepdims=True)
    return np.exp(v[:, :q])[:, :, None] * C


def apply_fit_file(params: Parameters, path, animal: str | None = None,
                   flag: str = "--model") -> tuple[Parameters, str]:
    """(`params` with a fit's values, a line saying which) for `simulate --params`: a pooled
    fit's estimates (`fitfile.apply_fit`; line empty); a population fit's typical values, or
    with `animal` that fitted animal's empirical Bayes estimates (`animal_parameters`).
    `animal` with a pooled fit, or an unknown animal, is an `InputError` naming --animal."""
    src = str(path)
    doc = read_fit(path)
    check_fit_model(doc, params, src, flag)
    pf = read_population(doc, params, src)
    if pf is None:
        if animal is not None:
            raise InputError(src, "--animal", "a pooled fit has no per-animal estimates: "
                             "--animal needs a population fit (dormancy fit --method laplace "
                             "--random ...)")
        return apply_fit(params, path, flag), ""
    if animal is None:
        return typical_parameters(pf, params), (
            f"{pf.describe()}: simulating the typical animal (typical values, the population's "
            "median animal; --animal ID simulates one fitted animal)")
    p = animal_parameters(pf, params, animal)
    vals = ", ".join(f"{r} {float(np.asarray(p[r])) / params.spec[r].factor:.4g} "
                     f"{params.spec[r].unit}" for r in pf.random)
    return p, f"{pf.describe()}: simulating animal {animal} (empirical Bayes estimates: {vals})"
