"""Study formats: validation errors (file, line, column; exit 2, nothing written) and padding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dormancy_model.cli.main import main
from dormancy_model.errors import InputError
from dormancy_model.fitting.study import load_study, study_arrays

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"


@pytest.fixture()
def study_dir(tmp_path):
    d = tmp_path / "study"
    shutil.copytree(SHIPPED, d)
    return d


def _edit(path: Path, old: str, new: str, count: int = 1):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def _data_line(path: Path, k: int = 0) -> tuple[int, str]:
    """(1-based line number, text) of the k-th data row (after comments and the header)."""
    lines = path.read_text().splitlines()
    rows = [(i + 1, ln) for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    return rows[k + 1]


def test_shipped_study_loads_and_is_labelled_synthetic():
    st = load_study(SHIPPED)
    assert st.synthetic and len(st.arms) == 19
    assert "SYNTHETIC" in (SHIPPED / "burden.csv").read_text().splitlines()[0]
    assert "SYNTHETIC" in (SHIPPED / "survival.csv").read_text().splitlines()[0]
    assert "SYNTHETIC" in (SHIPPED / "README.md").read_text()
    counts = np.bincount(st.survival.arm, minlength=19)
    assert counts.min() >= 10
    assert st.burden.censored.any() and not st.burden.censored.all()
    assert st.survival.event.any() and not st.survival.event.all()


def test_subset_refuses_a_repeated_arm():
    with pytest.raises(InputError, match="arms: duplicate arm 'vehicle'"):
        load_study(SHIPPED).subset(["vehicle", "hcq60-transient", "vehicle"])


def test_pad_and_mask_maps_every_row():
    st = load_study(SHIPPED).subset(["vehicle", "hcq60-transient", "eve5-chronic"])
    a = study_arrays(st)
    grid = np.asarray(a.grid)
    assert grid[0] == 0 and np.all(np.diff(grid) > 0)
    assert int(np.asarray(a.burden_mask).sum()) == st.burden.day.size
    assert int(np.asarray(a.surv_mask).sum()) == st.survival.day.size
    for arm in range(3):
        m = np.asarray(a.burden_mask)[arm]
        days = grid[np.asarray(a.burden_idx)[arm][m]]
        np.testing.assert_array_equal(days, st.burden.day[st.burden.arm == arm])
        ms = np.asarray(a.surv_mask)[arm]
        np.testing.assert_array_equal(grid[np.asarray(a.surv_idx)[arm][ms]],
                                      st.survival.day[st.survival.arm == arm])
        np.testing.assert_array_equal(np.asarray(a.surv_event)[arm][ms],
                                      st.survival.event[st.survival.arm == arm])
    # dosing is stacked over arms with zero-amount padding
    assert np.asarray(a.dosing.hcq.amount).shape[0] == 3


def _bad_missing_column(d):
    _edit(d / "burden.csv", "detection_limit,", "lod,")
    return "burden.csv", "detection_limit", "missing column"


def _set_burden_field(d, row, col, value):
    """Replace column `col` of data row `row` of burden.csv; returns the file line number."""
    no, line = _data_line(d / "burden.csv", row)
    parts = line.split(",")
    parts[col] = value
    _edit(d / "burden.csv", line, ",".join(parts))
    return no


def _bad_negative_count(d):
    no = _set_burden_field(d, 2, 3, "-3")
    return f"burden.csv:{no}", "residual_cells", "negative count"


def _bad_event(d):
    no, line = _data_line(d / "survival.csv", 4)
    _edit(d / "survival.csv", line, line[:-1] + "2")
    return f"survival.csv:{no}", "event", "must be 1 (relapse) or 0"


def _bad_arm(d):
    no, line = _data_line(d / "survival.csv", 0)
    _edit(d / "survival.csv", line, line.replace(",vehicle,", ",vehicel,"))
    return f"survival.csv:{no}", "arm", "unknown arm 'vehicel'"


def _bad_schedule(d):
    _edit(d / "study.toml", 'schedule = "mouse-hcq60-chronic"', 'schedule = "mouse-hcq61-chronic"')
    return "study.toml", "arms.hcq60-chronic.schedule", "unknown preset"


def _empty_file(d):
    (d / "survival.csv").write_text("")
    return "survival.csv", "file", "empty"


def _header_only(d):
    (d / "burden.csv").write_text("mouse_id,arm,day,residual_cells,detection_limit\n")
    return "burden.csv", "file", "no data rows"


def _not_a_number(d):
    no = _set_burden_field(d, 1, 2, "day56")
    return f"burden.csv:{no}", "day", "not a number"


def _mouse_in_two_arms(d):
    no0, line0 = _data_line(d / "burden.csv", 0)
    no1, line1 = _data_line(d / "burden.csv", 40)
    mouse, arm = line0.split(",")[0], line1.split(",")[1]
    assert arm != line0.split(",")[1]
    _edit(d / "burden.csv", line1, ",".join([mouse] + line1.split(",")[1:]))
    return f"burden.csv:{no1}", "mouse_id", f"is in arm 'vehicle' on line {no0}: one arm"


def _mouse_twice_on_one_day(d):
    no0, line0 = _data_line(d / "burden.csv", 0)
    no1, line1 = _data_line(d / "burden.csv", 1)
    parts0, parts1 = line0.split(","), line1.split(",")
    assert parts0[1] == parts1[1]  # same arm
    _edit(d / "burden.csv", line1, ",".join([parts0[0], parts1[1], parts0[2]] + parts1[3:]))
    return f"burden.csv:{no1}", "mouse_id", f"already has a count on day {parts0[2]} (line {no0})"


def _study_weight_in_kg(d):
    _edit(d / "study.toml", "body_weight_g = 25.0", "body_weight_g = 0.025")
    return "study.toml", "study.body_weight_g", "not a plausible body weight for mouse"


def _study_weight_huge(d):
    _edit(d / "study.toml", "body_weight_g = 25.0", "body_weight_g = 250.0")
    return "study.toml", "study.body_weight_g", "(expected 0.01-0.08 kg)"


def _bom_in_toml_is_not_the_problem(d):
    """A BOM in study.toml does not hide a later error: that error is reported."""
    (d / "study.toml").write_bytes(b"\xef\xbb\xbf" + (d / "study.toml").read_bytes())
    return _study_weight_in_kg(d)


def _marker_counts_do_not_add_up(d):
    no = _set_burden_field(d, 0, 6, "1")  # dormant_count of a row with more than 1 cell
    return f"burden.csv:{no}", "dormant_count", "the marker counts split the same sample"


def _marker_count_negative(d):
    no = _set_burden_field(d, 3, 7, "-1")
    return f"burden.csv:{no}", "proliferating_count", "must be >= 0"


def _clone_cells_negative(d):
    no = _set_burden_field(d, 2, 8, "-1")
    return f"burden.csv:{no}", "clone_cells", "must be >= 0"


def _lesion_cells_not_a_number(d):
    no = _set_burden_field(d, 1, 9, "many")
    return f"burden.csv:{no}", "lesion_cells", "not a number"


def _set_animal(d, row, text):
    no, line = _data_line(d / "animals.csv", row)
    _edit(d / "animals.csv", line + "\n", text + "\n" if text else "")
    return no, line


def _animal_without_covariates(d):
    _, line = _set_animal(d, 5, "")
    return "animals.csv", "mouse_id", f"animal '{line.split(',')[0]}' has no row"


def _animal_covariate_blank(d):
    no, line = _data_line(d / "animals.csv", 2)
    _set_animal(d, 2, line.split(",")[0] + ",")
    return f"animals.csv:{no}", "body_weight_g", f"missing for animal '{line.split(',')[0]}'"


def _animal_unknown(d):
    no, line = _data_line(d / "animals.csv", 1)
    _set_animal(d, 1, line + "\nvehicle-b99,25.0")
    return f"animals.csv:{no + 1}", "mouse_id", "unknown animal 'vehicle-b99'"


def _animal_weight_not_finite(d):
    no, line = _data_line(d / "animals.csv", 0)
    _set_animal(d, 0, line.split(",")[0] + ",nan")
    return f"animals.csv:{no}", "body_weight_g", "not a finite number"


def _animal_weight_implausible(d):
    no, line = _data_line(d / "animals.csv", 0)
    _set_animal(d, 0, line.split(",")[0] + ",250")
    return f"animals.csv:{no}", "body_weight_g", "not a plausible body weight for mouse"


def _animal_twice(d):
    no, line = _data_line(d / "animals.csv", 0)
    _set_animal(d, 0, line + "\n" + line)
    return f"animals.csv:{no + 1}", "mouse_id", f"already has a row (line {no})"


BAD = [_bad_missing_column, _bad_negative_count, _bad_event, _bad_arm, _bad_schedule,
       _empty_file, _header_only, _not_a_number, _mouse_in_two_arms, _mouse_twice_on_one_day,
       _study_weight_in_kg, _study_weight_huge, _bom_in_toml_is_not_the_problem,
       _marker_counts_do_not_add_up, _marker_count_negative, _clone_cells_negative,
       _lesion_cells_not_a_number, _animal_without_covariates,
       _animal_covariate_blank, _animal_unknown, _animal_weight_not_finite,
       _animal_weight_implausible, _animal_twice]


@pytest.mark.parametrize("corrupt", BAD, ids=[f.__name__ for f in BAD])
def test_corrupted_inputs_fail_clearly(study_dir, corrupt):
    where, column, problem = corrupt(study_dir)
    with pytest.raises(InputError) as e:
        load_study(study_dir)
    msg = str(e.value)
    assert where in msg and column in msg and problem in msg, msg
    assert "\n" not in msg


def test_cli_bad_input_exits_2_and_writes_nothing(study_dir, tmp_path, capsys):
    _bad_negative_count(study_dir)
    out = tmp_path / "fits" / "x.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(study_dir), "--out", str(out), "--starts", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "residual_cells" in err[0] and "burden.csv:" in err[0]
    assert not out.exists() and not (tmp_path / "fits").exists()


def test_cli_unknown_free_parameter(tmp_path, capsys):
    out = tmp_path / "f" / "x.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(SHIPPED), "--free", "hcq_ic5O,k_dr", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "hcq_ic5O" in err and "hcq_ic50" in err
    assert not out.exists()


def test_cli_unknown_arm(tmp_path, capsys):
    out = tmp_path / "f" / "x.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(SHIPPED), "--arms", "vehicle,hcq120-chronc", "--out",
              str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arms" in err[0] and "unknown arm 'hcq120-chronc'" in err[0]
    assert "did you mean 'hcq120-chronic'" in err[0]
    assert not out.exists() and not out.parent.exists()


def test_byte_order_marks_are_ignored(study_dir):
    """Files saved by spreadsheet programs start with a UTF-8 BOM: the study reads the same."""
    ref = load_study(study_dir)
    for name in ("study.toml", "burden.csv", "survival.csv"):
        f = study_dir / name
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    st = load_study(study_dir)
    assert st.arm_names == ref.arm_names
    for rows, ref_rows in ((st.burden, ref.burden), (st.survival, ref.survival)):
        for k in rows.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(rows, k), getattr(ref_rows, k))


def test_bom_before_the_header_without_a_comment(study_dir):
    f = study_dir / "survival.csv"
    lines = f.read_text().splitlines(keepends=True)
    f.write_bytes(b"\xef\xbb\xbf" + "".join(lines[1:]).encode())  # header is the first line
    assert load_study(study_dir).survival.day.size == load_study(SHIPPED).survival.day.size


def test_same_mouse_on_two_days_of_one_arm_is_allowed(study_dir):
    """Serial counts of one mouse (one arm, different days) stay allowed."""
    _, line0 = _data_line(study_dir / "burden.csv", 0)
    _, line1 = _data_line(study_dir / "burden.csv", 1)
    p0, p1 = line0.split(","), line1.split(",")
    assert p0[1] == p1[1] and p0[2] != p1[2]
    _edit(study_dir / "burden.csv", line1, ",".join([p0[0]] + p1[1:]))
    _edit(study_dir / "animals.csv", f"\n{p1[0]},", "\n# gone: ")  # p1[0] has no row left
    st = load_study(study_dir)
    assert (st.burden.mouse_id == p0[0]).sum() == 2


def test_fit_refuses_a_study_weight_outside_the_model_bounds(study_dir, tmp_path, capsys):
    """12 g is a plausible mouse (>= 10 g) but outside mouse.toml's body_weight bounds
    [15, 40] g: refused before any work or output."""
    _edit(study_dir / "study.toml", "body_weight_g = 25.0", "body_weight_g = 12.0")
    load_study(study_dir)  # plausible for a mouse
    out = tmp_path / "fits" / "x.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(study_dir), "--out", str(out), "--starts", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.toml: study.body_weight_g: 12 g is outside" in err[0]
    assert "[15, 40] g" in err[0]
    assert not (tmp_path / "fits").exists()


def test_optional_marker_columns_and_covariate_table(study_dir):
    """The marker split and the covariate table are optional: without them the study reads
    the same (totals, no split, the study's weight for every animal); with them the split
    adds up and each animal's weight reaches the population problem's arrays."""
    from dormancy_model.fitting.population.animals import animal_arrays

    full = load_study(study_dir)
    b = full.burden
    assert b.dormant is not None and np.all(b.dormant + b.proliferating == b.cells)
    assert (b.proliferating > 0).any() and (b.dormant > 0).any()
    ids, arrays, _ = animal_arrays(full.subset(["vehicle", "hcq60-transient"]))
    w = dict(zip(full.animals.ids, full.animals.covariates["body_weight_g"], strict=True))
    np.testing.assert_allclose(np.asarray(arrays.body_weight_kg), [w[a] / 1000 for a in ids])
    assert np.ptp(np.asarray(arrays.body_weight_kg)) > 0
    # the former format: no marker columns, no animals.csv
    lines = (study_dir / "burden.csv").read_text().splitlines()
    (study_dir / "burden.csv").write_text("\n".join(
        ln if ln.startswith("#") else ",".join(ln.split(",")[:6]) for ln in lines) + "\n")
    _edit(study_dir / "study.toml", 'animals = "animals.csv"\n', "")
    (study_dir / "animals.csv").unlink()
    old = load_study(study_dir)
    assert old.burden.dormant is None and old.animals is None
    np.testing.assert_array_equal(old.burden.cells, b.cells)
    ids, arrays, _ = animal_arrays(old.subset(["vehicle"]))
    np.testing.assert_array_equal(np.asarray(arrays.body_weight_kg), old.body_weight_kg)
