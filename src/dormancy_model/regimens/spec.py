"""A regimen-design spec as data: decision variables with their feasible sets, the objective,
the virtual population and the constraints (each with its source), read from TOML.

Decision variables (continuous in the relaxation, projected to their feasible sets at the end):

* per drug (`[drug.hcq]`, `[drug.eve]`): the amount per administration, `amount_mg = [lo, hi]`
  (or one number: fixed), feasible in multiples of the tablet strengths `tablet_mg` (sums of at
  most `MAX_TABLETS` tablets); the dosing frequency `frequency` (one or several of QD, BID, ...:
  several are enumerated, each with its own continuous problem); a drug left out is not given;
* `days_on = [lo, hi]`: on-days per cycle (days 1..n of each cycle, both drugs), whole days;
* `cycles = [lo, hi]`: number of cycles, whole cycles; `cycle_days`: the cycle length, one
  number or a list of choices (e.g. [21, 28]: enumerated like the frequencies; days_on is
  capped at each cycle's length).

Objective (`[objective]`): `kind = "rfs"` (mean relapse-free probability at `years`),
`"clearance"` (mean probability that no DTC is left at `day`, P = exp(-N(day)) for N residual
cells: the Poisson law of independent survivors) or `"residual"` (mean residual DTCs at `day`,
minimised). `day` defaults to the end of the longest allowed regimen.

Constraints (`[[constraint]]`, every one needs a `source` string):

* `kind = "trough"`: `drug`, `max_ng_ml`, `fraction` (the share of patients whose steady-state
  trough must stay below the limit);
* `kind = "daily_dose"`: `drug`, `max_mg` per day, or `max_mg_kg` per day per kg of the
  patients' body weight (with `fraction`);
* `kind = "treatment_days"`: `max_days`, the cumulative on-days (days_on x cycles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dormancy_model.errors import InputError, check_seed, suggest
from dormancy_model.io import read_toml
from dormancy_model.pk.schedule import DRUGS, FREQUENCIES

MAX_TABLETS = 8  # tablets per administration
OBJECTIVES = ("rfs", "clearance", "residual")
CONSTRAINTS = ("trough", "daily_dose", "treatment_days")
MAX_PATIENTS = 100_000
MAX_STARTS = 64


@dataclass(frozen=True)
class Bounds:
    lo: float
    hi: float

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi


@dataclass(frozen=True)
class DrugChoice:
    """One drug's decision variables: amount per administration (mg) and frequency choices."""

    drug: str
    amount: Bounds
    tablets: tuple[float, ...]
    frequencies: tuple[str, ...] = ("QD",)

    def allowed_amounts(self) -> tuple[float, ...]:
        """Every amount within bounds that is a sum of at most MAX_TABLETS tablets (sorted)."""
        sums = {0.0}
        for _ in range(MAX_TABLETS):
            sums |= {round(s + t, 9) for s in sums for t in self.tablets}
        return tuple(sorted(s for s in sums if self.amount.lo - 1e-9 <= s <= self.amount.hi
                            + 1e-9 and s > 0))


@dataclass(frozen=True)
class Constraint:
    kind: str
    source: str
    drug: str = ""
    limit: float = 0.0  # ng/mL (trough), mg or mg/kg per day (daily_dose), days
    per_kg: bool = False
    fraction: float = 1.0

    @property
    def name(self) -> str:
        if self.kind == "trough":
            return f"{self.drug} trough <= {self.limit:g} ng/mL in {self.fraction:.0%}"
        if self.kind == "daily_dose":
            unit = "mg/kg" if self.per_kg else "mg"
            return f"{self.drug} daily dose <= {self.limit:g} {unit}" + (
                f" in {self.fraction:.0%}" if self.per_kg else "")
        return f"treatment days <= {self.limit:g}"


@dataclass(frozen=True)
class DesignSpec:
    """A validated regimen-design problem (see the module doc). Units: mg, days, ng/mL."""

    name: str
    drugs: tuple[DrugChoice, ...]
    days_on: Bounds
    cycles: Bounds
    cycle_days: int = 28  # the longest of `cycle_lengths`
    objective: str = "rfs"
    years: float = 3.0
    day: float | None = None
    constraints: tuple[Constraint, ...] = ()
    model: str = "human"
    calibration: str | None = None  # None: the packaged CLEVER calibration; "": none
    patients: int = 1000
    search_patients: int = 200
    seed: int = 1
    starts: int = 3
    source: str = "<spec>"
    notes: tuple[str, ...] = field(default=())
    cycle_lengths: tuple[int, ...] = ()  # the choices; () means (cycle_days,)

    @property
    def cycle_choices(self) -> tuple[int, ...]:
        return self.cycle_lengths or (self.cycle_days,)

    def for_cycle_length(self, cycle_days: int) -> DesignSpec:
        """The spec with one cycle length: days_on capped at it, the objective read on the
        same day as for every other choice."""
        import dataclasses

        return dataclasses.replace(
            self, cycle_days=int(cycle_days), cycle_lengths=(int(cycle_days),),
            days_on=Bounds(self.days_on.lo, min(self.days_on.hi, cycle_days)),
            day=None if self.objective == "rfs" else self.objective_day)

    @property
    def objective_day(self) -> float:
        if self.objective == "rfs":
            return self.years * 365.25
        return self.day if self.day is not None else self.cycles.hi * max(self.cycle_choices)

    def drug(self, name: str) -> DrugChoice | None:
        return next((d for d in self.drugs if d.drug == name), None)

    def frequency_options(self) -> list[dict[str, str]]:
        """Every combination of the drugs' frequency choices, e.g. [{'hcq': 'BID', ...}]."""
        combos = [{}]
        for d in self.drugs:
            combos = [{**c, d.drug: f} for c in combos for f in d.frequencies]
        return combos


def _num(src, fld, v, *, lo=None, hi=None, integer=False, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(src, fld, f"must be a number, got {v!r}")
    if not math.isfinite(v):
        raise InputError(src, fld, f"must be finite, got {v!r}")
    if integer and int(v) != v:
        raise InputError(src, fld, f"must be a whole number, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InputError(src, fld, f"must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise InputError(src, fld, f"must be <= {hi:g}, got {v!r}")
    return int(v) if integer else float(v)


def _bounds(src, fld, v, **kw) -> Bounds:
    if isinstance(v, list):
        if len(v) != 2:
            raise InputError(src, fld, f"must be [low, high] or one number, got {v!r}")
        lo, hi = (_num(src, fld, x, **kw) for x in v)
        if lo > hi:
            raise InputError(src, fld, f"low {lo:g} is above high {hi:g}")
        return Bounds(lo, hi)
    x = _num(src, fld, v, **kw)
    return Bounds(x, x)


def _keys(src, where, table, known):
    if not isinstance(table, dict):
        raise InputError(src, where, "must be a table")
    for k in table:
        if k not in known:
            raise InputError(src, f"{where}.{k}" if where else k,
                             f"unknown field{suggest(k, known)}")


def _str(src, fld, v) -> str:
    if not isinstance(v, str) or not v.strip():
        raise InputError(src, fld, f"must be a non-empty string, got {v!r}")
    return v


TOP = {"design", "drug", "objective", "constraint", "population"}


def parse_design_spec(doc: dict, src: str) -> DesignSpec:
    """A validated `DesignSpec` from a TOML document, else a one-line InputError naming src."""
    _keys(src, "", doc, TOP)
    top = doc.get("design", {})
    _keys(src, "design", top, {"name", "days_on", "cycles", "cycle_days", "starts", "seed"})
    raw_cd = top.get("cycle_days", 28)
    raw_cd = raw_cd if isinstance(raw_cd, list) else [raw_cd]
    if not raw_cd:
        raise InputError(src, "design.cycle_days", "needs at least one cycle length")
    lengths = [_num(src, "design.cycle_days", c, lo=1, hi=366, integer=True) for c in raw_cd]
    if len(set(lengths)) != len(lengths):
        raise InputError(src, "design.cycle_days", "lists a cycle length twice")
    lengths = tuple(sorted(lengths))
    cycle_days = lengths[-1]
    days_on = _bounds(src, "design.days_on", top.get("days_on", cycle_days), lo=1,
                      hi=cycle_days, integer=True)
    if days_on.lo > lengths[0]:
        raise InputError(src, "design.days_on", f"at least {days_on.lo:g} days on do not fit "
                         f"the {lengths[0]}-day cycle")
    cycles = _bounds(src, "design.cycles", top.get("cycles", 6), lo=1, hi=24, integer=True)
    starts = _num(src, "design.starts", top.get("starts", 3), lo=1, hi=MAX_STARTS, integer=True)
    seed = check_seed(src, "design.seed", top.get("seed", 1))

    drugs_doc = doc.get("drug", {})
    _keys(src, "drug", drugs_doc, set(DRUGS))
    if not drugs_doc:
        raise InputError(src, "drug", "at least one drug ([drug.hcq] or [drug.eve]) is needed")
    drugs = []
    for name in DRUGS:
        if name not in drugs_doc:
            continue
        where = f"drug.{name}"
        d = drugs_doc[name]
        _keys(src, where, d, {"amount_mg", "tablet_mg", "frequency"})
        if "amount_mg" not in d:
            raise InputError(src, f"{where}.amount_mg", "missing")
        amount = _bounds(src, f"{where}.amount_mg", d["amount_mg"], lo=0, lo_open=True,
                         hi=1e5)
        tabs = d.get("tablet_mg", [amount.lo])
        tabs = tabs if isinstance(tabs, list) else [tabs]
        if not tabs:
            raise InputError(src, f"{where}.tablet_mg", "needs at least one strength")
        tabs = tuple(sorted({_num(src, f"{where}.tablet_mg", t, lo=0, lo_open=True, hi=1e5)
                             for t in tabs}))
        freqs = d.get("frequency", ["QD"])
        freqs = freqs if isinstance(freqs, list) else [freqs]
        if not freqs:
            raise InputError(src, f"{where}.frequency", "needs at least one frequency")
        out = []
        for f in freqs:
            if not isinstance(f, str) or f.upper() not in FREQUENCIES:
                raise InputError(src, f"{where}.frequency", f"unknown frequency {f!r}; known: "
                                 f"{', '.join(FREQUENCIES)}")
            if FREQUENCIES[f.upper()] > 24.0 * lengths[0]:
                raise InputError(src, f"{where}.frequency", f"{f} is longer than a cycle")
            out.append(f.upper())
        if len(set(out)) != len(out):
            raise InputError(src, f"{where}.frequency", "lists a frequency twice")
        choice = DrugChoice(name, amount, tabs, tuple(out))
        if not choice.allowed_amounts():
            raise InputError(src, f"{where}.tablet_mg", f"no sum of at most {MAX_TABLETS} "
                             f"tablets of {', '.join(f'{t:g}' for t in tabs)} mg lies in "
                             f"[{amount.lo:g}, {amount.hi:g}] mg")
        drugs.append(choice)

    obj = doc.get("objective", {})
    _keys(src, "objective", obj, {"kind", "years", "day"})
    kind = obj.get("kind", "rfs")
    if kind not in OBJECTIVES:
        raise InputError(src, "objective.kind", f"unknown objective {kind!r}"
                         f"{suggest(str(kind), OBJECTIVES)}; known: {', '.join(OBJECTIVES)}")
    years = _num(src, "objective.years", obj.get("years", 3.0), lo=0, lo_open=True, hi=20)
    day = obj.get("day")
    if day is not None:
        if kind == "rfs":
            raise InputError(src, "objective.day", "rfs is read at `years`, not `day`")
        day = _num(src, "objective.day", day, lo=0, lo_open=True, hi=20 * 365.25)

    pop = doc.get("population", {})
    _keys(src, "population", pop, {"model", "calibration", "patients", "search_patients"})
    model = pop.get("model", "human")
    if model != "human":
        raise InputError(src, "population.model", "the virtual CLEVER population is human "
                         f"(model = \"human\"), got {model!r}")
    calibration = pop.get("calibration")
    if calibration is not None and not isinstance(calibration, str):
        raise InputError(src, "population.calibration", "must be a file path or \"\"")
    patients = _num(src, "population.patients", pop.get("patients", 1000), lo=2,
                    hi=MAX_PATIENTS, integer=True)
    search = _num(src, "population.search_patients", pop.get("search_patients",
                                                            min(200, patients)),
                  lo=2, hi=patients, integer=True)

    cons = doc.get("constraint", [])
    if not isinstance(cons, list):
        raise InputError(src, "constraint", "must be an array of tables ([[constraint]])")
    names = {d.drug for d in drugs}
    out_c = []
    for i, c in enumerate(cons):
        where = f"constraint[{i}]"
        _keys(src, where, c, {"kind", "source", "drug", "max_ng_ml", "max_mg", "max_mg_kg",
                              "fraction", "max_days"})
        ck = c.get("kind")
        if ck not in CONSTRAINTS:
            raise InputError(src, f"{where}.kind", f"unknown constraint {ck!r}"
                             f"{suggest(str(ck), CONSTRAINTS)}; known: {', '.join(CONSTRAINTS)}")
        if "source" not in c:
            raise InputError(src, f"{where}.source", "missing: say where the limit comes from "
                             "(a reference, or \"assumption: why\")")
        source = _str(src, f"{where}.source", c["source"])
        fraction = _num(src, f"{where}.fraction", c.get("fraction", 1.0), lo=0, lo_open=True,
                        hi=1)
        if ck == "treatment_days":
            if "max_days" not in c:
                raise InputError(src, f"{where}.max_days", "missing")
            lim = _num(src, f"{where}.max_days", c["max_days"], lo=1, hi=24 * 366)
            out_c.append(Constraint(ck, source, limit=lim))
            continue
        drug = c.get("drug")
        if drug not in names:
            raise InputError(src, f"{where}.drug", f"must be one of the designed drugs "
                             f"({', '.join(sorted(names))}), got {drug!r}")
        if ck == "trough":
            if "max_ng_ml" not in c:
                raise InputError(src, f"{where}.max_ng_ml", "missing")
            lim = _num(src, f"{where}.max_ng_ml", c["max_ng_ml"], lo=0, lo_open=True, hi=1e6)
            out_c.append(Constraint(ck, source, drug, lim, False, fraction))
        else:
            if ("max_mg" in c) == ("max_mg_kg" in c):
                raise InputError(src, where, "daily_dose needs exactly one of max_mg, max_mg_kg")
            per_kg = "max_mg_kg" in c
            fld = "max_mg_kg" if per_kg else "max_mg"
            lim = _num(src, f"{where}.{fld}", c[fld], lo=0, lo_open=True, hi=1e6)
            out_c.append(Constraint(ck, source, drug, lim, per_kg, fraction))
    return DesignSpec(
        name=str(top.get("name", Path(src).stem)), drugs=tuple(drugs), days_on=days_on,
        cycles=cycles, cycle_days=cycle_days, cycle_lengths=lengths, objective=kind,
        years=years, day=day,
        constraints=tuple(out_c), model=model, calibration=calibration, patients=patients,
        search_patients=search, seed=seed, starts=starts, source=src)


def load_design_spec(path: str | Path) -> DesignSpec:
    path = str(path)
    doc, _ = read_toml(path)
    return parse_design_spec(doc, path)
