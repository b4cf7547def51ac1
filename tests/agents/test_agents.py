"""Agent model: exact probabilities, ODE mean, reproducibility, heterogeneity.

All statistical checks state their tolerance (z-scores, p-values); sizes are small and the
constant-rate cases share one compiled program (same schedule, horizon, shapes).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dormancy_model as dm
from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents

T1 = 100.0
N = 2000
DAYS = (50.0, 100.0)


def constant_rate(human, **kw):
    """No drug, no reactivation: only the rates given in kw act."""
    base = dict(k_dr=0.0, k_rd=0.0, k_rp=0.0, k_pd=0.0, delta_r=0.0, delta_d0=0.0,
                dormant_initial=0.0, reactivating_initial=0.0, proliferating_initial=0.0)
    base.update(kw)
    return human.replace(**base)


def run(model, params, schedule="observation", seed=0, n_replicates=N, t1=T1,
        heterogeneity=None, **options):
    """`options`: `AgentOptions` fields."""
    options.setdefault("initial_count", "fixed")
    options.setdefault("count_days", DAYS)
    return simulate_agents(model, params, dm.get_schedule(schedule), n_replicates=n_replicates,
                           key=jax.random.PRNGKey(seed), t1=t1, heterogeneity=heterogeneity,
                           options=AgentOptions(**options))


def test_birth_death_extinction_probability(model, human):
    """A clone of 3 cells, b = 1, d = 0.5 /day: it dies out before reaching the switch size S
    with the gambler's-ruin probability (rho^3 - rho^S) / (1 - rho^S), rho = d/b, which is
    (d/b)^3 up to rho^S. Monte-Carlo tolerance 4 standard errors."""
    b, d, n0, s = 1.0, 0.5, 3, 30
    p = constant_rate(human, lambda_p=b, delta_p=d, proliferating_initial=float(n0))
    res = run(model, p, switch_size=float(s))
    assert res.ok, res.message
    rho = d / b
    expected = (rho**n0 - rho**s) / (1 - rho**s)
    assert abs(expected - rho**n0) < 1e-6
    se = math.sqrt(expected * (1 - expected) / N)
    assert abs(res.cleared.mean() - expected) < 4 * se
    # every replicate either died out or reached the switch size within 100 days
    assert np.all(res.cleared ^ np.isfinite(res.final_state.arrays["switch_day"]).any(1))


def test_pure_death_survivors_are_binomial(model, human):
    """20 dormant cells dying at 0.01 /day: survivors at day t ~ Binomial(20, exp(-0.01 t))
    (chi-square goodness of fit, p > 1e-3 at each day)."""
    n0, rate = 20, 0.01
    p = constant_rate(human, delta_d0=rate, dormant_initial=float(n0))
    res = run(model, p, seed=1)
    assert res.ok, res.message
    for j, day in enumerate(DAYS):
        surv = res.counts[:, j, 0].astype(int)
        pmf = stats.binom.pmf(np.arange(n0 + 1), n0, math.exp(-rate * day))
        # pool sparse tails so every expected bin count is >= 5
        edges = [k for k in range(n0 + 1) if N * pmf[:k + 1].sum() >= 5
                 and N * pmf[k + 1:].sum() >= 5]
        bins = np.digitize(surv, np.array(edges) + 0.5)
        obs = np.bincount(bins, minlength=len(edges) + 1)
        cdf = np.concatenate([[0.0], stats.binom.cdf(edges, n0, math.exp(-rate * day)), [1.0]])
        exp = N * np.diff(cdf)
        assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_same_key_same_result_different_key_different(model, human):
    p = constant_rate(human, delta_d0=0.01, dormant_initial=20.0)
    a = run(model, p, seed=1)
    b = run(model, p, seed=1)
    c = run(model, p, seed=2)
    d = run(model, p, seed=1, chunk_size=N)  # results do not depend on the chunking
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.clearance_day, b.clearance_day)
    np.testing.assert_array_equal(a.counts, d.counts)
    assert not np.array_equal(a.counts, c.counts)


@pytest.mark.slow  # moved from the fast suite (10-minute budget, session 8)
def test_replicate_i_does_not_depend_on_n_or_padding(model, human):
    """n is padded to a few compiled sizes (13 -> 14 lanes, 20 -> 20): replicate i of a run
    with per-patient parameters depends only on the key and i, aspirates included."""
    from dormancy_model.agents.simulate import _bucket

    assert [_bucket(n) for n in (1, 8, 9, 13, 20, 33, 1000)] == [1, 8, 10, 14, 20, 40, 1024]
    rng = np.random.default_rng(0)
    p = constant_rate(human, delta_d0=0.01, dormant_initial=20.0, aspirate_fraction=0.05)
    pat = p.replace(delta_d0=rng.uniform(0.005, 0.02, 20))
    few = pat.replace(delta_d0=pat["delta_d0"][:13])
    a = run(model, few, seed=3, n_replicates=13, assess_days=(50.0,))
    b = run(model, pat, seed=3, n_replicates=20, assess_days=(50.0,))
    assert a.counts.shape[0] == 13 and a.final_state.arrays["kind"].shape[0] == 13
    np.testing.assert_array_equal(a.counts, b.counts[:13])
    np.testing.assert_array_equal(a.aspirate_count, b.aspirate_count[:13])


def test_heterogeneous_death_matches_lognormal_mixture(model, human):
    """Dormant death rate delta_D0 + a * X with a ~ log-normal(mean 1, cv): the surviving
    fraction is E_a[exp(-(delta_D0 + a X) t)], computed with scipy quadrature; the homogeneous
    limit cv -> 0 reproduces cv = 0 draw for draw."""
    # make the deficit channel act without drugs: reserve < 1 gives a permanent deficit
    p = constant_rate(human, dormant_initial=20.0, delta_d0=0.001, autophagy_reserve=0.8,
                      delta_max=0.03)
    cv = 1.0
    res = run(model, p, seed=3, heterogeneity=Heterogeneity(autophagy_cv=cv))
    hom = run(model, p, seed=3, heterogeneity=Heterogeneity(autophagy_cv=0.0))
    tiny = run(model, p, seed=3, heterogeneity=Heterogeneity(autophagy_cv=1e-12))
    np.testing.assert_array_equal(hom.counts, tiny.counts)
    from dormancy_model.model import rates as rates

    x = float(rates.cell_rates(0.0, 0.0, p, autophagy_dependence=1.0).death_dormant) - 0.001
    s = math.sqrt(math.log1p(cv * cv))
    for j, day in enumerate(DAYS):
        def integrand(z, day=day):
            a = math.exp(s * z - 0.5 * s * s)
            return stats.norm.pdf(z) * math.exp(-(0.001 + a * x) * day)

        from scipy.integrate import quad

        frac = quad(integrand, -10, 10)[0]
        # cells and their traits are iid, so survivors ~ Binomial(20, frac) exactly
        mean, se = 20 * frac, math.sqrt(20 * frac * (1 - frac) / N)
        assert abs(res.counts[:, j, 0].mean() - mean) < 4 * se
        # and it differs from the homogeneous survival (Jensen: heterogeneity helps survival)
        hom_frac = math.exp(-(0.001 + x) * day)
        assert res.counts[:, j, 0].mean() > 20 * hom_frac + 4 * se


@pytest.fixture(scope="module")
def dosed(human):
    # raise reactivation so that R and P are populated within the test horizon
    return human.replace(k_dr=5e-3)


def test_replicate_mean_equals_ode_under_dosing(model, dosed):
    """MODEL.md must-hold 4: the replicate mean of D, R, P equals the ODE under the CLEVER
    combination schedule (|mean - ODE| < 4.5 standard errors at each day)."""
    days = np.array([7.0, 28.0, 84.0, 168.0, 200.0])
    res = simulate_agents(model, dosed, dm.get_schedule("clever-combo"), n_replicates=1500,
                          key=jax.random.PRNGKey(7), t1=200.0,
                          options=AgentOptions(count_days=days))
    assert res.ok, res.message
    tr = dm.simulate(model, dosed, dm.get_schedule("clever-combo"), ts=np.concatenate([[0.0],
                                                                                      days]))
    ode = np.stack([np.asarray(tr.dormant)[1:], np.asarray(tr.reactivating)[1:],
                    np.asarray(tr.proliferating)[1:]], axis=1)
    mean = res.counts.mean(axis=0)
    se = res.counts.std(axis=0, ddof=1) / math.sqrt(res.counts.shape[0])
    z = np.abs(mean - ode) / np.maximum(se, 1e-12)
    assert np.all(z < 4.5), (mean, ode, z)
    # the dynamics are not trivial: D falls by over 99%, R and P are populated
    assert mean[-1, 0] < 0.01 * mean[0, 0] and mean[1, 1] > 0.3 and mean[1, 2] > 0.01


def _require_gillespy2():
    """GillesPy2 (a dev dependency): its absence fails the independent SSA check, never skips
    it."""
    try:
        import gillespy2
    except ImportError as e:
        pytest.fail(f"GillesPy2 is a dev dependency (pip install -e '.[dev]'): {e}; the "
                    "independent SSA check must run, not skip")
    return gillespy2


def test_missing_gillespy2_fails_not_skips(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gillespy2", None)  # import now raises ImportError
    with pytest.raises(pytest.fail.Exception, match="GillesPy2 is a dev dependency"):
        _require_gillespy2()


def test_extinction_times_match_gillespy2_ssa(model, human, tmp_path, monkeypatch):
    """Independent check: constant-rate birth-death (N0 = 5, b = 0.10, d = 0.12 /day) against
    GillesPy2's C++ SSA. Extinction days (ceil, censored at day 100) have the same distribution
    (chi-square test of homogeneity, p > 1e-3), and both extinct fractions match the closed
    form P0(t)^5 (4 standard errors)."""
    import os

    gillespy2 = _require_gillespy2()
    monkeypatch.setenv("PATH", os.path.dirname(os.sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    b, d, n0 = 0.10, 0.12, 5
    p = constant_rate(human, lambda_p=b, delta_p=d, proliferating_initial=float(n0))
    res = run(model, p, seed=11, switch_size=1e6)
    assert res.ok, res.message
    ours = np.where(res.cleared, np.ceil(res.clearance_day), T1 + 1)

    m = gillespy2.Model(name="birthdeath")
    m.add_parameter([gillespy2.Parameter(name="b", expression=b),
                     gillespy2.Parameter(name="d", expression=d)])
    x = gillespy2.Species(name="X", initial_value=n0, mode="discrete")
    m.add_species([x])
    m.add_reaction([gillespy2.Reaction(name="birth", reactants={x: 1}, products={x: 2},
                                       rate="b"),
                    gillespy2.Reaction(name="death", reactants={x: 1}, products={}, rate="d")])
    m.timespan(np.linspace(0, T1, int(T1) + 1))
    solver = gillespy2.SSACSolver(model=m, output_directory=str(tmp_path / "ssa"))
    out = m.run(solver=solver, number_of_trajectories=N, seed=12345)
    traj = np.stack([np.asarray(r["X"]) for r in out])
    extinct = traj == 0
    theirs = np.where(extinct.any(1), np.argmax(extinct, axis=1).astype(float), T1 + 1)

    e = math.exp((b - d) * T1)
    p0 = (d * (e - 1) / (b * e - d)) ** n0
    for x_ in (ours, theirs):
        frac = np.mean(x_ <= T1)
        assert abs(frac - p0) < 4 * math.sqrt(p0 * (1 - p0) / N)
    edges = np.unique(np.quantile(np.concatenate([ours, theirs]), np.linspace(0, 1, 11)))
    table = np.array([np.histogram(v, bins=np.append(edges[:-1], np.inf))[0]
                      for v in (ours, theirs)])
    table = table[:, table.sum(0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_hazard_grid_padding_and_cell_lookup(model, human):
    """The hazard grid is padded after t1 to a multiple of 512 nodes (calls starting on
    different days share shapes); the O(1) cell lookup still finds nodes[k] <= t < nodes[k+1]
    everywhere in [t0, t1], across the fine/coarse split and at t1."""
    from dormancy_model.agents.hazard import hazard_nodes, hazard_table
    from dormancy_model.pk.closed_form import Dosing

    sched = dm.get_schedule("clever-combo")
    for t0 in (0.0, 123.4):
        g = hazard_nodes(t0, 1826.25, sched.end_of_treatment)
        assert g.nodes.size % 512 == 0 and np.all(np.diff(g.nodes) > 0)
        spec = np.array([t0, g.h_fine, g.t_split, g.h_coarse, g.n_fine])
        tab = hazard_table(model, human, Dosing.from_schedule(sched), g.nodes, spec)
        ts = np.concatenate([np.random.default_rng(0).uniform(t0, 1826.25, 2000),
                             [t0, g.t_split, 1826.25 - 1e-6, 1826.25], g.nodes[:50]])
        k = np.asarray(jax.vmap(tab.cell)(jnp.asarray(ts)))
        assert np.all(g.nodes[k] <= ts) and np.all(ts < g.nodes[k + 1])


@pytest.mark.parametrize("final", ["exact_final", "fast_final"])
def test_final_status_keeps_overflow_over_max_events(final):
    """An unfinished lane reports max_events, unless an earlier slot overflow outranks it
    (status.combine); a finished lane keeps its status."""
    from dormancy_model import status as S
    from dormancy_model.agents import loops as E

    keys = ("kind", "count", "a", "rp", "switch_day", "clearance_day", "d", "r", "class_a",
            "class_rp", "ckind", "ccount", "ccls", "records", "it")
    c = {k: jnp.zeros(1) for k in keys}
    statuses = jnp.asarray([S.OK, S.SLOT_OVERFLOW, S.OK, S.SLOT_OVERFLOW])
    done = jnp.asarray([False, False, True, True])
    _, _, status, _ = jax.vmap(lambda st, dn: getattr(E, final)(dict(c, status=st, done=dn)))(
        statuses, done)
    assert S.names(np.asarray(status)).tolist() == [
        "max_events", "slot_overflow", "ok", "slot_overflow"]
