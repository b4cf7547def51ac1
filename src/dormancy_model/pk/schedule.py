"""Treatment schedules as data: parse, validate, expand to exact dose events.

A schedule is a list of dose lines. Each line gives one drug's amount (mg, or mg/kg), route,
dosing interval (a frequency such as QD/BID or `interval_hours`), the days on within a cycle,
the cycle length, number of cycles and start day. Expanding a schedule gives the exact time of
every dose in days; every dose is a bolus event at that time (into the gut depot when oral).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dormancy_model.errors import InputError, suggest
from dormancy_model.io import read_toml
from dormancy_model.units import body_weight_problem

DRUGS = ("hcq", "eve")
DRUG_NAMES = {"hcq": "HCQ", "eve": "EVE"}
ROUTES = ("oral", "iv")
FREQUENCIES = {"QD": 24.0, "BID": 12.0, "TID": 8.0, "QID": 6.0, "QW": 168.0, "Q2D": 48.0}
DOSE_UNITS = ("mg", "mg/kg")
# The dose unit of a line that gives none, by the species of the model it is used with: human
# doses are prescribed in mg, mouse doses in mg/kg. With another species it must be written.
# With no species (library calls) it is mg.
DEFAULT_UNIT = {"human": "mg", "mouse": "mg/kg", None: "mg"}

# Physical and practical limits of a schedule file.
MIN_INTERVAL_HOURS = 1.0  # shorter only with `allow_short_intervals = true`
MAX_DOSES = 1_000_000  # per schedule, all lines together
MAX_CYCLES = 1000
MAX_CYCLE_DAYS = 366
MAX_TREATMENT_DAYS = 100 * 365.25  # start_day + cycles x cycle_days


@dataclass(frozen=True)
class DoseLine:
    """One drug's regimen. `amount` is in `unit` (mg or mg/kg); days_on are 1-based cycle days."""

    drug: str
    amount: float
    unit: str = "mg"
    route: str = "oral"
    interval_hours: float = 24.0
    days_on: tuple[int, ...] = ()
    cycle_days: int = 28
    cycles: int = 1
    start_day: float = 0.0
    first_dose_hour: float = 0.0

    @property
    def end_day(self) -> float:
        return self.start_day + self.cycles * self.cycle_days

    def times(self) -> np.ndarray:
        """Dose times in days, sorted."""
        on = set(self.days_on or range(1, self.cycle_days + 1))
        step = self.interval_hours / 24.0
        n = int(math.floor((self.cycles * self.cycle_days - self.first_dose_hour / 24.0) / step
                           + 1e-9)) + 1
        rel = self.first_dose_hour / 24.0 + step * np.arange(max(n, 0))
        rel = rel[rel < self.cycles * self.cycle_days - 1e-9]
        cycle_day = np.floor(np.mod(rel, self.cycle_days) + 1e-9).astype(int) + 1
        keep = np.array([d in on for d in cycle_day], dtype=bool)
        return self.start_day + rel[keep]

    @property
    def frequency(self) -> str:
        """The dosing frequency as written on a prescription (QD, BID, ...), else q<h>h."""
        return next((k for k, v in FREQUENCIES.items() if v == self.interval_hours),
                    f"q{self.interval_hours:g}h")

    def describe(self) -> str:
        freq = self.frequency
        route = "PO" if self.route == "oral" else "IV"
        days = _days_text(self.days_on, self.cycle_days)
        return (f"{DRUG_NAMES[self.drug]} {self.amount:g} {self.unit} {route} {freq}"
                f"{days}, {self.cycle_days}-day cycles x{self.cycles}"
                + (f" from day {self.start_day:g}" if self.start_day else ""))


def _days_text(days_on, cycle_days):
    if not days_on or len(days_on) == cycle_days:
        return ""
    d = sorted(days_on)
    if d == list(range(d[0], d[-1] + 1)):
        return f" days {d[0]}-{d[-1]}"
    return " days " + ",".join(map(str, d))


@dataclass(frozen=True)
class Schedule:
    """A named treatment schedule: several dose lines (possibly none, for observation)."""

    name: str
    lines: tuple[DoseLine, ...] = ()
    description: str = ""
    body_weight_kg: float | None = None

    @property
    def drugs(self) -> tuple[str, ...]:
        return tuple(sorted({ln.drug for ln in self.lines}))

    @property
    def end_of_treatment(self) -> float:
        """Day the last cycle ends (0 for no treatment)."""
        return max((ln.end_day for ln in self.lines), default=0.0)

    @property
    def start_of_treatment(self) -> float:
        return min((ln.start_day for ln in self.lines), default=0.0)

    @property
    def cycle_days(self) -> int:
        return self.lines[0].cycle_days if self.lines else 28

    def with_cycles(self, cycles: int) -> Schedule:
        if not 1 <= cycles <= MAX_CYCLES:
            raise InputError("--cycles", "cycles", f"must be in [1, {MAX_CYCLES}], got {cycles}")
        lines = tuple(dataclasses.replace(ln, cycles=int(cycles)) for ln in self.lines)
        for ln in lines:
            if ln.end_day > MAX_TREATMENT_DAYS:
                raise InputError("--cycles", "cycles", f"{cycles} cycles of {ln.cycle_days} days "
                                 f"end after day {MAX_TREATMENT_DAYS:g} (100 years)")
        n = sum(_dose_count_bound(ln) for ln in lines)
        if n > MAX_DOSES:
            raise InputError("--cycles", "cycles", f"{cycles} cycles give about {n:,} doses, "
                             f"more than {MAX_DOSES:,}")
        return dataclasses.replace(self, lines=lines)

    def scaled(self, drug: str, factor: float) -> Schedule:
        """Same schedule with one drug's amount multiplied by `factor` (dose reductions)."""
        lines = tuple(dataclasses.replace(ln, amount=ln.amount * factor) if ln.drug == drug else ln
                      for ln in self.lines)
        return dataclasses.replace(self, lines=lines)

    def events(self, drug: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(times_day, amount, per_kg, oral) arrays for one drug, sorted by time.

        `amount` is in mg when per_kg is False, else in mg/kg (multiplied by the body weight in
        the model). A drug that is not given yields one zero-amount event at day 0, so array
        shapes never vanish and an untreated run is exactly the baseline.
        """
        t, a, k, o = [], [], [], []
        for ln in self.lines:
            if ln.drug != drug:
                continue
            tt = ln.times()
            amount, per_kg = ln.amount, ln.unit == "mg/kg"
            if per_kg and self.body_weight_kg is not None:
                amount, per_kg = amount * self.body_weight_kg, False
            t.append(tt)
            a.append(np.full(tt.shape, amount))
            k.append(np.full(tt.shape, per_kg))
            o.append(np.full(tt.shape, ln.route == "oral"))
        if not t or sum(x.size for x in t) == 0:
            return np.zeros(1), np.zeros(1), np.zeros(1, bool), np.ones(1, bool)
        t, a, k, o = (np.concatenate(x) for x in (t, a, k, o))
        order = np.argsort(t, kind="stable")
        return t[order], a[order], k[order], o[order]

    def describe(self) -> str:
        if not self.lines:
            return self.description or "no treatment"
        return "; ".join(ln.describe() for ln in self.lines)


# ----------------------------------------------------------------------------- parsing


def _dose_count_bound(line: DoseLine) -> int:
    """An upper bound of the doses a line gives (before days_on), without expanding it."""
    return int(line.cycles * line.cycle_days * 24.0 / line.interval_hours) + 1


def _parse_days(src, field, value, cycle_days):
    if isinstance(value, str):
        days = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-")
                    a, b = int(a), int(b)
                else:
                    a = b = int(part)
            except ValueError:
                raise InputError(src, field, f"cannot read day range {value!r} "
                                 "(use e.g. \"1-21\" or [1, 2, 3])") from None
            for d in (a, max(a, min(b, cycle_days + 1))):  # the first day outside, if any
                if d < 1 or d > cycle_days:
                    raise InputError(src, field, f"day {d} is outside the {cycle_days}-day cycle")
            if b < a:
                raise InputError(src, field, f"reversed range {part!r} (write {b}-{a})")
            days.extend(range(a, b + 1))
    elif isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                         for d in value):
        days = list(value)
    else:
        raise InputError(src, field, "must be a day range such as \"1-21\" or a list of days")
    if not days:
        raise InputError(src, field, "no days on")
    bad = [d for d in days if d < 1 or d > cycle_days]
    if bad:
        raise InputError(src, field, f"day {bad[0]} is outside the {cycle_days}-day cycle")
    return tuple(sorted(set(days)))


def _number(src, field, value, *, positive=True, integer=False, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            float(value) if abs(value) < 1e300 else math.inf):
        raise InputError(src, field, f"must be a finite number, got {value!r}")
    if integer and int(value) != value:
        raise InputError(src, field, f"must be a whole number, got {value!r}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise InputError(src, field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


LINE_FIELDS = {"drug", "amount", "unit", "route", "frequency", "interval_hours", "days_on",
               "cycle_days", "cycles", "start_day", "first_dose_hour"}
TOP_FIELDS = {"name", "description", "body_weight_kg", "defaults", "dose",
              "allow_short_intervals"}


def parse_schedule(doc: dict, src: str, species: str | None = None) -> Schedule:
    """A validated `Schedule` from a TOML document, or one-line InputError naming `src`.

    `species` (of the model the schedule is used with) sets the default dose unit
    (`DEFAULT_UNIT`) and the plausible range of `body_weight_kg` (`units.BODY_WEIGHT_KG`).
    """
    if not isinstance(doc, dict):
        raise InputError(src, "file", "must be a TOML table")
    for k in doc:
        if k not in TOP_FIELDS:
            raise InputError(src, k, f"unknown field{suggest(k, TOP_FIELDS)}")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputError(src, "defaults", "must be a table")
    for k in defaults:
        if k not in LINE_FIELDS - {"drug", "amount"}:
            raise InputError(src, f"defaults.{k}", f"unknown field{suggest(k, LINE_FIELDS)}")
    doses = doc.get("dose", [])
    if not isinstance(doses, list):
        raise InputError(src, "dose", "must be an array of tables ([[dose]])")
    allow_short = doc.get("allow_short_intervals", False)
    if not isinstance(allow_short, bool):
        raise InputError(src, "allow_short_intervals", f"must be true or false, got "
                         f"{allow_short!r}")
    bw = doc.get("body_weight_kg")
    if bw is not None:
        bw = float(_number(src, "body_weight_kg", bw))
        problem = body_weight_problem(species or "", bw)
        if problem:
            raise InputError(src, "body_weight_kg", problem)
    n_doses = 0
    lines = []
    for i, raw in enumerate(doses):
        where = f"dose[{i}]"
        if not isinstance(raw, dict):
            raise InputError(src, where, "must be a table")
        entry = {**defaults, **raw}
        for k in entry:
            if k not in LINE_FIELDS:
                raise InputError(src, f"{where}.{k}", f"unknown field{suggest(k, LINE_FIELDS)}")
        drug = entry.get("drug")
        if drug is None:
            raise InputError(src, f"{where}.drug", "missing")
        drug_l = str(drug).lower()
        if drug_l in ("hydroxychloroquine", "chloroquine", "cq"):
            drug_l = "hcq"
        if drug_l in ("everolimus", "rad001", "rapamycin", "rapa"):
            drug_l = "eve"
        if drug_l not in DRUGS:
            raise InputError(src, f"{where}.drug",
                             f"unknown drug {drug!r}{suggest(str(drug), DRUGS)}; known: hcq, eve")
        if "amount" not in entry:
            raise InputError(src, f"{where}.amount", "missing")
        amount = float(_number(src, f"{where}.amount", entry["amount"]))
        if "unit" in entry:
            unit = entry["unit"]
        elif species in DEFAULT_UNIT:
            unit = DEFAULT_UNIT[species]
        else:
            raise InputError(src, f"{where}.unit", f"missing: write mg or mg/kg (no default "
                             f"for species {species!r})")
        if unit not in DOSE_UNITS:
            raise InputError(src, f"{where}.unit", f"must be mg or mg/kg, got {unit!r}")
        route = str(entry.get("route", "oral")).lower()
        route = {"po": "oral", "gavage": "oral"}.get(route, route)
        if route not in ROUTES:
            raise InputError(src, f"{where}.route", f"must be oral or iv, got {route!r}")
        if "frequency" in entry and "interval_hours" in entry:
            raise InputError(src, f"{where}.frequency",
                             "give frequency or interval_hours, not both")
        if "interval_hours" in entry:
            interval = float(_number(src, f"{where}.interval_hours", entry["interval_hours"]))
            if interval < MIN_INTERVAL_HOURS and not allow_short:
                raise InputError(src, f"{where}.interval_hours", f"{interval:g} h is below "
                                 f"{MIN_INTERVAL_HOURS:g} h (set allow_short_intervals = true "
                                 "at the top of the file if meant)")
        else:
            freq = str(entry.get("frequency", "QD")).upper()
            if freq not in FREQUENCIES:
                raise InputError(src, f"{where}.frequency", f"unknown frequency {freq!r}; "
                                 f"known: {', '.join(FREQUENCIES)} (or set interval_hours)")
            interval = FREQUENCIES[freq]
        cycle_days = int(_number(src, f"{where}.cycle_days", entry.get("cycle_days", 28),
                                 integer=True))
        if cycle_days > MAX_CYCLE_DAYS:
            raise InputError(src, f"{where}.cycle_days", f"{cycle_days} is above "
                             f"{MAX_CYCLE_DAYS}")
        cycles = int(_number(src, f"{where}.cycles", entry.get("cycles", 1), integer=True))
        if cycles > MAX_CYCLES:
            raise InputError(src, f"{where}.cycles", f"{cycles} is above {MAX_CYCLES}")
        start = float(_number(src, f"{where}.start_day", entry.get("start_day", 0.0),
                              allow_zero=True))
        if start + cycles * cycle_days > MAX_TREATMENT_DAYS:
            raise InputError(src, where, f"treatment ends after day {MAX_TREATMENT_DAYS:g} "
                             "(100 years): check start_day, cycles and cycle_days")
        first = float(_number(src, f"{where}.first_dose_hour", entry.get("first_dose_hour", 0.0),
                              allow_zero=True))
        if first >= 24.0:
            raise InputError(src, f"{where}.first_dose_hour", "must be below 24")
        days = _parse_days(src, f"{where}.days_on", entry.get("days_on", f"1-{cycle_days}"),
                           cycle_days)
        line = DoseLine(drug_l, amount, unit, route, interval, days, cycle_days, cycles, start,
                        first)
        n_doses += _dose_count_bound(line)
        if n_doses > MAX_DOSES:
            raise InputError(src, f"{where}.interval_hours", f"the schedule gives about "
                             f"{n_doses:,} doses, more than {MAX_DOSES:,}")
        if line.times().size == 0:
            raise InputError(src, where, "gives no dose (check days_on, interval_hours, cycles)")
        lines.append(line)
    name = str(doc.get("name", Path(src).stem))
    return Schedule(name, tuple(lines), str(doc.get("description", "")), bw)


def load_schedule(path: str | Path, species: str | None = None) -> Schedule:
    path = str(path)
    doc, _ = read_toml(path)
    return parse_schedule(doc, path, species)

