"""The validation document generator (scripts/validation.py, trials.validation): every published
number gets a row with a model number, "inside" follows from the row's numbers, and the PK
numbers are the parameter set's own (closed form)."""

import importlib.util
import math
import re

import numpy as np
import pandas as pd
import pytest

from dormancy_model.trials import validation as V

# one entry per published number (or prediction) the document must carry
EXPECTED = [
    "EVE tmax", "EVE terminal half-life", "EVE trough", "HCQ whole blood",
    "HCQ terminal half-life", "HCQ time to 96%",
    "lysosomal block after 6 cycles, 400", "lysosomal block after 6 cycles, 800",
    "lysosomal block after 6 cycles, 1200", "HCQ 400 mg/day alone", "HCQ 1,200 mg/day alone",
    "within-arm DTC reduction baseline -> C3 implied for HCQ 1,200",
    "mTORC1 inhibition at steady state, 10 mg", "mTORC1 inhibition at steady state, 5 mg",
    "screening positivity",
    "3-year RFS (Kaplan-Meier), HCQ", "3-year RFS (Kaplan-Meier), EVE",
    "3-year RFS (Kaplan-Meier), HCQ+EVE",
    "C3 (Poisson regression), HCQ", "C3 (Poisson regression), EVE",
    "C3 (Poisson regression), HCQ+EVE",
    "HR of relapse, DTC- vs DTC+ after C6 (Cox), per trial", "pooled over all simulated",
    "relapses per 51-patient trial", "last on-treatment aspirate",
    "below observation), HCQ ", "below observation), EVE ", "below observation), HCQ+EVE ",
    "80% reduction at C3 vs observation), HCQ", "80% reduction at C3 vs observation), EVE",
    "80% reduction at C3 vs observation), HCQ+EVE",
    "own screening counts), HCQ", "own screening counts), EVE",
    "own screening counts), HCQ+EVE", "relapses within the first 3 cycles",
    "median patient delta_max", "median patient k_dr",
    "share with 1 / 2 / >= 3 DTCs", "end-of-treatment false negatives",
    "DTC- after 3 months without drug", "apparent DTC 'reduction'",
    "3-year RFS (agent model)", "5-year RFS (agent model)", "relapse-rate ratio",
    "relapse within 4 years by DTCs seen at screening", "false-negative rate at screening",
]


def own_inside(r) -> str:
    """The rule written out again, independently of `V.inside`."""
    if r["criterion"] == "prediction":
        return "-"
    vals = {k: float(r[k]) for k in ("model_value", "model_lo", "model_hi", "ref_point",
                                     "ref_lo", "ref_hi")}
    if r["criterion"] == "point_in_interval":
        need, ok = ("model_lo", "model_hi", "ref_point"), (
            vals["model_lo"] <= vals["ref_point"] <= vals["model_hi"])
    elif r["criterion"] == "overlap":
        need, ok = ("model_lo", "model_hi", "ref_lo", "ref_hi"), not (
            vals["model_hi"] < vals["ref_lo"] or vals["model_lo"] > vals["ref_hi"])
    elif r["criterion"] == "direction":
        need = ("model_value", "ref_point")
        ok = (vals["model_value"] > 1) == (vals["ref_point"] > 1) and vals["model_value"] != 1
    else:
        need, ok = ("model_value", "ref_lo", "ref_hi"), (
            vals["ref_lo"] <= vals["model_value"] <= vals["ref_hi"])
    if not all(math.isfinite(vals[k]) for k in need):
        return "NA"
    return "yes" if ok else "no"


def test_inside_rule_on_constructed_rows():
    base = dict(model_value=np.nan, model_lo=np.nan, model_hi=np.nan, ref_point=np.nan,
                ref_lo=np.nan, ref_hi=np.nan)
    assert V.inside({**base, "criterion": "point_in_interval", "model_lo": 0.1,
                     "model_hi": 0.5, "ref_point": 0.21}) == "yes"
    assert V.inside({**base, "criterion": "point_in_interval", "model_lo": 1.1,
                     "model_hi": 9.0, "ref_point": 0.21}) == "no"
    assert V.inside({**base, "criterion": "overlap", "model_lo": 0.9, "model_hi": 0.97,
                     "ref_lo": 0.98, "ref_hi": 0.999}) == "no"
    assert V.inside({**base, "criterion": "overlap", "model_lo": 0.9, "model_hi": 0.985,
                     "ref_lo": 0.98, "ref_hi": 0.999}) == "yes"
    assert V.inside({**base, "criterion": "value_in_range", "model_value": 2126.0,
                     "ref_lo": 650.0, "ref_hi": 1300.0}) == "no"
    assert V.inside({**base, "criterion": "value_in_range", "model_value": np.nan,
                     "ref_lo": 650.0, "ref_hi": 1300.0}) == "NA"
    assert V.inside({**base, "criterion": "prediction", "model_value": 0.5}) == "-"
    assert V.inside({**base, "criterion": "direction", "model_value": 1.6,
                     "ref_point": 2.0}) == "yes"
    assert V.inside({**base, "criterion": "direction", "model_value": 0.8,
                     "ref_point": 2.0}) == "no"
    assert V.inside({**base, "criterion": "direction", "model_value": np.nan,
                     "ref_point": 2.0}) == "NA"


def test_hcq_scale_compares_like_with_like_through_the_regression_to_the_mean():
    """CLEVER's 80% is within-arm (drug effect and the enrolment's regression to the mean):
    the drug-only mean-field number is compared through the observation arm's pooled
    regression, 1 - (1 - drug)(1 - regression), computed from hand-built counts."""
    obs = pd.DataFrame({"arm": "observation", "baseline_count": [1, 1, 2, 4],
                        "count_C3": [0, 1, 0, 2]})
    treated = pd.DataFrame({"arm": "HCQ", "baseline_count": [9], "count_C3": [0]})
    reg = V.observation_regression(pd.concat([obs, treated]))
    assert reg == pytest.approx(1 - 3 / 8)
    assert math.isnan(V.observation_regression(treated))
    drug_row, both = V.hcq_scale_rows("PD", 0.6, reg)
    assert drug_row.criterion == "prediction" and drug_row.model_value == 0.6
    assert both.model_value == pytest.approx(1 - 0.4 * 3 / 8)  # 0.85: inside 70-90%
    assert V.inside(both.record()) == "yes"
    assert V.inside(V.hcq_scale_rows("PD", 0.1, reg)[1].record()) == "no"  # 0.66
    (only,) = V.hcq_scale_rows("PD", 0.6, math.nan)  # no observation arm: drug effect alone
    assert only.criterion == "value_in_range" and V.inside(only.record()) == "no"


@pytest.fixture(scope="module")
def generated(tmp_path_factory, root):
    """The whole generator on 3 trials (about 90 s on 2 cores: the tests using it are slow)."""
    out = tmp_path_factory.mktemp("validation")
    spec = importlib.util.spec_from_file_location("validation_script",
                                                  root / "scripts" / "validation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["--replicates", "3", "--seed", "4", "--untreated", "400", "--out",
                      str(out)])
    assert rc == 0
    return out


def read_table(path):
    """validation.csv with "NA" (the inside of a missing number) kept as text."""
    return pd.read_csv(path, keep_default_na=False, na_values=["", "NaN", "nan"])


@pytest.mark.slow
def test_every_published_number_has_a_model_number(generated):
    t = read_table(generated / "validation.csv")
    assert len(t) == len(EXPECTED)
    for want in EXPECTED:
        # "..., HCQ" must not also match "..., HCQ+EVE"
        hits = t[t["quantity"].str.contains(re.escape(want) + r"(?![+\w])", regex=True)]
        assert len(hits) == 1, (want, list(hits["quantity"]))
    for _, r in t.iterrows():
        if np.isfinite(r["model_value"]):
            continue
        # the only numbers allowed to be missing: an HR that is not estimable (no relapse in
        # one of the groups; with a handful of trials this happens), and the count-category
        # risk ratio when the small cohort has no relapse among its one-cell patients
        assert (r["quantity"].startswith("HR of relapse") and (
            str(r["note"]).startswith(("estimable in 0/", "not estimable")))) or (
            r["quantity"].startswith("relapse within 4 years by DTCs")
            and "/ 0.0% /" in str(r["note"])), r
        assert r["inside"] == "NA", r
    md = (generated / "validation.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]
    table = [dict(zip(header, row, strict=True)) for row in body if len(row) == len(header)
             and row[0] in {"PK", "PD", "Trial", "Prognosis"}]
    assert len(table) == len(t)
    for row, (_, r) in zip(table, t.iterrows(), strict=True):
        assert row["model"] and row["model"] != "nan", row
        assert row["inside"] == r["inside"], row
    assert (generated / "validation.png").stat().st_size > 10_000
    assert "python scripts/validation.py --replicates 3 --seed 4" in md


@pytest.mark.slow
def test_inside_column_follows_from_the_numbers(generated):
    t = read_table(generated / "validation.csv")
    for _, r in t.iterrows():
        assert r["inside"] == own_inside(r), (r["quantity"], r["inside"], own_inside(r))
    # the trial rows compare with the published value, e.g. 55/184 for screening positivity
    s = t[t["quantity"].str.startswith("screening positivity")].iloc[0]
    assert s["ref_point"] == pytest.approx(55 / 184)
    assert s["model_lo"] <= s["model_value"] <= s["model_hi"]


@pytest.mark.slow
def test_pk_rows_are_the_parameter_sets_own(generated, human):
    t = read_table(generated / "validation.csv").set_index("quantity")
    # steady-state mean of a linear system: F dose / (CL tau), tau = 1 day (blood ng/mL)
    css = float(human["hcq_f"]) * 400.0 / float(human["hcq_cl"]) * 1000.0
    row = t.loc[[q for q in t.index if q.startswith("HCQ whole blood")][0]]
    assert row["model_value"] == pytest.approx(css, rel=2e-3)
    # terminal half-life of the 2-compartment disposition: ln 2 / beta (closed form)
    cl, v1, q, v2 = (float(human[f"hcq_{k}"]) for k in ("cl", "v1", "q", "v2"))
    k10, k12, k21 = cl / v1, q / v1, q / v2
    s = k10 + k12 + k21
    beta = 0.5 * (s - math.sqrt(s * s - 4 * k10 * k21))
    row = t.loc[[q_ for q_ in t.index if q_.startswith("HCQ terminal half-life")][0]]
    assert row["model_value"] == pytest.approx(math.log(2) / beta, rel=1e-3)


def test_posterior_section_reports_the_files_summary_and_diagnostics(tmp_path):
    import json

    rec = {"command": "dormancy calibrate --posterior", "git_commit": "abcdef123456",
           "settings": {"points": 64, "replicates": 32, "trials": 2048, "chains": 4,
                        "warmup": 500, "samples": 500, "simulation_seconds": 1200.0},
           "diagnostics": {"max_rhat": 1.004, "min_ess_bulk": 812.0, "divergences": 0,
                           "ess_tail": {"a": 640.0, "b": 555.0}, "warnings": []},
           "summary": [{"parameter": "delta_max", "p05": 0.02, "median": 0.031, "p95": 0.05,
                        "prior_p05": 0.01, "prior_median": 0.04, "prior_p95": 0.15,
                        "sd_ratio": 0.4, "at_box_edge": 0.0}],
           "posterior_predictive_emulated": [
               {"statistic": "screen_positivity", "arm": "all", "reported": 0.299,
                "pred_p05": 0.25, "pred_median": 0.3, "pred_p95": 0.35, "inside_90": True}]}
    p = tmp_path / "post.json"
    p.write_text(json.dumps(rec))
    info = V.posterior_info(p)
    assert info["diagnostics"]["min_ess_tail"] == 555.0
    text = "\n".join(V._posterior_lines(info))
    assert "max R-hat 1" in text and "min bulk ESS 812" in text and "min tail ESS 555" in text
    assert "| delta_max | 0.031 [0.02, 0.05] | 0.04 [0.01, 0.15] | 0.4 | 0 |" in text
    assert "| screen_positivity | all | 0.299 | 0.3 [0.25, 0.35] | yes |" in text
    assert "2048 trials" in text and "Warnings of the calibration: none." in text
    assert "Second design wave" not in text  # one wave: no such paragraph

    rec["settings"]["refine"] = {"points": 32, "margin": 0.25, "first_wave_points_inside": 7,
                                 "simulation_seconds": 900.0,
                                 "box": {"delta_max": [0.008, 0.06]}}
    rec["settings"]["first_wave_file"] = {"path": "fits/old.json", "git_commit": "0123456789ab"}
    rec["diagnostics"]["first_wave_error"] = [
        {"output": "log_irr", "rmse": 0.61, "bias": 0.4, "z_rms": 1.7, "points": 32}]
    p.write_text(json.dumps(rec))
    text = "\n".join(V._posterior_lines(V.posterior_info(p)))
    assert "Second design wave: 32 Sobol points" in text and "delta_max 0.008-0.06" in text
    assert "the 7 first-wave points inside the box" in text and "(900 s)" in text
    assert "first wave reused from fits/old.json, git 0123456789" in text
    assert "| log_irr | 0.61 | +0.4 | 1.7 | 32 |" in text


@pytest.mark.slow
def test_script_with_a_posterior_runs_the_predictive_check_end_to_end(tmp_path, root):
    """`scripts/validation.py --posterior FILE` on the shipped posterior, 2 draws x 2 trials and
    an untreated cohort over the same draws: the document says it is the posterior predictive
    check, has the posterior section (the file's summary and diagnostics) and every trial and
    prognosis row has a model number."""
    spec = importlib.util.spec_from_file_location("validation_script",
                                                  root / "scripts" / "validation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    post = root / "fits" / "clever_posterior.json"
    rc = script.main(["--replicates", "4", "--replicates-per-draw", "2", "--seed", "2",
                      "--untreated", "200", "--posterior", str(post), "--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "validation.md").read_text()
    assert "Posterior predictive check" in text
    assert "## The posterior over the population parameters" in text
    assert "2 draws x 2 trials" in text
    t = read_table(tmp_path / "validation.csv")
    rows = t[t["group"].isin(["Trial", "Prognosis"])]
    assert len(rows) > 10
    computable = rows[rows["criterion"] != "prediction"]
    assert computable["model_value"].notna().mean() > 0.9, computable[["quantity", "model_value"]]
