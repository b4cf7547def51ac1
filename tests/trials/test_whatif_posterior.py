"""What-ifs that carry the posterior (`whatif.*_posterior`, `dormancy trial --posterior`): the
law of total variance on hand-built numbers, the posterior file reader's one-line errors, and
with a stand-in for the agent model whose outcomes follow each patient's delta_max (so a wide
posterior on delta_max moves the answers) the pooled interval is wider than the replicate-only
one and the parameters dominate; the CLI end to end (default file, --posterior FILE / none,
bad files: one line, exit 2, no output)."""

import json
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

from cli_run import run
from dormancy_model.errors import InputError
from dormancy_model.params.postfile import POSTERIOR_PARAMETERS, posterior_path, read_posterior
from dormancy_model.params.table import load_model_parameters
from dormancy_model.trials import posterior as P
from dormancy_model.trials import protocol as T
from dormancy_model.trials import whatif as W
from dormancy_model.trials.design import clever_design
from posterior_files import lognormal_draws, write_posterior_file

RELAPSE_BELOW = 0.04  # delta_max (1/day) under which the stand-in relapses
DTC_BELOW = 0.06  # ... and under which it stays DTC+


class Sensitive:
    """Deterministic stand-in for `simulate_agents`: a patient relapses 30 days into the call
    iff its delta_max < RELAPSE_BELOW and is DTC+ at every aspirate iff delta_max < DTC_BELOW."""

    def __call__(self, model, params, dosing, *, n_replicates, key, t1, initial=None, t0=0.0,
                 options):
        n = n_replicates
        dm = np.broadcast_to(np.asarray(params["delta_max"], float), (n,))
        cnt = np.repeat((dm < DTC_BELOW).astype(int)[:, None], len(options.assess_days), 1)
        relapse = np.where(dm < RELAPSE_BELOW, t0 + 30.0, np.inf)
        return SimpleNamespace(aspirate_count=cnt, dtc_positive=cnt > 0,
                               clearance_day=np.full(n, np.inf), relapse_day=relapse,
                               final_state={"dm": np.array(dm), "t": np.full(n, t1)})


@pytest.fixture
def sensitive(monkeypatch):
    monkeypatch.setattr(T, "_agent_simulator", lambda: Sensitive())


@pytest.fixture
def post_file(tmp_path):
    """A posterior whose delta_max spans the stand-in's thresholds (log-sd 0.6 around 0.045)."""
    path = tmp_path / "post.json"
    write_posterior_file(path, lognormal_draws({"delta_max": 0.045, "cv_delta_max": 0.3},
                                               {"delta_max": 0.6, "cv_delta_max": 0.2}))
    return path


# ----------------------------------------------------------------------------- decomposition
def test_variance_decomposition_adds_up_on_known_numbers():
    # draws 0: [1, 3], 1: [5, 7]: means 2, 6, grand mean 4; between 4, within 1, total 5
    d = W.variance_decomposition([1, 3, 5, 7], [0, 0, 1, 1])
    assert d["var_between"] == pytest.approx(4) and d["var_within"] == pytest.approx(1)
    assert d["var_total"] == pytest.approx(5) and d["share_parameters"] == pytest.approx(0.8)
    assert d["dominant"] == "parameters"
    # unequal counts (a NaN dropped): [0, 2] and [4]; weights 2/3, 1/3; means 1, 4, grand 2:
    # between 2/3 * 1 + 1/3 * 4 = 2, within 2/3 * 1 + 0 = 2/3, total (4 + 0 + 4) / 3 = 8/3
    d = W.variance_decomposition([0, 2, np.nan, 4], [0, 0, 0, 1])
    assert d["var_between"] == pytest.approx(2) and d["var_within"] == pytest.approx(2 / 3)
    assert d["var_total"] == pytest.approx(8 / 3)
    # replicate noise only: identical draw means
    d = W.variance_decomposition([1, 3, 1, 3], [0, 0, 1, 1])
    assert d["var_between"] == 0 and d["dominant"] == "replicates"
    assert W.variance_decomposition([2, 2], [0, 1])["dominant"] == "none"
    rng = np.random.default_rng(1)
    v, g = rng.normal(size=300), rng.integers(0, 17, 300)
    d = W.variance_decomposition(v, g)
    assert d["var_total"] == pytest.approx(d["var_between"] + d["var_within"], rel=1e-12)
    assert d["var_total"] == pytest.approx(np.var(v), rel=1e-12)


def test_schoenfeld_power_is_the_inverse_of_the_sample_size():
    n = W.schoenfeld_n_per_arm(0.75, 0.88)
    assert W.schoenfeld_power(0.75, 0.88, n) == pytest.approx(0.8, abs=0.01)
    assert W.schoenfeld_power(0.75, 0.88, n - 40) < 0.8 < W.schoenfeld_power(0.75, 0.88, n + 40)
    assert W.schoenfeld_power(0.88, 0.75, 200) < 0.025  # harm: below alpha / 2


# ----------------------------------------------------------------------------- the file
def test_reader_round_trips_the_writers_file(post_file):
    rec = json.loads(post_file.read_text())
    pf = read_posterior(post_file, load_model_parameters("human"))
    assert pf.names == ("delta_max", "cv_delta_max") and pf.n == 100
    np.testing.assert_allclose(pf.draws["delta_max"], np.ravel(rec["draws"]["delta_max"]))
    assert pf.theta().shape == (100, 2) and len(pf.sha256) == 64
    assert set(POSTERIOR_PARAMETERS) == set(P.PRIOR_LOG_SD)  # the reader knows every name


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


BAD = [
    (lambda d: d.pop("draws"), "draws", "not a posterior file"),
    (lambda d: d.update(parameters=["delta_max", "banana"]), "parameters", "unknown posterior"),
    (lambda d: d["draws"]["delta_max"][0].__setitem__(0, -1.0), "draws.delta_max", "> 0"),
    (lambda d: d["draws"]["delta_max"][0].__setitem__(0, None), "draws.delta_max", "> 0"),
    (lambda d: d["draws"]["cv_delta_max"].pop(), "draws.cv_delta_max", "50 draws, but"),
    (lambda d: d["draws"].pop("cv_delta_max"), "draws.cv_delta_max", "missing"),
    (lambda d: d.update(parameter_file="/x/mouse.toml"), "parameter_file", "mouse.toml"),
    (lambda d: d["draws"]["delta_max"][0].__setitem__(0, 5.0), "draws.delta_max", "bounds"),
]


@pytest.mark.parametrize("edit,field,words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_posterior_files_one_error(post_file, edit, field, words):
    _edit(post_file, edit)
    with pytest.raises(InputError) as e:
        read_posterior(post_file, load_model_parameters("human"))
    assert e.value.source == str(post_file) and e.value.field == field
    assert words in e.value.problem and "\n" not in str(e.value)


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(InputError, match="file: not found"):
        read_posterior(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="file: not a posterior JSON file"):
        read_posterior(tmp_path / "x.json")


def test_default_posterior_path():
    assert posterior_path(None, default_exists=True) == "fits/clever_posterior.json"
    assert posterior_path(None, default_exists=False) is None
    assert posterior_path("none") is None and posterior_path("NONE") is None
    assert posterior_path("a/b.json") == "a/b.json"


# ----------------------------------------------------------------------------- what-ifs
def test_posterior_interval_is_never_narrower_than_replicate_only(sensitive, post_file):
    """Cycles 3 vs 6 with 8 draws x 4 trials: for every arm and level the pooled 90% interval of
    3-year RFS and end-of-treatment clearance contains at least the width of the 16 trials at
    the posterior centre, the parameters dominate the variance of RFS, and the decomposition
    adds up; the paired contrasts are exactly 0 (the stand-in ignores the schedule)."""
    p = load_model_parameters("human")
    pf = read_posterior(post_file, p)
    unc = W.posterior_uncertainty(pf, draws=8, replicates=4, centre_replicates=16, seed=3)
    d = clever_design()
    tab = W.compare_designs_posterior(W.cycles_designs(d, (3, 6)), p, key=jax.random.key(2),
                                      unc=unc, reference="6 cycles")
    main = tab[tab["scenario"].isin(["3 cycles", "6 cycles"])
               & tab["metric"].isin(["rfs_3y", "clearance_eot"])]
    assert len(main) == 2 * 4 * 2  # levels x (3 treated arms, all treated) x metrics
    width, rep = main["p95"] - main["p05"], main["rep_p95"] - main["rep_p05"]
    assert (width >= rep).all() and (width > 0).all(), main
    assert (main["widening"] >= 1).all()
    rfs = main[main["metric"] == "rfs_3y"]
    assert (rfs["share_parameters"] > 0.5).all() and (rfs["dominant"] == "parameters").all(), rfs
    np.testing.assert_allclose(tab["var_total"], tab["var_between"] + tab["var_within"],
                               rtol=1e-9, atol=1e-15)
    con = tab[tab["scenario"] == "3 cycles - 6 cycles"]
    assert len(con) and np.allclose(con[["median", "p05", "p95"]].dropna(), 0)
    # a narrow posterior (the centre repeated) leaves replicate noise dominant
    flat = W.ParameterUncertainty(unc.names, np.repeat(unc.centre[None], 8, 0), unc.centre,
                                  unc.population, 4, 16)
    tab = W.compare_designs_posterior({"6 cycles": d}, p, key=jax.random.key(2), unc=flat)
    r = tab[tab["metric"] == "rfs_3y"]
    assert r["share_parameters"].mean() < 0.5, r


def test_combo_and_sample_size_over_the_posterior(sensitive, post_file):
    p = load_model_parameters("human")
    unc = W.posterior_uncertainty(read_posterior(post_file, p), draws=4, replicates=3,
                                  centre_replicates=4, seed=1)
    d = clever_design()
    tab = W.combo_vs_single_posterior(d, p, n_per_arm=10, key=jax.random.key(0), unc=unc)
    best = tab[tab["metric"].str.startswith("P(best)")]
    assert len(best) == 3 and ((best["mean"] >= 0) & (best["mean"] <= 1)).all()
    assert set(tab["arm"]) >= {"HCQ", "EVE", "HCQ+EVE"}
    ss = W.sample_size_posterior(d, p, key=jax.random.key(0), unc=unc, pool=120, sizes=(50, 200))
    assert {"n_per_arm", "power n=50", "power n=200", "rfs_3y"} <= set(ss["metric"])
    row = ss[ss["metric"] == "n_per_arm"].iloc[0]
    assert 0 <= row["no_benefit"] <= 1 and row["dominant"] in ("parameters", "replicates",
                                                               "none")


def _cli(tmp_path, capsys, *extra, out="o"):
    return run(["trial", "--replicates", "8", "--seed", "4", "--calibration", "", "--what-if",
                "cycles=3,6", "--out", str(tmp_path / out), *extra], capsys)


def test_cli_what_if_over_a_posterior_file_and_none(sensitive, post_file, tmp_path, capsys):
    code, out, err = _cli(tmp_path, capsys, "--posterior", str(post_file), "--posterior-draws",
                          "3", "--posterior-replicates", "2")
    assert code == 0, err
    tab = pd.read_csv(tmp_path / "o" / "whatif_cycles.csv")
    assert {"p05", "p95", "rep_p05", "rep_p95", "var_between", "var_within",
            "share_parameters", "dominant"} <= set(tab.columns)
    md = (tmp_path / "o" / "report.md").read_text()
    assert "posterior: 3 draws x 2 trials" in md and "parameter uncertainty dominates" in md
    assert "note: cycles: parameter uncertainty dominates" in out  # said on the terminal too
    code, out, err = _cli(tmp_path, capsys, "--posterior", "none", out="p")
    assert code == 0, err
    tab = pd.read_csv(tmp_path / "p" / "whatif_cycles.csv")
    assert "share_parameters" not in tab.columns and "rfs_3y_p05" in tab.columns
    assert "replicate noise only" in (tmp_path / "p" / "report.md").read_text()


def test_cli_default_posterior_file_is_used_when_it_exists(sensitive, post_file, tmp_path,
                                                           capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fits").mkdir()
    (tmp_path / "fits" / "clever_posterior.json").write_text(post_file.read_text())
    code, _, err = _cli(tmp_path, capsys, "--posterior-draws", "2", "--posterior-replicates", "2")
    assert code == 0, err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "from fits/clever_posterior.json" in md


@pytest.mark.parametrize("args,words", [
    (["--posterior", "missing.json"], "missing.json: file: not found"),
    (["--posterior", "{bad}"], "parameters: unknown posterior parameter 'banana'"),
    (["--posterior", "{post}", "--posterior-draws", "1"], "--posterior-draws"),
    (["--posterior", "{post}", "--posterior-replicates", "1"], "--posterior-replicates"),
])
def test_cli_bad_posterior_one_line_exit_2_no_output(sensitive, post_file, tmp_path, capsys,
                                                     args, words):
    bad = tmp_path / "bad.json"
    bad.write_text(post_file.read_text())
    _edit(bad, lambda d: d.update(parameters=["delta_max", "banana"]))
    args = [a.format(bad=bad, post=post_file) for a in args]
    code, _, err = _cli(tmp_path, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_real_agents_what_if_over_a_tiny_posterior(post_file, tmp_path, capsys):
    """The real agent model through the CLI: 2 draws x 2 trials at each of 2 levels and 2 at
    the centre; the table has finite intervals and its decomposition adds up."""
    code, out, err = run(["trial", "--replicates", "2", "--seed", "1", "--calibration", "",
                          "--what-if", "cycles=3,6", "--posterior", str(post_file),
                          "--posterior-draws", "2", "--posterior-replicates", "2", "--out",
                          str(tmp_path / "o")], capsys)
    assert code == 0, err
    tab = pd.read_csv(tmp_path / "o" / "whatif_cycles.csv")
    main = tab[tab["metric"] == "rfs_3y"]
    assert np.isfinite(main[["median", "p05", "p95", "rep_p05", "rep_p95"]]).all().all()
    ok = tab["var_total"].notna()
    np.testing.assert_allclose(tab.loc[ok, "var_total"],
                               tab.loc[ok, "var_between"] + tab.loc[ok, "var_within"],
                               rtol=1e-9, atol=1e-15)


def test_cli_named_posterior_makes_the_main_run_the_posterior_predictive_check(
        sensitive, post_file, tmp_path, capsys):
    """--posterior FILE without what-ifs: the replicated trials run over its draws (each
    trial's patients carry their draw's typical delta_max), the report says so; the default
    file alone does not change the main run."""
    code, out, err = run(["trial", "--replicates", "6", "--seed", "4", "--posterior",
                          str(post_file), "--posterior-draws", "3", "--out",
                          str(tmp_path / "o")], capsys)
    assert code == 0, err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "posterior predictive check" in md and "3 draws" in md and "(6 trials)" in md
    trials = pd.read_csv(tmp_path / "o" / "trials.csv")
    assert trials["trial"].nunique() == 6
    draws = read_posterior(post_file).draws["delta_max"]
    # the stand-in relapses below RELAPSE_BELOW: the trials' RFS differ between draws whose
    # delta_max lie on either side of it, and agree within a draw (deterministic stand-in)
    per = trials.groupby("draw")["trial"].nunique()
    assert (per == 2).all() and len(per) == 3
    assert set(trials["draw"]) <= set(range(len(draws)))
    below = {int(k): draws[int(k)] < RELAPSE_BELOW for k in per.index}
    hcq = trials[trials["arm"] == "HCQ"]
    # a draw whose typical delta_max is below the stand-in's threshold relapses more
    if any(below.values()) and not all(below.values()):
        lo = hcq[hcq["draw"].map(below)]["rfs_3y"].mean()
        hi = hcq[~hcq["draw"].map(below)]["rfs_3y"].mean()
        assert lo < hi
