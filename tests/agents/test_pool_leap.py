"""Dormant-pool leaps of the fast method (`AgentOptions.pool_leap_above`, `loops._pool_events`).

Off by default, and then the loop is the old one bit for bit; on, a pool of more dormant cells
than the threshold loses its dead cells by binomial counts at the leap ends and fires the
leap's reactivations at their own times: its means follow the mean field and its dormant count
keeps the binomial-thinning variance of independent cells."""

import math

import jax
import numpy as np
import pytest

import dormancy_model as dm
from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents

Z_TOL = 3.5
DAYS_PER_YEAR = 365.25

# the old loop's histories of `_small` (before pool leaps existed; commit 7b2f318): events per
# replicate and the column sums of the recorded counts (integers: the same draws, exactly)
GOLDEN_EVENTS = [164, 195, 225, 211, 197, 184, 284, 184, 167, 143, 195, 260, 175, 175, 146, 270,
                 166, 320, 149, 235, 216, 242, 177, 178]
GOLDEN_COUNTS = [917, 57, 1, 377, 37, 20055]


def _small(model, human, **opts):
    """24 replicates, 4 trait classes, returns P -> D (k_pd > 0), clones and lesions."""
    p = human.replace(k_dr=0.01, detection_size=1e4, delta_max=0.005, lambda_p=0.3,
                      delta_p=0.27, dormant_initial=60.0, k_pd=0.01)
    return simulate_agents(model, p, dm.get_schedule("clever-combo"), n_replicates=24,
                           key=jax.random.PRNGKey(3), t1=400.0,
                           heterogeneity=Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5,
                                                       strata=2),
                           options=AgentOptions(method="fast", switch_size=50.0,
                                                count_days=(84.0, 400.0), initial_count="fixed",
                                                **opts))


def test_pool_leap_off_is_the_old_loop_bit_for_bit(model, human):
    """Default (inf): the old histories exactly. A threshold above every pool runs the pool
    bookkeeping (more slots, other precedence) without ever leaping: the same histories again,
    bit for bit. A low threshold changes them (the option acts)."""
    off = _small(model, human)
    assert off.ok
    assert off.n_events.tolist() == GOLDEN_EVENTS
    assert off.counts.astype(int).reshape(24, -1).sum(0).tolist() == GOLDEN_COUNTS
    idle = _small(model, human, pool_leap_above=1e9)
    for name in ("n_events", "counts", "relapse_day", "clearance_day", "aspirate_count"):
        np.testing.assert_array_equal(getattr(off, name), getattr(idle, name), err_msg=name)
    for name, v in off.final_state.arrays.items():
        np.testing.assert_array_equal(v, idle.final_state.arrays[name], err_msg=name)
    on = _small(model, human, pool_leap_above=5.0)
    assert on.ok and not np.array_equal(on.n_events, off.n_events)


def test_pool_leap_guards():
    with pytest.raises(ValueError, match="GPU kernel"):
        AgentOptions(method="fast", backend="pallas", pool_leap_above=1e3)
    with pytest.raises(ValueError, match="fast method only"):
        AgentOptions(method="exact", pool_leap_above=1e3)
    with pytest.raises(ValueError, match=">= 0"):
        AgentOptions(method="fast", pool_leap_above=-1.0)
    assert AgentOptions(method="fast", backend="auto", pool_leap_above=1e3).pool_leap_above == 1e3


def _mean_field_z(model, p, res, days, years, schedule):
    """z of the agents' mean D, R, P at `days` and relapse-free probability at `years`
    against the mean field (`dm.simulate`); and of the variance of D against the binomial
    thinning D0 S (1 - S), S = mean-field D / D0."""
    tr = dm.simulate(model, p, dm.get_schedule(schedule), t1=float(res.t1))
    assert tr.ok
    n = res.counts.shape[0]
    z_mean, z_var, z_rfs = [], [], []
    d0 = float(p["dormant_initial"])
    for j, day in enumerate(days):
        for s, name in enumerate(("dormant", "reactivating", "proliferating")):
            x, mf = res.counts[:, j, s], tr.at(day, name)
            # at least the Poisson spread of the mean-field mean (rare cells: all zeros)
            se = max(x.std(ddof=1), math.sqrt(mf)) / math.sqrt(n)
            z_mean.append((x.mean() - mf) / se)
        surv = tr.at(day, "dormant") / d0
        var = d0 * surv * (1 - surv)
        # sample variance of n near-normal values: standard error var sqrt(2 / (n - 1))
        z_var.append((res.counts[:, j, 0].var(ddof=1) - var) / (var * math.sqrt(2 / (n - 1))))
    for y in years:
        mf = math.exp(-tr.at(y * DAYS_PER_YEAR, "hazard"))
        q = min(max(mf, 1.0 / n), 1.0 - 1.0 / n)
        z_rfs.append((np.mean(res.relapse_day > y * DAYS_PER_YEAR) - mf)
                     / math.sqrt(q * (1 - q) / n))
    return np.array(z_mean), np.array(z_var), np.array(z_rfs)


@pytest.mark.slow  # moved from the fast suite (10-minute budget, session 8)
def test_pool_leap_matches_mean_field_large_pool(model, human):
    """100,000 dormant cells (fixed), clever-hcq (the deficit death hazard varies within each
    day with HCQ and kills most cells by day 168), pools leaping above 200 cells: mean D, R, P
    at days 7-168, the variance of D (binomial thinning of independent cells) and the
    relapse-free probability at 2 and 2.5 years within |z| <= 3.5 of the mean field, with a
    small fraction of the exact events' count (about 210,000 cell events per replicate).

    The hazard table is on a 15-minute grid: the default hourly grid's dormant survival is
    2.5e-4 (relative, day 7, clever-combo) off the converged one, which this pool size
    resolves (tests/model/test_history.py, test_agents_match_mean_field_every_arm). clever-hcq,
    not clever-combo: under EVE the agents' clones founded on treatment grow slower than the
    mean field's lag law assumes (same place), which puts clever-combo's relapse-free
    probability out of reach of this comparison with or without pool leaps (measured: 1.0
    against 0.58 at 2 years, k_dr 1e-5)."""
    p = human.replace(k_dr=2e-6, dormant_initial=1e5)
    days = (7.0, 28.0, 84.0, 168.0)
    n = 400
    res = simulate_agents(model, p, dm.get_schedule("clever-hcq"), n_replicates=n,
                          key=jax.random.PRNGKey(17), t1=2.5 * DAYS_PER_YEAR,
                          options=AgentOptions(method="fast", count_days=days,
                                               initial_count="fixed", hazard_hours=0.25,
                                               clone_slots=32, pool_leap_above=200.0))
    assert res.ok, res.message
    z_mean, z_var, z_rfs = _mean_field_z(model, p, res, days, (2.0, 2.5), "clever-hcq")
    print("z mean", np.round(z_mean, 2), "z var", np.round(z_var, 2), "z rfs", np.round(z_rfs, 2),
          "events", res.n_events.mean())
    assert np.all(np.abs(z_mean) <= Z_TOL), z_mean
    assert np.all(np.abs(z_var) <= Z_TOL), z_var
    assert np.all(np.abs(z_rfs) <= Z_TOL), z_rfs
    # non-trivial: reactivations and relapses happened, few events per replicate
    assert res.counts[:, 1, 1].mean() > 1 and 0.05 < res.relapsed.mean() < 0.97
    assert res.n_events.mean() < 5000, res.n_events.mean()


def _two_sample_z(a, b):
    """z of the difference of means and of variances of two samples (normal approximations;
    the variance's standard error from the sample fourth moments)."""
    def var_se(x):
        m4 = np.mean((x - x.mean()) ** 4)
        v = x.var(ddof=1)
        return v, math.sqrt(max(m4 - v * v, 1e-12) / x.size)

    se_m = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    (va, sa), (vb, sb) = var_se(a), var_se(b)
    return (a.mean() - b.mean()) / max(se_m, 1e-12), (va - vb) / max(math.hypot(sa, sb), 1e-12)


@pytest.mark.slow
def test_pool_leap_agrees_with_exact_events_two_sample(model, human):
    """2,000 dormant cells (fixed) in 4 trait classes, clever-combo, 3,000 replicates each: pools
    leaping above 100 cells against exact events for every cell. Means and variances of D and
    R at days 7, 28, 84 and 168 (two-sample z) and relapse-free at 1 year (two proportions)
    within |z| <= 3.5."""
    p = human.replace(k_dr=2e-4, dormant_initial=2000.0)
    days = (7.0, 28.0, 84.0, 168.0)
    n = 3000
    het = Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5, strata=2)

    def run(seed, **opts):
        res = simulate_agents(model, p, dm.get_schedule("clever-combo"), n_replicates=n,
                              key=jax.random.PRNGKey(seed), t1=DAYS_PER_YEAR, heterogeneity=het,
                              options=AgentOptions(method="fast", count_days=days,
                                                   initial_count="fixed", clone_slots=32,
                                                   **opts))
        assert res.ok, res.message
        return res

    ex, lp = run(5), run(6, pool_leap_above=100.0)
    z = []
    for j in range(len(days)):
        for s in (0, 1):
            z.extend(_two_sample_z(lp.counts[:, j, s], ex.counts[:, j, s]))
    a, b = lp.relapsed, ex.relapsed
    pool = (a.sum() + b.sum()) / (2 * n)
    z.append((a.mean() - b.mean()) / math.sqrt(max(pool * (1 - pool) * 2 / n, 1e-12)))
    z = np.array(z)
    assert np.all(np.abs(z) <= Z_TOL), z
    assert lp.n_events.mean() < 0.5 * ex.n_events.mean()


def test_pool_leap_at_the_packaged_threshold_agrees_with_exact_events(model, human):
    """The packaged threshold (`POOL_LEAP_ABOVE`, 30 cells; 1e3 before issue 15): 400 dormant
    cells (fixed) in 4 trait classes under a strong drug death (delta_max 0.1: most pools cross
    30 cells within weeks and 85% of the replicates clear by day 400), 480 replicates leaping
    above the threshold against 480 with exact events for every cell (a threshold above every
    pool: the same compiled loop). Seeded: the mean and variance of D and R at day 84 and of D
    at day 400 (two-sample z), the cleared proportion (two proportions) within |z| <= 3.5 and
    the law of the clearance day (two-sample KS, p > 1e-3). The leap's approximations are per
    cell (`loops.pool_leap_counts`), so a low threshold must leave these laws unchanged; a
    clearance day resolved only at the leap ends, or a wrong hand-over from leaps to exact
    events, would show here. Shapes as `_small` (24-lane chunks): no new compilation."""
    from scipy.stats import ks_2samp

    from dormancy_model.agents.pipeline import POOL_LEAP_ABOVE

    assert POOL_LEAP_ABOVE == 30.0
    p = human.replace(k_dr=1e-3, detection_size=1e4, delta_max=0.1, lambda_p=0.3,
                      delta_p=0.27, dormant_initial=400.0, k_pd=0.0)
    n = 480

    def run(seed, above):
        res = simulate_agents(model, p, dm.get_schedule("clever-combo"), n_replicates=n,
                              key=jax.random.PRNGKey(seed), t1=400.0,
                              heterogeneity=Heterogeneity(autophagy_cv=0.8, reactivation_cv=0.5,
                                                          strata=2),
                              options=AgentOptions(method="fast", switch_size=50.0,
                                                   count_days=(84.0, 400.0),
                                                   initial_count="fixed", chunk_size=24,
                                                   pool_leap_above=above))
        assert res.ok, res.message
        return res

    ex, lp = run(11, 1e9), run(12, POOL_LEAP_ABOVE)
    z = []
    for j, s in ((0, 0), (0, 1), (1, 0)):
        z.extend(_two_sample_z(lp.counts[:, j, s], ex.counts[:, j, s]))
    a, b = lp.cleared, ex.cleared
    pool = (a.sum() + b.sum()) / (2 * n)
    z.append((a.mean() - b.mean()) / math.sqrt(max(pool * (1 - pool) * 2 / n, 1e-12)))
    z = np.array(z)
    assert np.all(np.abs(z) <= Z_TOL), z
    assert 0.5 < b.mean() < 0.98, b.mean()  # clearance is the common outcome
    ks = ks_2samp(np.minimum(lp.clearance_day, 1e4), np.minimum(ex.clearance_day, 1e4))
    assert ks.pvalue > 1e-3, ks
    assert lp.n_events.mean() < 0.8 * ex.n_events.mean()  # the pools leapt
