"""The fast (pooled + leaping) variant agrees with the exact variant."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

import dormancy_model as dm
from dormancy_model.agents import Heterogeneity, simulate_agents


def two_proportion_z(a, b):
    pa, pb = a.mean(), b.mean()
    pool = (a.sum() + b.sum()) / (a.size + b.size)
    se = math.sqrt(max(pool * (1 - pool) * (1 / a.size + 1 / b.size), 1e-300))
    return abs(pa - pb) / se


def compare(model, params, n, t1, seed, het=None, leap_days=1.0, schedule="clever-combo"):
    kw = dict(n_replicates=n, t1=t1, switch_size=50.0, heterogeneity=het,
              count_days=(84.0, 168.0), assess_days=(168.0,))
    sched = dm.get_schedule(schedule)
    ex = simulate_agents(model, params, sched, key=jax.random.PRNGKey(seed), method="exact", **kw)
    fa = simulate_agents(model, params, sched, key=jax.random.PRNGKey(seed + 1), method="fast",
                         leap_days=leap_days, **kw)
    assert ex.ok and fa.ok, (ex.message, fa.message)
    return ex, fa


@pytest.fixture(scope="module")
def active(human):
    # frequent reactivation and a small switch/detection size: many relapses within 2 years
    return human.replace(k_dr=0.01, detection_size=1e4, delta_max=0.005)


def check_agreement(ex, fa):
    """Proportion tests (|z| < 4) on clearance, relapse and DTC+; two-sample KS (p > 1e-3)
    on relapse days and on cell counts."""
    for name in ("cleared", "relapsed"):
        assert two_proportion_z(getattr(ex, name), getattr(fa, name)) < 4, name
    assert two_proportion_z(ex.dtc_positive[:, 0], fa.dtc_positive[:, 0]) < 4
    rex, rfa = ex.relapse_day[ex.relapsed], fa.relapse_day[fa.relapsed]
    assert rex.size > 50 and rfa.size > 50
    assert stats.ks_2samp(rex, rfa).pvalue > 1e-3
    for j in range(ex.counts.shape[1]):
        tot_ex, tot_fa = ex.counts[:, j].sum(1), fa.counts[:, j].sum(1)
        assert stats.ks_2samp(tot_ex, tot_fa).pvalue > 1e-3


def test_fast_agrees_with_exact(model, active):
    ex, fa = compare(model, active, 400, 730.0, seed=21)
    check_agreement(ex, fa)


def test_lockstep_grouping_does_not_change_results(model, active):
    """Lanes run together until few are left, and the rest finish in a narrow loop; the
    narrow loop's width follows the chunk size (chunk // 16). Each lane's random stream is
    indexed by its own event counter, so any chunking gives identical replicates."""
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5)
    kw = dict(n_replicates=200, t1=730.0, switch_size=50.0, heterogeneity=het,
              count_days=(84.0, 400.0), method="fast", key=jax.random.PRNGKey(5))
    sched = dm.get_schedule("clever-combo")
    a = simulate_agents(model, active, sched, chunk_size=256, **kw)  # width 16
    b = simulate_agents(model, active, sched, chunk_size=24, **kw)  # width 1, 9 chunks
    assert a.ok and b.ok
    assert a.relapsed.sum() > 5 and (a.n_events.max() > 2 * a.n_events.min())
    for name in ("relapsed", "cleared", "clearance_day", "n_events"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # lesion sizes and relapse days are computed after the loop, by vectorised arithmetic
    # whose last bit may depend on the batch width
    for name in ("counts", "relapse_day"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12,
                                   err_msg=name)


@pytest.mark.slow
def test_fast_agrees_with_exact_large_heterogeneous(model, active):
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5)
    ex, fa = compare(model, active, 3000, 1095.0, seed=31, het=het, leap_days=2.0)
    check_agreement(ex, fa)


@pytest.mark.slow
def test_leap_size_does_not_change_outcomes(model, active):
    """Error control: halving the leap (2 -> 0.25 day) leaves the outcomes unchanged within
    Monte-Carlo error."""
    kw = dict(n_replicates=3000, t1=1095.0, switch_size=50.0, method="fast")
    sched = dm.get_schedule("clever-combo")
    a = simulate_agents(model, active, sched, key=jax.random.PRNGKey(1), leap_days=2.0, **kw)
    b = simulate_agents(model, active, sched, key=jax.random.PRNGKey(2), leap_days=0.25, **kw)
    assert two_proportion_z(a.relapsed, b.relapsed) < 4
    assert stats.ks_2samp(a.relapse_day[a.relapsed], b.relapse_day[b.relapsed]).pvalue > 1e-3


@pytest.mark.slow
def test_readme_agents_example_runs(root, monkeypatch):
    import re

    text = (root / "README.md").read_text()
    start = text.index("## Stochastic agents")
    block = re.findall(r"```python\n(.*?)```", text[start:text.find("\n## ", start + 3)], re.S)
    assert len(block) == 1
    monkeypatch.chdir(root)
    ns = {}
    exec(compile(block[0], "README.md", "exec"), ns)  # noqa: S102
    assert ns["res"].ok and len(ns["df"]) == 200
