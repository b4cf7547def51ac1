"""Safe resume: a sweep store is resumed only with the same spec text, the same content of every
file the spec refers to (parameter file, packaged or not; schedule file; fit JSON) and the same
package version; otherwise one line says what changed and how to start afresh (`--fresh`).

One tiny sweep (2 chunks of 1 lane) runs once; each test works on a copy of its folder, with
the spec's files given relative to the working directory so the spec text stays the same."""

import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import dormancy_model.sweeps.run as R
from cli_run import run
from dormancy_model.errors import InputError
from dormancy_model.sweeps.run import open_sweep, sweep
from dormancy_model.sweeps.spec import load_sweep_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
[sweep]
name = "resume"
model = "my_human.toml"
schedule = "sched.toml"

[schedule]
cycles = [1, 2]

[outputs]
residual_days = [28]
relapse_free_days = [1825]

[solver]
chunk = 1
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A folder with a copy of the human parameter file, a schedule file, the spec and the
    finished store `ref.zarr` (run from inside the folder)."""
    d = tmp_path_factory.mktemp("resume")
    shutil.copy(ROOT / "src/dormancy_model/params/data/human.toml", d / "my_human.toml")
    shutil.copy(ROOT / "examples/schedule_custom.toml", d / "sched.toml")
    (d / "spec.toml").write_text(SPEC)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        sweep("spec.toml", "ref.zarr")
    finally:
        os.chdir(cwd)
    return d


@pytest.fixture
def work(base, tmp_path, monkeypatch):
    d = tmp_path / "w"
    shutil.copytree(base, d)
    monkeypatch.chdir(d)
    return d


def _data(path):
    ds = open_sweep(path)
    return {v: ds[v].values.copy() for v in ds.data_vars}, dict(ds.attrs)


def _count_computes(monkeypatch):
    calls = []

    class Spy(R.ChunkRunner):
        def compute(self, sl):
            calls.append(sl)
            return super().compute(sl)

    monkeypatch.setattr(R, "ChunkRunner", Spy)
    return calls


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_store_records_every_referenced_file(base):
    attrs = open_sweep(base / "ref.zarr").attrs
    files = json.loads(attrs["input_files"])
    assert set(files) == {"sweep.model", "sweep.schedule"}
    assert files["sweep.model"] == {"path": str(base / "my_human.toml"),
                                    "sha256": _sha(base / "my_human.toml")}
    assert files["sweep.schedule"]["sha256"] == _sha(base / "sched.toml")


def test_unchanged_spec_resumes(work, monkeypatch):
    """A lost chunk marker: the rerun computes exactly that chunk and ends equal."""
    before, attrs = _data("ref.zarr")
    (work / "ref.zarr" / ".sweep" / "done" / "1").unlink()
    calls = _count_computes(monkeypatch)
    sweep("spec.toml", "ref.zarr")
    assert [R._chunk_id(sl) for sl in calls] == ["1"]
    after, attrs2 = _data("ref.zarr")
    assert attrs2 == attrs
    for v in before:
        np.testing.assert_array_equal(after[v], before[v], err_msg=v)


def test_edited_parameter_file_refused_then_fresh(work, capsys, monkeypatch):
    """Editing the referenced parameter file (k_dr 3e-9 -> 3e-7 /day per cell): the CLI refuses with one
    line naming the file and --fresh, touching nothing; --fresh recomputes every chunk with the
    new file, and faster reactivation lowers every relapse-free probability."""
    p = work / "my_human.toml"
    text = p.read_text()
    assert text.count("value = 3.0e-9\nunit = \"1/day\"") == 1
    p.write_text(text.replace("value = 3.0e-9\nunit = \"1/day\"",
                              "value = 3.0e-7\nunit = \"1/day\""))
    before, _ = _data("ref.zarr")
    meta = (work / "ref.zarr" / "zarr.json").read_text()
    code, out, err = run(["sweep", "spec.toml", "--out", "ref.zarr"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == ("dormancy: error: ref.zarr: --out: cannot resume, changed since the store "
                        f"was written: the content of sweep.model {p}; rerun with --fresh to "
                        "discard the store and start afresh, or choose a new --out")
    assert (work / "ref.zarr" / "zarr.json").read_text() == meta
    assert sorted(os.listdir(work / "ref.zarr" / ".sweep" / "done")) == ["0", "1"]

    calls = _count_computes(monkeypatch)
    code, out, err = run(["sweep", "spec.toml", "--out", "ref.zarr", "--fresh"], capsys)
    assert code == 0, err
    assert len(calls) == 2
    after, attrs = _data("ref.zarr")
    assert json.loads(attrs["input_files"])["sweep.model"]["sha256"] == _sha(p)
    assert (after["relapse_free"] < before["relapse_free"]).all()
    mem = sweep("spec.toml")  # in memory, from the edited file: the same numbers
    for v in after:
        np.testing.assert_array_equal(after[v], mem[v].values, err_msg=v)
    assert not (work / "ref.zarr.discarding").exists()
    # and now the edited file resumes
    assert run(["sweep", "spec.toml", "--out", "ref.zarr"], capsys)[0] == 0


def test_edited_schedule_file_refused(work):
    p = work / "sched.toml"
    p.write_text(p.read_text().replace("amount = 5\n", "amount = 7.5\n"))
    with pytest.raises(InputError) as e:
        sweep("spec.toml", "ref.zarr")
    assert e.value.field == "--out"
    assert f"changed since the store was written: the content of sweep.schedule {p};" in str(e.value)


def test_other_package_version_refused(work, monkeypatch):
    import dormancy_model._version as V

    old = V.__version__
    monkeypatch.setattr(V, "__version__", "0.0.0+other")
    with pytest.raises(InputError, match=rf"the package version \({old} -> 0\.0\.0\+other\); "
                       "rerun with --fresh"):
        sweep("spec.toml", "ref.zarr")


def test_edited_spec_and_file_both_named(work):
    (work / "spec.toml").write_text(SPEC.replace("[1825]", "[1800]"))
    (work / "sched.toml").write_text((work / "sched.toml").read_text() + "\n# edited\n")
    with pytest.raises(InputError, match="written: the spec text, the content of sweep.schedule"):
        sweep("spec.toml", "ref.zarr")


def _attrs_edit(store, fn):
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    fn(meta["attributes"])
    meta_path.write_text(json.dumps(meta))


def test_packaged_parameter_set_keyed_by_content(tmp_path, monkeypatch):
    """`model = "human"`: the key holds the SHA-256 of the packaged file's bytes, so a store
    written with other packaged values (here: its recorded digest altered) is refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.toml").write_text(SPEC.replace('"my_human.toml"', '"human"')
                                        .replace('schedule = "sched.toml"',
                                                 'schedule = "clever-hcq"'))
    spec = load_sweep_spec("spec.toml")
    packaged = resources.files("dormancy_model.params") / "data" / "human.toml"
    assert [(f, sha) for f, _, sha in spec.inputs] == [
        ("sweep.model", hashlib.sha256(packaged.read_bytes()).hexdigest())]  # preset: no file
    store = tmp_path / "s.zarr"
    cshape = R.chunk_shape(spec.shape, spec.chunk)
    R._create_store(spec, store, cshape)
    R._open_or_create(spec, store, cshape)  # the same: resumes
    _attrs_edit(store, lambda a: a.update(input_files=json.dumps(
        {"sweep.model": {"path": "x", "sha256": "0" * 64}})))
    with pytest.raises(InputError, match="the content of sweep.model .*human.toml; rerun"):
        R._open_or_create(spec, store, cshape)


def test_store_without_file_record_refused(work):
    """A store written before the file digests were recorded cannot prove its inputs."""
    _attrs_edit(work / "ref.zarr", lambda a: a.pop("input_files"))
    with pytest.raises(InputError, match="the referenced files \\(the store has no record"):
        sweep("spec.toml", "ref.zarr")


def test_fit_file_is_part_of_the_key(tmp_path, monkeypatch):
    from fit_files import write_fit_file

    monkeypatch.chdir(tmp_path)
    write_fit_file(tmp_path / "fit.json", "mouse", {"k_dr": 2.5e-4}, [[0.04]])
    (tmp_path / "spec.toml").write_text(
        '[sweep]\nmodel = "mouse"\nschedule = "mouse-vehicle"\n[samples]\nmethod = "fit"\n'
        'n = 2\nfit = "fit.json"\n[outputs]\nresidual_days = [28]\n')
    spec = load_sweep_spec("spec.toml")
    store = tmp_path / "s.zarr"
    cshape = R.chunk_shape(spec.shape, spec.chunk)
    R._create_store(spec, store, cshape)
    write_fit_file(tmp_path / "fit.json", "mouse", {"k_dr": 2.5e-4}, [[0.09]])
    with pytest.raises(InputError, match="the content of samples.fit .*fit.json; rerun"):
        R._open_or_create(load_sweep_spec("spec.toml"), store, cshape)


def test_fresh_deletes_only_sweep_stores(tmp_path, capsys):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "zarr.json").write_text('{"attributes": {}}')
    (other / "keep.txt").write_text("x")
    (tmp_path / "spec.toml").write_text(SPEC.replace('"my_human.toml"', '"human"')
                                        .replace('schedule = "sched.toml"',
                                                 'schedule = "clever-hcq"'))
    code, _, err = run(["sweep", str(tmp_path / "spec.toml"), "--out", str(other), "--fresh"],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--fresh: exists and is not a sweep store: not deleted" in err
    assert (other / "keep.txt").read_text() == "x"
