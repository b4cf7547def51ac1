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


HCQ = {"drug": "hcq", "amount": 5}
LIMITS = [
    ({"dose": [{**HCQ, "interval_hours": 0.5}]}, "dose[0].interval_hours", "below 1 h"),
    ({"dose": [{**HCQ, "interval_hours": 0.001, "cycles": 2}], "allow_short_intervals": True},
     "dose[0].interval_hours", "about 1,344,001 doses, more than 1,000,000"),
    # each line alone is fine (672,001 doses); together they are over the cap
    ({"dose": [{**HCQ, "interval_hours": 1, "cycles": 1000},
               {**HCQ, "interval_hours": 1, "cycles": 1000}]},
     "dose[1].interval_hours", "about 1,344,002 doses"),
    ({"dose": [{**HCQ, "cycles": 1001, "cycle_days": 7}]}, "dose[0].cycles", "above 1000"),
    ({"dose": [{**HCQ, "cycle_days": 400}]}, "dose[0].cycle_days", "above 366"),
    ({"dose": [{**HCQ, "start_day": 40000}]}, "dose[0]", "100 years"),
    ({"dose": [{**HCQ, "days_on": "1-5,12-8"}]}, "dose[0].days_on", "reversed range '12-8'"),
    ({"dose": [{**HCQ, "days_on": "1-99999999999999"}]}, "dose[0].days_on",
     "outside the 28-day cycle"),
    ({"dose": [{**HCQ, "amount": 10**400}]}, "dose[0].amount", "finite number"),
    ({"dose": [HCQ], "allow_short_intervals": "yes"}, "allow_short_intervals", "true or false"),
    ({"dose": [HCQ], "body_weight_kg": 7000}, "body_weight_kg", "not a plausible body weight"),
    ({"dose": [HCQ], "body_weight_kg": -70}, "body_weight_kg", "> 0"),
]


@pytest.mark.parametrize("doc,field,problem", LIMITS)
def test_schedule_limits_are_enforced(doc, field, problem):
    with pytest.raises(dm.InputError) as e:
        parse_schedule(doc, "bad.toml")
    msg = str(e.value)
    assert msg.startswith("bad.toml: ") and field in msg and problem in msg, msg
    assert "\n" not in msg


def test_short_intervals_allowed_when_the_file_says_so():
    doc = {"allow_short_intervals": True,
           "dose": [{**HCQ, "interval_hours": 0.5, "cycle_days": 1, "days_on": [1]}]}
    t, _, _, _ = parse_schedule(doc, "ok.toml").events("hcq")
    np.testing.assert_allclose(t, np.arange(48) / 48.0)


def test_the_issue_example_is_accepted_only_with_allow_short_intervals():
    """0.001 h for one 28-day cycle: 672,000 doses, under the cap, but below 1 h."""
    doc = {"dose": [{**HCQ, "interval_hours": 0.001}]}
    with pytest.raises(dm.InputError, match="below 1 h"):
        parse_schedule(doc, "x.toml")
    t = parse_schedule({**doc, "allow_short_intervals": True}, "x.toml").events("hcq")[0]
    assert t.size == 672_000


@pytest.mark.parametrize("interval,cycle_days,cycles,days_on", [
    (24.0, 28, 6, "1-28"), (12.0, 28, 6, "1-21"), (168.0, 7, 3, "1-7"), (7.0, 5, 3, "2-4")])
def test_dose_count_bound_is_an_upper_bound(interval, cycle_days, cycles, days_on):
    from dormancy_model.pk.schedule import _dose_count_bound

    doc = {"dose": [{**HCQ, "interval_hours": interval, "cycle_days": cycle_days,
                     "cycles": cycles, "days_on": days_on}]}
    line = parse_schedule(doc, "x.toml").lines[0]
    every_day = parse_schedule({"dose": [{**doc["dose"][0], "days_on": f"1-{cycle_days}"}]},
                               "x.toml").lines[0]
    assert line.times().size <= every_day.times().size <= _dose_count_bound(line)
    assert _dose_count_bound(line) - every_day.times().size <= 1


def test_reversed_range_alone_or_with_others_is_an_error_not_dropped():
    ok = parse_schedule({"dose": [{**HCQ, "days_on": "1-5,8-12"}]}, "ok.toml")
    assert ok.lines[0].days_on == (1, 2, 3, 4, 5, 8, 9, 10, 11, 12)
    for text in ("12-8", "1-5,12-8"):
        with pytest.raises(dm.InputError, match="reversed range"):
            parse_schedule({"dose": [{**HCQ, "days_on": text}]}, "bad.toml")


def test_with_cycles_is_bounded():
    s = dm.get_schedule("clever-combo")
    with pytest.raises(dm.InputError, match=r"--cycles: cycles: must be in \[1, 1000\]"):
        s.with_cycles(1001)
    with pytest.raises(dm.InputError, match="--cycles"):
        s.with_cycles(0)
    assert s.with_cycles(1000).lines[0].cycles == 1000


def test_default_dose_unit_follows_the_species():
    doc = {"dose": [HCQ]}
    assert parse_schedule(doc, "x.toml").lines[0].unit == "mg"  # library default
    assert parse_schedule(doc, "x.toml", species="human").lines[0].unit == "mg"
    assert parse_schedule(doc, "x.toml", species="mouse").lines[0].unit == "mg/kg"
    assert parse_schedule({"dose": [{**HCQ, "unit": "mg"}]}, "x.toml",
                          species="mouse").lines[0].unit == "mg"
    assert parse_schedule({"defaults": {"unit": "mg"}, "dose": [HCQ]}, "x.toml",
                          species="rat").lines[0].unit == "mg"
    with pytest.raises(dm.InputError, match=r"x.toml: dose\[0\].unit: missing"):
        parse_schedule(doc, "x.toml", species="rat")


def test_schedule_body_weight_is_plausible_for_the_species():
    doc = {"dose": [{**HCQ, "unit": "mg/kg"}], "body_weight_kg": 25}
    with pytest.raises(dm.InputError, match="not a plausible body weight for mouse"):
        parse_schedule(doc, "x.toml", species="mouse")  # 25 kg written for 25 g
    s = parse_schedule({**doc, "body_weight_kg": 0.025}, "x.toml", species="mouse")
    assert s.events("hcq")[1][0] == pytest.approx(5 * 0.025)  # mg/kg x kg -> mg
    assert parse_schedule(doc, "x.toml", species="human").body_weight_kg == 25.0
    with pytest.raises(dm.InputError, match="for human"):
        parse_schedule({**doc, "body_weight_kg": 5}, "x.toml", species="human")


def test_schedule_file_with_bom_is_read(tmp_path):
    f = tmp_path / "s.toml"
    f.write_bytes(b"\xef\xbb\xbf" + b'[[dose]]\ndrug = "eve"\namount = 10\nunit = "mg"\n')
    assert dm.load_schedule(f).lines[0].amount == 10.0
