"""Output helpers: atomic writes and output-directory checks (no partial output on failure)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

from dormancy_model.errors import InputError


def read_toml(path: str | Path) -> tuple[dict, str]:
    """One TOML reader for every input file: (document, text), or one-line InputError."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a leading byte-order mark is fine
        return tomllib.loads(text), text
    except FileNotFoundError:
        raise InputError(path, "file", "not found") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, "file", f"malformed TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise InputError(path, "file", f"not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise InputError(path, "file", f"cannot be read: {e.strerror}") from None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Fail early (before any work) if `path` cannot become a writable directory; creates
    nothing."""
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(str(p), flag, f"output directory cannot be written ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(str(p), flag, f"output directory cannot be written ({probe} is read-only)")
    return p


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """Fail early (before any work) if `path` cannot become a file: an existing directory or
    symlink to one, or a parent that cannot be a writable directory; creates nothing."""
    p = Path(path)
    if p.is_dir():
        raise InputError(str(p), flag, "is a directory, not a file")
    if p.exists() and not p.is_file():
        raise InputError(str(p), flag, "exists and is not a regular file")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(str(p), flag, "cannot be written (read-only)")
    try:
        check_out_dir(p.parent, flag)
    except InputError as e:  # name the file asked for, not its parent
        raise InputError(str(p), flag, e.problem) from None
    return p


def prepare_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create (if needed) and check that an output directory is writable."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise InputError(str(p), flag,
                         f"output directory cannot be written ({e.strerror})") from None
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into(src: Path, dst: Path) -> None:
    """Move the files of directory `src` into directory `dst` (each with os.replace, so each
    file is either the old or the new one), merging subdirectories."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_dir():
                _move_into(entry, target)
                entry.rmdir()
                continue
            if target.exists():
                target.unlink()
        os.replace(entry, target)


@contextlib.contextmanager
def output_dir(path: str | Path, flag: str = "--out"):
    """Write a command's output directory all at once, or not at all.

    Yields a temporary directory to write into: a sibling ``.NAME.partial-XXXX`` beside a
    `path` that does not exist yet, renamed to `path` on success (one atomic step); inside an
    existing `path` directory, its files are moved into `path` on success, each replacing its
    namesake atomically, and the files of `path` that the command does not write are kept. On
    any exception the temporary directory is removed, together with any parent directories this
    call created, and `path` is left as it was (absent, or with its old files).
    """
    p = Path(path)
    check_out_dir(p, flag)
    created = []
    probe = p.parent.absolute()
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        base = p if p.is_dir() else p.parent
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{p.name or 'out'}.partial-"))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    except OSError as e:
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise InputError(str(p), flag,
                         f"output directory cannot be written ({e.strerror})") from None
    try:
        yield tmp
        if p.exists() and not p.is_dir():
            raise InputError(str(p), flag, "exists and is not a directory")
        if p.is_dir():
            _move_into(tmp, p)
            tmp.rmdir()
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory (never half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: str | Path, df) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def atomic_savefig(fig, path: str | Path, **kw) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, **kw)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
