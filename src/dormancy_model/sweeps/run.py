"""`sweep`: a sweep spec -> an xarray Dataset, streamed chunk by chunk to a Zarr store.

Layout: one named dimension per swept factor (schedule, cycles, hcq_dose, eve_dose, parameter grids,
sample, patient) plus one day dimension per output (`residual_day`, `rfs_day`, `assessment_day`),
coordinates with units, and the spec text, its hash, the package version and the path and SHA-256 of
every file the spec refers to (`input_files`) in the attributes. The store is divided into
hyper-rectangular chunks of at most `chunk` trajectories; each chunk is one task: compute it with
the lock-step engine, write its data, then write a completion marker (`.sweep/done/<chunk>`). A
chunk without a marker is never trusted: a rerun with the same spec recomputes exactly the chunks
without markers (after SIGKILL, say) and `open_sweep` reads them as missing (NaN). The computation
is deterministic, so a resumed store ends identical to an uninterrupted one.

Layout: a chunk's float32 results are bitwise reproducible for one lane layout (platform and
number of devices its lanes are split over), whether computed in-process or by any number of
Dask workers, but not across device counts (different per-device batch shapes round
differently). Each marker records the layout that computed its chunk (`layout()`); a resume
under another layout recomputes those chunks, saying so, so a store never mixes two layouts.

Resume key: a store is resumed only when the spec text, the content of every file it refers
to (parameter set, packaged or not; schedule files; fit JSON) and the package version are those
it was written with; otherwise `sweep` refuses with one line naming what changed (resuming
would mix chunks of two models). `fresh=True` (`dormancy sweep --fresh`) discards the store and
starts afresh.

Execution: in-process on the local devices (default); `workers=N` starts a dask.distributed
LocalCluster; `scheduler="tcp://HOST:PORT"` uses an existing cluster. Every task computes and
writes its own chunk (the workers need the package and the output path).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import tomllib
import warnings
from pathlib import Path

import numpy as np

from dormancy_model import status as S
from dormancy_model.errors import InputError, one_line
from dormancy_model.io import check_out_dir
from dormancy_model.sweeps.spec import SweepSpec, load_sweep_spec, parse_sweep

DONE_DIR = ".sweep/done"
OUTPUT_UNITS = {"residual": "cells", "relapse_free": "1", "p_dtc_positive": "1"}
OUTPUT_DAY_DIM = {"residual": "residual_day", "relapse_free": "rfs_day",
                  "p_dtc_positive": "assessment_day"}
OUTPUT_DOC = {
    "residual": "residual burden: the marrow DTCs D + R + marrow P (cells; lesions apart, as "
                "simulate's residual) at residual_day",
    "relapse_free": "relapse-free probability exp(-Lambda) at rfs_day",
    "p_dtc_positive": "probability that one bone-marrow aspirate shows >= 1 DTC at assessment_day",
    "status": "solver status code, named by flag_values / flag_meanings (dormancy_model.status)",
    "steps": "accepted steps of the trajectory",
}


def spec_hash(spec: SweepSpec) -> str:
    return hashlib.sha256(spec.text.encode()).hexdigest()[:16]


def input_files(spec: SweepSpec) -> dict:
    """field -> {path, sha256} of every file the spec refers to."""
    return {fld: {"path": path, "sha256": sha} for fld, path, sha in spec.inputs}


def resume_key(spec: SweepSpec) -> str:
    """What a store must have been written with to be resumed: the spec text, the referenced
    files' content and the package version (a JSON string)."""
    from dormancy_model._version import __version__

    return json.dumps({"spec_sha256": spec_hash(spec), "dormancy_model_version": __version__,
                       "input_files": {k: v["sha256"] for k, v in input_files(spec).items()}},
                      sort_keys=True)


def resume_changes(spec: SweepSpec, attrs: dict) -> list[str]:
    """What differs between `spec` (now) and the store attributes `attrs`; [] to resume."""
    from dormancy_model._version import __version__

    changes = []
    if attrs.get("spec_sha256") != spec_hash(spec):
        changes.append("the spec text")
    try:
        old = json.loads(attrs["input_files"])
    except (KeyError, TypeError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict):
        changes.append("the referenced files (the store has no record of them)")
    else:
        new = input_files(spec)
        for fld in sorted(set(old) | set(new)):
            o, n = old.get(fld), new.get(fld)
            if n is None:
                changes.append(f"{fld} (no longer referenced)")
            elif not isinstance(o, dict):
                changes.append(f"{fld} {n['path']} (newly referenced)")
            elif o.get("sha256") != n["sha256"]:
                changes.append(f"the content of {fld} {n['path']}")
    ver = attrs.get("dormancy_model_version")
    if ver != __version__:
        changes.append(f"the package version ({ver} -> {__version__})")
    return changes


def chunk_shape(shape: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Chunk of at most `target` trajectories, filled from the innermost dimension outwards."""
    cs, rem = [1] * len(shape), max(int(target), 1)
    for i in reversed(range(len(shape))):
        cs[i] = max(min(shape[i], rem), 1)
        rem //= cs[i]
        if rem <= 1:
            break
    return tuple(cs)


def chunk_grid(shape, cshape):
    """Row-major list of chunks, each a tuple of slices."""
    ranges = [range(0, n, c) for n, c in zip(shape, cshape, strict=True)]
    return [tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, cshape, shape, strict=True))
            for starts in itertools.product(*ranges)]


def _chunk_id(sl) -> str:
    return ".".join(str(s.start) for s in sl)


class ChunkRunner:
    """Computes chunks of one spec with one compiled engine call (fixed batch size)."""

    def __init__(self, spec: SweepSpec, chunk: int | None = None):
        from dormancy_model.sweeps.lanes import ScheduleTable

        self.spec = spec
        self.cshape = chunk_shape(spec.shape, chunk or spec.chunk)
        self.table = ScheduleTable.build(list(spec.schedules))
        # every chunk (the last one filled up) has this many lanes: one compiled shape; the
        # engine pads further to a multiple of the devices and buckets
        self.batch = int(np.prod(self.cshape))
        self.events = self.table.event_counts(spec.t_end)

    def compute(self, sl) -> dict[str, np.ndarray]:
        import jax.numpy as jnp

        from dormancy_model.sweeps.lanes import solve_outputs

        spec = self.spec
        sub = tuple(s.stop - s.start for s in sl)
        grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
        flat = np.ravel_multi_index(tuple(g.ravel() for g in grids), spec.shape)
        n = flat.size
        flat = np.concatenate([flat, np.full(self.batch - n, flat[0])])
        vals, sid = spec.lanes(flat)
        res = solve_outputs(vals, spec.params, self.table, jnp.asarray(sid), spec.outputs,
                            spec.options, jnp.asarray(self.events[sid], jnp.float32))
        out = {}
        for k, v in res.items():
            if k == "rejected":
                continue
            a = np.asarray(v)[:n]
            out[k] = a.reshape(sub + a.shape[1:])
        return out


def _dataset_template(spec: SweepSpec, cshape, lazy: bool = False):
    import xarray as xr

    if lazy:
        import dask.array as da

        def full(shape, value, dtype, chunks):
            return da.full(shape, value, dtype=dtype, chunks=chunks)
    else:
        def full(shape, value, dtype, chunks):
            return np.full(shape, value, dtype)

    from dormancy_model._version import __version__

    coords, o = {}, spec.outputs
    for d in spec.dims:
        vals = d.values.astype(str) if d.values.dtype == object else d.values
        coords[d.name] = (d.name, vals, {"units": d.unit, "long_name": d.description})
        for cname, (cv, cu) in d.coords.items():
            coords[cname] = (d.name, np.asarray(cv, float), {"units": cu})
    days = {"residual_day": o.residual_days, "rfs_day": o.rfs_days,
            "assessment_day": o.assessment_days}
    for name, v in days.items():
        coords[name] = (name, np.asarray(v, float), {"units": "day"})
    dims = tuple(d.name for d in spec.dims)
    data = {}
    for var, dd in OUTPUT_DAY_DIM.items():
        shape = spec.shape + (len(days[dd]),)
        data[var] = (dims + (dd,), full(shape, np.nan, np.float32, tuple(cshape) + shape[-1:]),
                     {"units": OUTPUT_UNITS[var], "long_name": OUTPUT_DOC[var]})
    data["status"] = (dims, full(spec.shape, S.MISSING, np.int8, cshape),
                      {"long_name": OUTPUT_DOC["status"], **S.flag_attrs()})
    data["steps"] = (dims, full(spec.shape, 0, np.int32, cshape),
                     {"long_name": OUTPUT_DOC["steps"]})
    opts = spec.options
    attrs = {"sweep_name": spec.name, "spec_toml": spec.text, "spec_sha256": spec_hash(spec),
             "dormancy_model_version": __version__, "chunk_shape": list(cshape),
             "input_files": json.dumps(input_files(spec), sort_keys=True),
             "solver": json.dumps(dict(method=opts.method, rtol=opts.rtol, atol=opts.atol,
                                       dtype=opts.dtype)),
             "parameter_set": spec.params.name, "time_unit": "day"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _create_store(spec: SweepSpec, out: Path, cshape) -> None:
    ds = _dataset_template(spec, cshape, lazy=True)
    enc = {}
    for var in ds.data_vars:
        extra = (ds[var].shape[-1],) if var in OUTPUT_DAY_DIM else ()
        enc[var] = {"chunks": tuple(cshape) + extra,
                    "_FillValue": {"status": S.MISSING, "steps": 0}.get(var, np.nan)}
    tmp = out.with_name(out.name + ".creating")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(tmp, mode="w", encoding=enc, consolidated=False, zarr_format=3, compute=False)
    (tmp / DONE_DIR).mkdir(parents=True)
    os.replace(tmp, out)


def _store_attrs(out: Path):
    """The attributes of the sweep store at `out`, or None if it is not one."""
    try:
        attrs = json.loads((out / "zarr.json").read_text()).get("attributes", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) and "spec_sha256" in attrs else None


def _discard_store(out: Path) -> None:
    """Remove the sweep store at `out` (renamed first, so that an interrupted removal leaves
    no half store under the name)."""
    if _store_attrs(out) is None:
        raise InputError(str(out), "--fresh", "exists and is not a sweep store: not deleted")
    gone = out.with_name(out.name + ".discarding")
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(out, gone)
    shutil.rmtree(gone)


def _open_or_create(spec: SweepSpec, out: Path, cshape, fresh: bool = False) -> None:
    if out.exists() and fresh:
        _discard_store(out)
    if not out.exists():
        _create_store(spec, out, cshape)
        return
    attrs = _store_attrs(out)
    if attrs is None:
        raise InputError(str(out), "--out", "exists and is not a sweep store")
    changes = resume_changes(spec, attrs)
    if changes:
        raise InputError(str(out), "--out", "cannot resume, changed since the store was "
                         f"written: {', '.join(changes)}; rerun with --fresh to discard the "
                         "store and start afresh, or choose a new --out")
    if list(attrs.get("chunk_shape", [])) != list(cshape):
        raise InputError(str(out), "--chunk", f"the store was written with chunk shape "
                         f"{attrs.get('chunk_shape')}; resume with the same --chunk")


def layout() -> str:
    """This process's lane layout, e.g. ``cpu x 2`` (platform x local devices): what a
    chunk's float32 results depend on besides its inputs."""
    import jax

    return f"{jax.default_backend()} x {jax.local_device_count()}"


def _marker_layout(out: Path, sl) -> str:
    try:
        return (out / DONE_DIR / _chunk_id(sl)).read_text().strip()
    except OSError:
        return ""


def _write_chunk(out: Path, sl, data: dict) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(out), mode="r+")
    for var, a in data.items():
        g[var][sl] = a
    marker = out / DONE_DIR / _chunk_id(sl)
    tmp = marker.with_name("." + marker.name + ".tmp")
    tmp.write_text(layout() + "\n")
    os.replace(tmp, marker)


_RUNNERS: dict = {}


def _runner(spec_text: str, spec_src: str, chunk: int, key: str | None = None) -> ChunkRunner:
    cache = (spec_text, spec_src, chunk, key)
    if cache not in _RUNNERS:
        spec = parse_sweep(tomllib.loads(spec_text), spec_src, spec_text)
        if key is not None and resume_key(spec) != key:
            raise InputError(spec_src, "files", "a file the spec refers to (or the package) "
                             "differs on this worker from the one the sweep started with")
        _RUNNERS[cache] = ChunkRunner(spec, chunk)
    return _RUNNERS[cache]


def run_chunk_task(spec_text: str, spec_src: str, chunk: int, out: str, starts: tuple,
                   key: str | None = None) -> str:
    """One task: compute the chunk starting at `starts` and write it (used by Dask workers).
    `key`: the sweep's `resume_key`; a worker whose files differ refuses the task."""
    r = _runner(spec_text, spec_src, chunk, key)
    sl = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, r.cshape, r.spec.shape,
                                                            strict=True))
    _write_chunk(Path(out), sl, r.compute(sl))
    return _chunk_id(sl)


def missing_chunks(out: Path, shape, cshape):
    done = set(os.listdir(out / DONE_DIR)) if (out / DONE_DIR).exists() else set()
    return [sl for sl in chunk_grid(shape, cshape) if _chunk_id(sl) not in done]


def _progress(total: int, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def sweep(spec: SweepSpec | str | Path, out: str | Path | None = None, *, chunk: int | None = None,
          workers: int | None = None, scheduler: str | None = None, progress: bool = False,
          fresh: bool = False, log=None):
    """Run a sweep. Returns the xarray Dataset (opened from `out` when given, else in memory).

    `chunk`: trajectories per chunk (default the spec's `solver.chunk`). With `out`, results
    stream to a Zarr store chunk by chunk and an interrupted run resumes where it stopped (only
    with the same spec, referenced files and package version; `fresh=True` discards an
    existing store instead).
    `workers` / `scheduler` run the chunks as Dask tasks (requires `out`).
    Chunks of the store computed under another lane layout (`layout()`) are recomputed; `log`
    (default `warnings.warn`) receives the one line that says so.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep_spec(spec)
    chunk = chunk or spec.chunk
    if chunk < 1:
        raise InputError("--chunk", "chunk", f"must be >= 1, got {chunk}")
    if workers is not None and scheduler is not None:
        raise InputError("--workers/--scheduler", "cluster", "give --workers or --scheduler")
    if workers is not None and workers < 1:
        raise InputError("--workers", "workers", f"must be >= 1, got {workers}")
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    cshape = chunk_shape(spec.shape, chunk)
    if out is None:
        if workers or scheduler:
            raise InputError("--out", "out", "a Dask sweep needs an output store")
        runner = ChunkRunner(spec, chunk)
        ds = _dataset_template(spec, cshape)
        chunks = chunk_grid(spec.shape, cshape)
        with _progress(len(chunks), progress) as bar:
            task = bar.add_task("sweep", total=len(chunks))
            for sl in chunks:
                for var, a in runner.compute(sl).items():
                    ds[var].values[sl] = a
                bar.advance(task)
        return ds
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out", "exists and is not a sweep store")
    check_out_dir(out)  # e.g. a parent that is a file: refused before anything is created
    with contextlib.ExitStack() as stack:
        # the cluster is reached before the store is created: a scheduler that cannot be
        # reached leaves nothing behind
        client = stack.enter_context(_dask_client(workers, scheduler)) if (
            workers or scheduler) else None
        now = layout() if client is None else _workers_layout(client)  # before the store
        _open_or_create(spec, out, cshape, fresh)
        todo = missing_chunks(out, spec.shape, cshape)
        todo_ids = {_chunk_id(sl) for sl in todo}
        other = [sl for sl in chunk_grid(spec.shape, cshape)
                 if _chunk_id(sl) not in todo_ids and _marker_layout(out, sl) != now]
        if other:
            was = sorted({_marker_layout(out, sl) or "unknown" for sl in other})
            msg = (f"{out}: recomputing {len(other)} chunks written under another lane layout "
                   f"({', '.join(was)}) than this run's ({now}): a store holds one layout")
            (log or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
            for sl in other:  # unmarked first: a kill during the recomputation leaves them
                (out / DONE_DIR / _chunk_id(sl)).unlink()  # missing, not stale
            todo = missing_chunks(out, spec.shape, cshape)
        with _progress(len(todo), progress) as bar:
            task = bar.add_task("sweep", total=len(todo))
            if client is not None:
                _run_dask(client, spec, out, chunk, todo, lambda: bar.advance(task))
            else:
                runner = ChunkRunner(spec, chunk)
                for sl in todo:
                    _write_chunk(out, sl, runner.compute(sl))
                    bar.advance(task)
    return open_sweep(out)


SCHEDULER_TIMEOUT_S = 30.0  # to connect to a --scheduler
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_ADDRESS = re.compile(r"(?P<scheme>[a-z]+)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                      r"(?::(?P<port>[0-9]{1,5}))?")


def check_scheduler(address) -> str:
    """`--scheduler` as a Dask scheduler address SCHEME://HOST[:PORT] (SCHEME one of
    `SCHEDULER_SCHEMES`, PORT in [1, 65535]), else InputError; checked before any work."""
    m = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if m is None or m["scheme"] not in SCHEDULER_SCHEMES or (
            m["port"] is not None and not 1 <= int(m["port"]) <= 65535):
        raise InputError("--scheduler", "scheduler", "expected a Dask scheduler address such as "
                         f"tcp://HOST:PORT, got {address!r}")
    return address


@contextlib.contextmanager
def _dask_client(workers, scheduler):
    """A dask.distributed Client of the scheduler at `scheduler`, or of a LocalCluster of
    `workers` processes; a scheduler that cannot be reached within `SCHEDULER_TIMEOUT_S` is an
    InputError naming --scheduler."""
    from distributed import Client, LocalCluster

    timeout = SCHEDULER_TIMEOUT_S
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise InputError("--scheduler", "scheduler", f"cannot reach {scheduler}: "
                             f"{one_line(e) or type(e).__name__}") from None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _workers_layout(client) -> str:
    """The lane layout of the cluster's workers (one for all, else InputError)."""
    found = set(client.run(layout).values())
    if len(found) != 1:
        raise InputError("--scheduler", "workers", "the workers have different lane layouts "
                         f"({', '.join(sorted(found)) or 'no workers'}): their chunks would "
                         "differ in rounding")
    return found.pop()


def _run_dask(client, spec, out, chunk, todo, tick) -> None:
    from distributed import as_completed

    key = resume_key(spec)
    futs = [client.submit(run_chunk_task, spec.text, spec.source, chunk, str(out.resolve()),
                          tuple(s.start for s in sl), key, pure=False) for sl in todo]
    for f in as_completed(futs):
        f.result()
        tick()


def open_sweep(path: str | Path):
    """Open a sweep store as an xarray Dataset (loaded); chunks without a completion marker
    read as missing (NaN, status `status.MISSING`). attrs['complete'] says whether every chunk
    is done."""
    import xarray as xr

    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError(str(path), "store", "not a sweep store (no zarr.json)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the .sweep marker folder is not a Zarr node
        try:
            ds = xr.open_zarr(path, consolidated=False, mask_and_scale=False)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(str(path), "store", f"not a readable Zarr store: {e}") from None
    cshape = ds.attrs.get("chunk_shape")
    if (_store_attrs(path) is None or "status" not in ds.data_vars
            or not isinstance(cshape, list) or len(cshape) != ds["status"].ndim
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                       for c in cshape)):
        raise InputError(str(path), "store", "not a sweep store (no sweep attributes): "
                         "`dormancy sweep` writes one")
    cshape = tuple(cshape)
    dims = [d for d in ds["status"].dims]
    shape = tuple(ds.sizes[d] for d in dims)
    todo = missing_chunks(path, shape, cshape)
    ds.attrs["complete"] = int(not todo)
    ds.attrs["missing_chunks"] = len(todo)
    if not todo:
        return ds
    ds = ds.load()
    for sl in todo:
        for var in ds.data_vars:
            if var == "status":
                ds[var].values[sl] = S.MISSING
            elif var == "steps":
                ds[var].values[sl] = 0
            else:
                ds[var].values[sl] = np.nan
    return ds
