"""Each published statistic's likelihood against its closed form (scipy.stats) on hand-built
cohorts, and the CLEVER targets read from the publication."""

import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from dormancy_model.trials import likelihood as L
from dormancy_model.trials.design import clever_design


def test_binomial_matches_scipy():
    for k, n, p in [(55, 184, 0.3), (0, 31, 0.02), (13, 13, 0.95), (1, 12, 0.08)]:
        assert float(L.binomial_loglik(k, n, p)) == pytest.approx(stats.binom.logpmf(k, n, p),
                                                                  rel=1e-10, abs=1e-10)


def test_screening_loglik_on_a_hand_built_screen():
    # candidates with a known load: P(DTC+) = 1 - exp(-N (1 - e^-f)) (cells Poisson(N), the
    # aspirate Binomial-thinned Poisson(f cells)); the screen is binomial in P
    f = 0.01
    p_each = 1 - np.exp(-100.0 * (1 - np.exp(-f)))
    assert float(L.screening_loglik(55, 184, 0.3)) == pytest.approx(
        stats.binom.logpmf(55, 184, 0.3))
    # screening probability = E over the log-normal load (scipy quadrature)
    med, sig = 120.0, 1.3
    fe = -np.expm1(-f)
    ref = integrate.quad(lambda x: stats.norm.pdf(x) * -np.expm1(-fe * med * np.exp(sig * x)),
                         -12, 12)[0]
    assert float(L.screening_probability(med, sig, f)) == pytest.approx(ref, rel=1e-8)
    # a point mass (sigma -> 0) gives the single-load probability
    assert float(L.screening_probability(100.0, 1e-9, f)) == pytest.approx(p_each, rel=1e-9)
    # negative binomial (dispersion a): E[1 - (1 + a fe N)^(-1/a)] over the load
    a = 1.0
    ref = integrate.quad(lambda x: stats.norm.pdf(x) * (1 - (1 + a * fe * med * np.exp(
        sig * x)) ** (-1 / a)), -12, 12)[0]
    assert float(L.screening_probability(med, sig, f, a)) == pytest.approx(ref, rel=1e-8)


def test_screening_probability_matches_the_sampler():
    """The probability equals the simulated screening's acceptance rate (the packaged
    negative-binomial aspirate and the human scale, a load median 2x the one solved for 30%)."""
    from dormancy_model import load_model_parameters
    from dormancy_model.trials.population import Population, sample_patients

    params = load_model_parameters("human")
    med = 2 * Population().median_load(params)
    pop = Population(load_median=med, load_sigma=1.2)
    s = sample_patients(jax.random.key(3), 4000, pop, params)
    p = float(L.screening_probability(med, 1.2, float(params["aspirate_fraction"]),
                                      float(params["aspirate_dispersion"])))
    assert float(params["aspirate_dispersion"]) > 0
    rate = 4000 / s.n_screened
    assert rate == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / s.n_screened))


def test_rfs_landmark_counts_from_the_published_km():
    assert L.landmark_counts(0.917, 15, 0.633) == (11, 12)
    assert L.landmark_counts(0.929, 15, 0.633) == (13, 14)
    assert L.landmark_counts(1.0, 21, 0.633) == (13, 13)
    assert L.landmark_counts(0.5, 15, 0.6) == (1, 2)
    for km in (0.95, 0.3):  # 20 at risk in an arm of 15; not one event step
        with pytest.raises(ValueError):
            L.landmark_counts(km, 15, 0.6)


def test_km_landmark_on_a_hand_built_cohort():
    # 12 patients: one relapse at day 400, one censored at day 300, rest followed past 3 years
    times = np.array([400.0, 300.0] + [1500.0] * 10)
    events = np.array([True, False] + [False] * 10)
    s, var = L.km_landmark_stats(times, events, 3 * 365.25)
    assert s == pytest.approx(1 - 1 / 11)  # 11 at risk at day 400
    assert var == pytest.approx(s ** 2 * 1 / (11 * 10))  # Greenwood
    # no censoring: KM = the binomial proportion; the likelihood of the published count at it
    t2 = np.array([100.0, 200.0] + [2000.0] * 18)
    e2 = np.array([True, True] + [False] * 18)
    s2, _ = L.km_landmark_stats(t2, e2, 1000.0)
    assert s2 == pytest.approx(18 / 20)
    logit = math.log(s2 / (1 - s2))
    assert float(L.binomial_logit_loglik(11, 12, logit, 0.0)) == pytest.approx(
        stats.binom.logpmf(11, 12, s2), rel=1e-9)


def test_binomial_logit_marginal_matches_quadrature():
    m, v = 2.0, 0.4
    ref = integrate.quad(lambda e: stats.norm.pdf(e, m, math.sqrt(v))
                         * stats.binom.pmf(11, 12, special.expit(e)), -10, 14)[0]
    assert float(L.binomial_logit_loglik(11, 12, m, v, order=40)) == pytest.approx(
        math.log(ref), rel=1e-7)
    assert float(L.binomial_logit_loglik(11, 12, m, v)) == pytest.approx(math.log(ref), rel=1e-3)


def test_relapse_count_on_a_hand_built_cohort():
    # 51 patients, 2 relapses: binomial at the cohort's relapse fraction
    events = np.r_[np.ones(2, bool), np.zeros(49, bool)]
    p = events.mean()
    assert float(L.relapse_count_loglik(2, 51, p)) == pytest.approx(
        stats.binom.logpmf(2, 51, p))
    # late relapses: 30 patients past 3 years, one of them relapses later
    times = np.r_[500.0, 1200.0, np.full(29, 1500.0), np.full(20, 800.0)]
    ev = np.r_[True, True, np.zeros(29, bool), np.zeros(20, bool)]
    assert L.late_relapse_stats(times, ev, 3 * 365.25) == (1, 30)


def test_hr_likelihood_is_the_ci_as_a_normal_on_log_hr():
    se = L.hr_se_from_ci(0.01, 3.4)
    assert se == pytest.approx((math.log(3.4) - math.log(0.01)) / (2 * 1.959963984540054))
    assert se == pytest.approx(1.487, abs=1e-3)
    for lhr in (-3.0, -1.56, 0.0, 1.0):
        assert float(L.hr_loglik(0.21, 0.01, 3.4, lhr)) == pytest.approx(
            stats.norm.logpdf(math.log(0.21), lhr, se))
    # emulator variance adds to the sampling variance
    assert float(L.hr_loglik(0.21, 0.01, 3.4, -1.0, 0.5)) == pytest.approx(
        stats.norm.logpdf(math.log(0.21), -1.0, math.sqrt(se ** 2 + 0.5)))


def test_reduction_synthetic_likelihood_on_hand_built_trials():
    """Per-trial Poisson-regression reductions of hand-built cohorts -> z = ln(1 - r): the
    synthetic likelihood is the normal with their mean and sd."""
    from dormancy_model.trials.analysis import dtc_reduction

    rng = np.random.default_rng(0)
    zs = []
    for _ in range(40):
        base = rng.poisson(5, 15) + 1
        post = rng.poisson(0.2 * base)
        r = dtc_reduction(base, post)
        assert 1 - r == pytest.approx(post.sum() / base.sum())  # the GLM's closed form
        zs.append(float(L.reduction_to_z(r)))
    zs = np.array(zs)
    mu, sd = zs.mean(), zs.std(ddof=1)
    z_obs = float(L.reduction_to_z(0.80))
    assert z_obs == pytest.approx(math.log(0.2))
    assert float(L.synthetic_loglik(z_obs, mu, sd ** 2)) == pytest.approx(
        stats.norm.logpdf(z_obs, mu, sd))
    assert float(L.reduction_to_z(1.0)) == pytest.approx(math.log(0.01))  # capped


def test_clever_targets_and_joint_loglik_sum_the_terms():
    d = clever_design()
    pf = L.p_followed(d, 3 * 365.25)
    u = np.random.default_rng(1).uniform(size=200000)
    lo, hi = d.followup_min_months, d.followup_max_months
    cens = lo + (hi - lo) * u ** (1 / d.followup_beta_a)
    assert pf == pytest.approx(np.mean(cens * (365.25 / 12) > 3 * 365.25), abs=0.005)
    t = L.PublishedTargets.clever(pf)
    assert t.rfs == {"HCQ": (11, 12), "EVE": (13, 14), "HCQ+EVE": (13, 13)}
    assert t.late == (0, 31)
    assert t.cleared == (41, 51)
    pred = {"p_screen": 0.3, "logit_late": -3.0, "logit_late:var": 0.0, "log_hr": -1.0,
            "log_hr:var": 0.0, "logit_cleared": 1.2, "logit_cleared:var": 0.0,
            "log_irr": math.log(3.0), "log_irr:var": 0.0, "logit_rfs5_pos": 1.5,
            "logit_rfs5_pos:var": 0.0}
    for a in L.ARMS:
        pred.update({f"logit_rfs:{a}": 2.5, f"logit_rfs:{a}:var": 0.0, f"z_mean:{a}": -1.5,
                     f"z_mean:{a}:var": 0.0, f"z_logsd:{a}": math.log(0.5),
                     f"z_logsd:{a}:var": 0.0})
    parts = L.joint_loglik(pred, t, parts=True)
    ref = stats.binom.logpmf(55, 184, 0.3)
    ref += sum(stats.binom.logpmf(k, n, special.expit(2.5)) for k, n in t.rfs.values())
    ref += stats.binom.logpmf(0, 31, special.expit(-3.0))
    ref += stats.norm.logpdf(math.log(0.21), -1.0, L.hr_se_from_ci(0.01, 3.4))
    ref += sum(stats.norm.logpdf(math.log(1 - r), -1.5, 0.5) for r in (0.80, 0.78, 0.87))
    ref += stats.binom.logpmf(41, 51, special.expit(1.2))
    # prognosis: Braun's 2.13 with the 1.5-3 range as a 95% interval on the log scale; the
    # derived 5-year RFS range 0.62-0.85 as a 95% interval on the logit scale
    sd_irr = (math.log(3.0) - math.log(1.5)) / (2 * 1.959963984540054)
    ref += stats.norm.logpdf(math.log(2.13), math.log(3.0), sd_irr)
    lo, hi = special.logit(0.62), special.logit(0.85)
    ref += stats.norm.logpdf((lo + hi) / 2, 1.5, (hi - lo) / (2 * 1.959963984540054))
    assert float(L.joint_loglik(pred, t)) == pytest.approx(ref, rel=1e-9)
    assert len(parts) == 12
    # differentiable
    g = jax.grad(lambda x: L.joint_loglik({**pred, "log_hr": x}, t))(-1.0)
    assert float(g) == pytest.approx((math.log(0.21) + 1.0) / L.hr_se_from_ci(0.01, 3.4) ** 2)


def test_point_quantities_on_a_hand_built_trial_table():
    from dormancy_model.trials.posterior import point_quantities

    rows = []
    for arm, n in (("HCQ", 15), ("EVE", 15), ("HCQ+EVE", 21)):
        for i in range(n):
            ev = i == 0 and arm != "HCQ+EVE"
            rows.append(dict(arm=arm, rfs_time=300.0 if ev else 1500.0, rfs_event=ev,
                             cleared_observed=i % 2 == 0))
    pats = pd.DataFrame(rows)
    trials = pd.DataFrame({"arm": ["HCQ", "EVE", "HCQ+EVE"] * 4,
                           "reduction_C3": [0.8, 0.7, 0.9, 0.85, 0.75, 0.95, 0.6, 0.8, 1.0,
                                            0.9, 0.7, 0.85]})
    v, w = point_quantities(pats, trials)
    assert v["logit_rfs:HCQ"] == pytest.approx(math.log(14 / 15 / (1 / 15)))
    assert v["logit_rfs:HCQ+EVE"] == pytest.approx(math.log((1 - 0.5 / 21) / (0.5 / 21)))
    z = np.log(1 - np.minimum([0.9, 0.95, 1.0, 0.85], 0.99))
    assert v["z_mean:HCQ+EVE"] == pytest.approx(z.mean())
    assert v["z_logsd:HCQ+EVE"] == pytest.approx(math.log(z.std(ddof=1)))
    assert w["z_mean:HCQ+EVE"] == pytest.approx(z.var(ddof=1) / 4)
    assert v["logit_late"] == pytest.approx(math.log(0.01 / 0.99))  # (0 + 0.5) / (49 + 1)
    assert "logit_cleared" not in v  # no last on-treatment aspirate column
    pats["cleared_eot_observed"] = np.arange(len(pats)) % 4 != 0  # 38 of 51 DTC-
    v, w = point_quantities(pats, trials)
    assert v["logit_cleared"] == pytest.approx(math.log(38.5 / 13.5))  # (k + 0.5) / (n + 1)
    assert w["logit_cleared"] == pytest.approx(52 / (38.5 * 13.5))
    # both relapses in the cleared group (i = 0 is even): all events in one group -> NaN
    assert math.isnan(v["log_hr"])
    # every trial's reduction capped (no post-treatment DTC anywhere): the sd is floored
    trials.loc[trials["arm"] == "EVE", "reduction_C3"] = 1.0
    v, _ = point_quantities(pats, trials)
    assert v["z_mean:EVE"] == pytest.approx(math.log(0.01))
    assert v["z_logsd:EVE"] == pytest.approx(math.log(0.05))


def test_prognosis_quantities_on_a_hand_built_cohort():
    """Rate ratio from events over person-time within 5 years, 0.5 added to each count; the
    screen-positive's 5-year RFS with the same continuity as the other binomial quantities."""
    from dormancy_model.trials.posterior import prognosis_quantities

    five = 5 * 365.25
    # 10 positive: 4 relapse at day 100 (person-time 400), 6 none (6 x five)
    # 30 negative: 3 relapse at day 1000, 27 none
    cohort = pd.DataFrame({
        "baseline_count": [1] * 4 + [2] * 6 + [0] * 30,
        "relapse_day": [100.0] * 4 + [np.inf] * 6 + [1000.0] * 3 + [np.inf] * 27})
    v, w = prognosis_quantities(cohort)
    r1 = 4.5 / (400 + 6 * five)
    r0 = 3.5 / (3000 + 27 * five)
    assert v["log_irr"] == pytest.approx(math.log(r1 / r0))
    assert w["log_irr"] == pytest.approx(1 / 4.5 + 1 / 3.5)
    assert v["logit_rfs5_pos"] == pytest.approx(math.log(6.5 / 4.5))  # (6 + .5) / (10 + 1)
    assert w["logit_rfs5_pos"] == pytest.approx(11 / (6.5 * 4.5))
    # a relapse after 5 years counts as none, its person-time stops at 5 years
    late = cohort.assign(relapse_day=np.where(np.arange(40) == 5, 2000.0, cohort["relapse_day"]))
    assert prognosis_quantities(late)[0] == pytest.approx(v)
    # no screen-negative candidate: not estimable (NaN, left out of the emulator fit)
    v, _ = prognosis_quantities(cohort.iloc[:10])
    assert math.isnan(v["log_irr"])
