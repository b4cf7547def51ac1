"""The aspirate's detection law (`model.observables`, issue 14): f = aspirate_cells /
marrow_cells, negative-binomial counts Poisson(f N G), G ~ Gamma(1/a, mean 1), against closed
forms (scipy.stats.nbinom), in the mean field, the trial population and the agents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import dormancy_model as dm
from dormancy_model.model import observables as O
from dormancy_model.trials.population import (
    Population,
    load_median_for_positivity,
    sample_patients,
    screening_positivity,
)


def _nbinom(m, a):
    """scipy's negative binomial of mean m and variance m + a m^2."""
    return stats.nbinom(1.0 / a, 1.0 / (1.0 + a * m))


def test_p_dtc_positive_is_the_negative_binomial_and_poisson_at_zero():
    cells = np.array([1.0, 1e3, 1e5, 3e6])
    f = 2.74e-6
    for a in (0.25, 1.0, 4.0):
        ref = 1.0 - _nbinom(f * cells, a).pmf(0)  # scipy: 1 - p^n, ~1e-10 off at tiny means
        np.testing.assert_allclose(np.asarray(O.p_dtc_positive(cells, f, a)), ref, rtol=1e-8)
        np.testing.assert_allclose(np.asarray(O.aspirate_variance(cells, f, a)),
                                   _nbinom(f * cells, a).var(), rtol=1e-8)
    # a = 0: exactly today's Poisson law, bit for bit
    np.testing.assert_array_equal(np.asarray(O.p_dtc_positive(cells, f, 0.0)),
                                  np.asarray(-jnp.expm1(-f * jnp.asarray(cells))))
    np.testing.assert_array_equal(np.asarray(O.p_dtc_positive(cells, f)),
                                  np.asarray(O.p_dtc_positive(cells, f, 0.0)))
    # k = 1/a -> inf recovers Poisson; gradients finite at a = 0 and a > 0
    np.testing.assert_allclose(np.asarray(O.p_dtc_positive(cells, f, 1e-9)),
                               -np.expm1(-f * cells), rtol=1e-6)
    for a in (0.0, 1.0):
        g = jax.grad(lambda n, a=a: O.p_dtc_positive(n, f, a))(1e5)
        assert np.isfinite(float(g)) and float(g) > 0


def test_draw_counts_law_and_poisson_identity():
    key = jax.random.PRNGKey(7)
    m = jnp.full((50_000,), 2.0)
    # a = 0: the same draws as jax.random.poisson with the same key
    np.testing.assert_array_equal(np.asarray(O.draw_counts(key, m, 0.0)),
                                  np.asarray(jax.random.poisson(key, m)))
    draw = jax.jit(O.draw_counts)  # one program for both dispersions
    for a in (0.5, 2.0):
        x = np.asarray(draw(key, m, a))
        ref = _nbinom(2.0, a)
        se_mean = np.sqrt(ref.var() / x.size)
        assert abs(x.mean() - ref.mean()) < 4 * se_mean
        assert x.var() == pytest.approx(ref.var(), rel=0.08)
        for k in (0, 1, 2, 5):  # pmf, within 4 binomial s.e.
            p = ref.pmf(k)
            assert abs(np.mean(x == k) - p) < 4 * np.sqrt(p * (1 - p) / x.size) + 1e-4


def test_draw_aspirate_np_law():
    rng = np.random.default_rng(3)
    cells = np.full(200_000, 1e6)
    f, a = 2.0e-6, 1.0
    x = O.draw_aspirate_np(rng, cells, f, a)
    ref = _nbinom(2.0, a)
    for k in (0, 1, 3):
        p = ref.pmf(k)
        assert abs(np.mean(x == k) - p) < 4 * np.sqrt(p * (1 - p) / x.size)
    # a = 0: rng.poisson(f N), nothing else drawn
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(O.draw_aspirate_np(r1, cells[:100], f, 0.0),
                                  r2.poisson(f * cells[:100]))


def test_screening_positivity_negative_binomial_quadrature_and_root():
    f, a, sig, med = 2.74e-6, 1.0, 1.5, 1e5
    ref, _ = integrate.quad(
        lambda z: stats.norm.pdf(z) * (1 - _nbinom(f * med * np.exp(sig * z), a).pmf(0)),
        -12, 12, epsabs=1e-12)
    assert screening_positivity(med, sig, f, a) == pytest.approx(ref, abs=1e-8)
    m = load_median_for_positivity(0.3, sig, f, a)
    assert screening_positivity(m, sig, f, a) == pytest.approx(0.3, abs=1e-10)
    # fixed load: (1 + a f N)^(-1/a) = 0.7
    fixed = load_median_for_positivity(0.3, 1e-9, f, a)
    assert fixed == pytest.approx((0.7 ** -a - 1) / (a * f), rel=1e-6)


def test_packaged_fraction_is_aspirate_cells_over_marrow_cells(human):
    f = float(human["aspirate_fraction"])
    assert f == pytest.approx(float(human["aspirate_cells"]) / float(human["marrow_cells"]),
                              rel=0.01)
    assert float(human["aspirate_cells"]) == 2e6
    mouse = dm.load_model_parameters("mouse")
    assert float(mouse["aspirate_fraction"]) == pytest.approx(
        float(mouse["aspirate_cells"]) / float(mouse["marrow_cells"]))
    assert float(mouse["aspirate_dispersion"]) == 0.0  # mouse studies: Poisson, as before


def test_a_file_whose_fraction_disagrees_with_the_cells_is_refused(tmp_path, root):
    text = (root / "src" / "dormancy_model" / "params" / "data" / "human.toml").read_text()
    start = text.index("[parameters.aspirate_fraction]")
    end = text.index("\n[", start + 1)
    block = text[start:end].replace("value = 2.74e-6", "value = 3.6e-3")
    f = tmp_path / "p.toml"
    f.write_text(text[:start] + block + text[end:])
    with pytest.raises(dm.InputError, match="aspirate_cells / marrow_cells"):
        dm.load_parameters(f)


def test_enrolled_baseline_counts_follow_the_law(human):
    """The trial's screening: positivity 30% (the solved median), and the enrolled baseline
    counts are the zero-truncated mixture the law gives (checked by their share of ones)."""
    pop = Population()
    n = 20_000
    s = sample_patients(jax.random.key(2), n, pop, human, screen=False)
    pos = s.baseline_count >= 1
    assert pos.mean() == pytest.approx(0.3, abs=4 * np.sqrt(0.21 / n))
    f, a = float(human["aspirate_fraction"]), float(human["aspirate_dispersion"])
    # P(count = 1 | N) averaged over the drawn loads, among the positives
    m = f * s.load
    p1 = _nbinom(m, a).pmf(1)
    share1 = p1.sum() / (1 - _nbinom(m, a).pmf(0)).sum()
    assert np.mean(s.baseline_count[pos] == 1) == pytest.approx(share1, abs=0.02)


def test_agent_aspirate_draw_at_a_fixed_pool_matches_the_law():
    """The agents' aspirate draw (`agents.simulate._device_outcomes`, the step that turns the
    recorded marrow cells into counts) at a fixed pool of 200 cells, f = 0.01: the law's mean
    and variance, and Poisson on the lanes with a = 0."""
    from dormancy_model.agents.simulate import _device_outcomes, _replicate_keys

    n, S = 16_000, 4
    final = {"clone_kind": jnp.zeros((n, S), jnp.int32), "switch_day": jnp.full((n, S), jnp.inf),
             "clearance_day": jnp.full((n,), jnp.inf)}
    records = jnp.broadcast_to(jnp.asarray([150.0, 50.0, 0.0]), (n, 1, 3))  # D, R, marrow P
    _, _, k_asp = _replicate_keys(jax.random.PRNGKey(4), n)
    # batched parameters (one f and a per lane, as in a trial): a = 1 on half the lanes, 0 on
    # the other half (Poisson)
    half = jnp.arange(n)[:, None] < n // 2
    out = _device_outcomes(jnp.asarray(0.03), jnp.asarray(1e9), jnp.full((n, 1), 0.01),
                           jnp.where(half, 1.0, 0.0), final, records, np.full(8, n), k_asp,
                           jnp.asarray([1.0]), np.array([0]), np.array([0]), jnp.asarray(1e4),
                           jnp.asarray(10.0), "clone_kind")
    x = np.asarray(out["aspirate_count"], float).ravel()
    for sel, ref in ((slice(0, n // 2), _nbinom(2.0, 1.0)), (slice(n // 2, n),
                                                             stats.poisson(2.0))):
        m = n // 2
        assert abs(x[sel].mean() - ref.mean()) < 4 * np.sqrt(ref.var() / m)
        # the sample variance of a geometric law (a = 1) has s.e. ~3.2% at 8,000 draws
        assert x[sel].var() == pytest.approx(ref.var(), rel=0.15)
        p0 = ref.pmf(0)  # P(DTC-): 1/3 (a = 1) vs e^-2 (Poisson)
        assert abs(np.mean(x[sel] == 0) - p0) < 4 * np.sqrt(p0 * (1 - p0) / m)


@pytest.mark.slow
def test_agent_aspirates_at_a_fixed_pool_match_the_law(model, human):
    """Agents end to end: the aspirate counts of a fixed marrow pool (no drug, no history, 1
    day; deaths and reactivations negligible) have the law's mean and variance (28 s)."""
    p = human.replace(dormant_initial=200.0, history_days=0.0, k_dr=1e-12, delta_d0=1e-6,
                      aspirate_fraction=0.01, aspirate_dispersion=1.0)
    res = dm.simulate_agents(model, p, dm.get_schedule("observation"), n_replicates=4000,
                             key=jax.random.PRNGKey(11), t1=1.0,
                             options=dm.AgentOptions(method="fast", assess_days=(1.0,),
                                                     initial_count="fixed"))
    assert res.ok, res.message
    x = np.asarray(res.aspirate_count, float).ravel()
    ref = _nbinom(2.0, 1.0)  # f N = 0.01 x 200 (+- a death or two in 4,000 replicates)
    assert abs(x.mean() - ref.mean()) < 4 * np.sqrt(ref.var() / x.size)
    assert x.var() == pytest.approx(ref.var(), rel=0.1)


def test_prognosis_numbers_false_negatives():
    """The validation rows' one-aspirate false-negative rates: among candidates with marrow
    DTCs, and among those whose aspirate expects >= 1 cell (f N >= 1)."""
    import pandas as pd

    from dormancy_model.trials.validation import prognosis_numbers, prognosis_rows

    cohort = pd.DataFrame({"load": [0, 5, 1e5, 1e6, 1e6], "baseline_count": [0, 0, 0, 3, 0],
                           "aspirate_mean": [0.0, 1e-5, 0.3, 3.0, 3.0],
                           "relapse_day": [np.inf, 100.0, np.inf, 500.0, np.inf]})
    pg = prognosis_numbers(cohort)
    assert pg["false_negative"] == 0.75 and pg["n_with_dtc"] == 4
    assert pg["false_negative_expected_1"] == 0.5 and pg["n_expected_1"] == 2
    row = prognosis_rows(pg)[-1]
    assert "0.50 of the 2 whose aspirate expects >= 1 cell" in row.note
