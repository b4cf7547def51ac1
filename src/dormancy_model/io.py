"""Output helpers: atomic writes and output-directory checks (no partial output on failure).

Temporaries are named ``.NAME.partial-HOST-PID-RANDOM`` (and, for an existing folder set aside
while the new one moves in, ``.NAME.old-HOST-PID-RANDOM``): NAME the output's name, HOST a
hash of this machine's name, PID the writing process. A later successful write of the same
output removes the ones whose process on this machine is gone (`remove_stale`), and nothing
else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
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


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(name: str, kind: str = "partial") -> str:
    return f".{name}.{kind}-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, say
        return True
    return True


def _is_stale(entry: str, name: str) -> bool:
    """Whether `entry` is a temporary of output `name` (by the naming convention above) whose
    writing process ran on this machine and is gone."""
    for kind in ("partial", "old"):
        head = f".{name}.{kind}-"
        if entry.startswith(head):
            host, _, rest = entry[len(head):].partition("-")
            pid = rest.partition("-")[0]
            return host == _HOST and pid.isdigit() and not _alive(int(pid))
    return False


def remove_stale(directory: str | Path, name: str) -> list[str]:
    """Remove from `directory` the temporaries of output `name` that a killed run left
    (``.NAME.partial-*``, ``.NAME.old-*`` of a process of this machine that is gone); other
    files are never touched. Returns the names removed."""
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError:
        return []
    removed = []
    for e in entries:
        if not _is_stale(e.name, name):
            continue
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                e.unlink()
        if not os.path.lexists(e):
            removed.append(e.name)
    return removed


def _restore_aside(p: Path) -> None:
    """A run killed between setting an existing folder `p` aside and moving the new one in
    (only where the OS cannot exchange two folders in one step) left `p` absent and the old
    folder as ``.NAME.old-*``: put it back."""
    if os.path.lexists(p):
        return
    with contextlib.suppress(OSError):
        aside = [e for e in p.parent.iterdir() if e.name.startswith(f".{p.name}.old-")
                 and _is_stale(e.name, p.name) and e.is_dir()]
        if aside:
            os.replace(max(aside, key=lambda e: e.stat().st_mtime), p)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False
    where the OS or file system cannot (the caller then renames twice)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_cwd = -100
    if fn(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(e, os.strerror(e), str(b))


def _link_missing(src: Path, dst: Path, skip: str | None = None) -> None:
    """Hard-link (copy where a link fails) into folder `dst` every entry of folder `src` that
    `dst` does not have, merging subfolders; entries of `src` whose names start with `skip`
    (the output's own temporaries) are left out."""
    for entry in sorted(src.iterdir()):
        if skip and entry.name.startswith(skip):
            continue
        target = dst / entry.name
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink() and entry.is_dir() and (
                    not entry.is_symlink()):
                _link_missing(entry, target)
            continue
        if entry.is_dir() and not entry.is_symlink():
            target.mkdir()
            shutil.copystat(entry, target)
            _link_missing(entry, target)
            continue
        try:
            os.link(entry, target, follow_symlinks=False)
        except OSError:
            shutil.copy2(entry, target, follow_symlinks=False)


def _swap_in(tmp: Path, p: Path) -> None:
    """Replace the existing folder `p` by `tmp` (written inside `p`) as a whole: `tmp` moves
    beside `p`, the files of `p` that it lacks are linked into it, the two are exchanged in one
    step (or, where the OS cannot, `p` is renamed aside and `tmp` into place), and the old
    folder is deleted. Where `p` is a symbolic link or `tmp` cannot move beside it (a parent
    that cannot be written, a mount point), `tmp`'s files are moved into `p` one by one
    instead, each replacing its namesake atomically."""
    side = p.parent / tmp.name
    try:
        if p.is_symlink():
            raise OSError(errno.ENOTSUP, "a symbolic link")
        os.replace(tmp, side)
    except OSError:
        _move_into(tmp, p)
        tmp.rmdir()
        return
    try:
        os.chmod(side, stat.S_IMODE(p.stat().st_mode))
        _link_missing(p, side, f".{p.name}.partial-")
        if _exchange(side, p):
            old = side
        else:
            old = p.parent / tmp.name.replace(".partial-", ".old-", 1)
            os.replace(p, old)
            try:
                os.replace(side, p)
            except BaseException:
                os.replace(old, p)
                raise
    except BaseException:  # `p` as it was
        shutil.rmtree(side, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


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

    Yields a temporary directory to write into: a sibling ``.NAME.partial-*`` beside a `path`
    that does not exist yet, renamed to `path` on success (one atomic step); inside an existing
    `path` directory, on success the files of `path` that the command did not write are
    hard-linked into it and it replaces `path` as a whole (`_swap_in`: one atomic exchange on
    Linux; so a kill leaves the old folder or the new one, never a mix). On any exception the
    temporary directory is removed, together with any parent directories this call created, and
    `path` is left as it was (absent, or with its old files). After success the stale
    temporaries of `path` that killed runs left are removed (`remove_stale`).
    """
    p = Path(path)
    check_out_dir(p, flag)
    _restore_aside(p)
    created = []
    probe = p.parent.absolute()
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        base = p if p.is_dir() else p.parent
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=_temp_prefix(p.name or "out")))
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
            _swap_in(tmp, p)
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    remove_stale(p.parent, p.name)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory (never half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    remove_stale(path.parent, path.name)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: str | Path, df) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def atomic_write_with(path: str | Path, write, suffix: str | None = None) -> None:
    """`write(tmp)` into a temporary file in `path`'s directory, then renamed onto `path`
    (never half a file; the temporary file is removed if `write` fails)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name),
                               suffix=path.suffix if suffix is None else suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    remove_stale(path.parent, path.name)


def atomic_savefig(fig, path: str | Path, **kw) -> None:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, **kw))


def atomic_write_netcdf(idata, path: str | Path) -> None:
    """An arviz InferenceData as NetCDF (h5netcdf engine), atomically."""
    atomic_write_with(path, lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"), ".nc")
