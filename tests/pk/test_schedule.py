"""Schedules: exact dose times, presets, validation errors."""

import numpy as np
import pytest

import dormancy_model as dm
from dormancy_model.pk.schedule import parse_schedule


def test_clever_combo_dose_times():
    s = dm.get_schedule("clever-combo")
    t_h, a_h, _, oral = s.events("hcq")
    t_e, a_e, _, _ = s.events("eve")
    assert len(t_h) == 6 * 28 * 2 and np.all(a_h == 600.0) and np.all(oral)
    np.testing.assert_allclose(t_h, np.arange(0, 168, 0.5))
    np.testing.assert_allclose(t_e, np.arange(0, 168, 1.0))
    assert s.end_of_treatment == 168.0
    assert len(dm.get_schedule("clever-hcq", cycles=3).events("hcq")[0]) == 3 * 56


def test_days_on_interval_start_and_per_kg(tmp_path):
    doc = {"name": "x", "defaults": {"cycle_days": 28, "cycles": 2},
           "dose": [{"drug": "hcq", "amount": 400, "frequency": "BID", "days_on": "1-21",
                     "start_day": 7},
                    {"drug": "eve", "amount": 50, "interval_hours": 168},
                    {"drug": "eve", "amount": 2, "unit": "mg/kg", "route": "iv", "days_on": [3]}]}
    s = parse_schedule(doc, "x.toml")
    t, _, _, _ = s.events("hcq")
    assert len(t) == 2 * 21 * 2
    day_in_cycle = np.floor(np.mod(t - 7, 28)) + 1
    assert day_in_cycle.max() == 21 and t.min() == 7.0
    te, ae, kg, oral = s.events("eve")
    weekly = te[ae == 50]
    np.testing.assert_allclose(weekly, [0, 7, 14, 21, 28, 35, 42, 49])
    iv = te[ae == 2]
    np.testing.assert_allclose(iv, [2, 30])
    assert np.all(kg[ae == 2]) and not np.any(oral[ae == 2])


def test_exact_dose_events_are_boluses(model, human):
    """A single oral dose: concentration is zero up to the dose (plus lag) and positive after."""
    s = dm.Schedule("one", (dm.DoseLine("eve", 10.0, "mg", "oral", 24.0, (1,), 30, 1, 2.0),))
    lag = float(human["eve_tlag"])
    ts = np.array([0.0, 2.0, 2.0 + lag, 2.0 + lag + 1e-3, 3.0])
    tr = dm.simulate(model, human, s, ts=ts)
    c = np.asarray(tr.eve_ng_ml)
    assert c[0] == 0 and c[1] == 0 and c[2] == 0 and c[3] > 0 and c[4] > 0


def test_presets_list_and_mouse_presets():
    names = set(dm.PRESETS)
    for n in ("observation", "clever-hcq", "clever-eve", "clever-combo", "mouse-vehicle",
              "mouse-hcq60-transient", "mouse-hcq60-chronic", "mouse-eve5-chronic",
              "mouse-combo-hcq60-eve5-chronic"):
        assert n in names
    assert dm.PRESETS["mouse-eve5-chronic"].end_of_treatment == 56.0
    assert dm.PRESETS["mouse-eve5-transient"].end_of_treatment == 14.0


BAD = [
    ({"dose": [{"drug": "aspirin", "amount": 1}]}, "dose[0].drug", "unknown drug"),
    ({"dose": [{"drug": "hcq", "amount": -5}]}, "dose[0].amount", "> 0"),
    ({"dose": [{"drug": "hcq", "amount": 0}]}, "dose[0].amount", "> 0"),
    ({"dose": [{"drug": "hcq", "amount": "lots"}]}, "dose[0].amount", "number"),
    ({"dose": [{"drug": "hcq", "amount": 5, "days_on": "1-30"}]}, "dose[0].days_on",
     "outside the 28-day cycle"),
    ({"dose": [{"drug": "hcq", "amount": 5, "unit": "g"}]}, "dose[0].unit", "mg or mg/kg"),
    ({"dose": [{"drug": "hcq", "amount": 5, "frequency": "XYZ"}]}, "dose[0].frequency", "unknown"),
    ({"dose": [{"drug": "hcq", "amount": 5, "cycles": 0}]}, "dose[0].cycles", "> 0"),
    ({"dose": [{"drug": "hcq", "amount": 5, "colour": "red"}]}, "dose[0].colour", "unknown field"),
]


@pytest.mark.parametrize("doc,field,problem", BAD)
def test_bad_schedules_name_field_and_problem(doc, field, problem):
    with pytest.raises(dm.InputError) as e:
        parse_schedule(doc, "bad.toml")
    msg = str(e.value)
    assert msg.startswith("bad.toml: ") and field in msg and problem in msg
    assert "\n" not in msg


def test_unknown_preset_and_malformed_toml(tmp_path):
    with pytest.raises(dm.InputError, match="unknown preset 'clever-comb'.*clever-combo"):
        dm.get_schedule("clever-comb")
    f = tmp_path / "broken.toml"
    f.write_text("[[dose]\ndrug = 'hcq'\n")
    with pytest.raises(dm.InputError, match="broken.toml: file: malformed TOML"):
        dm.get_schedule(str(f))
