"""scripts/make_synthetic_study.py on a tiny design: same seed -> the same files byte for byte,
every file says SYNTHETIC, the files load as a study (marker split, covariate table, the
"biopsy" design's animals in both files), and another seed gives other data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dormancy_model.fitting.study import load_study

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from make_synthetic_study import make  # noqa: E402

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
