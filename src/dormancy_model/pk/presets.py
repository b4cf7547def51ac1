"""Named schedule presets: the CLEVER arms and mouse transient/chronic courses."""

from __future__ import annotations

from dormancy_model.pk.schedule import DoseLine, Schedule

CLEVER_CYCLES = 6
CYCLE = 28


def _hcq(cycles=CLEVER_CYCLES, start=0.0):
    return DoseLine("hcq", 600.0, "mg", "oral", 12.0, tuple(range(1, CYCLE + 1)), CYCLE, cycles,
                    start)


def _eve(cycles=CLEVER_CYCLES, start=0.0):
    return DoseLine("eve", 10.0, "mg", "oral", 24.0, tuple(range(1, CYCLE + 1)), CYCLE, cycles,
                    start)


PRESETS: dict[str, Schedule] = {
    "observation": Schedule("observation", (), "no treatment (observation arm)"),
    "clever-hcq": Schedule("clever-hcq", (_hcq(),), "CLEVER arm A: HCQ 600 mg BID"),
    "clever-eve": Schedule("clever-eve", (_eve(),), "CLEVER arm B: everolimus 10 mg QD"),
    "clever-combo": Schedule("clever-combo", (_hcq(), _eve()), "CLEVER arm C: HCQ + EVE"),
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
