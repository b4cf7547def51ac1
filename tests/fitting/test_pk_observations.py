"""PK observations (pk.csv): the log-normal / M3-censored PK likelihood against scipy, bad
input through `dormancy fit`, a study without pk.csv unchanged, and (slow) recovery of hcq_cl
and its residual sd from simulated concentrations.

The tiny study: arms vehicle (one burden row, one survival row: the only cell data), and
hcq120-chronic and combo-hcq60-eve5-chronic with PK rows only, so the PK parameters are
informed by the concentrations alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dormancy_model.cli.main import main
from dormancy_model.fitting.likelihood import pk_loglik
from dormancy_model.fitting.study import load_study, study_arrays
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import load_model_parameters

ARMS = ("vehicle", "hcq120-chronic", "combo-hcq60-eve5-chronic")
PK_HEADER = "mouse_id,arm,day,drug,matrix,conc_ng_ml,lloq_ng_ml"
PK_ROWS = [  # hcq whole blood / plasma, eve whole blood, two below the LLOQ (empty, value < LLOQ)
    "h1,hcq120-chronic,0.5,hcq,whole_blood,900,",
    "h1,hcq120-chronic,3,hcq,plasma,150,5",
    "h2,hcq120-chronic,7,hcq,whole_blood,,50000",
    "c1,combo-hcq60-eve5-chronic,1.25,eve,whole_blood,40,1",
    "c1,combo-hcq60-eve5-chronic,2,eve,plasma,0.5,1",
    "c2,combo-hcq60-eve5-chronic,10,hcq,plasma,80,",
]


def write_study(d, pk_rows=PK_ROWS, pk=True):
    d.mkdir(parents=True, exist_ok=True)
    arms = "".join(f'\n[arms.{a}]\nschedule = "mouse-{a}"\n' for a in ARMS)
    (d / "study.toml").write_text('[study]\nname = "pk_tiny"\nspecies = "mouse"\n'
                                  + ('pk = "pk.csv"\n' if pk else "") + arms)
    (d / "burden.csv").write_text("mouse_id,arm,day,residual_cells,detection_limit\n"
                                  "v1,vehicle,28,500,1\n")
    (d / "survival.csv").write_text("mouse_id,arm,day,event\nv2,vehicle,60,1\n")
    if pk:
        (d / "pk.csv").write_text("\n".join([PK_HEADER, *pk_rows]) + "\n")
    return d


def test_pk_loglik_matches_scipy(tmp_path):
    study = load_study(write_study(tmp_path / "s"))
    params = load_model_parameters("mouse").replace(body_weight=study.body_weight_kg)
    model = DormancyModel()
    arrays = study_arrays(study)
    s_hcq, s_eve = 0.3, 0.45
    got = float(pk_loglik(model, params, arrays, s_hcq, s_eve))
    # reference: concentrations of each arm's course, likelihood by scipy
    want = 0.0
    r = study.pk
    for i in range(r.day.size):
        course = model.drug_course(params, _arm(arrays.dosing, r.arm[i]))
        ex = course.exposure(r.day[i])
        c = float(ex.hcq if r.drug[i] == 0 else ex.eve)
        # the mouse set's HCQ concentrations are plasma, its EVE whole blood ([meta])
        set_matrix = "plasma" if r.drug[i] == 0 else "whole_blood"
        row_matrix = ("whole_blood", "plasma")[r.matrix[i]]
        ratio = float(params["hcq_blood_plasma_ratio" if r.drug[i] == 0
                             else "eve_blood_plasma_ratio"])
        if (set_matrix, row_matrix) == ("whole_blood", "plasma"):
            c /= ratio
        elif (set_matrix, row_matrix) == ("plasma", "whole_blood"):
            c *= ratio
        s = s_hcq if r.drug[i] == 0 else s_eve
        if np.isnan(r.conc[i]) or r.conc[i] < np.nan_to_num(r.lloq[i], nan=-1):
            want += stats.norm.logcdf((np.log(r.lloq[i]) - np.log(c)) / s)
        else:
            want += stats.lognorm.logpdf(r.conc[i], s=s, scale=c)
    assert r.censored.tolist() == [False, False, True, False, True, False]
    assert params.matrices == ("plasma", "whole_blood")
    assert got == pytest.approx(want, rel=1e-10)
    # the sd of the other drug and the plasma ratio matter
    assert float(pk_loglik(model, params, arrays, s_hcq, 0.2)) != pytest.approx(got)
    p2 = params.replace(hcq_blood_plasma_ratio=2.0)
    assert float(pk_loglik(model, p2, arrays, s_hcq, s_eve)) != pytest.approx(got)


def test_parameter_file_matrix_is_checked(tmp_path):
    """`[meta] hcq_matrix` names the sample matrix of a set's concentrations: the human set
    is whole blood for both drugs; an unknown matrix is one line naming the file and field."""
    from dormancy_model.errors import InputError
    from dormancy_model.params.table import load_parameters

    assert load_model_parameters("human").matrices == ("whole_blood", "whole_blood")
    src = Path(load_model_parameters("mouse").source).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(src.replace('hcq_matrix = "plasma"', 'hcq_matrix = "serum"'))
    with pytest.raises(InputError, match=r"bad.toml: meta.hcq_matrix: must be one of "
                                         "whole_blood, plasma, got 'serum'"):
        load_parameters(bad)


def _arm(events, a):
    import jax

    return jax.tree.map(lambda v: v[a], events)


BAD = [  # (row replacing the first PK row, column named, words of the problem)
    ("h1,hcq120-chronic,0.5,cq,whole_blood,900,", "drug", "unknown drug 'cq'"),
    ("h1,hcq120-chronic,0.5,hcq,serum,900,", "matrix", "unknown matrix 'serum'"),
    ("h1,hcq120-chronic,0.5,hcq,plasma,-3,", "conc_ng_ml", "must be >"),
    ("h1,hcq120-chronic,0.5,hcq,plasma,nan,", "conc_ng_ml", "not a finite number"),
    ("h1,hcq120-chronic,99,hcq,plasma,90,", "day", "after the study's last"),
    ("h1,hcq30-chronic,0.5,hcq,plasma,90,", "arm", "unknown arm 'hcq30-chronic'"),
    ("c1,hcq120-chronic,0.5,hcq,plasma,90,", "pk.csv:5: mouse_id", "one arm per mouse"),
    ("v1,hcq120-chronic,0.5,hcq,plasma,90,", "mouse_id", "one arm per mouse"),
    ("h1,hcq120-chronic,0.5,hcq,plasma,,", "conc_ng_ml", "empty without lloq_ng_ml"),
]


@pytest.mark.parametrize("row,column,problem", BAD)
def test_cli_bad_pk_row_exits_2(tmp_path, capsys, row, column, problem):
    d = write_study(tmp_path / "s", [row, *PK_ROWS[1:]])
    out = tmp_path / "fits" / "x.json"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--study", str(d), "--out", str(out), "--starts", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    where = "pk.csv:5" if column.startswith("pk.csv") else "pk.csv:2"
    assert where in err[0] and column in err[0] and problem in err[0], err[0]
    assert not (tmp_path / "fits").exists()


def test_study_without_pk_has_no_pk_arrays(tmp_path):
    study = load_study(write_study(tmp_path / "s", pk=False))
    assert study.pk is None and study_arrays(study).pk_mask is None
    with_pk = load_study(write_study(tmp_path / "p"))
    assert with_pk.subset(["vehicle", "hcq120-chronic"]).pk.day.size == 3


@pytest.mark.slow
def test_objective_without_pk_is_bitwise_unchanged():
    """The shipped study has no pk.csv: the objective at a fixed point is bitwise the value
    the code gave before PK observations existed (main at 3d89d5c, this machine's CPU)."""
    from pathlib import Path

    from dormancy_model.fitting.objective import Objective

    root = Path(__file__).resolve().parents[2]
    study = load_study(root / "data" / "mouse_synthetic").subset(["vehicle", "hcq120-chronic"])
    obj = Objective(study, load_model_parameters("mouse"), ["hcq_cl", "k_dr", "burden_sigma"],
                    batch=4)
    f, g, lb, lr = obj.evaluate(np.array([[0.1, -0.2, 0.3]]))
    assert [float(x).hex() for x in (f[0], lb[0], lr[0])] == [
        "0x1.894b61e63f852p+8", "-0x1.46340f3dce08fp+8", "-0x1.0c5d4aa1c5f0ep+6"]
    assert [float(x).hex() for x in g[0]] == [
        "0x1.44b265bf36456p-1", "0x1.aa6f3179f1782p+6", "-0x1.f02964e4a585bp+8"]


@pytest.mark.slow
def test_pooled_fit_recovers_hcq_cl_and_pk_sigma(tmp_path):
    """Simulated HCQ concentrations (seed 0): 30 plasma samples (the mouse set's matrix) of the
    hcq120-chronic
    arm at days 0.1-20, truth hcq_cl = 1.6 x the table value and sd 0.25 (log-normal),
    values below 5 ng/mL reported as below the LLOQ. A pooled fit of hcq_cl and pk_sigma_hcq
    puts both truths inside the 95% CIs."""
    from dormancy_model.fitting.estimate import fit

    params = load_model_parameters("mouse")
    d = write_study(tmp_path / "s", PK_ROWS[:1])
    study = load_study(d)
    p = params.replace(body_weight=study.body_weight_kg)
    truth_cl, truth_sd = 1.6 * float(p["hcq_cl"]), 0.25
    course = DormancyModel().drug_course(p.replace(hcq_cl=truth_cl),
                                         _arm(study_arrays(study).dosing, 1))
    rng = np.random.default_rng(0)
    days = np.round(np.linspace(0.1, 20.0, 30), 4)
    rows = []
    for i, t in enumerate(days):
        c = float(course.exposure(t).hcq) * np.exp(truth_sd * rng.standard_normal())
        rows.append(f"m{i},hcq120-chronic,{t},hcq,plasma,"
                    + (f"{c:.6g},5" if c >= 5 else ",5"))
    study = load_study(write_study(tmp_path / "s", rows))
    res = fit(study, params, ["hcq_cl", "pk_sigma_hcq"], starts=4, seed=0)
    assert res.n_pk == 30
    for name, truth in (("hcq_cl", truth_cl), ("pk_sigma_hcq", truth_sd)):
        assert res.ci_low[name] < truth < res.ci_high[name], (name, res.summary())


@pytest.mark.slow
def test_population_pk_per_animal_sums_to_pooled_and_follows_random_effects(tmp_path):
    """Population fit: every PK row belongs to its animal; at eta = 0 the animals' PK
    log-likelihoods add up to the pooled one, and a random effect on hcq_cl changes only
    the HCQ animals' values."""
    import jax.numpy as jnp

    from dormancy_model.fitting.population.animals import study_problem

    study = load_study(write_study(tmp_path / "s"))
    params = load_model_parameters("mouse")
    prob = study_problem(study, params, ["hcq_cl", "pk_sigma_hcq"], ["hcq_cl"])
    assert prob.n_obs == 2 + len(PK_ROWS)
    lik, ids = prob.likelihood, prob.animal_ids
    theta = jnp.asarray([np.log(float(params["hcq_cl"])), np.log(0.3)])
    import jax

    def per_animal(eta):
        return np.array([float(lik.pk(prob.phi(theta, jnp.asarray([eta[i]])),
                                      jax.tree.map(lambda v, i=i: v[i], prob.animals)))
                         for i in range(len(ids))])

    zero = per_animal(np.zeros(len(ids)))
    p = params.replace(body_weight=study.body_weight_kg)
    pooled = float(pk_loglik(DormancyModel(), p, study_arrays(study), 0.3, 0.3))
    assert zero.sum() == pytest.approx(pooled, rel=1e-10)
    shifted = per_animal(np.where(np.array(ids) == "h1", 0.5, 0.0))
    changed = np.array(ids)[~np.isclose(shifted, zero, rtol=1e-12)]
    assert changed.tolist() == ["h1"]
