"""Population (Laplace) fits of studies made by the stochastic AGENT model (issue 16: "recovery
of typical values and CVs on the agent-generated synthetic study; coverage over seeds, two-sided").

The agents are not the fitted model: the fit reads the mean-field ODE with a log-normal count
around the sampled solitary cells D + R, the agents count cells one by one (binomial sampling on
top of the tissue-recovery noise). The study's count is the solitary RTCs D + R; cells in
proliferating clones and lesions are recorded apart (`clone_cells`, `lesion_cells`; the
generator's docstring): an animal's clone cells come from a few escaped clones (zero in most
mice, very many in a few), whose MEAN the mean field gives, so a count with them in it is not
what the mean field predicts per animal. Until 2026-12-07 (session 9) the shipped study counted
D + R + all P (lesions included) and its Laplace fit recovered k_dr 4x low, a k_dr CV of ~26, a
noise sd of 0.78 (truth 0.3) and the CV of dormant_initial at its lower bound
(benchmarks/RESULTS.md). `test_shipped_agent_study_counts_*` checks that the count now matches
the mean field at the true per-animal parameters; `test_agent_coverage_over_seeds` checks the
calibration of the CIs on small agent studies (measured with the former count: they
under-covered, 105 of 120, and re-run with the new count on 2026-12-07: 105 of 120 again; a
strict xfail that states the numbers)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom
from test_fit_slow import coverage_region

from dormancy_model.fitting.objective import free_parameters
from dormancy_model.fitting.population.animals import study_problem
from dormancy_model.fitting.population.estimate import LaplaceOptions, fit_laplace
from dormancy_model.fitting.population.study_fit import population_solver
from dormancy_model.fitting.study import load_study
from dormancy_model.params.table import load_model_parameters
from dormancy_model.params.transforms import to_scale

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data" / "mouse_synthetic"

# coverage over seeds: small agent studies (make_synthetic_study.make, agents generator)
COVERAGE_ARMS = ["mouse-hcq60-transient", "mouse-combo-hcq60-eve5-transient",
                 "mouse-eve5-chronic", "mouse-hcq120-transient"]
COVERAGE_FREE = ("dormant_initial", "k_dr", "delta_max", "burden_sigma")
COVERAGE_RANDOM = ("dormant_initial",)
COVERAGE_CV = {"dormant_initial": 0.5}
COVERAGE_STUDIES = 30  # x 4 intervals = 120
COVERAGE_SEED = 5000


def _make():
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_synthetic_study import TRUTH, make

    return TRUTH, make


def _at_sd_bound(res, problem, name) -> bool:
    """The random effect's sd within 1% of a bound: its Wald CI means nothing there (the fit
    file writes None; `study_fit.population_block`)."""
    return bool(min(abs(np.log(res.sd[name] / b)) for b in problem.sd_bounds) < 0.01)


def test_agent_coverage_region_and_power():
    """The acceptance region of the coverage test over 30 agent studies x 4 intervals and its
    power, as the test's docstring states (exact two-sided binomial test of 95%, level 0.01)."""
    n = 4 * COVERAGE_STUDIES
    lo, hi = coverage_region(n)
    assert (lo, hi) == (108, 119)

    def power(p):
        return 1 - (binom.cdf(hi, n, p) - binom.cdf(lo - 1, n, p))

    assert power(0.95) < 0.01  # size
    assert power(0.80) > 0.99 and power(0.85) > 0.9 and 0.65 < power(0.88) < 0.75
    assert power(1.0) == 1.0 and 0.25 < power(0.99) < 0.35  # too wide
    assert hi < n  # every interval covering (intervals too wide) fails


def test_fit_burden_observable_is_the_solitary_cells():
    """The fit's burden observable (`likelihood.arm_prediction`, the centre of the count law) is
    the mean field's solitary cells D + R (what the shipped study counts), not the marrow DTCs
    with their clone cells (`residual` of `simulate`) nor the ODE's P: vehicle at the study's
    truth, days 56 and 84 (where clone and lesion cells are as many as D or far more)."""
    import jax

    from dormancy_model.fitting.likelihood import arm_prediction
    from dormancy_model.model.integrate import SolverOptions
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.model.simulate import simulate
    from dormancy_model.pk.closed_form import Dosing
    from dormancy_model.pk.presets import PRESETS

    TRUTH, _ = _make()
    p = load_model_parameters("mouse").replace(body_weight=0.025, **TRUTH)
    ts = np.array([0.0, 56.0, 84.0])
    pred = jax.jit(arm_prediction, static_argnums=(0, 4))(
        DormancyModel(), p, Dosing.from_schedule(PRESETS["mouse-vehicle"]), ts,
        SolverOptions())
    tr = simulate(DormancyModel(), p, PRESETS["mouse-vehicle"], ts=ts)  # default solver
    solitary = np.asarray(tr.dormant + tr.reactivating)
    np.testing.assert_allclose(np.asarray(pred.residual), solitary, rtol=1e-4)
    assert np.all(np.asarray(tr.residual)[1:] > 1.5 * solitary[1:])  # marrow clones
    assert np.all(np.asarray(tr.proliferating)[1:] > 0.5 * solitary[1:])  # the ODE's P


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "re-measured 2026-12-07 (session 12) with the count of solitary cells D + R: 105 of 120 "
    "intervals covered, below the region [108, 119] (dormant_initial 26/30, k_dr 29/30, "
    "delta_max 26/30, CV 24/30 of which 4 with the sd at its lower bound; burden_sigma, not "
    "counted, 18/30); with the former count (D + R + all P) also 105 (25, 30, 26, 24): the "
    "Laplace Wald CIs under-cover on these agent studies (issue 16 not met); strict: a pass "
    "(XPASS) fails, so a fix is noticed"))
def test_agent_coverage_over_seeds(tmp_path):
    """Laplace 95% CIs on studies made by the AGENT model cover the truth at the nominal rate,
    checked two-sidedly. Each study: 4 arms (HCQ 60 and 120 mg/kg, HCQ+EVE 60+5 transient, EVE 5
    chronic; with the former count these were the arms whose totals were not dominated by
    clones, module docstring), 6 burden + 10 survival
    mice per arm, design "biopsy" (each survival mouse also has a count at the end of treatment:
    count and relapse of the same animal separate the between-animal variance of dormant_initial
    from the count noise), dormant_initial log-normal between animals (CV 0.5), every other
    parameter the same in every mouse. Fit: free dormant_initial, k_dr, delta_max, burden_sigma,
    random effect on dormant_initial, one Laplace start at the parameter table's values (not the
    truth), random-effect sd 0.3.

    Intervals counted: the typical values of dormant_initial, k_dr, delta_max and the CV of
    dormant_initial (a CV whose sd ends at a bound counts as a miss: its Wald CI means nothing).
    Not counted: burden_sigma, whose agent truth (0.3, the tissue-recovery sd) is not the fitted
    law's sd (binomial counting adds to it). 30 studies x 4 = 120 intervals; acceptance region
    [108, 119] of the exact two-sided binomial test of 95% at level 0.01: power 0.92 at a true
    coverage of 85%, 0.69 at 88%; 1 when every interval covers (too wide), 0.30 at 99%. The
    intervals of one study are not independent, so the level is approximate. Measured on the
    2-core CPU shared with other jobs: 1223 s (load 4-6) and 692 s (a quieter spell) for the 30
    studies with the Laplace objective's compilation in the persistent cache (.jax_cache); a
    cold compile added ~7 min (load ~6). Both runs gave the same numbers (deterministic): misses
    of dormant_initial in studies 5, 6, 19, 20, 23, of delta_max in 3, 19, 23, 26, of the CV in
    0, 26, 28 (sd at the lower bound) and 10, 15, 19, 23 (CV 0.64-0.80 with CIs above 0.5): the
    CV is not biased on average but its Wald interval (on log sd) is too narrow.

    Re-run 2026-12-07 (session 12) with the count of solitary cells D + R (the shipped count
    since session 10): 950 s on the 2-core CPU shared with one other job, 105/120 again, all 30
    fits converged: misses of dormant_initial in studies 6, 20, 23, 26, of k_dr in 18, of
    delta_max in 3, 18, 19, 23, of the CV in 0, 13, 26, 28 (sd at the lower bound: a Wald
    interval means nothing there) and 15, 23 (CV 0.73 and 0.70, intervals above 0.5). The
    profile-likelihood interval of the sd (`fitting/population/profile.py`), which can reach
    the bound, fixes the CV's misses: `test_agent_coverage_over_seeds_with_profile_cv_intervals`
    (109/120 with it)."""
    hits, failed, rows = coverage_over_studies(tmp_path, range(COVERAGE_STUDIES))
    covered = sum(hits[n] for n in COVERED)
    lo, hi = coverage_region(4 * COVERAGE_STUDIES)
    (tmp_path / "coverage.json").write_text(json.dumps(dict(hits=hits, rows=rows)))
    print(f"covered {covered}/{4 * COVERAGE_STUDIES} per interval {hits}; not converged "
          f"{failed}; (study, cv, sd at bound, converged) {rows}")
    assert lo <= covered <= hi, (covered, hits, failed, rows)


COVERED = ("dormant_initial", "k_dr", "delta_max", "cv(dormant_initial)")


def coverage_over_studies(tmp_path, studies, cv_interval: str = "wald"):
    """Fit the coverage studies `studies` (indices; seed COVERAGE_SEED + k) and count, per
    interval, the studies whose 95% CI holds the truth. `cv_interval`: "wald" (the fit's own
    interval on log sd; an sd at its bound counts as a miss) or "profile" (the
    profile-likelihood interval of `fitting.population.profile.profile_sd`, which may end at
    the sd bound; a NaN limit is a miss). Returns (hits, unconverged studies, rows)."""
    from dormancy_model.fitting.population.profile import profile_sd

    TRUTH, make = _make()
    params = load_model_parameters("mouse").replace(**TRUTH)  # fixed parameters at the truth
    start = np.array([to_scale(f.table_value, f.scale)
                      for f in free_parameters(load_model_parameters("mouse"), COVERAGE_FREE)])
    truth = {**TRUTH, "cv(dormant_initial)": COVERAGE_CV["dormant_initial"], "burden_sigma": 0.3}
    hits = {n: 0 for n in (*COVERED, "burden_sigma")}
    failed, rows = [], []
    for k in studies:
        d = tmp_path / f"s{k}"
        make(d, seed=COVERAGE_SEED + k, arms=COVERAGE_ARMS, cv=COVERAGE_CV, design="biopsy",
             generator="agents")
        problem = study_problem(load_study(d), params, COVERAGE_FREE, COVERAGE_RANDOM,
                                solver=population_solver())
        opts = LaplaceOptions(starts=1, iterations=150, gtol=1e-4)
        res = fit_laplace(problem, options=opts, theta0=problem.theta0(start, [0.3])[None])
        if not res.converged:
            failed.append(k)
        lo = {**res.typical_ci_low, "cv(dormant_initial)": res.cv_ci_low["dormant_initial"]}
        hi = {**res.typical_ci_high, "cv(dormant_initial)": res.cv_ci_high["dormant_initial"]}
        bound = _at_sd_bound(res, problem, "dormant_initial")
        miss_cv = bound
        if cv_interval == "profile":
            prof = profile_sd(problem, res, "dormant_initial", options=opts)
            lo["cv(dormant_initial)"], hi["cv(dormant_initial)"] = prof["cv_low"], prof["cv_high"]
            miss_cv = False
        elif cv_interval != "wald":
            raise ValueError(cv_interval)
        study_hits = ""
        for n in hits:
            hit = bool(lo[n] <= truth[n] <= hi[n])  # a NaN interval misses
            hit = hit and not (miss_cv and n == "cv(dormant_initial)")
            hits[n] += hit
            study_hits += "1" if hit else "0"
        # (study, CV estimate, sd at bound, converged, covered: dormant_initial, k_dr,
        # delta_max, CV, burden_sigma, CV interval)
        rows.append((k, round(res.cv["dormant_initial"], 3), bound, res.converged, study_hits,
                     [round(float(lo["cv(dormant_initial)"]), 3),
                      round(float(hi["cv(dormant_initial)"]), 3)]))
    return hits, failed, rows


SHIPPED_FREE = ("dormant_initial", "k_dr", "delta_max", "hcq_ic50", "eve_ic50", "burden_sigma")
SHIPPED_RANDOM = ("dormant_initial", "k_dr", "delta_max")


@pytest.mark.slow
def test_shipped_agent_study_counts_match_the_mean_field_at_true_parameters():
    """The shipped study's count is the quantity the fit's mean field predicts, at each burden
    mouse's TRUE parameters (truth_animals.csv, animals.csv): `residual_cells` (the solitary
    cells D + R seen) against f x the fit's own burden observable (`likelihood.arm_prediction`,
    adaptive solve, all mice in one vmapped call): over all positive counts the mean log ratio
    is within 0.15 of 0 and its sd below 0.6 (tissue sd 0.3 + binomial counting), and per arm
    within 3 standard errors (1.2 / sqrt(n)) where the expected count is >= 10 cells (below,
    the binomial noise of a few cells dominates). Measured 2026-12-07 (39 s on the shared
    2-core CPU): mean -0.015, sd 0.37, per-arm means -0.37 (eve5-chronic, 3 counts) to +0.32
    (hcq30-chronic, 3 counts), 79 counts in 14 arms checked. With the former count (D + R + all
    P, lesions included) the HCQ chronic and vehicle arms lay 0.9-3.1 below in log."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import pandas as pd

    from dormancy_model.fitting.likelihood import arm_prediction
    from dormancy_model.fitting.study import stacked_dosing
    from dormancy_model.model.integrate import SolverOptions
    from dormancy_model.model.ode import DormancyModel
    from dormancy_model.pk.presets import PRESETS

    info = json.loads((SHIPPED / "truth.json").read_text())
    truth = pd.read_csv(SHIPPED / "truth_animals.csv", comment="#").set_index("mouse_id")
    burden = pd.read_csv(SHIPPED / "burden.csv", comment="#")
    weight = pd.read_csv(SHIPPED / "animals.csv", comment="#").set_index("mouse_id")
    base = load_model_parameters("mouse").replace(**info["truth_internal_units"])
    names = list(info["between_animal"])
    per = {k: jnp.asarray(truth.loc[burden.mouse_id, k].to_numpy(float)) for k in names}
    per["body_weight"] = jnp.asarray(weight.loc[burden.mouse_id, "body_weight_g"]
                                     .to_numpy(float) / 1000.0)
    days = np.unique(burden.day.to_numpy(float))
    grid = jnp.asarray(np.concatenate([[0.0], days]))
    dosing = stacked_dosing([PRESETS["mouse-" + a] for a in burden.arm])

    @eqx.filter_jit
    def solve(per, dosing):
        def one(v, d):
            return arm_prediction(DormancyModel(), base.replace(**v), d, grid,
                                  SolverOptions(rtol=1e-6, atol=1e-6, max_steps=4096))
        return jax.vmap(one)(per, dosing)

    pred = solve(per, dosing)
    assert np.all(np.asarray(pred.status) == 0)
    col = 1 + np.searchsorted(days, burden.day.to_numpy(float))
    mean = np.asarray(pred.residual)[np.arange(len(burden)), col] * burden.sampled_fraction
    df = burden.assign(pred=mean)
    pos = df[df.residual_cells > 0].assign(r=lambda x: np.log(x.residual_cells / x.pred))
    by_arm = pos[pos.pred >= 10].groupby("arm").r.agg(["mean", "size"])
    print(by_arm, pos.r.mean(), pos.r.std())
    assert abs(pos.r.mean()) < 0.15 and pos.r.std() < 0.6, pos.r.describe()
    # per arm: 3 standard errors of a mean of n log ratios of sd <= 0.4
    assert (by_arm["mean"].abs() < 1.2 / np.sqrt(by_arm["size"])).all(), by_arm
    assert by_arm["size"].sum() > 60  # most counts are large enough to be checked per arm


@pytest.mark.slow
def test_shipped_agent_study_recovery():
    """The `dormancy fit --method laplace --random dormant_initial,k_dr,delta_max` pipeline
    (pooled fit with 8 starts, then the Laplace fit from the 2 best distinct pooled estimates,
    at most 150 L-BFGS iterations, gtol 1e-3) on the shipped agent study (304 animals, one
    observation each; diagonal Omega), whose count is the solitary cells D + R: every typical
    value's, the noise sd's and every between-animal CV's 95% interval holds the truth.

    Measured 2026-12-07 (session 12; 1,014 s on the 2-core CPU shared with one other job):
    converged, Hessian positive definite, 304/304 inner problems, nll 1078.710 (as in session
    10's 3,006 s run at load 11-15), estimate [95% CI] (truth): dormant_initial 2073 [1685,
    2551] (2000), k_dr 3.40e-4 [2.51e-4, 4.59e-4] (4e-4), delta_max 0.121 [0.110, 0.133]
    (0.12), hcq_ic50 79.4 [65.8, 95.9] (80), eve_ic50 1.11 [0.26, 4.71] (3; RSE 74%),
    burden_sigma 0.20 [0.08, 0.51] (0.3, the tissue-recovery sd); CVs dormant_initial 0.55
    [0.39, 0.80] (0.5), k_dr 0.75 [0.33, 2.40] (0.4), delta_max 0.35 [0.26, 0.48] (0.3), none
    at an sd bound (shrinkage 0.56, 0.71, 0.56).

    Until this run the test asserted "design-limited findings" taken from a reduced run (80
    animals, 1 Laplace start): the CV of dormant_initial at its lower bound and burden_sigma
    above 0.3. On the full study neither holds, so they were wrong and are replaced by the
    coverage assertions. With the former count (D + R + all P) the same pipeline missed k_dr
    (1.02e-4 [5.6e-5, 1.9e-4]) and gave its CV 26 and burden_sigma 0.78 (2,415 s;
    benchmarks/RESULTS.md)."""
    from dormancy_model.fitting.estimate import LBFGS, FitOptions
    from dormancy_model.fitting.population.study_fit import fit_study_laplace

    info = json.loads((SHIPPED / "truth.json").read_text())
    truth = info["truth_internal_units"]
    cv_true = {k: v["cv"] for k, v in info["between_animal"].items()}
    r = fit_study_laplace(load_study(SHIPPED), load_model_parameters("mouse"), SHIPPED_FREE,
                          SHIPPED_RANDOM,
                          options=FitOptions(starts=8, seed=0, optimizer=LBFGS(steps=60)),
                          laplace=LaplaceOptions(starts=2, iterations=150, gtol=1e-3))
    pop = r.population
    print(json.dumps({k: pop.get(k) for k in ("objective", "converged", "hessian_pd",
                                              "inner_converged", "typical", "random")},
                     default=str))
    assert pop["converged"] and pop["hessian_pd"] and pop["inner_converged"] == 304, pop["starts"]
    assert abs(pop["objective"]["nll"] - 1078.710) < 0.5, pop["objective"]
    typ, ran = pop["typical"], pop["random"]

    def inside(n):
        return typ[n]["ci95_low"] <= truth[n] <= typ[n]["ci95_high"]

    for n in ("dormant_initial", "k_dr", "delta_max", "hcq_ic50", "eve_ic50"):
        assert inside(n), (n, typ[n])
    b = typ["burden_sigma"]
    assert b["ci95_low"] <= info["burden_sigma"] <= b["ci95_high"], b
    for n in SHIPPED_RANDOM:
        d = ran[n]
        assert not d["sd_at_bound"], (n, d)
        assert d["cv_ci95_low"] <= cv_true[n] <= d["cv_ci95_high"], (n, d)


@pytest.mark.slow
def test_agent_coverage_over_seeds_with_profile_cv_intervals(tmp_path):
    """As `test_agent_coverage_over_seeds` (the same 30 agent studies, fits and acceptance
    region [108, 119] of 120 intervals), with the CV of dormant_initial's interval from the
    profile likelihood (`profile_sd`: likelihood-ratio inversion on log sd, which may end at
    the sd bound where the data do not exclude it) instead of the Wald interval.

    Measured 2026-12-07 (session 12, the studies split over two processes on the 2-core CPU,
    2,180 + 2,264 s): 104/120 with the profile walk of that time, whose side ended as NaN ('not
    determined', a miss) when 12 steps reached neither the criterion nor the bound: studies 2,
    21, 22, 25, 29, all with a flat profile towards sd = 0. With the walk's last step going to
    the bound (`profile_sd`, since then) those 5 studies were re-run (737 s): each CV interval
    now [0.01, 0.79-0.95], covering 0.5, so **109/120**, inside [108, 119]: dormant_initial
    26, k_dr 29, delta_max 26, CV 28 of 30 (misses: studies 26 and 28, upper limits 0.37 and
    0.48). The Wald intervals of the same fits give 105 (the CV 24/30). Confirmed with the
    new walk on all 30 studies (23:35-00:08 UTC, split over two processes on the quiet 2-core
    CPU, 1,875 and 1,945 s): 109/120, the same per-interval counts, all fits converged."""
    hits, failed, rows = coverage_over_studies(tmp_path, range(COVERAGE_STUDIES), "profile")
    covered = sum(hits[n] for n in COVERED)
    lo, hi = coverage_region(4 * COVERAGE_STUDIES)
    print(f"covered {covered}/{4 * COVERAGE_STUDIES} per interval {hits}; not converged "
          f"{failed}; rows {rows}")
    assert lo <= covered <= hi, (covered, hits, failed, rows)
