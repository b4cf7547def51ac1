"""Run `dormancy ARGS...` in a subprocess and SIGKILL it at a chosen point (kill-anywhere tests).

`python kill_point.py POINT [--trial-double] -- ARGS...` runs the CLI in this process after
installing POINT, one of
  ``none``            no kill;
  ``trace``           no kill; print every counted event on stderr (``event KIND K [DEST]``);
  ``replace:K``       SIGKILL just before the K-th ``os.replace`` (every atomic rename of a file
                      or folder: each file Zarr writes, a sweep's store creation and chunk
                      markers, a fit's figures and JSON, a trial report's folder);
  ``replace:TEXT:K``  the same, counting only the renames whose destination contains TEXT;
  ``zarr:K``          SIGKILL just before the K-th write into a Zarr array (a sweep's chunk data,
                      the coordinates at store creation);
  ``half:K``          the K-th text file written through ``os.fdopen`` (``io.atomic_write_text``)
                      receives the first half of its text, is flushed to disk, then SIGKILL;
  ``delay:SECONDS``   SIGKILL after SECONDS of wall time (a timer thread: anywhere at all).
``--trial-double`` replaces the agent model by the recording double of test_trial_protocol (the
report is written by the real code from deterministic outcomes, in seconds).

The counted points are deterministic, so a test picks them from a seeded generator after a
``trace`` run has counted them. `run(point, args)` is the subprocess call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    kind, _, arg = point.partition(":")
    text, _, arg = arg.rpartition(":")
    count = {"replace": 0, "zarr": 0, "write": 0}
    trace = kind == "trace"

    def hit(event: str, dest: str = "") -> bool:
        if event == "replace" and text not in dest:
            return False
        count[event] += 1
        if trace:
            print(f"event {event} {count[event]} {dest}".rstrip(), file=sys.stderr, flush=True)
        return kind == {"replace": "replace", "zarr": "zarr", "write": "half"}[event] and (
            count[event] == int(arg))

    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if hit("replace", os.fspath(dst)):
            _die()
        return real_replace(src, dst, *a, **kw)

    os.replace = replace

    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *a, **kw):
        f = real_fdopen(fd, mode, *a, **kw)
        if "w" in mode and hit("write"):
            whole = f.write

            def write(text):
                whole(text[:len(text) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()

            f.write = write
        return f

    os.fdopen = fdopen

    if kind in ("zarr", "trace"):
        import zarr

        real_set = zarr.Array.__setitem__

        def setitem(self, sel, value):
            if hit("zarr"):
                _die()
            return real_set(self, sel, value)

        zarr.Array.__setitem__ = setitem
    if kind == "delay":
        t = threading.Timer(float(arg), _die)
        t.daemon = True
        t.start()


def run(point: str, args, *, cwd, trial_double: bool = False, timeout: float = 600,
        devices: int | None = None) -> subprocess.CompletedProcess:
    """`dormancy ARGS` killed at `point`; `devices`: JAX CPU devices of the subprocess (default
    the CLI's: one per core)."""
    import dormancy_model

    env = dict(os.environ)
    # this checkout's package, also when the test's PYTHONPATH is relative (cwd changes here)
    src = str(Path(dormancy_model.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={int(devices)}"
    cmd = [sys.executable, str(HERE / "kill_point.py"), point] + (
        ["--trial-double"] if trial_double else []) + ["--", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def events(stderr: str) -> dict[str, int]:
    """Counted events of a ``trace`` run: kind -> how many."""
    n = {"replace": 0, "zarr": 0, "write": 0}
    for line in stderr.splitlines():
        if line.startswith("event "):
            kind, k = line.split()[1:3]
            n[kind] = max(n[kind], int(k))
    return n


def main(argv) -> None:
    point, rest = argv[0], argv[1:]
    sep = rest.index("--")
    opts, args = rest[:sep], rest[sep + 1:]
    install(point)
    if "--trial-double" in opts:
        sys.path[:0] = [str(HERE), str(HERE / "trials")]
        from test_trial_protocol import Recorder

        from dormancy_model.trials import protocol

        rec = Recorder()
        protocol._agent_simulator = lambda: rec
    from dormancy_model.cli.main import main as cli

    cli(args)


if __name__ == "__main__":
    main(sys.argv[1:])
