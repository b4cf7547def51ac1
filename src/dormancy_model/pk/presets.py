"""Named schedule presets (the CLEVER arms, mouse transient/chronic courses) and `get_schedule`.

The CLEVER regimen (DeMichele et al., Nat Med 2025) is defined here once: HCQ 600 mg BID and
everolimus 10 mg QD, orally, every day of 28-day cycles, 6 cycles. The presets `clever-*` and
the trial design (`trials.design`) are built from `CLEVER_REGIMEN`.
"""

from __future__ import annotations

from pathlib import Path

from dormancy_model.errors import InputError, suggest
from dormancy_model.pk.schedule import DoseLine, Schedule, load_schedule

CLEVER_CYCLES = 6
CLEVER_CYCLE_DAYS = 28
_EVERY_DAY = tuple(range(1, CLEVER_CYCLE_DAYS + 1))

# drug -> its CLEVER dose line (day 0 start, CLEVER_CYCLES cycles)
CLEVER_REGIMEN: dict[str, DoseLine] = {
    "hcq": DoseLine("hcq", 600.0, "mg", "oral", 12.0, _EVERY_DAY, CLEVER_CYCLE_DAYS,
                    CLEVER_CYCLES),
    "eve": DoseLine("eve", 10.0, "mg", "oral", 24.0, _EVERY_DAY, CLEVER_CYCLE_DAYS,
                    CLEVER_CYCLES),
}


def _clever(*drugs):
    return tuple(CLEVER_REGIMEN[d] for d in drugs)


def _text(drug):
    ln = CLEVER_REGIMEN[drug]
    return f"{ln.amount:g} {ln.unit} {ln.frequency}"


PRESETS: dict[str, Schedule] = {
    "observation": Schedule("observation", (), "no treatment (observation arm)"),
    "clever-hcq": Schedule("clever-hcq", _clever("hcq"), f"CLEVER arm A: HCQ {_text('hcq')}"),
    "clever-eve": Schedule("clever-eve", _clever("eve"),
                           f"CLEVER arm B: everolimus {_text('eve')}"),
    "clever-combo": Schedule("clever-combo", _clever("hcq", "eve"), "CLEVER arm C: HCQ + EVE"),
}

# Mouse courses. Doses and durations are assumptions (the published mouse doses were not
# found, see docs): once-daily oral gavage, 7-day cycles; transient = 2 weeks, chronic = 8 weeks.
MOUSE_HCQ_MG_KG = (30.0, 60.0, 120.0)
MOUSE_EVE_MG_KG = (1.0, 5.0, 10.0)
MOUSE_DURATIONS = {"transient": 2, "chronic": 8}


def _mouse(drug, mg_kg, weeks):
    return DoseLine(drug, mg_kg, "mg/kg", "oral", 24.0, tuple(range(1, 8)), 7, weeks, 0.0)


PRESETS["mouse-vehicle"] = Schedule("mouse-vehicle", (), "mouse vehicle control (no drug)")
for _dur, _weeks in MOUSE_DURATIONS.items():
    for _h in MOUSE_HCQ_MG_KG:
        _n = f"mouse-hcq{_h:g}-{_dur}"
        PRESETS[_n] = Schedule(_n, (_mouse("hcq", _h, _weeks),), f"mouse HCQ {_h:g} mg/kg, {_dur}")
    for _e in MOUSE_EVE_MG_KG:
        _n = f"mouse-eve{_e:g}-{_dur}"
        PRESETS[_n] = Schedule(_n, (_mouse("eve", _e, _weeks),), f"mouse EVE {_e:g} mg/kg, {_dur}")
    for _h, _e in zip(MOUSE_HCQ_MG_KG, MOUSE_EVE_MG_KG, strict=True):
        _n = f"mouse-combo-hcq{_h:g}-eve{_e:g}-{_dur}"
        PRESETS[_n] = Schedule(_n, (_mouse("hcq", _h, _weeks), _mouse("eve", _e, _weeks)),
                               f"mouse HCQ {_h:g} + EVE {_e:g} mg/kg, {_dur}")


def get_schedule(name_or_path: str, cycles: int | None = None,
                 species: str | None = None) -> Schedule:
    """A preset by name, or a schedule TOML file by path; `cycles` overrides the cycle count;
    `species` (of the model) sets a file's default dose unit and body-weight range."""
    if name_or_path in PRESETS:
        sched = PRESETS[name_or_path]
    elif name_or_path.endswith(".toml") or Path(name_or_path).exists():
        sched = load_schedule(name_or_path, species)
    else:
        raise InputError("--schedule", "schedule",
                         f"unknown preset {name_or_path!r}{suggest(name_or_path, PRESETS)}; "
                         "run `dormancy schedules` for the list, or give a .toml path")
    if cycles is not None:
        sched = sched.with_cycles(cycles)
    return sched
