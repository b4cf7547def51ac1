"""A trial design as data: the CLEVER protocol and its variants (what-if designs).

CLEVER (DeMichele et al., Nat Med 2025; ESMO 2023 244MO; ../shared/domain/clever.md):
screening bone-marrow aspirate (DTC+ if >= 1 pan-CK+ cell), randomisation to HCQ 600 mg BID,
EVE 10 mg QD or both (15/15/21 treated), 28-day cycles x6 (the regimen is the preset
`clever-combo`, `pk.presets.CLEVER_REGIMEN`); aspirates after cycles 3 and 6 (and
12 if given) and 6 months after the end of treatment; patients still DTC+ after cycle 6 get 6
more cycles of HCQ+EVE; median follow-up 42 months (range 7-60); 13 patients had a repeat
aspirate after a 3-month observation period.

Modelling choices (documented assumptions):
* The observation comparator is a separate arm of `observation_n` DTC+ patients with one
  aspirate after `observation_days` (84) without drug; it is used only for the comparison of
  DTC counts, not for RFS (in CLEVER these patients went on to treatment; which drug is NOT
  FOUND).
* Follow-up: the administrative censoring time of each patient is
  min + (max - min) * B with B ~ Beta(a, 1), a chosen so that the median is 42 months (staggered
  accrual with more patients enrolled later), range 7-60 months.
* Early discontinuation: each treated patient stops for toxicity with probability
  `discontinuation_prob` at a cycle drawn uniformly among the planned ones (CLEVER: 1 of 51 for a
  grade 3 toxicity). Default 0 (off).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from dormancy_model.errors import InputError, check_range, one_line
from dormancy_model.pk.presets import CLEVER_CYCLES, PRESETS
from dormancy_model.pk.schedule import DoseLine, Schedule

MONTH_DAYS = 365.25 / 12
DRUGS = ("hcq", "eve")
MAX_ARM_N = 100_000  # patients per arm (and in the observation arm)
MAX_DESIGN_CYCLES = 100  # planned cycles, and extension cycles
MAX_DOSE_FACTOR = 10.0  # an arm's dose factor on the regimen
MAX_DAYS = 3650.0  # post-treatment aspirate and observation period
MAX_FOLLOWUP_MONTHS = 1200.0  # 100 years


def _whole(src: str, field: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(src, field, f"must be a whole number in [{lo}, {hi}], got {v!r}")
    return v


@dataclass(frozen=True)
class Arm:
    """An arm: name, drugs given (subset of hcq, eve; empty = untreated control followed like
    the treated arms, never extended), patients, dose factor per drug."""

    name: str
    drugs: tuple[str, ...]
    n: int
    hcq_factor: float = 1.0
    eve_factor: float = 1.0

    @property
    def label(self) -> str:
        parts = []
        for d in self.drugs:
            f = self.hcq_factor if d == "hcq" else self.eve_factor
            parts.append(d.upper() + (f" x{f:g}" if f != 1.0 else ""))
        return "+".join(parts) or "none"


@dataclass(frozen=True)
class TrialDesign:
    """A trial protocol as data. Days are counted from the first dose (day 0).

    `regimen`: one dose line per drug (hcq and eve: amount, dosing interval, on-days, cycle
    length), given orally on its on-days of each cycle from day 0 (CLEVER: every day); the
    number of cycles is `cycles`.
    """

    name: str
    arms: tuple[Arm, ...]
    cycles: int = CLEVER_CYCLES
    regimen: Schedule = PRESETS["clever-combo"]
    assess_after_cycles: tuple[int, ...] = (3, 6)
    extension_cycles: int = 6  # HCQ+EVE for patients DTC+ at the last planned assessment
    extension_drugs: tuple[str, ...] = ("hcq", "eve")
    post_treatment_days: float = 182.0  # aspirate 6 months after the end of treatment
    observation_n: int = 13
    observation_days: float = 84.0
    followup_median_months: float = 42.0
    followup_min_months: float = 7.0
    followup_max_months: float = 60.0
    discontinuation_prob: float = 0.0

    def __post_init__(self):
        src = f"design {one_line(self.name)}"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(src, "name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.arms, tuple) or not self.arms:
            raise InputError(src, "arms", "at least one treated arm is needed")
        for a in self.arms:
            if not isinstance(a, Arm):
                raise InputError(src, "arms", f"must be Arm records, got {a!r}")
            if not isinstance(a.name, str) or not a.name:
                raise InputError(src, "arms.name", f"must be a non-empty string, got {a.name!r}")
            _whole(src, f"arms.{a.name}.n", a.n, 1, MAX_ARM_N)
            if (not isinstance(a.drugs, tuple) or any(d not in DRUGS for d in a.drugs)
                    or len(set(a.drugs)) != len(a.drugs)):
                raise InputError(src, f"arms.{a.name}.drugs",
                                 "must be a subset of hcq, eve (empty: untreated control)")
            for drug in DRUGS:
                check_range(src, f"arms.{a.name}.{drug}_factor", getattr(a, f"{drug}_factor"),
                            0, MAX_DOSE_FACTOR, note="(a factor on the regimen's dose)")
        if len({a.name for a in self.arms}) != len(self.arms):
            raise InputError(src, "arms", "arm names must be unique")
        _whole(src, "cycles", self.cycles, 1, MAX_DESIGN_CYCLES)
        if (not isinstance(self.assess_after_cycles, tuple)
                or any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= self.cycles
                       for c in self.assess_after_cycles)):
            raise InputError(src, "assess_after_cycles", "must be whole numbers within "
                             f"1..cycles ({self.cycles}), got {self.assess_after_cycles!r}")
        _whole(src, "extension_cycles", self.extension_cycles, 0, MAX_DESIGN_CYCLES)
        if (not isinstance(self.extension_drugs, tuple)
                or any(d not in DRUGS for d in self.extension_drugs)):
            raise InputError(src, "extension_drugs", "must be a subset of hcq, eve")
        check_range(src, "post_treatment_days", self.post_treatment_days, 0, MAX_DAYS)
        _whole(src, "observation_n", self.observation_n, 0, MAX_ARM_N)
        check_range(src, "observation_days", self.observation_days, 0, MAX_DAYS, lo_open=True)
        f = (self.followup_min_months, self.followup_median_months, self.followup_max_months)
        if not (all(not isinstance(x, bool) and isinstance(x, (int, float)) for x in f)
                and 0 < f[0] < f[1] < f[2] <= MAX_FOLLOWUP_MONTHS):
            raise InputError(src, "followup", "need 0 < min < median < max <= "
                             f"{MAX_FOLLOWUP_MONTHS:g} months, got {f!r}")
        check_range(src, "discontinuation_prob", self.discontinuation_prob, 0, 1)
        if not isinstance(self.regimen, Schedule):
            raise InputError(src, "regimen", f"must be a Schedule, got {self.regimen!r}")
        lines = self.regimen.lines
        if sorted(ln.drug for ln in lines) != ["eve", "hcq"]:
            raise InputError(src, "regimen", "needs exactly one dose line per drug (hcq, eve)")
        for ln in lines:
            if (ln.unit != "mg" or ln.route != "oral" or ln.start_day or ln.first_dose_hour
                    or ln.cycle_days != lines[0].cycle_days):
                raise InputError(src, f"regimen.{ln.drug}", "the trial gives oral mg doses on "
                                 "the on-days of equal cycles from day 0 (first dose at hour 0)")

    # ------------------------------------------------------------------ derived quantities
    def dose_line(self, drug: str) -> DoseLine:
        """The regimen's dose line of `drug` (amount per dose, interval)."""
        return next(ln for ln in self.regimen.lines if ln.drug == drug)

    @property
    def cycle_days(self) -> int:
        return self.regimen.cycle_days

    @property
    def n_treated(self) -> int:
        return sum(a.n for a in self.arms)

    @property
    def max_cycles(self) -> int:
        return self.cycles + self.extension_cycles

    def assessment_days(self) -> dict[str, float]:
        """On-treatment assessment days: 'C3' -> 84 and so on (end of that cycle)."""
        return {f"C{c}": float(c * self.cycle_days) for c in self.assess_after_cycles}

    @property
    def end_of_planned_treatment(self) -> float:
        return float(self.cycles * self.cycle_days)

    @property
    def end_of_extension(self) -> float:
        return float(self.max_cycles * self.cycle_days)

    @property
    def followup_beta_a(self) -> float:
        """Shape a of Beta(a, 1) giving the median follow-up: median = 0.5 ** (1 / a)."""
        q = ((self.followup_median_months - self.followup_min_months)
             / (self.followup_max_months - self.followup_min_months))
        return math.log(0.5) / math.log(q)

    @property
    def horizon_days(self) -> float:
        return self.followup_max_months * MONTH_DAYS

    # ------------------------------------------------------------------ variants
    def with_cycles(self, cycles: int) -> TrialDesign:
        """Same design with `cycles` planned cycles; assessments kept where they still fit,
        the last planned cycle is always assessed (it decides the extension)."""
        keep = tuple(c for c in self.assess_after_cycles if c < cycles) + (cycles,)
        return dataclasses.replace(self, name=f"{self.name}-c{cycles}", cycles=cycles,
                                   assess_after_cycles=tuple(sorted(set(keep))))

    def with_sizes(self, sizes) -> TrialDesign:
        """Arm sizes: an int (every arm) or a sequence (one per arm)."""
        if isinstance(sizes, int):
            sizes = [sizes] * len(self.arms)
        arms = tuple(dataclasses.replace(a, n=int(n)) for a, n in zip(self.arms, sizes,
                                                                       strict=True))
        return dataclasses.replace(self, arms=arms)

    def with_dose_factor(self, drug: str, factor: float) -> TrialDesign:
        """Every arm's dose of `drug` multiplied by `factor` (dose reduction)."""
        key = f"{drug}_factor"
        arms = tuple(dataclasses.replace(a, **{key: getattr(a, key) * factor})
                     for a in self.arms)
        return dataclasses.replace(self, name=f"{self.name}-{drug}x{factor:g}", arms=arms)

    def replace(self, **kw) -> TrialDesign:
        return dataclasses.replace(self, **kw)

    def describe(self) -> str:
        arms = ", ".join(f"{a.name} ({a.label}) n={a.n}" for a in self.arms)
        hcq, eve = self.dose_line("hcq"), self.dose_line("eve")
        return (f"{self.name}: {arms}; {self.cycles} x {self.cycle_days}-day cycles, HCQ "
                f"{hcq.amount:g} mg {hcq.frequency}, EVE {eve.amount:g} mg {eve.frequency}; "
                f"aspirates after cycles "
                f"{', '.join(map(str, self.assess_after_cycles))} and "
                f"{self.post_treatment_days:g} days after treatment; "
                f"{self.extension_cycles} extension cycles of "
                f"{'+'.join(d.upper() for d in self.extension_drugs)} if DTC+ after cycle "
                f"{self.cycles}; observation arm n={self.observation_n}; follow-up median "
                f"{self.followup_median_months:g} months (range {self.followup_min_months:g}-"
                f"{self.followup_max_months:g})")


def clever_design(sizes=(15, 15, 21), *, cycles: int = 6, observation_n: int = 13,
                  **kw) -> TrialDesign:
    """The CLEVER phase 2 design: HCQ (n=15), EVE (n=15), HCQ+EVE (n=21) treated patients."""
    arms = (Arm("HCQ", ("hcq",), 15), Arm("EVE", ("eve",), 15), Arm("HCQ+EVE", ("hcq", "eve"), 21))
    d = TrialDesign("clever", arms, observation_n=observation_n, **kw).with_sizes(
        list(sizes) if not isinstance(sizes, int) else sizes)
    if cycles != d.cycles:
        d = d.with_cycles(cycles)
    return d


DESIGNS = {"clever": clever_design}


def get_design(name: str) -> TrialDesign:
    if name not in DESIGNS:
        from dormancy_model.errors import suggest

        raise InputError("--design", "design", f"unknown design {name!r}{suggest(name, DESIGNS)};"
                         f" known: {', '.join(DESIGNS)}")
    return DESIGNS[name]()
