"""Mouse study data: study.toml, burden.csv, survival.csv -> validated `Study` -> padded arrays.

Formats (a study is a directory holding the three files):

* ``study.toml``::

      [study]
      name = "mouse_synthetic"
      species = "mouse"            # must match the parameter file's species
      body_weight_g = 25.0         # replaces the model's body_weight
      synthetic = true             # optional label, copied into fits
      description = "..."
      burden = "burden.csv"        # optional file names (relative to the study directory)
      survival = "survival.csv"
      animals = "animals.csv"      # optional per-animal covariate table
      pk = "pk.csv"                # optional drug concentrations (PK observations)

      [arms.hcq60_chronic]
      schedule = "mouse-hcq60-chronic"   # a preset name (`dormancy schedules`) or a schedule
                                         # TOML path relative to the study directory

* ``burden.csv`` (one row per mouse and sampling day; lines starting with ``#`` are comments):
  ``mouse_id, arm, day, residual_cells, detection_limit`` and optionally ``sampled_fraction``
  (default 1). ``residual_cells`` is the count seen in the sample (cells, or cells per sampled
  volume when ``sampled_fraction`` < 1, the model then predicts ``sampled_fraction`` x residual);
  a count below ``detection_limit`` (same unit) is treated as censored: "below the limit".
  A ``mouse_id`` belongs to one arm and has at most one count per day. Optional marker columns
  ``dormant_count`` (e.g. Ki67-negative) and ``proliferating_count`` (Ki67-positive) split the
  same sample (blank: not measured; when both are given they must add up to
  ``residual_cells``); the fit uses the total. The model's observable for ``residual_cells`` is
  the solitary residual tumour cells, dormant D plus reactivating R (`fitting.likelihood`):
  cells in proliferating clones are not in it. Optional columns ``clone_cells`` (cells seen in
  proliferating clusters, micro-clones below the switch size) and ``lesion_cells`` (cells in
  lesions, clones past the switch size, found at necropsy) record them apart (non-negative
  numbers, blank: not measured); they are checked and not fitted.
* ``survival.csv``: ``mouse_id, arm, day, event`` with event 1 = relapse observed at ``day``,
  0 = relapse-free when last seen at ``day`` (right-censored).
* ``animals.csv`` (optional, named by ``study.animals``): one row per animal, ``mouse_id`` and
  covariate columns, e.g. ``body_weight_g`` (a plausible weight for the species); any other
  column is kept as text. Every animal of burden.csv and survival.csv needs a row with every
  covariate filled in, and every row must name one of them. A population fit can put covariate
  effects of these columns (and of the animal's arm) on typical values
  (`fitting.population.covariates`, ``dormancy fit --covariate k_dr~body_weight_g``).

* ``pk.csv`` (optional, named by ``study.pk``): one row per drug concentration,
  ``mouse_id, arm, day, drug, matrix, conc_ng_ml`` and optionally ``lloq_ng_ml``. ``day``:
  days since the first dose (fractions for hours: 2 h = 0.0833), from 0 to the study's last
  burden or survival day; ``drug`` ``hcq`` or ``eve``; ``matrix`` ``whole_blood`` or
  ``plasma`` (the parameter set says which matrix its concentrations are, ``[meta]
  hcq_matrix`` / ``eve_matrix``: whole blood for the human set and the mouse EVE, plasma for
  the mouse HCQ; a sample in the other matrix is predicted through the parameter
  ``hcq_blood_plasma_ratio`` / ``eve_blood_plasma_ratio``, whole blood = ratio x plasma);
  ``conc_ng_ml`` > 0. Below the lower limit of quantification:
  leave ``conc_ng_ml`` empty and give ``lloq_ng_ml`` (> 0); a value below its row's
  ``lloq_ng_ml`` is treated the same. Such a row is a censored observation (M3, Beal 2001:
  its likelihood is P(c < LLOQ)). A ``mouse_id`` belongs to one arm (also across burden.csv
  and survival.csv). The likelihood is log-normal with one residual sd per drug
  (`likelihood.pk_loglik_unit`, nuisance parameters ``pk_sigma_hcq``, ``pk_sigma_eve``).

Files are UTF-8 (a byte-order mark is ignored). The study's ``body_weight_g`` must be plausible
for its species (`units.BODY_WEIGHT_KG`) and, in a fit, within the model's body_weight bounds.
Days count from the first treatment day (day 0 of every schedule). Every error names the file,
the line and the column. `study_arrays` pads the per-arm rows to a common length with masks and
maps every day onto one shared time grid, so the whole study is one compiled function whatever
the number of mice or their measurement days.
"""

from __future__ import annotations

import csv
import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.errors import InputError, suggest
from dormancy_model.pk.closed_form import DoseEvents, Dosing
from dormancy_model.pk.presets import get_schedule
from dormancy_model.pk.schedule import Schedule
from dormancy_model.units import body_weight_problem

BURDEN_COLUMNS = ("mouse_id", "arm", "day", "residual_cells", "detection_limit")
BURDEN_OPTIONAL = ("sampled_fraction", "dormant_count", "proliferating_count", "clone_cells",
                   "lesion_cells")
SURVIVAL_COLUMNS = ("mouse_id", "arm", "day", "event")
PK_COLUMNS = ("mouse_id", "arm", "day", "drug", "matrix", "conc_ng_ml")
PK_OPTIONAL = ("lloq_ng_ml",)
PK_DRUGS = ("hcq", "eve")  # code = index
PK_MATRICES = ("whole_blood", "plasma")  # code = index
ANIMAL_COLUMNS = ("mouse_id",)
STUDY_FIELDS = {"name", "species", "body_weight_g", "synthetic", "description", "burden",
                "survival", "animals", "seed", "generator", "pk"}


@dataclass(frozen=True)
class Arm:
    name: str
    schedule: Schedule
    schedule_ref: str  # preset name or path as written in study.toml


@dataclass(frozen=True)
class BurdenRows:
    """Residual-burden rows (numpy, one entry per row)."""

    mouse_id: np.ndarray
    arm: np.ndarray  # arm index
    day: np.ndarray
    cells: np.ndarray
    detection_limit: np.ndarray
    sampled_fraction: np.ndarray
    # optional marker split of the same sample (NaN: not measured); None when no column
    dormant: np.ndarray | None = None
    proliferating: np.ndarray | None = None

    @property
    def censored(self) -> np.ndarray:
        return self.cells < self.detection_limit


@dataclass(frozen=True)
class SurvivalRows:
    mouse_id: np.ndarray
    arm: np.ndarray
    day: np.ndarray
    event: np.ndarray  # 1 relapse, 0 censored


@dataclass(frozen=True)
class PKRows:
    """Drug-concentration rows (numpy, one entry per row of pk.csv)."""

    mouse_id: np.ndarray
    arm: np.ndarray  # arm index
    day: np.ndarray
    drug: np.ndarray  # index into PK_DRUGS
    matrix: np.ndarray  # index into PK_MATRICES
    conc: np.ndarray  # ng/mL (NaN: below the LLOQ, value not given)
    lloq: np.ndarray  # ng/mL (NaN: none given)

    @property
    def censored(self) -> np.ndarray:
        return np.isnan(self.conc) | (self.conc < np.where(np.isnan(self.lloq), -np.inf,
                                                          self.lloq))


@dataclass(frozen=True)
class AnimalTable:
    """The per-animal covariate table: `ids` (n,) and `covariates` {column: (n,) array}
    (``body_weight_g`` as floats in g, other columns as text); `source` the file and `lines`
    (n,) the line of each row (error messages)."""

    ids: tuple[str, ...]
    covariates: dict
    source: str = ""
    lines: tuple[int, ...] = ()

    def body_weight_kg(self, ids, default_kg: float) -> np.ndarray:
        """Body weight (kg) of each animal in `ids`; `default_kg` without a weight column."""
        if "body_weight_g" not in self.covariates:
            return np.full(len(ids), float(default_kg))
        pos = {a: i for i, a in enumerate(self.ids)}
        w = np.asarray(self.covariates["body_weight_g"], float)
        # an animal with PK rows only (not in the table): the study's weight
        return np.array([w[pos[str(a)]] / 1000.0 if str(a) in pos else float(default_kg)
                         for a in ids])


@dataclass(frozen=True)
class Study:
    """A validated mouse study."""

    name: str
    species: str
    body_weight_kg: float
    arms: tuple[Arm, ...]
    burden: BurdenRows
    survival: SurvivalRows
    path: str
    synthetic: bool
    description: str
    data_hash: str  # sha256 of study.toml + both CSV files (+ animals.csv when given)
    animals: AnimalTable | None = None  # the optional per-animal covariate table
    pk: PKRows | None = None  # the optional drug-concentration rows

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    def animal_body_weight_kg(self, ids) -> np.ndarray:
        """Body weight (kg) of each animal in `ids`: from the covariate table, else the
        study's `body_weight_kg` for every animal."""
        if self.animals is None:
            return np.full(len(ids), self.body_weight_kg)
        return self.animals.body_weight_kg(ids, self.body_weight_kg)

    def subset(self, arms, source: str = "arms") -> Study:
        """The same study restricted to some arms (by name), e.g. for quick tests. An unknown
        name or a repeated one raises `InputError` naming `source`."""
        for i, a in enumerate(arms):
            if a in arms[:i]:
                raise InputError(source, "arms", f"duplicate arm {a!r}")
            if a not in self.arm_names:
                raise InputError(source, "arms", f"unknown arm {a!r}"
                                 f"{suggest(a, self.arm_names)}; the study has: "
                                 f"{', '.join(self.arm_names)}")
        keep = [self.arm_names.index(a) for a in arms]
        remap = -np.ones(len(self.arms), int)
        remap[keep] = np.arange(len(keep))

        def sel(rows, cls):
            m = np.isin(rows.arm, keep)
            d = {k: getattr(rows, k) for k in rows.__dataclass_fields__}
            d = {k: v if v is None else v[m] for k, v in d.items()}
            d["arm"] = remap[d["arm"]]
            return cls(**d)

        return Study(self.name, self.species, self.body_weight_kg,
                     tuple(self.arms[i] for i in keep), sel(self.burden, BurdenRows),
                     sel(self.survival, SurvivalRows), self.path, self.synthetic,
                     self.description, self.data_hash + ":" + ",".join(arms), self.animals,
                     None if self.pk is None else sel(self.pk, PKRows))


# ----------------------------------------------------------------------------- reading


def _csv_cells(src, no, line) -> list[str]:
    try:
        return next(csv.reader([line]))
    except csv.Error as e:
        raise InputError(f"{src}:{no}", "row", f"cannot be read as CSV: {e}") from None


def _read_csv(path: Path, required, optional=(), any_other: bool = False):
    """[(line_number, {column: text})] with comment lines skipped; `any_other`: columns beyond
    `required` and `optional` are allowed."""
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the text
    except FileNotFoundError:
        raise InputError(src, "file", "not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(src, "file", f"cannot be read: {e}") from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(src, "file", "empty (needs a header line and at least one row)")
    header_no, header_line = lines[0]
    header = [h.strip() for h in _csv_cells(src, header_no, header_line)]
    for col in required:
        if col not in header:
            raise InputError(f"{src}:{header_no}", col, "missing column "
                             f"(required: {', '.join(required)})")
    for col in header:
        if col not in required and col not in optional and not any_other:
            raise InputError(f"{src}:{header_no}", col,
                             f"unknown column{suggest(col, (*required, *optional))}")
    if len(set(header)) != len(header):
        raise InputError(f"{src}:{header_no}", "header", "duplicate column name")
    rows = []
    for no, ln in lines[1:]:
        cells = [c.strip() for c in _csv_cells(src, no, ln)]
        if len(cells) != len(header):
            raise InputError(f"{src}:{no}", "row",
                             f"has {len(cells)} fields, the header has {len(header)}")
        rows.append((no, dict(zip(header, cells, strict=True))))
    if not rows:
        raise InputError(src, "file", "has a header but no data rows")
    return rows


def _num(src, no, col, text, *, minimum=None, strict=False):
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{src}:{no}", col, f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{src}:{no}", col, f"not a finite number: {text!r}")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        what = {("residual_cells", False): "negative count"}.get((col, strict), "")
        raise InputError(f"{src}:{no}", col,
                         f"{what + ' ' if what else ''}{v:g} must be {'>' if strict else '>='} "
                         f"{minimum:g}")
    return v


def _arm_index(src, no, text, arm_names):
    if text not in arm_names:
        raise InputError(f"{src}:{no}", "arm", f"unknown arm {text!r}{suggest(text, arm_names)}"
                         f" (arms in study.toml: {', '.join(arm_names)})")
    return arm_names.index(text)


def _read_burden(path: Path, arm_names) -> BurdenRows:
    src = str(path)
    out = {k: [] for k in ("mouse_id", "arm", "day", "cells", "detection_limit",
                           "sampled_fraction", "dormant", "proliferating")}
    has = set()
    seen = {}  # mouse_id -> (line, arm, day) of its first row
    for no, r in _read_csv(path, BURDEN_COLUMNS, BURDEN_OPTIONAL):
        if not r["mouse_id"]:
            raise InputError(f"{src}:{no}", "mouse_id", "empty")
        arm, day = r["arm"], _num(src, no, "day", r["day"], minimum=0.0)
        first = seen.setdefault(r["mouse_id"], (no, arm, {}))
        if first[0] != no and first[1] != arm:
            raise InputError(f"{src}:{no}", "mouse_id", f"mouse {r['mouse_id']!r} is in arm "
                             f"{first[1]!r} on line {first[0]}: one arm per mouse")
        if day in first[2]:
            raise InputError(f"{src}:{no}", "mouse_id", f"mouse {r['mouse_id']!r} already has "
                             f"a count on day {day:g} (line {first[2][day]})")
        first[2][day] = no
        out["mouse_id"].append(r["mouse_id"])
        out["arm"].append(_arm_index(src, no, r["arm"], arm_names))
        out["day"].append(_num(src, no, "day", r["day"], minimum=0.0))
        out["cells"].append(_num(src, no, "residual_cells", r["residual_cells"], minimum=0.0))
        out["detection_limit"].append(_num(src, no, "detection_limit", r["detection_limit"],
                                           minimum=0.0, strict=True))
        f = r.get("sampled_fraction", "") or "1"
        fv = _num(src, no, "sampled_fraction", f, minimum=0.0, strict=True)
        if fv > 1:
            raise InputError(f"{src}:{no}", "sampled_fraction", f"{fv:g} must be <= 1")
        out["sampled_fraction"].append(fv)
        split = []
        for col, key in (("dormant_count", "dormant"), ("proliferating_count", "proliferating")):
            if col in r:
                has.add(key)
            text = r.get(col, "")
            split.append(_num(src, no, col, text, minimum=0.0) if text else math.nan)
            out[key].append(split[-1])
        for col in ("clone_cells", "lesion_cells"):  # recorded apart: checked, not fitted
            if r.get(col, ""):
                _num(src, no, col, r[col], minimum=0.0)
        total = out["cells"][-1]
        if not any(math.isnan(v) for v in split) and abs(sum(split) - total) > 1e-6 * max(
                total, 1.0):
            raise InputError(f"{src}:{no}", "dormant_count", f"dormant_count + "
                             f"proliferating_count = {sum(split):g} but residual_cells = "
                             f"{total:g}: the marker counts split the same sample")
    return BurdenRows(np.array(out["mouse_id"]), np.array(out["arm"], int),
                      np.array(out["day"]), np.array(out["cells"]),
                      np.array(out["detection_limit"]), np.array(out["sampled_fraction"]),
                      *(np.array(out[k]) if k in has else None
                        for k in ("dormant", "proliferating")))


def _read_survival(path: Path, arm_names) -> SurvivalRows:
    src = str(path)
    ids, arms, days, events = [], [], [], []
    seen = {}
    for no, r in _read_csv(path, SURVIVAL_COLUMNS):
        if not r["mouse_id"]:
            raise InputError(f"{src}:{no}", "mouse_id", "empty")
        if r["mouse_id"] in seen:
            raise InputError(f"{src}:{no}", "mouse_id", f"mouse {r['mouse_id']!r} already has a "
                             f"row (line {seen[r['mouse_id']]}); one row per mouse")
        seen[r["mouse_id"]] = no
        ids.append(r["mouse_id"])
        arms.append(_arm_index(src, no, r["arm"], arm_names))
        days.append(_num(src, no, "day", r["day"], minimum=0.0, strict=True))
        if r["event"] not in ("0", "1"):
            raise InputError(f"{src}:{no}", "event",
                             f"must be 1 (relapse) or 0 (censored), got {r['event']!r}")
        events.append(int(r["event"]))
    return SurvivalRows(np.array(ids), np.array(arms, int), np.array(days), np.array(events, int))


def _read_pk(path: Path, arm_names, burden: BurdenRows, survival: SurvivalRows) -> PKRows:
    """The drug-concentration rows, checked against the arms and the animals of the study."""
    src = str(path)
    end = float(max(np.max(burden.day, initial=0.0), np.max(survival.day, initial=0.0)))
    arm_of = {str(m): (int(a), f) for f, rows in (("burden.csv", burden),
                                                  ("survival.csv", survival))
              for m, a in zip(rows.mouse_id, rows.arm, strict=True)}
    out = {k: [] for k in ("mouse_id", "arm", "day", "drug", "matrix", "conc", "lloq")}
    for no, r in _read_csv(path, PK_COLUMNS, PK_OPTIONAL):
        mid = r["mouse_id"]
        if not mid:
            raise InputError(f"{src}:{no}", "mouse_id", "empty")
        arm = _arm_index(src, no, r["arm"], arm_names)
        first = arm_of.setdefault(mid, (arm, f"pk.csv line {no}"))
        if first[0] != arm:
            raise InputError(f"{src}:{no}", "mouse_id", f"mouse {mid!r} is in arm "
                             f"{arm_names[first[0]]!r} ({first[1]}): one arm per mouse")
        day = _num(src, no, "day", r["day"], minimum=0.0)
        if day > end:
            raise InputError(f"{src}:{no}", "day", f"{day:g} is after the study's last "
                             f"burden or survival day ({end:g})")
        for col, names, key in (("drug", PK_DRUGS, "drug"), ("matrix", PK_MATRICES, "matrix")):
            if r[col] not in names:
                raise InputError(f"{src}:{no}", col, f"unknown {col} {r[col]!r}"
                                 f"{suggest(r[col], names)} (known: {', '.join(names)})")
            out[key].append(names.index(r[col]))
        text = r.get("lloq_ng_ml", "")
        lloq = _num(src, no, "lloq_ng_ml", text, minimum=0.0, strict=True) if text else math.nan
        if r["conc_ng_ml"]:
            conc = _num(src, no, "conc_ng_ml", r["conc_ng_ml"], minimum=0.0, strict=True)
        elif text:
            conc = math.nan  # below the LLOQ
        else:
            raise InputError(f"{src}:{no}", "conc_ng_ml", "empty without lloq_ng_ml (a value "
                             "below the limit of quantification: leave it empty and give "
                             "lloq_ng_ml)")
        out["mouse_id"].append(mid)
        out["arm"].append(arm)
        out["day"].append(day)
        out["conc"].append(conc)
        out["lloq"].append(lloq)
    return PKRows(np.array(out["mouse_id"]), np.array(out["arm"], int), np.array(out["day"]),
                  np.array(out["drug"], int), np.array(out["matrix"], int),
                  np.array(out["conc"]), np.array(out["lloq"]))


def _read_animals(path: Path, species: str, burden: BurdenRows,
                  survival: SurvivalRows) -> AnimalTable:
    """The covariate table, checked against the animals of the two data files."""
    src = str(path)
    rows = _read_csv(path, ANIMAL_COLUMNS, any_other=True)
    cols = [c for c in rows[0][1] if c != "mouse_id"]
    known = {str(m) for m in burden.mouse_id} | {str(m) for m in survival.mouse_id}
    ids, seen, lines = [], {}, []
    values = {c: [] for c in cols}
    for no, r in rows:
        mid = r["mouse_id"]
        if not mid:
            raise InputError(f"{src}:{no}", "mouse_id", "empty")
        if mid in seen:
            raise InputError(f"{src}:{no}", "mouse_id", f"mouse {mid!r} already has a row "
                             f"(line {seen[mid]}); one row per animal")
        if mid not in known:
            raise InputError(f"{src}:{no}", "mouse_id", f"unknown animal {mid!r}"
                             f"{suggest(mid, sorted(known))}: not in burden.csv or survival.csv")
        seen[mid] = no
        ids.append(mid)
        lines.append(no)
        for c in cols:
            if not r[c]:
                raise InputError(f"{src}:{no}", c, f"missing for animal {mid!r}")
            if c == "body_weight_g":
                w = _num(src, no, c, r[c])
                problem = body_weight_problem(species, w / 1000.0)
                if problem:
                    raise InputError(f"{src}:{no}", c, f"{w:g} g: {problem}")
                values[c].append(w)
            else:
                values[c].append(r[c])
    missing = sorted(known - set(seen))
    if missing:
        raise InputError(src, "mouse_id", f"animal {missing[0]!r} has no row ({len(missing)} "
                         f"animal(s) without one; every animal of the data files needs its "
                         f"covariates: {', '.join(cols) or 'a row'})")
    return AnimalTable(tuple(ids), {c: np.array(v, float if c == "body_weight_g" else object)
                                    for c, v in values.items()}, src, tuple(lines))


def load_study(path: str | Path) -> Study:
    """Load and validate a study directory (or its study.toml)."""
    path = Path(path)
    toml_path = path / "study.toml" if path.is_dir() else path
    root = toml_path.parent
    src = str(toml_path)
    try:
        raw = toml_path.read_bytes()
        doc = tomllib.loads(raw.decode("utf-8-sig"))
    except FileNotFoundError:
        raise InputError(src, "file", "not found (a study directory needs study.toml)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(src, "file", f"malformed TOML: {e}") from None
    for k in doc:
        if k not in ("study", "arms"):
            raise InputError(src, k, f"unknown table{suggest(k, ['study', 'arms'])}")
    meta = doc.get("study")
    if not isinstance(meta, dict):
        raise InputError(src, "study", "missing [study] table")
    for k in meta:
        if k not in STUDY_FIELDS:
            raise InputError(src, f"study.{k}", f"unknown field{suggest(k, STUDY_FIELDS)}")
    species = str(meta.get("species", "mouse"))
    bw = meta.get("body_weight_g", 25.0)
    if isinstance(bw, bool) or not isinstance(bw, (int, float)) or not 0 < bw < 1e6:
        raise InputError(src, "study.body_weight_g", f"must be a weight in grams, got {bw!r}")
    problem = body_weight_problem(species, bw / 1000.0)
    if problem:
        raise InputError(src, "study.body_weight_g", f"{bw:g} g: {problem}")
    arms_doc = doc.get("arms")
    if not isinstance(arms_doc, dict) or not arms_doc:
        raise InputError(src, "arms", "missing: define one [arms.NAME] table per arm")
    arms = []
    for name, entry in arms_doc.items():
        if not isinstance(entry, dict) or "schedule" not in entry:
            raise InputError(src, f"arms.{name}.schedule", "missing (a preset name or a file)")
        for k in entry:
            if k not in ("schedule", "description"):
                raise InputError(src, f"arms.{name}.{k}", "unknown field (known: schedule)")
        ref = str(entry["schedule"])
        target = ref
        if ref.endswith(".toml") and not Path(ref).is_absolute():
            target = str(root / ref)
        try:
            sched = get_schedule(target, species=species)
        except InputError as e:
            raise InputError(src, f"arms.{name}.schedule", e.problem) from None
        arms.append(Arm(name, sched, ref))
    names = [a.name for a in arms]
    burden_path = root / str(meta.get("burden", "burden.csv"))
    survival_path = root / str(meta.get("survival", "survival.csv"))
    burden = _read_burden(burden_path, names)
    survival = _read_survival(survival_path, names)
    animals = pk = None
    h = hashlib.sha256(raw)
    h.update(burden_path.read_bytes())
    h.update(survival_path.read_bytes())
    if "pk" in meta:
        pk_path = root / str(meta["pk"])
        pk = _read_pk(pk_path, names, burden, survival)
        h.update(pk_path.read_bytes())
    if "animals" in meta:
        animals_path = root / str(meta["animals"])
        animals = _read_animals(animals_path, species, burden, survival)
        h.update(animals_path.read_bytes())
    return Study(str(meta.get("name", root.name)), species, float(bw) / 1000.0, tuple(arms),
                 burden, survival, str(root), bool(meta.get("synthetic", False)),
                 str(meta.get("description", "")), h.hexdigest(), animals, pk)


# ----------------------------------------------------------------------------- arrays


class StudyArrays(eqx.Module):
    """The study as padded arrays (A arms; Nb burden rows and Ns mice per arm at most).

    `grid` (G,) holds every distinct day of the study (and 0); `*_idx` index into it.
    `dosing` is a `Dosing` whose arrays carry a leading arm axis (zero-amount padding).
    """

    dosing: Dosing
    grid: jax.Array
    burden_idx: jax.Array  # (A, Nb) int
    burden_log_y: jax.Array  # (A, Nb) log observed count (finite placeholder if censored)
    burden_log_lod: jax.Array  # (A, Nb)
    burden_log_fraction: jax.Array  # (A, Nb)
    burden_censored: jax.Array  # (A, Nb) bool
    burden_mask: jax.Array  # (A, Nb) bool
    surv_idx: jax.Array  # (A, Ns) int
    surv_event: jax.Array  # (A, Ns) float 0/1
    surv_mask: jax.Array  # (A, Ns) bool
    # (A,) body weight (kg) of each unit: the animal's (covariate table) in a population
    # problem, the study's for an arm; not read by the likelihood (covariate models on typical
    # values read the table itself: `population.covariates.study_covariates`)
    body_weight_kg: jax.Array | None = None
    # drug-concentration rows (Np per unit at most); None when the study has no pk.csv
    pk_day: jax.Array | None = None  # (A, Np) days since the first dose
    pk_log_y: jax.Array | None = None  # (A, Np) log observed ng/mL (0 if censored)
    pk_log_lloq: jax.Array | None = None  # (A, Np) log LLOQ (0 if none)
    pk_drug: jax.Array | None = None  # (A, Np) int, index into PK_DRUGS
    pk_plasma: jax.Array | None = None  # (A, Np) bool, plasma (else whole blood)
    pk_censored: jax.Array | None = None  # (A, Np) bool, below the LLOQ
    pk_mask: jax.Array | None = None  # (A, Np) bool


def _pad_events(evs, dtype):
    n = max(e[0].size for e in evs)
    out = []
    for t, a, k, o in evs:
        pad = n - t.size
        out.append((np.concatenate([t, np.zeros(pad)]), np.concatenate([a, np.zeros(pad)]),
                    np.concatenate([k, np.zeros(pad, bool)]),
                    np.concatenate([o, np.ones(pad, bool)])))
    t, a, k, o = (np.stack(x) for x in zip(*out, strict=True))
    return DoseEvents(jnp.asarray(t, dtype), jnp.asarray(a, dtype), jnp.asarray(k),
                      jnp.asarray(o))


def stacked_dosing(schedules, dtype=jnp.float64) -> Dosing:
    """One `Dosing` with a leading axis over schedules, padded with zero-amount doses."""
    return Dosing(hcq=_pad_events([s.events("hcq") for s in schedules], dtype),
                  eve=_pad_events([s.events("eve") for s in schedules], dtype))


def pad_rows(arm, values, n_arms, fill):
    """Group a per-row array by its owner (an arm, or an animal) into (A, N) with padding
    `fill`; also the mask."""
    counts = np.bincount(arm, minlength=n_arms)
    n = max(int(counts.max()) if counts.size else 0, 1)
    out = np.full((n_arms, n), fill, dtype=np.asarray(values).dtype)
    mask = np.zeros((n_arms, n), bool)
    for a in range(n_arms):
        sel = np.flatnonzero(arm == a)
        out[a, :sel.size] = np.asarray(values)[sel]
        mask[a, :sel.size] = True
    return out, mask


def study_grid(study: Study) -> np.ndarray:
    return np.unique(np.concatenate([[0.0], study.burden.day, study.survival.day]))


def study_arrays(study: Study, dtype=jnp.float64) -> StudyArrays:
    A = len(study.arms)
    grid = study_grid(study)
    b, s = study.burden, study.survival
    return unit_arrays(study, b.arm, s.arm, A, np.searchsorted(grid, b.day),
                       np.searchsorted(grid, s.day),
                       stacked_dosing([a.schedule for a in study.arms], dtype), grid, dtype,
                       pk_owner=None if study.pk is None else study.pk.arm)


def unit_arrays(study: Study, burden_owner, surv_owner, n: int, bidx, sidx, dosing, grid,
                dtype=jnp.float64, body_weight_kg=None, pk_owner=None) -> StudyArrays:
    """`StudyArrays` with the observations grouped by unit (an arm, or one animal): burden and
    survival rows of unit u are those whose owner is u, padded and masked; `bidx`/`sidx` index
    each row's day in its unit's `grid`; `body_weight_kg` (n,) per unit (default: the study's
    for every unit)."""
    b, s = study.burden, study.survival
    cens = b.censored
    log_y = np.log(np.where(cens, 1.0, np.maximum(b.cells, 1e-300)))
    cols = {}
    for key, vals, fill in (("bidx", bidx, 0), ("log_y", log_y, 0.0),
                            ("log_lod", np.log(b.detection_limit), 0.0),
                            ("log_f", np.log(b.sampled_fraction), 0.0), ("cens", cens, False)):
        cols[key], bmask = pad_rows(burden_owner, vals, n, fill)
    sidx_p, smask = pad_rows(surv_owner, sidx, n, 0)
    sev, _ = pad_rows(surv_owner, s.event.astype(float), n, 0.0)
    f = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    pk = {}
    if pk_owner is not None:
        r = study.pk
        cens = r.censored
        for key, vals, fill in (
                ("pk_day", r.day, 0.0),
                ("pk_log_y", np.log(np.where(cens, 1.0, r.conc)), 0.0),
                ("pk_log_lloq", np.log(np.where(np.isnan(r.lloq), 1.0, r.lloq)), 0.0),
                ("pk_drug", r.drug, 0), ("pk_plasma", r.matrix == 1, False),
                ("pk_censored", cens, False)):
            v, pk["pk_mask"] = pad_rows(pk_owner, vals, n, fill)
            pk[key] = f(v) if np.asarray(vals).dtype.kind == "f" else jnp.asarray(v)
        pk["pk_mask"] = jnp.asarray(pk["pk_mask"])
    return StudyArrays(
        dosing=dosing, grid=f(grid),
        burden_idx=jnp.asarray(cols["bidx"]), burden_log_y=f(cols["log_y"]),
        burden_log_lod=f(cols["log_lod"]), burden_log_fraction=f(cols["log_f"]),
        burden_censored=jnp.asarray(cols["cens"]), burden_mask=jnp.asarray(bmask),
        surv_idx=jnp.asarray(sidx_p), surv_event=f(sev), surv_mask=jnp.asarray(smask),
        body_weight_kg=f(np.full(n, study.body_weight_kg) if body_weight_kg is None
                         else np.asarray(body_weight_kg, float)), **pk)
