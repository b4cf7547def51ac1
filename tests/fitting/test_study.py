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


BAD = [_bad_missing_column, _bad_negative_count, _bad_event, _bad_arm, _bad_schedule,
       _empty_file, _header_only, _not_a_number]


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
