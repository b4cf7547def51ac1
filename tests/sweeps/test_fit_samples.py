"""`[samples] method = "fit"`: draws from the fit JSON that `dormancy fit` writes (estimates as
the mean and `covariance_scale` as the covariance on each parameter's scale), checked: the
covariance finite, symmetric and positive semi-definite, the fit one of the sweep's model.
No solve here (parsing a spec draws the samples)."""

import json

import numpy as np
import pytest

from dormancy_model.errors import InputError
from dormancy_model.params.table import load_model_parameters
from fit_files import write_fit_file
from sweep_specs import parse_spec_file as parse

EST = {"k_dr": 2.5e-4, "delta_max": 0.1, "burden_sigma": 0.5}  # mouse, internal units (1/day)
COV = [[0.04, 0.012, 0.002],
       [0.012, 0.09, -0.003],
       [0.002, -0.003, 0.01]]  # log scale, ordered as EST


def spec_text(fit="fit.json", n=4000, model="mouse", extra=""):
    return (f'[sweep]\nmodel = "{model}"\nschedule = "mouse-vehicle"\n'
            f'[samples]\nmethod = "fit"\nn = {n}\nfit = "{fit}"\nseed = 7\n{extra}'
            '[outputs]\nresidual_days = [28]\n')


@pytest.fixture
def fit_json(tmp_path):
    path = tmp_path / "fit.json"
    write_fit_file(path, "mouse", EST, COV)
    return path


def test_fit_file_is_in_the_format_dormancy_fit_writes(fit_json):
    doc = json.loads(fit_json.read_text())
    assert doc["format"] == "dormancy-fit/1"
    assert "covariance" not in doc and len(doc["covariance_scale"]) == 3
    assert doc["estimates"]["k_dr"]["internal_value"] == EST["k_dr"]
    assert doc["model_set"] == {"name": "mouse", "species": "mouse"}


def test_draws_have_the_fit_mean_and_covariance(tmp_path, fit_json):
    """Log draws of k_dr and delta_max, whitened with the fit's 2 x 2 covariance (burden_sigma
    marginalised out), have mean 0 and identity covariance within sampling error (n = 4000:
    SE of a mean 0.016, of a variance 0.022); the recorded input is the fit file."""
    spec = parse(tmp_path, spec_text())
    assert set(spec.samples) == {"k_dr", "delta_max"}
    z = np.log(np.stack([spec.samples["k_dr"], spec.samples["delta_max"]], axis=1))
    mean = np.log([EST["k_dr"], EST["delta_max"]])
    c = np.array(COV)[:2, :2]
    w = (z - mean) @ np.linalg.inv(np.linalg.cholesky(c)).T
    n = w.shape[0]
    np.testing.assert_array_less(np.abs(w.mean(axis=0)), 4 / np.sqrt(n))
    np.testing.assert_array_less(np.abs(np.cov(w.T) - np.eye(2)), 4 * np.sqrt(2 / n))
    # the correlation is the fit's (0.2), not zero: a covariance read in the wrong order or
    # as a diagonal fails here
    r = np.corrcoef(z.T)[0, 1]
    assert abs(r - 0.012 / np.sqrt(0.04 * 0.09)) < 4 * (1 - 0.2**2) / np.sqrt(n)
    (fld, path, sha), = [i for i in spec.inputs if i[0] == "samples.fit"]
    assert path == str(fit_json.resolve()) and len(sha) == 64
    coords = spec.dims[-1].coords
    np.testing.assert_allclose(coords["sample_k_dr"][0], spec.samples["k_dr"])  # 1/day


def test_parameters_select_a_marginal(tmp_path, fit_json):
    spec = parse(tmp_path, spec_text(n=2000, extra='parameters = ["delta_max"]\n'))
    assert set(spec.samples) == {"delta_max"}
    z = np.log(spec.samples["delta_max"])
    assert abs(z.mean() - np.log(0.1)) < 4 * 0.3 / np.sqrt(2000)
    assert abs(z.std() / 0.3 - 1) < 4 / np.sqrt(2 * 2000)
    with pytest.raises(InputError, match="samples.parameters: 'eve_cl' is not a fitted"):
        parse(tmp_path, spec_text(extra='parameters = ["eve_cl"]\n'))


def test_draws_are_clipped_to_the_bounds(tmp_path):
    """A wide fit (SD 3 on log k_dr) still gives values inside the file's bounds."""
    write_fit_file(tmp_path / "wide.json", "mouse", {"k_dr": 2.5e-4}, [[9.0]])
    spec = parse(tmp_path, spec_text(fit="wide.json", n=500))
    lo, hi = load_model_parameters("mouse").spec["k_dr"].bounds
    k = spec.samples["k_dr"]
    assert k.min() == lo and k.max() == hi  # both ends reached and clipped


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _set_cov(m):
    def fn(doc):
        doc["covariance_scale"] = m
    return fn


BAD = [
    (_set_cov([[0.04, None, 0.0], [None, 0.09, 0.0], [0.0, 0.0, 0.01]]), "covariance_scale",
     "non-finite"),
    (_set_cov([[0.04, 0.3, 0.0], [0.3, 0.09, 0.0], [0.0, 0.0, 0.01]]), "covariance_scale",
     "not positive semi-definite"),
    (_set_cov([[0.04, 0.01, 0.0], [0.0, 0.09, 0.0], [0.0, 0.0, 0.01]]), "covariance_scale",
     "not symmetric"),
    (_set_cov([[0.04, 0.0], [0.0, 0.09]]), "covariance_scale", "3 x 3"),
    (lambda d: d.pop("covariance_scale"), "covariance_scale", "missing"),
    (lambda d: d["estimates"].pop("k_dr"), "covariance_scale", "2 x 2"),
    (lambda d: d["estimates"]["k_dr"].pop("internal_value"), "estimates.k_dr.internal_value",
     "missing"),
    (lambda d: d["estimates"]["k_dr"].update(scale="cubic"), "estimates.k_dr.scale", "cubic"),
    (lambda d: d.update(format="other"), "format", "dormancy-fit/1"),
    (lambda d: d.update(model_set={"name": "human", "species": "human"}), "model",
     "fit made for parameter set 'human'"),
]


@pytest.mark.parametrize("edit,field,words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_fit_files_one_error(tmp_path, fit_json, edit, field, words):
    _edit(fit_json, edit)
    with pytest.raises(InputError) as e:
        parse(tmp_path, spec_text())
    assert e.value.source == str(tmp_path / "fit.json")
    assert e.value.field == field and words in e.value.problem
    assert "\n" not in str(e.value)


def test_old_assumed_format_is_refused(tmp_path):
    """The format the sweep reader once assumed (covariance.names / matrix) is not a fit."""
    (tmp_path / "fit.json").write_text(json.dumps(
        {"estimates": {"k_dr": 2.5e-4}, "covariance": {"names": ["k_dr"], "matrix": [[0.1]]}}))
    with pytest.raises(InputError, match="format"):
        parse(tmp_path, spec_text())


def test_fit_of_another_model_refused(tmp_path, fit_json):
    """A mouse fit in a human sweep: one line naming both parameter sets."""
    with pytest.raises(InputError) as e:
        parse(tmp_path, spec_text(model="human"))
    assert e.value.field == "model"
    assert "'mouse' (species mouse)" in e.value.problem
    assert "sweep.model 'human' (species human)" in e.value.problem


@pytest.mark.parametrize("text,field", [
    (spec_text(fit="missing.json"), "file"),
    (spec_text().replace('fit = "fit.json"\n', ""), "samples.fit"),
    (spec_text().replace('fit = "fit.json"', "fit = 3"), "samples.fit"),
])
def test_fit_path_errors(tmp_path, fit_json, text, field):
    with pytest.raises(InputError) as e:
        parse(tmp_path, text)
    assert e.value.field == field


def test_cli_bad_fit_one_line(tmp_path, fit_json, capsys):
    from cli_run import run

    _edit(fit_json, _set_cov([[0.04, 0.3, 0.0], [0.3, 0.09, 0.0], [0.0, 0.0, 0.01]]))
    (tmp_path / "spec.toml").write_text(spec_text())
    code, _, err = run(["sweep", str(tmp_path / "spec.toml"), "--out",
                        str(tmp_path / "o.zarr")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "fit.json: covariance_scale: not positive semi-definite" in lines[0]
    assert not (tmp_path / "o.zarr").exists()
