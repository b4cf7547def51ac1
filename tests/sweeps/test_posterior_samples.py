"""`[samples] method = "posterior"`: draws of a posterior calibration file (`dormancy calibrate
--posterior`, made here by the package's own writer) as the sweep's sample dimension, the
joint draws kept together, the spread parameters scaling the [patients] variability per sample;
every bad file or field one line; the posterior-file and the fit-file sweeps end to end through
`dormancy sweep` (the spec has the shape of test_commands' sampled sweeps: compiled once)."""

import json

import numpy as np
import pytest

from cli_run import run
from dormancy_model.errors import InputError
from posterior_files import lognormal_draws, write_posterior_file
from sweep_specs import parse_spec_file as parse
from sweep_specs import run_sweep_cli

DRAWS = {"delta_max": 0.05, "k_dr": 3e-9, "load_median": 2e5, "cv_k_dr": 0.6}
LOG_SD = {"delta_max": 0.3, "k_dr": 1.0, "load_median": 0.5, "cv_k_dr": 0.3}


def spec_text(n=8, extra="", patients="", method="posterior", field='posterior = "post.json"'):
    return (f'[sweep]\nmodel = "human"\nschedule = "clever-hcq"\n'
            f'[samples]\nmethod = "{method}"\nn = {n}\n{field}\nseed = 5\n{extra}\n{patients}'
            '[outputs]\nrelapse_free_days = [1825]\n[solver]\nchunk = 8\n')


@pytest.fixture
def post(tmp_path):
    path = tmp_path / "post.json"
    write_posterior_file(path, lognormal_draws(DRAWS, LOG_SD, samples=20))
    return path


def test_samples_are_joint_draws_of_the_file(tmp_path, post):
    """Default parameters: the typical values (k_dr, delta_max, load_median -> dormant_initial);
    each sample is one draw of the file (pairs kept), distinct, seeded; the store coordinates
    and the recorded input name the file."""
    doc = json.loads(post.read_text())
    spec = parse(tmp_path, spec_text())
    assert set(spec.samples) == {"delta_max", "k_dr", "dormant_initial"}
    assert spec.shape == (8,) and spec.dims[-1].name == "sample"
    file_rows = {(a, b, c) for a, b, c in zip(np.ravel(doc["draws"]["delta_max"]),
                                              np.ravel(doc["draws"]["k_dr"]),
                                              np.ravel(doc["draws"]["load_median"]), strict=True)}
    rows = set(zip(spec.samples["delta_max"], spec.samples["k_dr"],
                   spec.samples["dormant_initial"], strict=True))
    assert len(rows) == 8 and rows <= file_rows
    again = parse(tmp_path, spec_text())
    np.testing.assert_array_equal(again.samples["k_dr"], spec.samples["k_dr"])
    other = parse(tmp_path, spec_text(extra="").replace("seed = 5", "seed = 6"))
    assert not np.array_equal(other.samples["k_dr"], spec.samples["k_dr"])
    (fld, path, sha), = [i for i in spec.inputs if i[0] == "samples.posterior"]
    assert path == str(post.resolve()) and len(sha) == 64
    assert "sample_dormant_initial" in spec.dims[-1].coords
    vals, _ = spec.lanes(np.arange(8))
    np.testing.assert_array_equal(vals["k_dr"], spec.samples["k_dr"])


def test_spread_scales_the_patients_variability_per_sample(tmp_path, post):
    """cv_k_dr with [patients] variability.k_dr: patient p of sample s has k_dr_s * f_p **
    (omega_s / omega), omega_s = sqrt(ln(1 + cv_s^2)), omega from the [patients] CV."""
    spec = parse(tmp_path, spec_text(n=4, extra='parameters = ["k_dr", "cv_k_dr"]',
                                     patients="[patients]\nn = 3\nvariability = { k_dr = 0.5 }\n"))
    assert spec.shape == (4, 3) and set(spec.samples) == {"k_dr"}
    cv = spec.dims[0].coords["sample_cv_k_dr"][0]
    vals, _ = spec.lanes(np.arange(12))
    k = vals["k_dr"].reshape(4, 3)
    f = spec.patient_factors["k_dr"]
    expect = spec.samples["k_dr"][:, None] * f[None, :] ** (
        np.sqrt(np.log1p(cv ** 2)) / np.sqrt(np.log1p(0.5 ** 2)))[:, None]
    np.testing.assert_allclose(k, expect, rtol=1e-12)
    # the default selection takes the spread when its parameter varies in [patients]
    spec = parse(tmp_path, spec_text(n=4, patients="[patients]\nn = 3\n"
                                                   "variability = { k_dr = 0.5 }\n"))
    assert "k_dr" in spec.sample_spread and "sample_cv_k_dr" in spec.dims[0].coords


BAD = [
    (spec_text(field='posterior = "missing.json"'), "file", "not found"),
    (spec_text(field=""), "samples.posterior", "missing"),
    (spec_text(extra='parameters = ["eve_cl"]'), "samples.parameters",
     "'eve_cl' is not a parameter of the posterior"),
    (spec_text(n=41), "samples.n", "more than the 40 draws"),
    (spec_text(extra='parameters = ["cv_k_dr"]'), "samples.parameters",
     "give [patients] variability.k_dr"),
    (spec_text(method="fit"), "samples.posterior", 'only with method = "posterior"'),
    (spec_text().replace('model = "human"', 'model = "mouse"').replace("clever-hcq",
                                                                       "mouse-vehicle"),
     "parameter_file", "not with mouse.toml"),
]


@pytest.mark.parametrize("text,field,words", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_bad_posterior_specs_one_error(tmp_path, post, text, field, words):
    with pytest.raises(InputError) as e:
        parse(tmp_path, text)
    assert e.value.field == field and words in e.value.problem, str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("edit,words", [
    (lambda p: p.write_text("[1, 2"), "post.json: file: not a posterior JSON file"),
    (lambda p: p.write_text(json.dumps({"parameters": ["k_dr"]})), "post.json: draws: missing"),
    (lambda p: p.write_text(p.read_text().replace('"k_dr"', '"k_dx"')),
     "post.json: parameters: unknown posterior parameter 'k_dx'"),
])
def test_cli_bad_posterior_file_one_line_exit_2_no_store(tmp_path, post, capsys, edit, words):
    edit(post)
    (tmp_path / "spec.toml").write_text(spec_text())
    code, _, err = run(["sweep", str(tmp_path / "spec.toml"), "--out",
                        str(tmp_path / "o.zarr")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("method", ["posterior", "fit"])
def test_cli_posterior_and_fit_sweeps_end_to_end(method, tmp_path, capsys):
    """`dormancy sweep` over 8 samples of k_dr from a posterior file and from a `dormancy fit`
    file: the store's sample coordinate is the spec's draws in 1/day, every lane solves, and
    the relapse-free probability falls strictly as k_dr rises."""
    if method == "posterior":
        write_posterior_file(tmp_path / "post.json",
                             lognormal_draws({"k_dr": 2e-9}, {"k_dr": 0.7}, samples=20))
        field = 'posterior = "post.json"'
    else:
        from fit_files import write_fit_file

        write_fit_file(tmp_path / "fit.json", "human", {"k_dr": 2e-9}, [[0.5]])
        field = 'fit = "fit.json"'
    text = spec_text(method=method, field=field, extra='parameters = ["k_dr"]')
    ds = run_sweep_cli(tmp_path, text, capsys)
    spec = parse(tmp_path, text)
    k = ds["sample_k_dr"].values
    np.testing.assert_allclose(k, spec.samples["k_dr"] / spec.params.spec["k_dr"].factor)
    assert len(set(k)) == 8 and f"samples.{method}" in ds.attrs["input_files"]
    rfs = ds["relapse_free"].values[:, 0]
    assert (np.diff(rfs[np.argsort(k)]) < 0).all(), (k, rfs)


@pytest.mark.slow
def test_a_real_dormancy_fit_file_drives_a_sweep(tmp_path, capsys, root):
    """`dormancy fit` (2 starts, short) on the synthetic mouse study, then `dormancy sweep`
    with `[samples] method = "fit"` on the file it wrote: 8 lanes, all solved, draws around
    the fit's estimates (the fit-file format was once refused by the sweep reader)."""
    fit = tmp_path / "fit.json"
    code, _, err = run(["fit", "--study", str(root / "data" / "mouse_synthetic"), "--free",
                        "k_dr,delta_max", "--starts", "2", "--adam-steps", "5", "--lbfgs-steps",
                        "15", "--out", str(fit)], capsys)
    assert code == 0, err
    text = ('[sweep]\nmodel = "mouse"\nschedule = "mouse-vehicle"\n[samples]\nmethod = "fit"\n'
            'n = 8\nfit = "fit.json"\nseed = 3\n[outputs]\nresidual_days = [28]\n'
            '[solver]\nchunk = 8\n')
    ds = run_sweep_cli(tmp_path, text, capsys)
    est = json.loads(fit.read_text())["estimates"]["k_dr"]["internal_value"]
    k = ds["sample_k_dr"].values * parse(tmp_path, text).params.spec["k_dr"].factor
    assert len(set(k)) == 8 and 0.2 < np.exp(np.mean(np.log(k))) / est < 5
