"""io.output_dir: a command's output directory appears whole on success and not at all on
failure; an existing directory keeps its other files."""

import os
import stat

import pytest

import dormancy_model.io as io
from dormancy_model.errors import InputError
from dormancy_model.io import atomic_write_text, output_dir


def _tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_new_directory_appears_on_success_with_normal_permissions(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with output_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".out.partial-")
        assert not out.exists()
        atomic_write_text(tmp / "x.txt", "x")
        (tmp / "sub").mkdir()
        atomic_write_text(tmp / "sub" / "y.txt", "y")
    assert _tree(out) == ["sub", "sub/y.txt", "x.txt"]
    assert _tree(tmp_path) == ["a", "a/b", "a/b/out", "a/b/out/sub", "a/b/out/sub/y.txt",
                               "a/b/out/x.txt"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_failure_leaves_nothing_not_even_new_parents(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError, match="boom"), output_dir(out) as tmp:
        atomic_write_text(tmp / "x.txt", "x")
        raise RuntimeError("boom")
    assert _tree(tmp_path) == []


def test_existing_directory_keeps_other_files_and_replaces_ours(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("old")
    (out / "x.txt").write_text("old x")
    (out / "sub" / "old.txt").write_text("old")
    with output_dir(out) as tmp:
        assert tmp.parent == out  # inside: the parent need not be writable
        atomic_write_text(tmp / "x.txt", "new x")
        (tmp / "sub").mkdir()
        atomic_write_text(tmp / "sub" / "y.txt", "y")
        assert (out / "x.txt").read_text() == "old x"  # nothing replaced before success
    assert (out / "x.txt").read_text() == "new x" and (out / "keep.txt").read_text() == "old"
    assert _tree(out) == ["keep.txt", "sub", "sub/old.txt", "sub/y.txt", "x.txt"]


def test_existing_directory_is_untouched_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("old x")
    with pytest.raises(KeyboardInterrupt), output_dir(out) as tmp:
        atomic_write_text(tmp / "x.txt", "new x")
        raise KeyboardInterrupt
    assert _tree(out) == ["x.txt"] and (out / "x.txt").read_text() == "old x"


def test_out_is_a_file_or_below_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    for out in (f, f / "sub"):
        with pytest.raises(InputError, match="--out: output directory cannot be written"):
            with output_dir(out):
                pytest.fail("must not be entered")
    assert _tree(tmp_path) == ["f"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match=r"--figures: output directory cannot be written "
                           r"\(.*read-only\)"), output_dir(ro / "out", "--figures"):
            pytest.fail("must not be entered")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("exchange", [True, False])
def test_existing_directory_replaced_whole_or_untouched(tmp_path, monkeypatch, exchange):
    """An existing folder is replaced as a whole (a new folder: the user's other files linked
    into it, its mode kept), with or without the OS's atomic exchange; a failure while linking
    the user's files leaves it as it was and no temporary."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("old")
    (out / "sub" / "old.txt").write_text("old")
    out.chmod(0o750)
    ino = out.stat().st_ino
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    with output_dir(out) as tmp:
        atomic_write_text(tmp / "x.txt", "new x")
    assert out.stat().st_ino != ino and stat.S_IMODE(out.stat().st_mode) == 0o750
    assert _tree(out) == ["keep.txt", "sub", "sub/old.txt", "x.txt"]
    assert _tree(tmp_path) == ["out"] + [f"out/{p}" for p in _tree(out)]

    def fail(*a, **kw):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(io, "_link_missing", fail)
    with pytest.raises(OSError), output_dir(out) as tmp:
        atomic_write_text(tmp / "x.txt", "newer x")
    assert (out / "x.txt").read_text() == "new x" and _tree(out) == [
        "keep.txt", "sub", "sub/old.txt", "x.txt"]
    assert _tree(tmp_path) == ["out"] + [f"out/{p}" for p in _tree(out)]


def test_symlinked_directory_keeps_its_link(tmp_path):
    """An `--out` that is a symbolic link to a folder stays a link; its target gets the files
    (one by one, each replacing its namesake atomically)."""
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    (tmp_path / "out").symlink_to(target)
    with output_dir(tmp_path / "out") as tmp:
        atomic_write_text(tmp / "x.txt", "x")
    assert (tmp_path / "out").is_symlink()
    assert _tree(target) == ["keep.txt", "x.txt"]
