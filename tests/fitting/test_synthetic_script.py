"""scripts/make_synthetic_study.py on a tiny design: same seed -> the same files byte for byte,
every file says SYNTHETIC, the files load as a study (marker split, covariate table, the
"biopsy" design's animals in both files), and another seed gives other data; the count is the
solitary cells D + R, with clone and lesion cells recorded apart (the script's docstring)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dormancy_model.fitting.study import load_study

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from make_synthetic_study import make, seen_cells  # noqa: E402

TINY = dict(burden_mice=2, survival_mice=2, arms=["mouse-hcq120-transient"], design="biopsy")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        make(root / name, seed=seed, **TINY)
    return root


def test_same_seed_same_files_and_every_file_says_synthetic(runs):
    names = sorted(p.name for p in (runs / "a").iterdir())
    assert names == ["README.md", "animals.csv", "burden.csv", "study.toml", "survival.csv",
                     "truth.json", "truth_animals.csv"]
    assert sorted(p.name for p in (runs / "b").iterdir()) == names
    for n in names:
        text = (runs / "a" / n).read_text()
        assert (runs / "b" / n).read_bytes() == (runs / "a" / n).read_bytes(), n
        assert "SYNTHETIC" in text, n
        if n.endswith(".csv"):
            assert "SYNTHETIC" in text.splitlines()[0], n
    assert (runs / "c" / "burden.csv").read_text() != (runs / "a" / "burden.csv").read_text()


def test_tiny_study_loads_with_the_biopsy_design(runs):
    st = load_study(runs / "a")
    assert st.synthetic and st.arm_names == ("hcq120-transient",)
    b = st.burden
    np.testing.assert_array_equal(b.dormant + b.proliferating, b.cells)
    survival_ids = set(st.survival.mouse_id)
    biopsied = set(b.mouse_id) & survival_ids
    assert biopsied and set(b.sampled_fraction[np.isin(b.mouse_id, list(biopsied))]) == {0.02}
    assert set(st.animals.ids) == set(b.mouse_id) | survival_ids


def test_count_is_the_solitary_cells_and_clones_are_apart():
    """`seen_cells` with the whole tissue and no recovery noise sees every cell: the count
    (residual_cells) is D + R, split D (dormant_count) and R (proliferating_count); the marrow
    clones' cells are returned apart (clone_cells), never in the count."""
    cells = np.array([[120, 3, 0], [5, 0, 4000], [0, 2, 17]])
    tot, dor, pro, clo = seen_cells(np.random.default_rng(0), cells, 1.0, 0.0)
    np.testing.assert_array_equal(tot, [123, 5, 2])
    np.testing.assert_array_equal(dor, [120, 5, 0])
    np.testing.assert_array_equal(pro, [3, 0, 2])
    np.testing.assert_array_equal(clo, [0, 4000, 17])
    # a sample of 10%: binomial per cell, each column at most its cells
    tot, dor, pro, clo = seen_cells(np.random.default_rng(1), np.tile(cells, (200, 1)), 0.1, 0.3)
    assert np.all(dor <= 120) and np.all(pro <= 3) and np.all(clo <= 4000)
    np.testing.assert_array_equal(tot, dor + pro)
    assert 0.07 < clo[1::3].mean() / 4000 < 0.13


def test_tiny_study_columns_clone_and_lesion_apart(runs):
    """burden.csv has clone_cells and lesion_cells after the marker columns; the counts of the
    mice sacrificed at the end of treatment are at most their true solitary cells (the count
    is sampled from D + R, not from the clones), a biopsy row has no lesion count."""
    import pandas as pd

    b = pd.read_csv(runs / "a" / "burden.csv", comment="#", keep_default_na=False)
    assert list(b.columns[-4:]) == ["dormant_count", "proliferating_count", "clone_cells",
                                    "lesion_cells"]
    assert (b.residual_cells == b.dormant_count + b.proliferating_count).all()
    truth = pd.read_csv(runs / "a" / "truth_animals.csv", comment="#").set_index("mouse_id")
    biopsy = b.sampled_fraction == 0.02
    assert (b.lesion_cells[biopsy] == "").all() and (b.lesion_cells[~biopsy] != "").all()
    end = b[b.day == b.day.min()]
    assert (end.residual_cells.values
            <= truth.loc[end.mouse_id, "solitary_cells_end_of_treatment"].values).all()
    assert (end.clone_cells.astype(float).values
            <= truth.loc[end.mouse_id, "clone_cells_end_of_treatment"].values).all()
