"""`[samples] method = "population"`: virtual animals drawn from a population fit's typical
values and between-animal covariance Omega (`params.popfit.draw_animals`), clipped to the
bounds, seeded; `uncertainty = true` first draws each animal's typical values and Omega from
their estimation covariance. `method = "fit"` refuses a population fit, `"population"` a
pooled one. No solve here except the one small sweep through the CLI."""

import json

import numpy as np
import pytest

from dormancy_model.errors import InputError
from dormancy_model.params.table import load_model_parameters
from fit_files import write_fit_file
from population_fit_files import write_population_fit_file
from sweep_specs import parse_spec_file as parse

TYP = {"dormant_initial": 1000.0, "k_dr": 3e-4, "burden_sigma": 0.5}  # mouse, internal units
RANDOM = ("dormant_initial", "k_dr")
SD = [0.4, 0.8]
CORR = [0.6]  # Cholesky factor: correlation 0.6 / sqrt(1 + 0.6^2) = 0.514
N = 20000


def spec_text(fit="pop.json", n=N, method="population", extra="", seed=7):
    return (f'[sweep]\nmodel = "mouse"\nschedule = "mouse-vehicle"\n'
            f'[samples]\nmethod = "{method}"\nn = {n}\nfit = "{fit}"\nseed = {seed}\n{extra}'
            '[outputs]\nresidual_days = [28]\n')


def log_draws(spec, names=RANDOM):
    return np.log(np.stack([spec.samples[n] for n in names], axis=1))


def check_mean_cov(z, mean, cov, n):
    """5-sigma bounds: each mean within 5 sqrt(var / n); each variance within 5 var
    sqrt(2 / (n - 1)) (chi-square SE of a normal sample variance); each correlation within
    5 (1 - rho^2) / sqrt(n)."""
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - mean), 5 * sd / np.sqrt(n))
    var = z.var(axis=0, ddof=1)
    np.testing.assert_array_less(np.abs(var - sd**2), 5 * sd**2 * np.sqrt(2 / (n - 1)))
    rho = cov / np.outer(sd, sd)
    r = np.corrcoef(z.T)
    for i in range(len(sd)):
        for j in range(i):
            assert abs(r[i, j] - rho[i, j]) < 5 * (1 - rho[i, j] ** 2) / np.sqrt(n), (r, rho)


@pytest.mark.parametrize("corr", [[], CORR], ids=["diagonal", "full"])
def test_log_draws_have_the_typical_values_and_omega(tmp_path, corr):
    """n = 20000 animals: the log draws' mean is the file's log typical values and their
    covariance its Omega (diagonal: correlation 0; full: 0.514), 5-sigma bounds; the other
    fitted parameters are at their typical values in the sweep's base parameter set; the fit
    file is a recorded input; the same seed gives the same draws, another seed others."""
    doc = write_population_fit_file(tmp_path / "pop.json", "mouse", TYP, RANDOM, SD, corr)
    omega = np.array(doc["population"]["omega"])
    assert (omega[0, 1] != 0) == bool(corr)
    spec = parse(tmp_path, spec_text())
    assert set(spec.samples) == set(RANDOM)
    check_mean_cov(log_draws(spec), np.log([TYP[n] for n in RANDOM]), omega, N)
    assert spec.dims[-1].description == "virtual animals"
    (fld, path, sha), = [i for i in spec.inputs if i[0] == "samples.fit"]
    assert path == str((tmp_path / "pop.json").resolve())
    again = parse(tmp_path, spec_text())
    np.testing.assert_array_equal(again.samples["k_dr"], spec.samples["k_dr"])
    other = parse(tmp_path, spec_text(seed=8))
    assert not np.array_equal(other.samples["k_dr"], spec.samples["k_dr"])


def test_non_random_fitted_parameters_take_their_typical_values(tmp_path):
    """delta_max fitted without a random effect: not sampled, but the base parameter set holds
    its typical value (not the table's 0.1)."""
    typ = {**TYP, "delta_max": 0.25}
    write_population_fit_file(tmp_path / "pop.json", "mouse", typ, ("k_dr",), [0.5])
    spec = parse(tmp_path, spec_text(n=10))
    assert set(spec.samples) == {"k_dr"}
    assert float(spec.params["delta_max"]) == pytest.approx(0.25, rel=1e-6)
    assert float(spec.params["dormant_initial"]) == pytest.approx(1000.0, rel=1e-6)
    vals, _ = spec.lanes(np.arange(10))
    np.testing.assert_array_equal(vals["k_dr"], spec.samples["k_dr"])


def test_draws_are_clipped_to_the_bounds(tmp_path):
    """sd 3 on log k_dr around 1e-4 (bounds 1e-6 .. 0.1, 1.5 and 2.3 sds away): both bounds
    are reached and no draw is outside."""
    write_population_fit_file(tmp_path / "pop.json", "mouse", {"k_dr": 1e-4}, ("k_dr",), [3.0])
    spec = parse(tmp_path, spec_text(n=2000))
    lo, hi = load_model_parameters("mouse").spec["k_dr"].bounds
    k = spec.samples["k_dr"]
    assert k.min() == lo and k.max() == hi
    assert (k == lo).sum() > 50 and (k == hi).sum() > 5


def test_uncertainty_adds_the_typical_values_covariance(tmp_path):
    """uncertainty = true with no uncertainty on Omega (zero variance of the log sds): each
    animal's log parameters are typical + its own typical-value draw + eta, so their covariance
    is Omega + C (C: the typical values' block of covariance_theta), 5-sigma bounds."""
    C = np.array([[0.09, 0.03], [0.03, 0.04]])
    cov = np.zeros((6, 6))  # [dormant_initial, k_dr, burden_sigma, log sd x2, corr]
    cov[:2, :2] = C
    cov[2, 2] = 0.01
    doc = write_population_fit_file(tmp_path / "pop.json", "mouse", TYP, RANDOM, SD, CORR,
                                    covariance_theta=cov)
    omega = np.array(doc["population"]["omega"])
    spec = parse(tmp_path, spec_text(extra="uncertainty = true\n"))
    assert set(spec.samples) == set(RANDOM)  # every fitted model parameter (burden_sigma: not)
    check_mean_cov(log_draws(spec), np.log([TYP[n] for n in RANDOM]), omega + C, N)


def test_uncertainty_draws_omega_too(tmp_path):
    """Variance v of log sd(k_dr) alone: eta = sd z with log sd ~ N(log 0.8, v), so
    Var(eta) = E[sd^2] = 0.8^2 exp(2 v) (v = 0.1: 22% above 0.64), checked within 5 SEs of
    the sample variance (SE from the draws themselves: eta is not normal)."""
    cov = np.zeros((5, 5))  # [dormant_initial, k_dr, burden_sigma, log sd x2], diagonal Omega
    cov[4, 4] = 0.1
    write_population_fit_file(tmp_path / "pop.json", "mouse", TYP, RANDOM, SD,
                              covariance_theta=cov)
    spec = parse(tmp_path, spec_text(extra="uncertainty = true\n"))
    e = np.log(spec.samples["k_dr"]) - np.log(TYP["k_dr"])
    want = 0.8**2 * np.exp(2 * 0.1)
    se = np.std(e**2) / np.sqrt(N)
    assert abs(np.mean(e**2) - want) < 5 * se, (np.mean(e**2), want, se)
    assert want - 0.64 > 10 * se  # the test can tell Omega drawn from Omega fixed
    d = np.log(spec.samples["dormant_initial"]) - np.log(TYP["dormant_initial"])
    assert abs(d.var() / 0.16 - 1) < 5 * np.sqrt(2 / N)  # dormant_initial: no extra spread


def test_nuts_file_without_omega_uses_the_sds(tmp_path):
    """A NUTS file (no omega, no outer covariance): a diagonal Omega of the posterior-mean sds;
    uncertainty draws the typical values from covariance_scale with Omega fixed; a full
    covariance without its matrix is refused."""
    path = tmp_path / "pop.json"
    write_population_fit_file(path, "mouse", TYP, RANDOM, SD,
                              typical_covariance=np.diag([0.09, 0.0, 0.01]))
    doc = json.loads(path.read_text())
    pop = doc["population"]
    for k in ("omega", "theta", "theta_names", "covariance_theta"):
        del pop[k]
    pop["method"] = doc["method"] = "nuts"
    path.write_text(json.dumps(doc))
    spec = parse(tmp_path, spec_text(extra="uncertainty = true\n"))
    check_mean_cov(log_draws(spec), np.log([TYP[n] for n in RANDOM]),
                   np.diag(np.square(SD)) + np.diag([0.09, 0.0]), N)
    pop["covariance"] = "full"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="population.omega: missing: a full"):
        parse(tmp_path, spec_text(n=10))


def test_method_fit_refuses_a_population_fit(tmp_path):
    write_population_fit_file(tmp_path / "pop.json", "mouse", TYP, RANDOM, SD)
    with pytest.raises(InputError) as e:
        parse(tmp_path, spec_text(method="fit", n=10))
    assert e.value.field == "samples.method"
    assert 'is a population fit: use method = "population"' in e.value.problem


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc["population"])
    path.write_text(json.dumps(doc))


BAD = [
    (lambda p: p.__setitem__("omega", [[0.16, 0.5], [0.5, 0.64]]), "population.omega",
     "not positive semi-definite"),
    (lambda p: p.__setitem__("omega", [[0.16]]), "population.omega", "2 x 2"),
    (lambda p: p.__setitem__("omega", [[0.16, None], [None, 0.64]]), "population.omega",
     "non-finite"),
    (lambda p: p.__setitem__("random_effects", ["k_dr", "delta_max"]),
     "population.random_effects", "'delta_max' is not a typical value"),
    (lambda p: p.pop("typical"), "population.typical", "missing"),
    (lambda p: p["typical"]["k_dr"].__setitem__("internal_value", 5.0),
     "population.typical.k_dr.internal_value", "outside the bounds"),
    (lambda p: p.__setitem__("covariance", "banded"), "population.covariance", "banded"),
]


@pytest.mark.parametrize("edit,field,words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_corrupt_population_block_one_error(tmp_path, edit, field, words):
    path = tmp_path / "pop.json"
    write_population_fit_file(path, "mouse", TYP, RANDOM, SD, CORR)
    _edit(path, edit)
    with pytest.raises(InputError) as e:
        parse(tmp_path, spec_text(n=10))
    assert e.value.source == str(path) and e.value.field == field, str(e.value)
    assert words in e.value.problem and "\n" not in str(e.value)


def test_uncertainty_refuses_a_singular_outer_covariance(tmp_path):
    path = tmp_path / "pop.json"
    write_population_fit_file(path, "mouse", TYP, RANDOM, SD, CORR)
    _edit(path, lambda p: p["covariance_theta"][0].__setitem__(0, None))
    parse(tmp_path, spec_text(n=10))  # without uncertainty the covariance is not read
    with pytest.raises(InputError, match="population.covariance_theta: has missing or "
                       "non-finite entries"):
        parse(tmp_path, spec_text(n=10, extra="uncertainty = true\n"))


@pytest.mark.parametrize("extra,field,words", [
    ('uncertainty = "yes"\n', "samples.uncertainty", "true or false"),
    ('parameters = ["k_dr"]\n', "samples.parameters", "not used with"),
])
def test_bad_population_fields(tmp_path, extra, field, words):
    write_population_fit_file(tmp_path / "pop.json", "mouse", TYP, RANDOM, SD)
    with pytest.raises(InputError) as e:
        parse(tmp_path, spec_text(n=10, extra=extra))
    assert e.value.field == field and words in e.value.problem


def test_uncertainty_only_with_population(tmp_path):
    write_fit_file(tmp_path / "fit.json", "mouse", {"k_dr": 3e-4}, [[0.04]])
    with pytest.raises(InputError, match='samples.uncertainty: only with method = "population"'):
        parse(tmp_path, spec_text(fit="fit.json", method="fit", n=10,
                                  extra="uncertainty = true\n"))


def test_cli_population_method_with_a_pooled_fit_one_line(tmp_path, capsys):
    from cli_run import run

    write_fit_file(tmp_path / "fit.json", "mouse", {"k_dr": 3e-4}, [[0.04]])
    (tmp_path / "spec.toml").write_text(spec_text(fit="fit.json", n=4))
    code, out, err = run(["sweep", str(tmp_path / "spec.toml"), "--out",
                          str(tmp_path / "o.zarr")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "fit.json: population: missing: a pooled fit" in lines[0], err
    assert not (tmp_path / "o.zarr").exists()
