"""Every script in examples/ runs, and what it prints says what it should (not only exit 0)."""

import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

import dormancy_model as dm
from dormancy_model.model import observables as O
from dormancy_model.model.observables import initial_cells

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
ARM_LINE = re.compile(r"^\s*(?P<name>[\w-]+): ok; residual after 6 cycles\s+(?P<res>[0-9.]+) "
                      r"cells, 3-year relapse-free (?P<rfs>[0-9.]+)$")


def check_simulate_arms(out: str) -> None:
    """Four arms simulated without solver failure; the drugs lower the residual burden after
    6 cycles and raise relapse-free survival, the combination most; the custom schedule is
    described and its table runs every 28 days over one year from 100 cells with drug on board
    during treatment and the EVE level washing out after it."""
    lines = out.splitlines()
    arms = {m["name"]: (float(m["res"]), float(m["rfs"]))
            for m in map(ARM_LINE.match, lines) if m}
    assert set(arms) == {"observation", "clever-hcq", "clever-eve", "clever-combo"}, out
    res = {k: v[0] for k, v in arms.items()}
    rfs = {k: v[1] for k, v in arms.items()}
    assert all(0 <= r <= 1 for r in rfs.values()), rfs
    for single in ("clever-hcq", "clever-eve"):
        assert res["clever-combo"] < res[single] < res["observation"], res
        assert rfs["observation"] < rfs[single] <= rfs["clever-combo"], rfs
    assert any(ln.startswith("hcq-3wk-on-1-off: HCQ 400 mg PO BID days 1-21") for ln in lines)
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["time_day", "residual"])
    rows = [[float(x) for x in ln.split()[1:]] for ln in lines[head + 1:] if ln.strip()]
    days = [r[0] for r in rows]
    assert days == [28.0 * i for i in range(len(days))] and days[-1] >= 336, days
    # the marrow at day 0: 100 dormant cells, the reactivating cells the untreated history
    # leaves, and the marrow clones it founded (marrow P from the history's escape alone)
    hp = dm.load_model_parameters("human")
    day0 = float(sum(initial_cells(hp)))
    mr = O.marrow_reads(jnp.zeros(1), hp, 0.0)
    clones = float(O.marrow_proliferating(jnp.zeros(1), jnp.zeros_like(mr.times), mr,
                                          hp["proliferating_initial"])[0])
    assert day0 > 100.0 and clones > 0 and rows[0][2] == rows[0][3] == 0.0
    assert rows[0][1] == pytest.approx(day0 + clones, rel=1e-5)
    on = [r for r in rows if 0 < r[0] <= 168]
    assert all(r[2] > 0 and r[3] > 0 for r in on)  # HCQ and EVE levels during treatment
    assert rows[-1][3] < 1e-6 * on[-1][3]  # EVE washed out after the last cycle


CHECKS = {"simulate_arms.py": check_simulate_arms}


def test_every_example_has_a_content_check():
    assert {p.name for p in EXAMPLES} == set(CHECKS)


def test_simulate_arms_check_can_fail():
    good = ("  observation: ok; residual after 6 cycles  102.23 cells, 3-year relapse-free 0.732\n"
            "   clever-hcq: ok; residual after 6 cycles    4.42 cells, 3-year relapse-free 0.944\n"
            "   clever-eve: ok; residual after 6 cycles    4.06 cells, 3-year relapse-free 0.984\n"
            " clever-combo: ok; residual after 6 cycles  200.05 cells, 3-year relapse-free 0.995\n")
    with pytest.raises(AssertionError):
        check_simulate_arms(good)  # the combination leaves more cells than no drug


@pytest.mark.parametrize("script", [  # simulate_arms.py (44 s) in the slow suite: budget
    pytest.param(p, marks=pytest.mark.slow) if p.name == "simulate_arms.py" else p
    for p in EXAMPLES], ids=[p.name for p in EXAMPLES])
def test_example_runs(script):
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       cwd=script.parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    CHECKS[script.name](r.stdout)
