"""Kill-anywhere safety: `dormancy sweep`, `dormancy fit --out` and `dormancy trial --out` killed
with SIGKILL (in a subprocess, `kill_point.py`) leave nothing that a rerun or a reader could
mistake for a finished result.

- sweep: the rerun with the same spec finishes with a store equal (bitwise, every variable,
  coordinate and attribute) to an uninterrupted run. The store's metadata (zarr.json files and
  attributes) is written once, into `OUT.creating`, renamed into place; the last write of a run
  is the final chunk's completion marker. Kill points: fast, in the middle of the first chunk
  (its `residual` landed, its `relapse_free` not); slow, the store creation, just before the
  final marker, points drawn from a seed among every atomic rename and Zarr array write that a
  traced run makes (each file Zarr writes lands by one rename), and seeded random delays.
- fit: after a kill the fit JSON is absent or complete (valid JSON with an estimate for every
  free parameter), never half a file; the figure folder is absent or has every figure.
- trial: the report folder is absent or complete (every file, trials.csv equal to an
  uninterrupted run's); a kill leaves at most a hidden `.NAME.partial-*` sibling.
The fast part kills the sweep once (about 8 s with the reference store) and the atomic-write
helpers four times (`io.py` alone, without JAX, under 1 s); the fit, trial and many-point sweep runs
are slow (`-m slow`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import kill_point as K
from dormancy_model.sweeps.run import open_sweep, sweep

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "data" / "mouse_synthetic"
KILLED = -signal.SIGKILL

SPEC = """
[sweep]
name = "test"
model = "human"
schedule = "clever-combo"

[schedule]
cycles = [1, 2]
hcq_dose = [0.5, 1.0]

[patients]
n = 2
variability = { k_dr = 0.5, eve_cl = 0.3 }

[outputs]
residual_days = [28, 56]
relapse_free_days = [800]
assessment_days = [56]

[solver]
chunk = 2
"""


def _kill(point, args, cwd, **kw):
    # the subprocess gets this process's JAX device count: the same lane layout as the
    # in-process reference and reruns
    return K.run(point, args, cwd=cwd, devices=jax.local_device_count(), **kw)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill_sweep")
    (d / "spec.toml").write_text(SPEC)
    sweep(d / "spec.toml", d / "reference.zarr")  # uninterrupted, in-process
    return d


def _assert_same_store(a, b):
    da, db = open_sweep(a), open_sweep(b)
    assert da.attrs == db.attrs
    for var in list(da.data_vars) + list(da.coords):
        np.testing.assert_array_equal(da[var].values, db[var].values, err_msg=var)


def _kill_and_resume(sweep_dir, point, name):
    out = sweep_dir / name
    r = _kill(point, ["sweep", "spec.toml", "--out", name], sweep_dir)
    assert r.returncode in (KILLED, 0), r.stderr[-2000:]
    killed = r.returncode == KILLED
    if killed and out.exists():  # a store under the name is always a readable sweep store
        assert open_sweep(out).attrs["complete"] == 0
    sweep(sweep_dir / "spec.toml", out)  # the rerun (in-process) resumes or starts
    _assert_same_store(out, sweep_dir / "reference.zarr")
    leftovers = {p.name for p in sweep_dir.iterdir()} - {"spec.toml", "reference.zarr", name}
    assert not any(n.startswith(name) for n in leftovers), leftovers  # no .creating/.discarding
    return killed


def test_sweep_killed_mid_first_chunk_then_rerun_gives_identical_store(sweep_dir):
    out = sweep_dir / "mid.zarr"
    r = _kill("replace:/relapse_free/c/:1", ["sweep", "spec.toml", "--out", "mid.zarr"],
              sweep_dir)
    assert r.returncode == KILLED, r.stderr[-2000:]
    partial = open_sweep(out)  # the first chunk's residual landed, not its marker
    assert partial.attrs["missing_chunks"] == 4
    assert np.isnan(partial["residual"].values).all()  # an unmarked chunk is never read
    sweep(sweep_dir / "spec.toml", out)
    _assert_same_store(out, sweep_dir / "reference.zarr")


ATOMIC = textwrap.dedent("""
    import sys, types
    sys.path.insert(0, sys.argv[1])
    import kill_point
    kill_point.install(sys.argv[2])
    pkg = types.ModuleType("dormancy_model")  # io.py and errors.py only, without JAX
    pkg.__path__ = [sys.argv[5]]
    sys.modules["dormancy_model"] = pkg
    from dormancy_model.io import atomic_write_json, output_dir
    if sys.argv[3] == "json":
        atomic_write_json(sys.argv[4], {"estimates": {f"p{i}": i for i in range(20000)}})
    else:
        with output_dir(sys.argv[4]) as tmp:
            for i in range(3):
                atomic_write_json(tmp / f"f{i}.json", {"i": i})
""")


def _atomic(point, what, path):
    import dormancy_model.io

    return subprocess.run([sys.executable, "-c", ATOMIC, str(Path(__file__).parent), point, what,
                           str(path), str(Path(dormancy_model.io.__file__).parent)],
                          capture_output=True, text=True, timeout=120)


def test_json_and_output_folder_never_half_written(tmp_path):
    """`io.atomic_write_json` killed after half its text reached the disk: the old file is
    intact (or, new, absent); `io.output_dir` killed before its final rename, or during the
    second file: no folder under the name. Each leaves at most a hidden temporary sibling."""
    old = tmp_path / "fit.json"
    old.write_text('{"old": 1}\n')
    assert _atomic("half:1", "json", old).returncode == KILLED
    assert json.loads(old.read_text()) == {"old": 1}
    new = tmp_path / "new.json"
    assert _atomic("half:1", "json", new).returncode == KILLED and not new.exists()
    for point in ("replace:4", "half:2"):
        assert _atomic(point, "dir", tmp_path / "report").returncode == KILLED
        assert not (tmp_path / "report").exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.name != "fit.json")
    assert _atomic("none", "dir", tmp_path / "report").returncode == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "f0.json", "f1.json", "f2.json"]


def test_rerun_removes_the_temporaries_a_kill_left(tmp_path):
    """A kill leaves hidden temporaries (``.fit.json.partial-*``, ``.report.partial-*``); the
    next successful write of the same output removes them, and nothing else: a user's hidden
    files, another output's temporaries and one of a live process stay."""
    from dormancy_model.io import _temp_prefix

    assert _atomic("half:1", "json", tmp_path / "fit.json").returncode == KILLED
    assert _atomic("replace:2", "dir", tmp_path / "report").returncode == KILLED
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".fit.json.partial-") and left[1].startswith(
        ".report.partial-"), left
    keep = [".report.partial-notours", ".fit.json.bak", ".other.partial-x",
            _temp_prefix("report") + "live"]  # this process's: alive
    for name in keep:
        (tmp_path / name).write_text("mine")
    assert _atomic("none", "json", tmp_path / "fit.json").returncode == 0
    assert _atomic("none", "dir", tmp_path / "report").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["fit.json", "report"])


SWAP = textwrap.dedent("""
    import sys, types
    sys.path.insert(0, sys.argv[1])
    import kill_point
    kill_point.install(sys.argv[2])
    pkg = types.ModuleType("dormancy_model")  # io.py and errors.py only, without JAX
    pkg.__path__ = [sys.argv[5]]
    sys.modules["dormancy_model"] = pkg
    import dormancy_model.io as io
    if sys.argv[3] == "renames":  # as where the OS cannot exchange two folders in one step
        io._exchange = lambda a, b: False
    with io.output_dir(sys.argv[4]) as tmp:
        for i in range(3):
            io.atomic_write_json(tmp / f"f{i}.json", {"new": i})
""")


def _tree(d):
    """The visible files of folder d (a kill may leave a hidden temporary inside it)."""
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.relative_to(d).parts[0].startswith(".")}


@pytest.mark.parametrize("mode", ["exchange", "renames"])
def test_existing_folder_replaced_as_a_whole(tmp_path, mode):
    """An existing output folder killed at every rename of its replacement (each new file, the
    new folder moved beside it, then, without an atomic exchange, the old folder set aside and
    the new one moved in): the folder is the old one or the new one, never a mix, and the user's
    other files are in both; only between the two renames of the fallback is it absent, its old
    files kept whole in ``.report.old-*``, which the next run puts back. Every rerun gives the
    new folder and leaves no temporary."""
    import dormancy_model.io

    old = {"f0.json": '{"old": 0}', "f1.json": '{"old": 1}', "keep.txt": "user",
           "sub/k.txt": "user sub"}
    new = {**{f"f{i}.json": json.dumps({"new": i}, indent=2) + "\n" for i in range(3)},
           "keep.txt": "user", "sub/k.txt": "user sub"}
    for k in range(1, 8):
        d = tmp_path / f"k{k}"
        for name, text in old.items():
            (d / "report" / name).parent.mkdir(parents=True, exist_ok=True)
            (d / "report" / name).write_text(text)
        r = subprocess.run([sys.executable, "-c", SWAP, str(Path(__file__).parent),
                            f"replace:{k}", mode, str(d / "report"),
                            str(Path(dormancy_model.io.__file__).parent)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == (KILLED if k <= (4 if mode == "exchange" else 6) else 0), (
            k, r.stderr[-2000:])
        if (d / "report").exists():
            assert _tree(d / "report") in (old, new), k
            assert _tree(d / "report") == (old if r.returncode else new), k
        else:
            assert mode == "renames" and k == 6
            aside = [p for p in d.iterdir() if p.name.startswith(".report.old-")]
            assert len(aside) == 1 and _tree(aside[0]) == old
        r = subprocess.run([sys.executable, "-c", SWAP, str(Path(__file__).parent), "none",
                            mode, str(d / "report"), str(Path(dormancy_model.io.__file__).parent)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert _tree(d / "report") == new, k
        assert sorted(p.name for p in d.iterdir()) == ["report"], k
        assert not [p for p in (d / "report").iterdir() if p.name.startswith(".")], k


def _traced(args, cwd, **kw):
    t = time.perf_counter()
    r = _kill("trace", args, cwd, **kw)
    assert r.returncode == 0, r.stderr[-2000:]
    return K.events(r.stderr), time.perf_counter() - t, r.stderr


@pytest.mark.slow
def test_sweep_killed_anywhere_then_rerun_gives_identical_store(sweep_dir):
    """The store creation (first rename), the final chunk marker, 6 seeded points among the
    traced run's renames and Zarr writes, and 3 seeded delays in (0.2, 1) x the traced wall
    time: every rerun gives the reference store."""
    n, wall, _ = _traced(["sweep", "spec.toml", "--out", "traced.zarr"], sweep_dir)
    assert n["replace"] > 20 and n["zarr"] > 8
    rng = np.random.default_rng(20240617)
    points = ["replace:1", "replace:.sweep/done/:4"]
    points += [f"replace:{k}" for k in rng.integers(1, n["replace"] + 1, 4)]
    points += [f"zarr:{k}" for k in rng.integers(1, n["zarr"] + 1, 2)]
    points += [f"delay:{s:.2f}" for s in rng.uniform(0.2 * wall, wall, 3)]
    killed = [_kill_and_resume(sweep_dir, p, f"s{i}.zarr") for i, p in enumerate(points)]
    assert sum(killed) >= len(points) - 3  # every counted point kills; a delay may come late


FREE = ["dormant_initial", "k_dr", "burden_sigma"]
FIT = ["fit", "--study", str(STUDY), "--arms", "vehicle", "--free", ",".join(FREE),
       "--starts", "1", "--adam-steps", "1", "--lbfgs-steps", "2", "--out", "fits/f.json"]


def _check_fit(d, figures):
    out = d / "fits" / "f.json"
    if out.exists():
        doc = json.loads(out.read_text())  # never half a file
        assert set(doc["estimates"]) == set(FREE)
        assert all(np.isfinite(doc["estimates"][k]["value"]) for k in FREE)
    fig = d / "fits" / "f"
    if fig.exists():
        assert sorted(p.name for p in fig.iterdir()) == figures
    visible = {p.name for p in (d / "fits").iterdir() if not p.name.startswith(".")} if (
        d / "fits").exists() else set()
    assert visible <= {"f.json", "f"}
    return out.exists()


@pytest.mark.slow
def test_fit_json_never_half_written(tmp_path):
    """`dormancy fit --out` killed before the figure folder's rename, after half of the JSON's
    text reached the disk, before the JSON's rename, and at a seeded delay: the JSON is absent
    or complete; the figures absent or all there."""
    ref = tmp_path / "ref"
    ref.mkdir()
    n, wall, _ = _traced(FIT, ref)
    figures = sorted(p.name for p in (ref / "fits" / "f").iterdir())
    assert _check_fit(ref, figures) and len(figures) >= 3
    rng = np.random.default_rng(17)
    last = n["replace"]  # the JSON's rename; before it the figure folder's
    for i, point in enumerate([f"replace:{last - 1}", f"half:{n['write']}", f"replace:{last}",
                               f"delay:{rng.uniform(0.5 * wall, wall):.2f}"]):
        d = tmp_path / f"k{i}"
        d.mkdir()
        r = _kill(point, FIT, d)
        assert r.returncode in (KILLED, 0), r.stderr[-2000:]
        written = _check_fit(d, figures)
        if not point.startswith("delay"):
            assert r.returncode == KILLED and not written, point


TRIAL = ["trial", "--replicates", "2", "--seed", "3", "--calibration", "", "--out", "t"]


@pytest.mark.slow
def test_trial_report_folder_absent_or_complete(tmp_path):
    """`dormancy trial --out` (agent model replaced by the recording double; the report code is
    the real one) killed at every rename of a traced run (each report file, then the folder)
    and during each text file's write: no folder under the name, then a complete one after the
    last rename."""
    ref = tmp_path / "ref"
    ref.mkdir()
    n, _, _ = _traced(TRIAL, ref, trial_double=True)
    files = sorted(p.name for p in (ref / "t").iterdir())
    assert {"report.md", "report.html", "trials.csv", "km.png"} <= set(files)
    points = [f"replace:{k}" for k in range(1, n["replace"] + 1)] + [
        f"half:{k}" for k in range(1, n["write"] + 1)]
    for i, point in enumerate(points):
        d = tmp_path / f"k{i}"
        d.mkdir()
        r = _kill(point, TRIAL, d, trial_double=True)
        assert r.returncode == KILLED, (point, r.stderr[-2000:])
        assert not (d / "t").exists(), point
        assert all(p.name.startswith(".t.partial-") for p in d.iterdir()), point
    d = tmp_path / "k0"  # a rerun after a kill writes the complete report
    r = _kill("none", TRIAL, d, trial_double=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (d / "t").iterdir()) == files
    assert (d / "t" / "trials.csv").read_text() == (ref / "t" / "trials.csv").read_text()
