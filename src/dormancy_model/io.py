"""Output helpers: atomic writes and output-directory checks (no partial output on failure)."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path

from dormancy_model.errors import InputError


def read_toml(path: str | Path) -> tuple[dict, str]:
    """One TOML reader for every input file: (document, text), or one-line InputError."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
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


def atomic_write_text(path: str | Path, text: str) -> None:
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
