"""The simulated protocol follows the design (arm sizes, assessment days, extension cycles,
censoring), checked with a recording stand-in for the agent model so that only the protocol
logic of `trial.py` is under test (the agent model has its own tests)."""

from types import SimpleNamespace

import jax
import numpy as np
import pytest

from dormancy_model.trials import protocol as T
from dormancy_model.trials.design import MONTH_DAYS, clever_design


class Recorder:
    """Deterministic double of `simulate_agents`: outcomes are functions of a patient id (the
    initial DTC load) so the test can predict them; every call is recorded."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, params, dosing, *, n_replicates, key, t1, initial=None, t0=0.0,
                 options):
        assert options.initial_count == "fixed"  # screening drew the integer cells
        assess_days = options.assess_days
        n = n_replicates
        pid = (np.asarray(params["dormant_initial"]) if initial is None
               else np.asarray(initial["pid"]))
        assert pid.shape == (n,)
        cnt = np.stack([(pid.astype(int) + j) % 3 for j in range(len(assess_days))], axis=1)
        relapse = np.where(pid.astype(int) % 5 == 0, t0 + 30.0, np.inf)
        self.calls.append(dict(t0=t0, t1=t1, assess=tuple(assess_days), n=n, pid=pid,
                               initial=initial is not None, options=options,
                               hcq=(np.asarray(dosing.hcq.times), np.asarray(dosing.hcq.amount)),
                               eve=(np.asarray(dosing.eve.times), np.asarray(dosing.eve.amount))))
        return SimpleNamespace(aspirate_count=cnt, dtc_positive=cnt > 0,
                               clearance_day=np.full(n, np.inf), relapse_day=relapse,
                               final_state={"pid": pid, "t": np.full(n, t1)})


@pytest.fixture(scope="module")
def run():
    rec = Recorder()
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "_agent_simulator", lambda: rec)
    design = clever_design()
    res = T.trial(design, key=jax.random.key(7), replicates=40, chunk=4096)  # one call per group
    mp.undo()
    return design, res, rec


def test_arm_sizes_and_screening(run):
    design, res, _ = run
    sizes = res.patients.groupby(["trial", "arm"]).size().unstack()
    assert (sizes["HCQ"] == 15).all() and (sizes["EVE"] == 15).all()
    assert (sizes["HCQ+EVE"] == 21).all() and (sizes["observation"] == 13).all()
    assert (res.patients["baseline_count"] >= 1).all()  # screening enrols DTC+ only
    tot = res.screening.groupby("trial")[["screened", "enrolled"]].sum()
    assert (tot["screened"] >= tot["enrolled"]).all()
    pos = tot["enrolled"].sum() / tot["screened"].sum()
    assert 0.27 < pos < 0.33  # ~30% DTC+ at screening (binomial sd ~0.003 here)


def test_assessment_days_and_dosing_per_phase(run):
    design, res, rec = run
    first = [c for c in rec.calls if not c["initial"]]
    obs = [c for c in first if c["t1"] == design.observation_days]
    assert len(obs) == 1 and obs[0]["assess"] == (84.0,)
    assert all(np.all(c["hcq"][1] == 0) and np.all(c["eve"][1] == 0) for c in obs)
    phase_a = [c for c in first if c["t1"] == 168.0]
    assert len(phase_a) == 3 and all(c["assess"] == (84.0, 168.0) for c in phase_a)
    for c in phase_a:
        for drug, mg in (("hcq", 600.0), ("eve", 10.0)):
            t, a = c[drug]
            given = a[t < 168] > 0
            assert np.all(given) or not np.any(given)  # whole arm gets the drug or none
            assert np.all(a[t < 168][given] == mg)
    # the three arms: HCQ only, EVE only, both
    patt = sorted((bool(c["hcq"][1].any()), bool(c["eve"][1].any())) for c in phase_a)
    assert patt == [(False, True), (True, False), (True, True)]
    # HCQ BID and EVE QD on the master grid: 2 and 1 doses per day over 12 cycles
    t, _ = phase_a[0]["hcq"]
    assert t.size == 2 * 336 and phase_a[0]["eve"][0].size == 336


def test_extension_for_dtc_positive_after_cycle_6(run):
    design, res, rec = run
    tr = res.patients[res.patients["arm"] != "observation"]
    # double: count at C6 (second assessment) = (pid + 1) % 3 -> DTC+ unless pid % 3 == 2
    expect_ext = (tr["load"].astype(int) + 1) % 3 > 0
    assert (tr["extension"] == expect_ext).all()
    assert tr.loc[tr["extension"], "count_C12"].notna().all()
    assert tr.loc[~tr["extension"], "count_C12"].isna().all()
    assert (tr.loc[tr["extension"], "end_treatment_day"] == 336).all()
    assert (tr.loc[~tr["extension"], "end_treatment_day"] == 168).all()
    # cleared vs persistent: DTC- at C6 (the protocol's persistence); end of treatment: C12 if
    # extended
    np.testing.assert_array_equal(tr["cleared_observed"], tr["count_C6"] == 0)
    last = np.where(tr["extension"], tr["count_C12"], tr["count_C6"])
    np.testing.assert_array_equal(tr["cleared_eot_observed"], last == 0)
    later = [c for c in rec.calls if c["initial"]]
    assert all(c["t0"] == 168.0 and c["t1"] == design.horizon_days for c in later)
    ext_calls = [c for c in later if c["assess"] == (336.0, 518.0)]
    plain = [c for c in later if c["assess"] == (350.0,)]
    assert len(ext_calls) == 3 and len(plain) == 3
    for c in ext_calls:  # 6 more cycles of HCQ+EVE at full dose, nothing after
        for drug, mg in (("hcq", 600.0), ("eve", 10.0)):
            t, a = c[drug]
            assert np.all(a[(t >= 168) & (t < 336)] == mg)
    for c in plain:
        for drug in ("hcq", "eve"):
            t, a = c[drug]
            assert np.all(a[t >= 168] == 0)
    # continuation carries each patient's own state: the ids (initial loads) that phase B
    # starts from are, in order, those of the arm's extended (or not extended) patients, and
    # the padding lanes repeat the group's first patient
    for calls, extended in ((ext_calls, True), (plain, False)):
        for c, arm in zip(calls, [a.name for a in design.arms], strict=True):
            want = tr.loc[(tr["arm"] == arm) & (tr["extension"] == extended), "load"]
            want = want.to_numpy(float)
            assert want.size and c["n"] >= want.size, (arm, extended)
            np.testing.assert_array_equal(c["pid"][: want.size].astype(float), want)
            assert np.all(c["pid"][want.size:] == c["pid"][0]), (arm, extended)


def test_censoring_and_rfs(run):
    design, res, _ = run
    tr = res.patients[res.patients["arm"] != "observation"]
    months = tr["censor_day"] / MONTH_DAYS
    assert months.min() >= 7 and months.max() <= 60
    assert abs(months.median() - 42) < 2.5  # n = 2040, sd of the median ~0.7 months
    # the double relapses 30 days into the first call (phase A, t0 = 0)
    relapse_expected = np.where(tr["load"].astype(int) % 5 == 0, 30.0, np.inf)
    np.testing.assert_array_equal(tr["relapse_day"], relapse_expected)
    np.testing.assert_array_equal(tr["rfs_time"], np.minimum(relapse_expected, tr["censor_day"]))
    np.testing.assert_array_equal(tr["rfs_event"], relapse_expected <= tr["censor_day"])


def test_same_seed_same_trials_and_discontinuation():
    rec = Recorder()
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "_agent_simulator", lambda: rec)
    try:
        d = clever_design(sizes=(4, 4, 4), observation_n=3).replace(discontinuation_prob=0.5)
        a = T.trial(d, key=jax.random.key(1), replicates=5)
        b = T.trial(d, key=jax.random.key(1), replicates=5)
        rec.calls.clear()
        T.trial(d, key=jax.random.key(1), replicates=20, chunk=32)
        assert all(c["n"] == 32 for c in rec.calls)  # split into fixed-size padded calls
        assert sum(c["n"] for c in rec.calls if not c["initial"]) >= 20 * 15
    finally:
        mp.undo()
    assert a.patients.equals(b.patients)
    tr = a.patients[a.patients["arm"] != "observation"]
    stopped = tr[tr["discontinued_cycle"] > 0]
    assert len(stopped) > 0 and not stopped["extension"].any()
    assert (stopped["end_treatment_day"] == stopped["discontinued_cycle"] * 28).all()
    assert set(stopped["discontinued_cycle"]) <= set(range(1, 6))


def test_patient_table_carries_each_patients_sensitivities(run):
    from dormancy_model.params.transforms import lognormal_sigma
    from dormancy_model.trials.population import DEFAULT_CV

    _, res, _ = run
    p = res.patients
    for name, cv in DEFAULT_CV.items():
        v = np.log(p[name].to_numpy(float))
        # ~2,600 patients: the sd of log values is within ~2% of omega (clipping to bounds
        # aside); a column of typical values (sd 0) or of another parameter fails
        assert abs(v.std() / lognormal_sigma(cv) - 1) < 0.1, name


def test_agent_options_reach_every_agent_call():
    """`trial(agent_options=...)` adds AgentOptions fields (here dormant-pool leaps) to every
    agent call of both phases; the protocol's own fields cannot be overridden; by default pool
    leaps above `POOL_LEAP_ABOVE` cells with the fast method (marrow loads ~1e5 cells), none
    with the exact method; {} turns them off."""
    rec = Recorder()
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "_agent_simulator", lambda: rec)
    try:
        d = clever_design(sizes=(4, 4, 4), observation_n=3)
        T.trial(d, key=jax.random.key(1), replicates=3)
        assert all(c["options"].pool_leap_above == T.POOL_LEAP_ABOVE for c in rec.calls)
        rec.calls.clear()
        T.trial(d, key=jax.random.key(1), replicates=3, agent_options={})
        assert all(c["options"].pool_leap_above == np.inf for c in rec.calls)
        rec.calls.clear()
        T.trial(d, key=jax.random.key(1), replicates=3, method="exact")
        assert all(c["options"].pool_leap_above == np.inf for c in rec.calls)
        rec.calls.clear()
        T.trial(d, key=jax.random.key(1), replicates=3, agent_options={"pool_leap_above": 5e2})
        assert rec.calls and any(c["initial"] for c in rec.calls)
        assert all(c["options"].pool_leap_above == 5e2 for c in rec.calls)
        with pytest.raises(ValueError, match="method"):
            T.trial(d, key=jax.random.key(1), replicates=3, agent_options={"method": "exact"})
    finally:
        mp.undo()
