"""The fitted model a VPC draws from, read from a fit JSON (`dormancy fit --out`).

`fitted_model(doc, params, src)` -> `FittedModel`: the fitted model parameters on their scales
(log / logit / lin, as the fit), the noise sd of the counts, and

* a population fit (`population` block, Laplace or NUTS): the random effects, their covariance
  Omega on the transform scale (NUTS files hold no Omega: the diagonal of the posterior-mean
  sds) and the per-animal estimates (EBEs; NUTS: posterior means of eta);
* any fit: the covariance of the estimates on each parameter's scale (`covariance_scale`, the
  typical-value block for a population fit; `params.fitfile.fit_covariance`, nuisance
  parameters marginalised out), used only when parameter uncertainty is asked for.

* a population fit with covariate effects on its typical values (`population.covariates`,
  `dormancy fit --covariate`): each effect's specification and estimate (`covariates`); the
  simulated animals get phi_i = typical + X_i beta + E eta_i with X_i from the study's own
  animals (`covariate_shift`: the same design rows as the fit, `population.covariates.
  study_covariates`), so a VPC of such a fit simulates each animal with its covariates (the
  betas are held at their estimates; `--uncertainty` draws the typical values only).

Every problem is one `InputError` naming the fit file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dormancy_model.errors import InputError
from dormancy_model.fitting.objective import NUISANCE
from dormancy_model.params.fitfile import fit_covariance
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import SCALE_CODE, SCALES, to_scale


@dataclass(frozen=True)
class FittedModel:
    """Model parameters `names` (d) on `scales` at `typical` (transform scale, (d,)); `sigma`:
    sd of the log counts; `random` (q names, a subset of `names`), `omega` (q, q) and `ebe`
    (animal id -> (q,) eta) for a population fit (q = 0 for a pooled one); `method`: pooled,
    laplace or nuts."""

    names: tuple
    scales: tuple
    typical: np.ndarray
    lower: np.ndarray  # bounds on the transform scale (d,)
    upper: np.ndarray
    sigma: float
    method: str
    random: tuple = ()
    omega: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    ebe: dict | None = None
    covariance: np.ndarray | None = None  # (d, d) on the transform scale, or None
    covariates: tuple = ()  # (specification text, effect label, beta) per effect
    source: str = ""  # the fit file (named by errors)

    @property
    def codes(self) -> np.ndarray:
        return np.array([SCALE_CODE[s] for s in self.scales], int)

    @property
    def population(self) -> bool:
        return bool(self.random)

    def selection(self) -> np.ndarray:
        """E (d, q): an animal's parameters phi = typical + E eta."""
        E = np.zeros((len(self.names), len(self.random)))
        for k, r in enumerate(self.random):
            E[self.names.index(r), k] = 1.0
        return E


def _finite(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def psd_factor(cov: np.ndarray) -> np.ndarray:
    """A (k, k) with A A^T = cov for a symmetric positive semi-definite `cov` (eigenvalues
    below zero from rounding are set to zero)."""
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return v * np.sqrt(np.maximum(w, 0.0))


def fitted_model(doc: dict, params: Parameters, src: str, *, uncertainty: bool = False
                 ) -> FittedModel:
    """The `FittedModel` of a read fit document (`params.fitfile.read_fit`) of `params`'
    parameter set; `uncertainty`: also read and check the covariance of the estimates."""
    est = doc["estimates"]
    names, scales, typical, lower, upper = [], [], [], [], []
    for n, e in est.items():
        if n in NUISANCE:
            continue
        if n not in params.spec:
            raise InputError(src, f"estimates.{n}", f"not a parameter of {params.name}")
        spec = params.spec[n]
        scale = e.get("scale", spec.scale)
        if scale not in SCALES:
            raise InputError(src, f"estimates.{n}.scale",
                             f"must be one of {', '.join(SCALES)}, got {scale!r}")
        v = float(e["internal_value"])
        lo, hi = spec.bounds
        if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
            raise InputError(src, f"estimates.{n}.internal_value",
                             f"{v:g} is outside the bounds [{lo:g}, {hi:g}] of {params.name}")
        names.append(n)
        scales.append(scale)
        typical.append(float(to_scale(v, scale)))
        with np.errstate(divide="ignore"):
            lower.append(float(to_scale(lo, scale)))
            upper.append(float(to_scale(hi, scale)))
    if not names:
        raise InputError(src, "estimates", "no model parameter was fitted")
    if "burden_sigma" in est:
        sigma = float(est["burden_sigma"]["internal_value"])
    else:
        sigma = (doc.get("settings") or {}).get("sigma_fixed", NUISANCE["burden_sigma"]["value"])
        if not _finite(sigma):
            raise InputError(src, "settings.sigma_fixed", "missing or not a number (the noise "
                             "sd of the counts when burden_sigma was not fitted)")
    if not sigma > 0:
        raise InputError(src, "estimates.burden_sigma.internal_value", f"{sigma:g} must be > 0")
    kw = dict(names=tuple(names), scales=tuple(scales), typical=np.array(typical),
              lower=np.array(lower), upper=np.array(upper), sigma=float(sigma),
              method=str(doc.get("method", "pooled")), source=src)
    pop = doc.get("population")
    if pop is not None:
        kw.update(_population(pop, tuple(names), src))
    if uncertainty:
        cn, _, _, cov = fit_covariance(doc, params, src)
        order = [cn.index(n) for n in names]
        kw["covariance"] = cov[np.ix_(order, order)]
    return FittedModel(**kw)


def _population(pop, names: tuple, src: str) -> dict:
    if not isinstance(pop, dict):
        raise InputError(src, "population", "not a table")
    random = pop.get("random_effects")
    if not isinstance(random, list) or not random or not all(isinstance(r, str) for r in random):
        raise InputError(src, "population.random_effects", "missing or not a list of names")
    for r in random:
        if r not in names:
            raise InputError(src, "population.random_effects",
                             f"{r!r} is not among the estimates")
    q = len(random)
    omega = pop.get("omega")
    if omega is None:  # NUTS: the posterior-mean sd of each random effect, uncorrelated
        sds = [(pop.get("random") or {}).get(r, {}).get("sd") for r in random]
        if not all(_finite(s) for s in sds):
            raise InputError(src, "population.random", "needs omega or an sd per random effect")
        omega = np.diag(np.square(sds))
    elif (not isinstance(omega, list) or len(omega) != q
          or not all(isinstance(row, list) and len(row) == q and all(_finite(x) for x in row)
                     for row in omega)):
        raise InputError(src, "population.omega", f"not a finite {q} x {q} matrix")
    omega = np.asarray(omega, float)
    if (not np.allclose(omega, omega.T, atol=1e-12 * max(np.abs(omega).max(), 1e-300))
            or np.linalg.eigvalsh(0.5 * (omega + omega.T)).min() < -1e-10 * np.abs(omega).max()):
        raise InputError(src, "population.omega", "not symmetric positive semi-definite")
    ebe = {}
    for a, entry in (pop.get("ebe") or {}).items():
        eta = entry.get("eta") if isinstance(entry, dict) else None
        if not isinstance(eta, list) or len(eta) != q:
            raise InputError(src, f"population.ebe.{a}.eta", f"not a list of {q} numbers")
        ebe[str(a)] = np.array([x if _finite(x) else np.nan for x in eta], float)
    return dict(random=tuple(random), omega=omega, ebe=ebe or None,
                covariates=_covariate_rows(pop.get("covariates") or [], names, src))


def _covariate_rows(rows, names: tuple, src: str) -> tuple:
    """(specification, label, beta) per effect row of `population.covariates`; the
    specification names the fit's reference (`@`), so the study's design rows are the fit's."""
    if not isinstance(rows, list):
        raise InputError(src, "population.covariates", "not a list of effects")
    out = []
    for k, r in enumerate(rows):
        where = f"population.covariates[{k}]"
        if not isinstance(r, dict):
            raise InputError(src, where, "not a table")
        for key in ("parameter", "covariate", "model", "label"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise InputError(src, f"{where}.{key}", "missing or not a text")
        if r["parameter"] not in names:
            raise InputError(src, f"{where}.parameter", f"{r['parameter']!r} is not among the "
                             "estimates")
        if r["model"] not in ("power", "categorical"):
            raise InputError(src, f"{where}.model", f"must be power or categorical, got "
                             f"{r['model']!r}")
        if not _finite(r.get("estimate")):
            raise InputError(src, f"{where}.estimate", "missing or not a finite number")
        ref = r.get("reference")
        if r["model"] == "power" and not (_finite(ref) and ref > 0):
            raise InputError(src, f"{where}.reference", "the power model's reference must be "
                             "a positive number")
        if r["model"] == "categorical" and not isinstance(ref, str):
            raise InputError(src, f"{where}.reference", "the reference level must be a text")
        spec = f"{r['parameter']}~{r['covariate']}:{r['model']}@{ref!r}" \
            if r["model"] == "power" else f"{r['parameter']}~{r['covariate']}:categorical@{ref}"
        out.append((spec, r["label"], float(r["estimate"])))
    return tuple(out)


def covariate_shift(fitted: FittedModel, study, ids, arm_of) -> np.ndarray:
    """X_i beta (n, d) on the transform scale for the study's animals `ids` (n) in arms
    `arm_of` (n): zero without covariate effects. The design rows are built from the study by
    the fit's own rules (`population.covariates.study_covariates`, the fit's references);
    a covariate the study lacks (or an animal without a value) is an InputError naming the
    study's file and field, an effect the study's design does not produce one naming the
    fit file."""
    from dormancy_model.fitting.population.covariates import study_covariates

    shift = np.zeros((len(ids), len(fitted.names)))
    if not fitted.covariates:
        return shift
    specs = list(dict.fromkeys(spec for spec, _, _ in fitted.covariates))
    cm = study_covariates(study, ids, arm_of, specs, list(fitted.names), list(fitted.scales),
                          source=f"{fitted.source} population.covariates")
    beta = {label: b for _, label, b in fitted.covariates}
    design = np.asarray(cm.design)
    for col, (e, j) in enumerate(zip(cm.effects, cm.target, strict=True)):
        if e.label not in beta:
            raise InputError(fitted.source, "population.covariates", f"no estimate for the "
                             f"effect {e.label!r} that the study's animals give (levels of the "
                             "study differ from the fit's)")
        shift[:, j] += design[:, col] * beta[e.label]
    if len({e.label for e in cm.effects}) != len(beta):
        extra = sorted(set(beta) - {e.label for e in cm.effects})
        raise InputError(fitted.source, "population.covariates", f"effect(s) {', '.join(extra)} "
                         "have no animals in the study")
    return shift
