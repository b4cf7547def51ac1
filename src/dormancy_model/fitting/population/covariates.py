"""Covariate models on typical values (`PopulationProblem.covariates`), as in NONMEM, Monolix
and nlmixr2.

Effect k acts on one fitted typical value j(k), on that parameter's transform scale::

    phi_i = theta + X_i beta + E eta_i,      (X_i beta)_j = sum of beta_k x_ik over effects on j

* ``power`` (a continuous covariate c, reference c_ref > 0): x_ik = log(c_i / c_ref), so on a
  log-scale parameter ``theta_i = theta_pop * (c_i / c_ref)^beta * exp(eta_i)`` (NONMEM's
  ``TVCL = THETA(1) * (WT / 70)**THETA(2)``); the default reference is the median over the
  problem's animals;
* ``categorical`` (one effect per level l other than the reference): x_ik = 1 when animal i is
  in level l, else 0, so ``theta_i = theta_pop * exp(beta_l) * exp(eta_i)``: theta_pop is the
  typical value of the reference level, exp(beta_l) the fold change of level l.

On a logit- or lin-scale parameter the same shift is added on that scale (Monolix's
transform-scale covariate model); every shipped fitted parameter is on the log scale. With
every beta = 0 the animals' parameters are those of the problem without covariates, exactly.

Specifications (`parse_covariates`, `dormancy fit --covariate`)::

    PARAM~COLUMN[:power|:categorical][@REFERENCE]

e.g. ``k_dr~body_weight_g`` (power, reference the median weight), ``k_dr~body_weight_g@25``
(reference 25 g), ``delta_max~arm`` (the animal's arm, categorical), ``k_dr~sex:categorical@F``.
A column of the study's ``animals.csv`` is a power covariate unless ``:categorical`` is written
(so that a typing error in a numeric column is refused, not read as a new level); ``arm`` (the
study's dose group of the animal) is categorical. Categorical reference (`study_covariates`):
the ``@`` level if given; for ``arm`` the one arm whose schedule gives no drug (the vehicle /
control arm) when exactly one does, else the first arm of study.toml; for a column the first
level in animals.csv order. The reference and the rule that chose it are in the fit output.

Bad input (`errors.InputError`, one line naming the option or the file and field): a malformed
specification, a covariate on an unknown, fixed (not fitted) parameter, the same (parameter,
covariate) twice, a column that is not in animals.csv (or no animals.csv), a value that is
missing (empty, NA, NaN) for an animal, a non-numeric or non-positive value in a power model,
a covariate with one value for every animal, a categorical level (or reference) with no animals.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.errors import InputError, suggest

MODELS = ("power", "categorical")
ARM = "arm"  # the animal's dose group (its arm in study.toml), a categorical covariate
MISSING = ("", "na", "n/a", "nan")  # (lower case) a missing covariate value
SYNTAX = "PARAM~COLUMN[:power|:categorical][@REFERENCE]"


@dataclass(frozen=True)
class CovariateSpec:
    """One requested effect: `parameter` ~ `covariate`, `model` None (power, or categorical for
    `arm`), `reference` None (the default rule) or as written after ``@``."""

    parameter: str
    covariate: str
    model: str | None = None
    reference: str | None = None

    @property
    def text(self) -> str:
        return (f"{self.parameter}~{self.covariate}" + (f":{self.model}" if self.model else "")
                + (f"@{self.reference}" if self.reference is not None else ""))


@dataclass(frozen=True)
class CovariateEffect:
    """One estimated beta: on `parameter`, of `covariate` (`model` power or categorical);
    `reference`: the power model's reference value or the reference level; `level`: the level
    of a categorical effect (None for power); `reference_rule`: how the reference was chosen;
    `scale`: the parameter's transform scale (log: the effect multiplies the typical value)."""

    parameter: str
    covariate: str
    model: str
    reference: float | str
    reference_rule: str
    level: str | None = None
    scale: str = "log"

    @property
    def label(self) -> str:
        return f"{self.parameter}~{self.covariate}" + (f"={self.level}" if self.level else "")

    def formula(self) -> str:
        """How the effect changes the typical value, e.g. ``x (body_weight_g / 25)^beta``."""
        if self.model == "power":
            if self.scale == "log":
                return f"x ({self.covariate} / {self.reference:.4g})^beta"
            return f"+ beta log({self.covariate} / {self.reference:.4g}) on the {self.scale} scale"
        if self.scale == "log":
            return f"x exp(beta) vs level {self.reference!r}"
        return f"+ beta on the {self.scale} scale vs level {self.reference!r}"


class CovariateModel(eqx.Module):
    """The covariate effects of a population problem: `design` (n_animals, p), one column per
    effect (log(c_i / c_ref) or a 0/1 level indicator), `target` the index of the typical value
    each effect shifts, `effects` their descriptions (`CovariateEffect`)."""

    design: jax.Array
    target: tuple = eqx.field(static=True)
    effects: tuple = eqx.field(static=True)

    @property
    def p(self) -> int:
        return len(self.target)


def typical_values(theta_typical, beta, x, target) -> jax.Array:
    """An animal's typical values (d,) on the transform scale: ``theta + X beta`` for its design
    row x (p,) and the typical-value index of each effect (`target`, p). On a log-scale
    parameter exp of the result is theta_pop * prod over its effects of (c / c_ref)^beta
    (power) and exp(beta) (categorical, in the effect's level)."""
    theta_typical = jnp.asarray(theta_typical)
    if not len(target):
        return theta_typical
    return theta_typical + jnp.zeros_like(theta_typical).at[jnp.asarray(target, int)].add(
        jnp.asarray(beta) * jnp.asarray(x))


# ----------------------------------------------------------------------------- specifications


def parse_covariates(specs, source: str = "--covariate") -> tuple[CovariateSpec, ...]:
    """`CovariateSpec`s from strings (`SYNTAX`; a string may hold several, comma-separated) or
    specs; a malformed one or the same (parameter, covariate) twice is an InputError."""
    if isinstance(specs, (str, CovariateSpec)):
        specs = [specs]
    out = []
    for item in specs:
        if isinstance(item, CovariateSpec):
            out.append(item)
            continue
        for text in str(item).split(","):
            text = text.strip()
            if not text and str(item).strip():
                raise InputError(source, "covariate", f"empty covariate in {item!r}")
            if text:
                out.append(_parse_one(text, source))
    seen = set()
    for s in out:
        if s.model not in (None, *MODELS):
            raise InputError(source, "covariate", f"unknown covariate model {s.model!r} in "
                             f"{s.text!r} (one of: {', '.join(MODELS)})")
        if (s.parameter, s.covariate) in seen:
            raise InputError(source, "covariate", f"{s.parameter}~{s.covariate} is given twice")
        seen.add((s.parameter, s.covariate))
    return tuple(out)


def _parse_one(text: str, source: str) -> CovariateSpec:
    bad = InputError(source, "covariate", f"{text!r} is not {SYNTAX} (e.g. "
                     "k_dr~body_weight_g, delta_max~arm)")
    if text.count("~") != 1:
        raise bad
    param, rest = (t.strip() for t in text.split("~"))
    ref = None
    if "@" in rest:
        rest, ref = (t.strip() for t in rest.split("@", 1))
        if not ref:
            raise bad
    model = None
    if ":" in rest:
        rest, model = (t.strip() for t in rest.split(":", 1))
        if model not in MODELS:
            raise InputError(source, "covariate", f"unknown covariate model {model!r} in "
                             f"{text!r} (one of: {', '.join(MODELS)})")
    if not param or not rest:
        raise bad
    if rest == ARM and model == "power":
        raise InputError(source, "covariate", f"{text!r}: the arm (dose group) is categorical")
    return CovariateSpec(param, rest, model, ref)


def check_covariates(specs, free, params, source: str = "--covariate"):
    """The specifications, with every parameter a fitted typical value (InputError naming
    `source` for an unknown or fixed one)."""
    from dormancy_model.fitting.objective import NUISANCE

    specs = parse_covariates(specs, source)
    for s in specs:
        if s.parameter not in params.spec and s.parameter not in NUISANCE:
            known = dict.fromkeys([*free, *params.spec])
            raise InputError(source, "covariate", f"unknown parameter {s.parameter!r} in "
                             f"{s.text!r}{suggest(s.parameter, known)}")
        if s.parameter not in free:
            raise InputError(source, "covariate", f"{s.parameter} is fixed (not among --free "
                             f"{','.join(free)}); a covariate effect needs a fitted typical "
                             "value")
    return specs


# ----------------------------------------------------------------------------- design


@dataclass(frozen=True)
class Column:
    """A covariate's values over the problem's animals: `values` (n,) as written (text or
    numbers); `where(i)`: the (source, field) naming animal i's value in an error; `levels`:
    the known levels in order (categorical, e.g. every arm; None: the values in order of
    appearance); `reference`/`rule`: the default reference level and why; `categorical`:
    categorical unless `:power` is asked (the arm)."""

    values: tuple
    where: object
    levels: tuple | None = None
    reference: str | None = None
    rule: str = "first level in file order"
    categorical: bool = False


def covariate_model(specs, names, columns: dict, ids, source: str = "--covariate",
                    missing_column=None, scales=None) -> CovariateModel | None:
    """The `CovariateModel` of `specs` over the animals `ids` (n): `names` the fitted typical
    values (on `scales`, default all log), `columns` {covariate: `Column`};
    `missing_column(spec)`: the InputError for a covariate not in `columns` (default: one
    naming `source`). None when there is no spec."""
    specs = parse_covariates(specs, source)
    if not specs:
        return None
    cols, target, effects = [], [], []
    for s in specs:
        if s.parameter not in names:
            raise InputError(source, "covariate", f"{s.parameter} in {s.text!r} is not a "
                             f"fitted typical value ({', '.join(names)})")
        col = columns.get(s.covariate)
        if col is None:
            if missing_column is not None:
                raise missing_column(s)
            raise InputError(source, "covariate", f"no covariate {s.covariate!r}"
                             f"{suggest(s.covariate, list(columns))}")
        categorical = s.model == "categorical" or (s.model is None and col.categorical)
        build = _categorical if categorical else _power
        j = names.index(s.parameter)
        for effect, x in build(s, col, ids, source):
            cols.append(x)
            target.append(j)
            effects.append(dataclasses.replace(effect, scale=scales[j] if scales else "log"))
    return CovariateModel(design=jnp.asarray(np.stack(cols, axis=1), float),
                          target=tuple(target), effects=tuple(effects))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip().lower() \
        in MISSING


def _power(s: CovariateSpec, col: Column, ids, source):
    c = np.empty(len(ids))
    for i, v in enumerate(col.values):
        where, field = col.where(i)
        if _missing(v):
            raise InputError(where, field, f"missing for animal {ids[i]!r} (covariate of "
                             f"{s.text!r})")
        try:
            c[i] = float(v)
        except (TypeError, ValueError):
            raise InputError(where, field, f"not a number: {v!r} for animal {ids[i]!r}: the "
                             f"power model {s.text!r} needs a positive number (a categorical "
                             f"covariate: {s.parameter}~{s.covariate}:categorical)") from None
        if not math.isfinite(c[i]):
            raise InputError(where, field, f"missing for animal {ids[i]!r} ({v!r}; covariate "
                             f"of {s.text!r})")
        if c[i] <= 0:
            raise InputError(where, field, f"{c[i]:g} for animal {ids[i]!r} must be > 0 in "
                             f"the power model {s.text!r} ((value / reference)^beta)")
    if s.reference is None:
        ref, rule = float(np.median(c)), f"median of the {len(ids)} animals"
    else:
        try:
            ref = float(s.reference)
        except ValueError:
            ref = math.nan
        if not (math.isfinite(ref) and ref > 0):
            raise InputError(source, "covariate", f"reference {s.reference!r} of {s.text!r} "
                             "must be a positive number")
        rule = "given"
    if np.all(c == c[0]):
        raise InputError(source, "covariate", f"{s.covariate} is {c[0]:g} for every animal: "
                         f"the exponent of {s.text!r} cannot be estimated")
    yield CovariateEffect(s.parameter, s.covariate, "power", ref, rule), np.log(c / ref)


def _categorical(s: CovariateSpec, col: Column, ids, source):
    labels = []
    for i, v in enumerate(col.values):
        if _missing(v):
            where, field = col.where(i)
            raise InputError(where, field, f"missing for animal {ids[i]!r} (covariate of "
                             f"{s.text!r})")
        labels.append(str(v).strip())
    seen = list(dict.fromkeys(labels))
    levels = list(col.levels) if col.levels is not None else seen
    counts = {lv: labels.count(lv) for lv in levels}
    if s.reference is not None:
        if s.reference not in levels:
            raise InputError(source, "covariate", f"reference level {s.reference!r} of "
                             f"{s.text!r} is not a level of {s.covariate}"
                             f"{suggest(s.reference, levels)} (levels: {', '.join(levels)})")
        ref, rule = s.reference, "given"
    elif col.reference is not None:
        ref, rule = col.reference, col.rule
    else:
        ref, rule = levels[0], col.rule
    for lv in levels:
        if not counts[lv]:
            raise InputError(source, "covariate", f"level {lv!r} of {s.covariate} has no "
                             f"animals: its effect in {s.text!r} cannot be estimated")
    if len(levels) < 2:
        raise InputError(source, "covariate", f"{s.covariate} has one level ({levels[0]!r}) "
                         f"for every animal: {s.text!r} has nothing to estimate")
    lab = np.array(labels, object)
    for lv in levels:
        if lv != ref:
            yield (CovariateEffect(s.parameter, s.covariate, "categorical", ref, rule, lv),
                   (lab == lv).astype(float))


# ----------------------------------------------------------------------------- study


def control_arm(study) -> tuple[str, str]:
    """(reference arm, rule): the one arm whose schedule gives no drug, else the first arm."""
    def undosed(arm):
        return all(float(np.sum(arm.schedule.events(d)[1])) == 0.0 for d in ("hcq", "eve"))

    empty = [a.name for a in study.arms if undosed(a)]
    if len(empty) == 1:
        return empty[0], "the control arm (its schedule gives no drug)"
    return study.arm_names[0], ("first arm in study.toml" + (
        f" ({len(empty)} arms give no drug)" if empty else " (no arm without drug)"))


def study_covariates(study, ids, arm_of, specs, names, scales=None,
                     source: str = "--covariate") -> CovariateModel | None:
    """The covariate model of a study's population problem: animals `ids` (n) in arms `arm_of`
    (n, index into `study.arms`), covariates ``arm`` and the columns of its `animals.csv`
    (errors name that file, line and column); `names`/`scales`: the fitted typical values."""
    from pathlib import Path

    specs = parse_covariates(specs, source)
    if not specs:
        return None
    ref, rule = control_arm(study)
    columns = {ARM: Column(tuple(study.arm_names[int(a)] for a in arm_of),
                           lambda i: (source, "covariate"), levels=study.arm_names,
                           reference=ref, rule=rule, categorical=True)}
    table = study.animals
    src = table.source if table is not None and table.source else str(
        Path(study.path) / "animals.csv")
    if table is not None:
        row = {a: k for k, a in enumerate(table.ids)}
        lines = table.lines or (None,) * len(table.ids)
        for c, v in table.covariates.items():
            if c == ARM:
                continue
            vals = tuple(v[row[str(a)]] for a in ids)

            def where(i, c=c):
                line = lines[row[str(ids[i])]]
                return (f"{src}:{line}" if line else src), c

            columns[c] = Column(vals, where, rule="first level in animals.csv order")

    def missing(s):
        if table is None:
            return InputError(str(Path(study.path) / "study.toml"), "study.animals",
                              f"no per-animal covariate table: {s.text!r} needs a column "
                              f"{s.covariate!r} in animals.csv")
        cols = [c for c in table.covariates if c != ARM]
        return InputError(src, s.covariate, f"no such column{suggest(s.covariate, cols)} "
                          f"(columns: {', '.join(cols) or 'none'}; named by {source} "
                          f"{s.text})")

    return covariate_model(specs, names, columns, tuple(ids), source, missing, scales)


# ----------------------------------------------------------------------------- output


def effect_rows(effects, beta, se, *, z: float = 1.959963984540054) -> list[dict]:
    """The fit output's covariate table: per effect its description, estimate (beta: the
    exponent of a power model, the log fold change of a level), standard error, RSE%, Wald 95%
    CI, the formula, and for a level of a log-scale parameter the fold change exp(beta) with
    its CI."""
    rows = []
    for e, b, s in zip(effects, beta, se, strict=True):
        b, s = float(b), float(s)
        ok = math.isfinite(s)
        row = dict(parameter=e.parameter, covariate=e.covariate, model=e.model,
                   level=e.level, reference=e.reference, reference_rule=e.reference_rule,
                   label=e.label, scale=e.scale, formula=e.formula(), estimate=b,
                   se=s if ok else None, rse_percent=100 * s / abs(b) if ok and b != 0 else None,
                   ci95_low=b - z * s if ok else None, ci95_high=b + z * s if ok else None)
        if e.model == "categorical" and e.scale == "log":
            row.update(fold_change=math.exp(b),
                       fold_change_ci95=[math.exp(b - z * s), math.exp(b + z * s)] if ok
                       else None)
        rows.append(row)
    return rows

