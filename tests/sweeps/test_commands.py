"""Commands and spec features that had no test running them: `plot-sweep` (figures checked
against the store's numbers), `sensitivity` (indices of a parameter without effect are zero),
and sampled sweeps (`[samples]` sobol, lhs, fit: stratification of the designs, coordinates, and
outputs ordered as the model requires). Tiny sizes only."""

import json
import tomllib

import matplotlib.image as mpimg
import numpy as np
import pytest

import dormancy_model.sweeps.run as R
from cli_run import run
from dormancy_model.sweeps.plots import sweep_figures
from dormancy_model.sweeps.run import open_sweep, sweep
from dormancy_model.sweeps.spec import parse_sweep
from sweep_specs import run_sweep_cli

GRID = """
[sweep]
model = "human"
schedule = "clever-combo"
[schedule]
cycles = [1, 2, 3]
hcq_dose = [0.5, 1.0]
[patients]
n = 2
variability = { k_dr = 0.5 }
[outputs]
residual_days = [28, 56]
relapse_free_days = [800]
assessment_days = [56]
[solver]
chunk = 4
"""


def _parse(text, src="spec.toml"):
    return parse_sweep(tomllib.loads(text), src, text)


def _known(shape, var, ndays):
    """Distinct known values per cell: 1000 c + 100 h + 10 p + day index (+ 0.5 per var)."""
    idx = np.indices(shape + (ndays,)).astype(np.float32)
    w = np.array([1000, 100, 10, 1], np.float32)
    return sum(w[i] * idx[i] for i in range(4)) + {"residual": 0, "relapse_free": 0.25,
                                                   "p_dtc_positive": 0.5}[var]


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """A complete store of GRID whose chunks hold known numbers (written chunk by chunk with
    the store's own writer, no solve)."""
    spec = _parse(GRID)
    out = tmp_path_factory.mktemp("plots") / "s.zarr"
    cshape = R.chunk_shape(spec.shape, spec.chunk)
    R._create_store(spec, out, cshape)
    ndays = {"residual": 2, "relapse_free": 1, "p_dtc_positive": 1}
    full = {v: _known(spec.shape, v, k) for v, k in ndays.items()}
    for sl in R.chunk_grid(spec.shape, cshape):
        data = {v: a[sl] for v, a in full.items()}
        data["status"] = np.zeros([s.stop - s.start for s in sl], np.int8)
        data["steps"] = np.ones([s.stop - s.start for s in sl], np.int32)
        R._write_chunk(out, sl, data)
    return out, full


def test_plot_sweep_writes_the_figures_of_the_store(synthetic_store, tmp_path, capsys):
    store, full = synthetic_store
    out = tmp_path / "plots"
    code, stdout, err = run(["plot-sweep", str(store), "--out", str(out)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    expect = sorted(f"{v}_day{d}_{kind}.png" for v, days in
                    (("relapse_free", [800]), ("residual", [28, 56]), ("p_dtc_positive", [56]))
                    for d in days for kind in ("cycles_x_hcq_dose", "cycles"))
    assert names == expect
    assert stdout.strip() == f"wrote {len(expect)} figures to {out}/"
    for n in names:
        img = mpimg.imread(out / n)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
        assert img[..., :3].std() > 0.05  # not blank


def test_plot_sweep_figures_show_the_means(synthetic_store):
    """The heatmap cells and the lines are the patient means of the stored numbers."""
    store, full = synthetic_store
    figs = sweep_figures(open_sweep(store))
    rf = full["relapse_free"][..., 0]  # (cycles, hcq_dose, patient)
    heat = figs["relapse_free_day800_cycles_x_hcq_dose.png"].axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(heat), rf.mean(axis=2), rtol=1e-6)
    line = figs["residual_day56_cycles.png"].axes[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), full["residual"][..., 1].mean(axis=(1, 2)),
                               rtol=1e-6)


SENS = """
[sweep]
model = "human"
schedule = "clever-hcq"
[samples]
method = "sobol"
n = 4
parameters = ["k_dr", "eve_hill"]
[outputs]
residual_days = [28]
relapse_free_days = [1825]
"""


@pytest.mark.slow  # fast-suite budget (make test from a fresh clone ~10 min on 2 cores)
def test_sensitivity_command(tmp_path, capsys):
    """HCQ alone gives no everolimus, so eve_hill changes nothing: its indices are exactly 0,
    while k_dr carries all of the relapse-free variance (S1 and ST > 0)."""
    (tmp_path / "s.toml").write_text(SENS)
    out = tmp_path / "sens"
    code, stdout, err = run(["sensitivity", str(tmp_path / "s.toml"), "--out", str(out)], capsys)
    assert code == 0, err
    res = json.loads((out / "sobol_indices.json").read_text())
    assert res["parameters"] == ["k_dr", "eve_hill"]
    assert res["n_base"] == 4 and res["runs"] == 4 * (2 + 2)
    assert set(res["outputs"]) == {"residual@28d", "relapse_free@1825d"}
    rfs = res["outputs"]["relapse_free@1825d"]
    assert rfs["ST"][1] == 0.0 and rfs["S1"][1] == 0.0
    assert rfs["ST"][0] > 0.5 and rfs["S1"][0] > 0
    for label in res["outputs"]:
        assert (out / f"sobol_{label}.png").stat().st_size > 1000
    assert "relapse_free@1825d: largest total index k_dr" in stdout
    assert f"wrote {out}/sobol_indices.json (16 model runs)" in stdout


SAMPLED = """
[sweep]
model = "human"
schedule = "clever-hcq"
[samples]
method = "{method}"
n = {n}
parameters = {params}
{extra}
[outputs]
relapse_free_days = [1825]
[solver]
chunk = 8
"""


@pytest.mark.parametrize("method", ["sobol", "lhs"])
def test_designs_are_stratified_on_each_scale(method):
    """n = 8 Sobol (a power of two) and LHS points: each of the 8 equal intervals of every
    parameter's scale (here log k_dr and log delta_max) holds exactly one sample."""
    spec = _parse(SAMPLED.format(method=method, n=8, params='["k_dr", "delta_max"]', extra=""))
    for nm in ("k_dr", "delta_max"):
        lo, hi = spec.params.spec[nm].bounds
        u = (np.log(spec.samples[nm]) - np.log(lo)) / (np.log(hi) - np.log(lo))
        assert sorted(np.floor(u * 8).astype(int)) == list(range(8)), nm
    assert spec.dims[-1].name == "sample" and spec.shape == (8,)
    other = _parse(SAMPLED.format(method=method, n=8, params='["k_dr", "delta_max"]',
                                  extra="seed = 5"))
    assert not np.array_equal(other.samples["k_dr"], spec.samples["k_dr"])


@pytest.mark.parametrize("method", ["lhs", "fit"])
def test_sampled_sweep_outputs_follow_k_dr(method, tmp_path):
    """A sweep over sampled k_dr alone: the store's sample coordinate is the draws in the
    file's unit, and the relapse-free probability falls strictly as k_dr rises (faster
    reactivation of dormant cells)."""
    extra = ""
    if method == "fit":
        from fit_files import write_fit_file

        write_fit_file(tmp_path / "fit.json", "human", {"k_dr": 2e-9}, [[0.5]])
        extra = 'fit = "fit.json"'
    text = SAMPLED.format(method=method, n=8, params='["k_dr"]', extra=extra)
    spec = _parse(text, str(tmp_path / "spec.toml"))
    ds = sweep(spec, tmp_path / "s.zarr")
    assert ds.attrs["complete"] == 1 and (ds["status"].values == 0).all()
    k = ds["sample_k_dr"].values
    assert ds["sample_k_dr"].attrs["units"] == "1/day"
    np.testing.assert_allclose(k, spec.samples["k_dr"] / spec.params.spec["k_dr"].factor)
    rfs = ds["relapse_free"].values[:, 0]
    order = np.argsort(k)
    assert len(set(k)) == 8
    assert (np.diff(rfs[order]) < 0).all(), (k[order], rfs[order])


def test_cli_sweep_of_virtual_animals(tmp_path, capsys):
    """`dormancy sweep` with `[samples] method = "population"`: 8 virtual humans drawn from a
    population fit (k_dr random, sd 1 on the log scale); the store's sample coordinate is the
    spec's draws in 1/day, every lane solves, and the relapse-free probability falls strictly
    as k_dr rises. The spec has the shape of `test_sampled_sweep_outputs_follow_k_dr`, so the
    compiled program is reused (this file runs on one worker)."""
    from population_fit_files import write_population_fit_file

    write_population_fit_file(tmp_path / "pop.json", "human", {"k_dr": 2e-9}, ("k_dr",), [1.0])
    text = SAMPLED.format(method="population", n=8, params="", extra='fit = "pop.json"').replace(
        "parameters = \n", "")
    ds = run_sweep_cli(tmp_path, text, capsys)
    spec = _parse(text, str(tmp_path / "spec.toml"))
    k = ds["sample_k_dr"].values
    np.testing.assert_array_equal(k, spec.samples["k_dr"] / spec.params.spec["k_dr"].factor)
    assert len(set(k)) == 8 and "samples.fit" in ds.attrs["input_files"]
    rfs = ds["relapse_free"].values[:, 0]
    assert (np.diff(rfs[np.argsort(k)]) < 0).all(), (k, rfs)
