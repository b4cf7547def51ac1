"""The fast (pooled + leaping) variant agrees with the exact variant."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

import dormancy_model as dm
from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents


def two_proportion_z(a, b):
    pa, pb = a.mean(), b.mean()
    pool = (a.sum() + b.sum()) / (a.size + b.size)
    se = math.sqrt(max(pool * (1 - pool) * (1 / a.size + 1 / b.size), 1e-300))
    return abs(pa - pb) / se


def compare(model, params, n, t1, seed, het=None, leap_days=1.0, schedule="clever-combo"):
    kw = dict(n_replicates=n, t1=t1, heterogeneity=het)
    opts = dict(switch_size=50.0, count_days=(84.0, 168.0), assess_days=(168.0,))
    sched = dm.get_schedule(schedule)
    ex = simulate_agents(model, params, sched, key=jax.random.PRNGKey(seed),
                         options=AgentOptions(method="exact", **opts), **kw)
    fa = simulate_agents(model, params, sched, key=jax.random.PRNGKey(seed + 1),
                         options=AgentOptions(method="fast", leap_days=leap_days, **opts), **kw)
    assert ex.ok and fa.ok, (ex.message, fa.message)
    return ex, fa


@pytest.fixture(scope="module")
def active(human):
    # frequent reactivation and a small switch/detection size: many relapses within 2 years;
    # a high-turnover clone (division 0.3, death 0.27 /day: founding probability 0.1, many
    # births and deaths per clone) stresses the fast method's leaps harder than the defaults
    # and keeps the number of live clones within the default slots
    return human.replace(k_dr=0.01, detection_size=1e4, delta_max=0.005, lambda_p=0.3,
                         delta_p=0.27)


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


def relapse_power(p, n, delta=0.05, z=4.0):
    """Power of the two-proportion test |z| < `z` (n replicates per method, relapse
    probability about `p`) to detect a difference of `delta` (normal approximation)."""
    se = math.sqrt(2 * p * (1 - p) / n)
    return stats.norm.sf(z - delta / se) + stats.norm.cdf(-z - delta / se)


def test_relapse_power_closed_form():
    assert relapse_power(0.5, 5000) == pytest.approx(stats.norm.cdf(1.0), abs=1e-6)
    assert relapse_power(0.5, 400) < 0.05  # the fast suite's n cannot see 5 points


@pytest.mark.slow  # fast-suite budget (35 s; its powered twin is slow too)
def test_fast_agrees_with_exact(model, active):
    """A small smoke check (n = 400 per method: with |z| < 4 it detects only differences of
    about 17 points in relapse probability with 80% power); the powered comparison is the slow
    test_fast_agrees_with_exact_powered."""
    ex, fa = compare(model, active, 400, 730.0, seed=21)
    check_agreement(ex, fa)


POWER_N = 5000


@pytest.mark.slow
def test_fast_agrees_with_exact_powered(model, active):
    """The fast-vs-exact comparison with the power to see a 5-point difference in relapse
    probability: n = 5000 replicates per method, |z| < 4, power >= 0.84 for any relapse
    probability (0.84 at p = 0.5, more elsewhere; checked below at the observed p), plus the
    proportion and KS tests of `check_agreement`."""
    ex, fa = compare(model, active, POWER_N, 730.0, seed=41)
    pool = (ex.relapsed.sum() + fa.relapsed.sum()) / (2 * POWER_N)
    assert 0.05 < pool < 0.95
    assert relapse_power(pool, POWER_N) >= 0.8, pool
    check_agreement(ex, fa)


def test_lockstep_grouping_does_not_change_results(model, active):
    """Lanes run together until few are left, and the rest finish in a narrow loop; the
    narrow loop's width follows the chunk size (chunk // 16). Each lane's random stream is
    indexed by its own event counter, so any chunking gives identical replicates."""
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5)
    kw = dict(n_replicates=200, t1=730.0, heterogeneity=het, key=jax.random.PRNGKey(5))
    opts = dict(switch_size=50.0, count_days=(84.0, 400.0), method="fast")
    sched = dm.get_schedule("clever-combo")
    a = simulate_agents(model, active, sched, options=AgentOptions(chunk_size=256, **opts),
                        **kw)  # width 16
    b = simulate_agents(model, active, sched, options=AgentOptions(chunk_size=24, **opts),
                        **kw)  # width 1, 9 chunks
    assert a.ok and b.ok
    assert a.relapsed.sum() > 5 and (a.n_events.max() > 2 * a.n_events.min())
    for name in ("relapsed", "cleared", "clearance_day", "n_events"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # lesion sizes and relapse days are computed after the loop, by vectorised arithmetic
    # whose last bit may depend on the batch width
    for name in ("counts", "relapse_day"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12,
                                   err_msg=name)


def test_kernel_random_numbers_match_jax():
    """The GPU kernel derives each event's key with threefry written out and expands it with
    SplitMix64 in wrapping int64 arithmetic: the same bits as `jax.random.fold_in` and
    `agents_engine._uniforms`."""
    import jax.numpy as jnp

    from dormancy_model.agents import kernel as agents_kernel
    from dormancy_model.agents import loops as agents_engine

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(3), i))(jnp.arange(6))
    for it in (0, 1, 77, 2**31 + 5):
        ref = jax.vmap(lambda k, it=it: jax.random.fold_in(k, it))(keys)
        k0, k1 = agents_kernel.fold_in(keys[:, 0], keys[:, 1],
                                       jnp.full((6,), it, jnp.int64))
        np.testing.assert_array_equal(np.stack([k0, k1], axis=1), np.asarray(ref))
        u_ref = jax.vmap(lambda k: agents_engine._uniforms(k, 39))(ref)
        u = agents_kernel.uniforms(k0, k1, 39)
        np.testing.assert_array_equal(np.stack(u, axis=1), np.asarray(u_ref))


@pytest.mark.slow  # moved from the fast suite (10-minute budget, session 8)
def test_fast_kernel_equals_vmapped_loop(model, active):
    """The fast event loop as a GPU kernel (`agents_kernel`, run by Pallas' interpreter here)
    draws the same random numbers and makes the same events as the vmapped XLA loop: equal
    outcomes, event counts and cell counts; times equal to 1e-9 days (the two compilations may
    round the last bit differently). Four trait classes, returns P -> D, lanes padded to the
    block; 8 clone slots (the kernel unrolls its loops over slots: a smaller compile)."""
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5, strata=2)
    kw = dict(n_replicates=12, t1=240.0, heterogeneity=het, key=jax.random.PRNGKey(9))
    opts = dict(switch_size=20.0, count_days=(84.0, 200.0), assess_days=(168.0,),
                method="fast", initial_count="fixed", clone_slots=8)
    params = active.replace(k_pd=0.01, dormant_initial=30.0)
    sched = dm.get_schedule("clever-combo")
    a = simulate_agents(model, params, sched, options=AgentOptions(backend="xla", **opts), **kw)
    b = simulate_agents(model, params, sched,
                        options=AgentOptions(backend="pallas", kernel_block=8, **opts), **kw)
    assert a.ok and b.ok
    assert a.n_events.min() > 20
    for name in ("relapsed", "cleared", "n_events", "counts", "dtc_positive"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    for name in ("clearance_day", "relapse_day"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=0, atol=1e-9,
                                   err_msg=name)


def test_fast_kernel_lowers_to_triton(model, monkeypatch):
    """The agent kernel lowers to Triton IR for CUDA, checked on this CPU machine."""
    from jax import export

    from dormancy_model.agents import simulate as agents
    from dormancy_model.engine import pallas as engine_pallas

    captured = {}
    real = agents._run_chunk

    def spy(*args):
        captured["args"] = args
        return real(*args)

    monkeypatch.setattr(agents, "_run_chunk", spy)
    simulate_agents(model, dm.load_model_parameters("human").replace(history_days=0.0),
                    dm.get_schedule("clever-combo"),
                    n_replicates=8, key=jax.random.PRNGKey(0), t1=200.0,
                    options=AgentOptions(method="fast", initial_count="fixed",
                                         assess_days=(84.0,), backend="xla"))
    method, table, _, states, *rest = captured["args"][:12]
    monkeypatch.setattr(engine_pallas, "_interpret", lambda: False)
    f = jax.jit(lambda table, states, *r: agents._run_chunk_impl(method, table, None, states, *r,
                                                                  "pallas"))
    exp = export.export(f, platforms=["cuda"], disabled_checks=[
        export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(table, states, *rest)
    assert exp.mlir_module().count("__gpu$xla.gpu.triton") == 1


@pytest.mark.slow
def test_fast_agrees_with_exact_large_heterogeneous(model, active):
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5)
    ex, fa = compare(model, active, 3000, 1095.0, seed=31, het=het, leap_days=2.0)
    check_agreement(ex, fa)


@pytest.mark.slow
def test_leap_size_does_not_change_outcomes(model, active):
    """Error control: halving the leap (2 -> 0.25 day) leaves the outcomes unchanged within
    Monte-Carlo error."""
    kw = dict(switch_size=50.0, method="fast")
    sched = dm.get_schedule("clever-combo")
    a = simulate_agents(model, active, sched, n_replicates=3000, key=jax.random.PRNGKey(1),
                        t1=1095.0, options=AgentOptions(leap_days=2.0, **kw))
    b = simulate_agents(model, active, sched, n_replicates=3000, key=jax.random.PRNGKey(2),
                        t1=1095.0, options=AgentOptions(leap_days=0.25, **kw))
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
