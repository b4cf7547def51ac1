"""Sweep-spec helpers shared by the sweep tests: parse a spec text as the file `spec.toml` in a
folder, and run `dormancy sweep` on it through the CLI."""

from __future__ import annotations

import tomllib

from cli_run import run
from dormancy_model.sweeps.run import open_sweep
from dormancy_model.sweeps.spec import parse_sweep


def parse_spec_file(tmp_path, text):
    """Write `text` to tmp_path/spec.toml and parse it (relative paths resolve there)."""
    src = tmp_path / "spec.toml"
    src.write_text(text)
    return parse_sweep(tomllib.loads(text), str(src), text)


def run_sweep_cli(tmp_path, text, capsys, out="o.zarr"):
    """`dormancy sweep tmp_path/spec.toml --out tmp_path/OUT`: exit 0, a complete store with
    every lane solved; returns the opened store."""
    (tmp_path / "spec.toml").write_text(text)
    code, _, err = run(["sweep", str(tmp_path / "spec.toml"), "--out", str(tmp_path / out)],
                       capsys)
    assert code == 0, err
    ds = open_sweep(tmp_path / out)
    assert ds.attrs["complete"] == 1 and (ds["status"].values == 0).all()
    return ds
