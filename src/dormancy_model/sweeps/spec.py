"""Sweep specifications (TOML): what to vary, how many virtual patients, which outputs.

    [sweep]
    name = "dose-grid"
    model = "human"                       # parameter set name or file
    schedule = "clever-combo"             # base schedule (preset or TOML path)

    [schedule]                            # schedule factors (each one a dimension)
    presets = ["clever-hcq", "clever-combo"]  # dim "schedule" (replaces sweep.schedule)
    cycles = [3, 6, 12]                   # dim "cycles" (Schedule.with_cycles)
    hcq_dose = [0.25, 0.5, 1.0]           # dim "hcq_dose": factors on the HCQ amount
    eve_dose = [0.5, 1.0]                 # dim "eve_dose" (Schedule.scaled)

    [parameters.k_dr]                     # a grid over one parameter: dim "k_dr"
    grid = "log"                          # lin | log
    range = [1e-5, 1e-3]                  # in the parameter file's unit
    n = 5                                 # (or values = [...])

    [samples]                             # joint samples: dim "sample"
    method = "sobol"                      # sobol | lhs | fit | population | posterior
    n = 64
    parameters = ["k_dr", "delta_max"]    # within the parameter file's bounds, on its scale
    fit = "fit.json"                      # fit: draws from a pooled fit's uncertainty;
                                          # population: virtual animals of a population fit
    posterior = "clever_posterior.json"   # posterior: draws of a posterior calibration
    uncertainty = false                   # population only: also draw the typical values

    [patients]                            # virtual patients per cell: dim "patient"
    n = 100
    variability = { eve_cl = 0.35, k_dr = 0.5 }   # log-normal, CV (median = typical value;
                                          # params.variability)

    [outputs]
    residual_days = [84, 168]
    relapse_free_years = [3, 5]           # or relapse_free_days
    assessment_days = [84, 168, 336]      # P(DTC+) of one aspirate

    [solver]
    rtol = 1e-6
    atol = 1e-8
    dtype = "float32"
    method = "tsit5"                      # tsit5 | dopri5 | bs3 | rk4
    chunk = 4096                          # trajectories per chunk (Zarr chunk and task)

`method = "fit"` draws from the pooled fit JSON that `dormancy fit` writes (read by
`params.fitfile`; a relative path is relative to the spec): a multivariate normal on each
parameter's scale (log / logit / lin) with the fit's estimates as the mean and its
`covariance_scale` (checked finite, symmetric, positive semi-definite) as the covariance, over
the fitted model parameters (or the `parameters` listed; burden_sigma is marginalised out);
draws are clipped to the bounds. The fit must be one of the sweep's parameter set and species.
Every problem raises `InputError` naming the file and the field. A population fit (one with a
`population` block) is refused here: its estimates' covariance is only the uncertainty of the
typical values, without the between-animal variability, which is what a sweep over a fitted
population is after; the message points to `method = "population"`.

`method = "population"` draws n virtual animals from a population fit (`dormancy fit --method
laplace|nuts --random ...`, read by `params.popfit`): on each parameter's scale
phi_i = typical + eta_i, eta_i ~ N(0, Omega) over the fit's random effects (log scale: theta_i =
typical * exp(eta_i)), Omega full or diagonal as fitted, clipped to the bounds, seeded by
`seed`. Only the random-effect parameters vary along "sample"; every fitted model parameter is
set to its typical value in the sweep's base parameter set (`parameters` is not used).
`uncertainty = true` first draws, for each animal, the typical values and (Laplace files, from
the outer vector's `covariance_theta`) Omega from their estimation covariance (NUTS files: the
typical values from `covariance_scale`, Omega fixed), so every fitted model parameter varies.
The default is false: the sweep then shows the fitted population as estimated, the question
most sweeps ask (and the default of `dormancy vpc`); the estimation covariance of a small study
is often wide or singular (the spec is then refused with a message), and mixing it in would
blur the between-animal spread with the uncertainty about its centre.

`method = "posterior"` takes n of the draws of a posterior calibration file (`dormancy
calibrate --posterior`, `posterior = "PATH"`, relative to the spec; read by `params.postfile`),
without replacement (seeded by `seed`; n must not exceed the file's draws), so the sweep carries
the joint posterior (correlations included) of the virtual trial's population parameters. Each
posterior parameter acts on a model parameter (`postfile.POSTERIOR_PARAMETERS`): delta_max and
k_dr are the typical values, load_median is dormant_initial (the median patient's DTC load);
the spread parameters (cv_delta_max, cv_k_dr, load_sigma: the log-SD of dormant_initial) set,
per sample, the between-patient spread of their model parameter in `[patients]`, which must
then give that parameter a variability (any CV > 0: the sample's spread replaces it, the
patients' normals stay the same, factor_sp = f_p ** (omega_s / omega), omega =
sqrt(ln(1 + CV^2))). `parameters` (posterior names) selects a subset; by default every typical
value of the file and every spread whose model parameter varies in `[patients]`. A file made
with another parameter file (by name), a name the file does not have, or draws outside the
parameter set's bounds is refused with one line naming the file and the field.

`SweepSpec.inputs` lists every file the spec refers to (the parameter file, packaged or not,
schedule files, the fit JSON) with the SHA-256 of its content: with the spec text and the
package version it is the resume key of a sweep store (`sweeps.run`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dormancy_model.engine.rk import BACKENDS, METHODS, EngineOptions
from dormancy_model.errors import InputError, check_seed, suggest
from dormancy_model.io import read_toml
from dormancy_model.params.fitfile import check_fit_model, fit_covariance, read_fit
from dormancy_model.params.popfit import draw_animals, read_population, typical_parameters
from dormancy_model.params.postfile import POSTERIOR_PARAMETERS, read_posterior
from dormancy_model.params.table import Parameters, load_model_parameters
from dormancy_model.params.transforms import from_scale, lognormal_sigma, to_scale
from dormancy_model.params.variability import lognormal_factors
from dormancy_model.pk.presets import PRESETS, get_schedule
from dormancy_model.pk.schedule import DRUGS, MAX_CYCLES, Schedule
from dormancy_model.sweeps.lanes import OutputDays
from dormancy_model.units import DAYS_PER_YEAR

TABLES = {"sweep", "schedule", "parameters", "samples", "patients", "outputs", "solver"}
FIELDS = {
    "sweep": {"name", "description", "model", "schedule", "seed"},
    "schedule": {"presets", "cycles", "hcq_dose", "eve_dose"},
    "samples": {"method", "n", "parameters", "fit", "seed", "uncertainty", "posterior"},
    "patients": {"n", "variability", "seed"},
    "outputs": {"residual_days", "relapse_free_days", "relapse_free_years", "assessment_days"},
    "solver": {"rtol", "atol", "dtype", "method", "chunk", "buckets", "max_iters", "backend",
               "block", "event_step"},
}
GRID_FIELDS = {"grid", "range", "n", "values"}
METHODS_SAMPLES = ("sobol", "lhs", "fit", "population", "posterior")
MAX_SWEEP_SIZE = 10**9  # trajectories of one sweep (the product of its dimensions)
MAX_DOSE_FACTOR = 10.0  # schedule.hcq_dose / eve_dose: factors on the schedule's amounts
MAX_DIM = 10**6  # points of one dimension (grid n, samples.n, patients.n)


@dataclass(frozen=True)
class Dim:
    """One named dimension: its coordinate values and unit."""

    name: str
    values: np.ndarray
    unit: str
    kind: str  # schedule | cycles | dose | parameter | sample | patient
    description: str = ""
    coords: dict = field(default_factory=dict)  # extra (non-index) coordinates along this dim


@dataclass(frozen=True)
class SweepSpec:
    source: str
    text: str  # the spec file as written (stored in the Zarr attributes)
    name: str
    params: Parameters
    schedules: tuple  # flattened over the schedule dims (row-major)
    dims: tuple  # Dim, in order: schedule dims, parameter grids, sample, patient
    outputs: OutputDays
    options: EngineOptions
    chunk: int
    samples: dict  # name -> (n_samples,) internal values
    patient_factors: dict  # name -> (n_patients,) multiplicative factors
    grids: dict  # name -> (n,) internal values
    inputs: tuple = ()  # (field, path, sha256) of every file the spec refers to
    # name -> (n_samples,) exponent on the [patients] factors of that parameter (a posterior's
    # spread per sample: omega_sample / omega_patients)
    sample_spread: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.values.size for d in self.dims)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def t_end(self) -> float:
        o = self.outputs
        return float(max(o.residual_days + o.rfs_days + o.assessment_days))

    @property
    def varying(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.grids) | set(self.samples) | set(self.patient_factors)))

    def lanes(self, flat) -> tuple[dict, np.ndarray]:
        """Parameter values (internal units, name -> (n,)) and schedule index of the lanes with
        row-major flat indices `flat` over `dims`."""
        flat = np.asarray(flat, np.int64)
        idx = np.unravel_index(flat, self.shape)
        pos = {d.name: i for d, i in zip(self.dims, idx, strict=True)}
        sched_dims = [d for d in self.dims if d.kind in ("schedule", "cycles", "dose")]
        if sched_dims:
            sid = np.ravel_multi_index(tuple(pos[d.name] for d in sched_dims),
                                       tuple(d.values.size for d in sched_dims))
        else:
            sid = np.zeros(flat.size, np.int64)
        vals = {}
        for name in self.varying:
            v = np.full(flat.size, float(np.asarray(self.params[name])))
            if name in self.grids:
                v = self.grids[name][pos[name]]
            if name in self.samples:
                v = self.samples[name][pos["sample"]]
            if name in self.patient_factors:
                lo, hi = self.params.spec[name].bounds
                f = self.patient_factors[name][pos["patient"]]
                if name in self.sample_spread:
                    f = f ** self.sample_spread[name][pos["sample"]]
                v = np.clip(v * f, lo, hi)
            vals[name] = v
        return vals, sid.astype(np.int32)


def _fail(src, fld, msg):
    raise InputError(src, fld, msg)


def _numbers(src, fld, v, *, positive=False, integer=False, nonneg=False, nonempty=True):
    if not isinstance(v, list) or (nonempty and not v):
        _fail(src, fld, "must be a non-empty list of numbers")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            _fail(src, fld, f"must contain finite numbers, got {x!r}")
        if integer and int(x) != x:
            _fail(src, fld, f"must contain whole numbers, got {x!r}")
        if positive and x <= 0:
            _fail(src, fld, f"must be > 0, got {x!r}")
        if nonneg and x < 0:
            _fail(src, fld, f"must be >= 0, got {x!r}")
    if len(set(v)) != len(v):
        _fail(src, fld, "contains duplicates")
    return [float(x) for x in v]


def _int(src, fld, v, lo=1, hi=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        _fail(src, fld, (f"must be a whole number >= {lo}" if hi is None else
                         f"must be a whole number in [{lo}, {hi}]") + f", got {v!r}")
    return v


def _check_keys(src, table, d, allowed):
    if not isinstance(d, dict):
        _fail(src, table, "must be a table")
    for k in d:
        if k not in allowed:
            _fail(src, f"{table}.{k}", f"unknown field{suggest(k, allowed)}")


def _digest(src, fld, path) -> str:
    """SHA-256 of a referenced file's content."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        _fail(src, fld, f"{path}: cannot be read: {e.strerror}")


def _input(src, fld, path) -> tuple[str, str, str]:
    return fld, str(Path(path).resolve()), _digest(src, fld, path)


def _param_name(src, fld, name, params):
    if not isinstance(name, str):
        _fail(src, fld, f"must be a parameter name, got {name!r}")
    if name not in params.values:
        _fail(src, fld, f"unknown parameter {name!r}{suggest(name, params.values)}")
    return name


def _schedule_dims(src, doc, base_name, species=None):
    sch = doc.get("schedule", {})
    _check_keys(src, "schedule", sch, FIELDS["schedule"])
    presets = [base_name]
    dims = []
    if "presets" in sch:
        v = sch["presets"]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            _fail(src, "schedule.presets", "must be a non-empty list of schedule names")
        if len(set(v)) != len(v):
            _fail(src, "schedule.presets", "contains duplicates")
        presets = v
        dims.append(Dim("schedule", np.array(v, dtype=object), "", "schedule", "schedule preset"))
    try:
        if not isinstance(base_name, str):
            _fail(src, "sweep.schedule", f"must be a schedule name or path, got {base_name!r}")
        bases = [get_schedule(p, species=species) for p in presets]
    except InputError as e:
        _fail(src, "schedule.presets" if "presets" in sch else "sweep.schedule", e.problem)
    inputs = []
    for i, p in enumerate(presets):
        if p not in PRESETS:  # a schedule file
            inputs.append(_input(src, f"schedule.presets[{i}]" if "presets" in sch
                                 else "sweep.schedule", p))
    cycles = [None]
    if "cycles" in sch:
        cycles = [int(c) for c in _numbers(src, "schedule.cycles", sch["cycles"], positive=True,
                                           integer=True)]
        for c in cycles:
            if c > MAX_CYCLES:
                _fail(src, "schedule.cycles", f"must be in [1, {MAX_CYCLES}], got {c}")
        dims.append(Dim("cycles", np.array(cycles, np.int64), "1", "cycles", "treatment cycles"))
    doses = {}
    for drug in DRUGS:
        key = f"{drug}_dose"
        if key in sch:
            doses[drug] = _numbers(src, f"schedule.{key}", sch[key], nonneg=True)
            for f in doses[drug]:
                if f > MAX_DOSE_FACTOR:
                    _fail(src, f"schedule.{key}", f"must be in [0, {MAX_DOSE_FACTOR:g}] (a factor "
                          f"on the schedule's amount), got {f:g}")
            if not any(any(ln.drug == drug for ln in b.lines) for b in bases):
                _fail(src, f"schedule.{key}", f"no schedule in the sweep gives {drug.upper()}")
            amounts = sorted({ln.amount for b in bases for ln in b.lines if ln.drug == drug})
            coords = {}
            if len(amounts) == 1:
                unit = next(ln.unit for b in bases for ln in b.lines if ln.drug == drug)
                coords[f"{key}_amount"] = (np.array(doses[drug]) * amounts[0], unit)
            dims.append(Dim(key, np.array(doses[drug]), "1", "dose",
                            f"{drug.upper()} dose as a factor of the schedule's amount", coords))
    scheds = []
    for b in bases:
        for c in cycles:
            try:
                s = b if c is None else b.with_cycles(c)
            except InputError as e:
                _fail(src, "schedule.cycles", e.problem)
            for fh in doses.get("hcq", [None]):
                for fe in doses.get("eve", [None]):
                    x = s if fh is None else s.scaled("hcq", fh)
                    scheds.append(x if fe is None else x.scaled("eve", fe))
    return dims, tuple(scheds), inputs


def _grids(src, doc, params):
    grids, dims = {}, []
    table = doc.get("parameters", {})
    if not isinstance(table, dict):
        _fail(src, "parameters", "must be a table of [parameters.NAME] tables")
    for name, g in table.items():
        fld = f"parameters.{name}"
        _param_name(src, fld, name, params)
        _check_keys(src, fld, g, GRID_FIELDS)
        spec = params.spec[name]
        if "values" in g:
            if set(g) - {"values"}:
                _fail(src, fld, "give values, or grid + range + n, not both")
            vals = np.array(_numbers(src, f"{fld}.values", g["values"]))
        else:
            for k in ("grid", "range", "n"):
                if k not in g:
                    _fail(src, f"{fld}.{k}", "missing (or give values = [...])")
            if g["grid"] not in ("lin", "log"):
                _fail(src, f"{fld}.grid", f"must be lin or log, got {g['grid']!r}")
            r = _numbers(src, f"{fld}.range", g["range"])
            if len(r) != 2 or not r[0] < r[1]:
                _fail(src, f"{fld}.range", "must be [low, high] with low < high")
            n = _int(src, f"{fld}.n", g["n"], 2, MAX_DIM)
            if g["grid"] == "log":
                if r[0] <= 0:
                    _fail(src, f"{fld}.range", "a log grid needs a positive low end")
                vals = np.geomspace(r[0], r[1], n)
            else:
                vals = np.linspace(r[0], r[1], n)
        internal = vals * spec.factor
        lo, hi = spec.bounds
        bad = (internal < lo * (1 - 1e-12)) | (internal > hi * (1 + 1e-12))
        if bad.any():
            _fail(src, fld, f"{vals[bad][0]:g} {spec.unit} is outside the parameter bounds "
                  f"[{spec.in_file_unit(lo):g}, {spec.in_file_unit(hi):g}] {spec.unit}")
        grids[name] = internal
        dims.append(Dim(name, vals, spec.unit, "parameter", f"parameter {name} ({spec.unit})"))
    return grids, dims


def _fit_doc(src, s, params, inputs):
    """The fit JSON of `samples.fit` (relative to the spec), read and checked against the
    sweep's parameter set; recorded in `inputs`."""
    f = s.get("fit")
    if not isinstance(f, str) or not f:
        _fail(src, "samples.fit", "missing: the path of the fit JSON to draw from")
    path = f if Path(f).is_absolute() else str(Path(src).parent / f)
    doc = read_fit(path)
    check_fit_model(doc, params, path, "sweep.model")
    inputs.append(_input(src, "samples.fit", path))
    return doc, path


def _samples(src, doc, params, seed, inputs):
    """(name -> (n,) internal values, [the sample Dim], the base parameter set: `params`, or
    with method = "population" the fit's typical values, model parameter -> (n,) log-SD per
    sample of a posterior's spread)."""
    if "samples" not in doc:
        return {}, [], params, {}
    s = doc["samples"]
    _check_keys(src, "samples", s, FIELDS["samples"])
    method = s.get("method", "sobol")
    if method not in METHODS_SAMPLES:
        _fail(src, "samples.method", f"must be sobol, lhs, fit, population or posterior, got "
              f"{method!r}")
    n = _int(src, "samples.n", s.get("n"), 1, MAX_DIM)
    seed = check_seed(src, "samples.seed", s.get("seed", seed))
    if "uncertainty" in s and method != "population":
        _fail(src, "samples.uncertainty", 'only with method = "population"')
    if "posterior" in s and method != "posterior":
        _fail(src, "samples.posterior", 'only with method = "posterior"')
    rng = np.random.default_rng(seed)
    out = {}
    if method == "posterior":
        out, spread = _posterior_samples(src, s, doc, params, n, rng, inputs)
        coords = {f"sample_{nm}": (v / params.spec[nm].factor, params.spec[nm].unit)
                  for nm, v in out.items()}
        coords.update({f"sample_{pn}": (x, "1") for pn, (_, _, x) in spread.items()})
        dim = Dim("sample", np.arange(n), "1", "sample", "posterior draws", coords)
        return out, [dim], params, {t: om for t, om, _ in spread.values()}
    if method == "population":
        unc = s.get("uncertainty", False)
        if not isinstance(unc, bool):
            _fail(src, "samples.uncertainty", f"must be true or false, got {unc!r}")
        if "parameters" in s:
            _fail(src, "samples.parameters", 'not used with method = "population" (every '
                  "random effect of the fit is drawn)")
        fdoc, path = _fit_doc(src, s, params, inputs)
        pf = read_population(fdoc, params, path)
        if pf is None:
            _fail(path, "population", 'missing: a pooled fit has no between-animal '
                  'variability to draw from; use method = "fit" (its estimates\' uncertainty) '
                  "or a population fit (dormancy fit --method laplace --random ...)")
        params = typical_parameters(pf, params)
        params.check_bounds(path)
        out = draw_animals(pf, params, n, rng, uncertainty=unc)
    elif method == "fit":
        fdoc, path = _fit_doc(src, s, params, inputs)
        if "population" in fdoc:
            _fail(src, "samples.method", f'"fit" draws a pooled fit\'s estimates; {path} is a '
                  'population fit: use method = "population" (virtual animals from its typical '
                  "values and Omega; uncertainty = true adds the typical values' uncertainty)")
        names, scales, mean, cov = fit_covariance(fdoc, params, path)
        if "parameters" in s:
            want = s["parameters"]
            if (not isinstance(want, list) or not want
                    or not all(isinstance(x, str) for x in want)):
                _fail(src, "samples.parameters", "must be a non-empty list of parameter names")
            for nm in want:
                if nm not in names:
                    _fail(src, "samples.parameters",
                          f"{nm!r} is not a fitted parameter of {path}{suggest(nm, names)}")
            if len(set(want)) != len(want):
                _fail(src, "samples.parameters", "contains duplicates")
            keep = [names.index(nm) for nm in want]
            names, scales = tuple(want), tuple(scales[j] for j in keep)
            mean, cov = mean[keep], cov[np.ix_(keep, keep)]
        z = rng.multivariate_normal(mean, cov, size=n, method="eigh")
        for j, nm in enumerate(names):
            lo, hi = params.spec[nm].bounds
            out[nm] = np.clip(from_scale(z[:, j], scales[j]), lo, hi)
    else:
        names = s.get("parameters")
        if not isinstance(names, list) or not names:
            _fail(src, "samples.parameters", "must be a non-empty list of parameter names")
        for nm in names:
            _param_name(src, "samples.parameters", nm, params)
        if len(set(names)) != len(names):
            _fail(src, "samples.parameters", "contains duplicates")
        from scipy.stats import qmc

        eng = (qmc.Sobol(len(names), scramble=True, seed=rng) if method == "sobol"
               else qmc.LatinHypercube(len(names), seed=rng))
        u = eng.random(n)
        for j, nm in enumerate(names):
            sp = params.spec[nm]
            lo, hi = sp.bounds
            if sp.scale != "lin" and lo <= 0:
                _fail(src, "samples.parameters", f"{nm}: {sp.scale} scale needs positive bounds")
            zlo, zhi = to_scale(lo, sp.scale), to_scale(hi, sp.scale)
            out[nm] = np.clip(from_scale(zlo + (zhi - zlo) * u[:, j], sp.scale), lo, hi)
    coords = {f"sample_{nm}": (v / params.spec[nm].factor, params.spec[nm].unit)
              for nm, v in out.items()}
    desc = "virtual animals" if method == "population" else f"{method} samples"
    return out, [Dim("sample", np.arange(n), "1", "sample", desc, coords)], params, {}


def _posterior_samples(src, s, doc, params, n, rng, inputs):
    """n draws (without replacement) of the posterior file `samples.posterior`: (model
    parameter -> (n,) internal values of the typical values, posterior name -> (model parameter,
    (n,) log-SD per sample, (n,) the file's values) of the spreads)."""
    if "parameters" in s:
        want = s["parameters"]
        if not isinstance(want, list) or not want or not all(isinstance(x, str) for x in want):
            _fail(src, "samples.parameters", "must be a non-empty list of posterior parameter "
                  "names")
        if len(set(want)) != len(want):
            _fail(src, "samples.parameters", "contains duplicates")
    f = s.get("posterior")
    if not isinstance(f, str) or not f:
        _fail(src, "samples.posterior", "missing: the path of the posterior calibration JSON "
              "(dormancy calibrate --posterior) to draw from")
    path = f if Path(f).is_absolute() else str(Path(src).parent / f)
    pf = read_posterior(path, params)
    inputs.append(_input(src, "samples.posterior", path))
    if n > pf.n:
        _fail(src, "samples.n", f"{n} is more than the {pf.n} draws of {path}")
    varied = doc.get("patients", {}).get("variability", {}) if isinstance(
        doc.get("patients"), dict) else {}
    varied = varied if isinstance(varied, dict) else {}
    if "parameters" in s:
        for nm in s["parameters"]:
            if nm not in pf.names:
                _fail(src, "samples.parameters", f"{nm!r} is not a parameter of the posterior "
                      f"{path} (it has {', '.join(pf.names)}){suggest(nm, pf.names)}")
        names = list(s["parameters"])
    else:
        names = [nm for nm in pf.names if POSTERIOR_PARAMETERS[nm][0] == "typical"
                 or POSTERIOR_PARAMETERS[nm][1] in varied]
        if not names:
            _fail(src, "samples.posterior", f"{path} has no typical value to sample and no "
                  "spread of a parameter that varies in [patients]")
    idx = rng.choice(pf.n, size=n, replace=False)
    out, spread = {}, {}
    for nm in names:
        kind, target = POSTERIOR_PARAMETERS[nm]
        if target not in params.spec:
            _fail(src, "samples.parameters", f"{nm!r}: its model parameter {target!r} is not "
                  f"in the parameter set {params.name}")
        x = pf.draws[nm][idx]
        if kind == "typical":
            if target in out:
                _fail(src, "samples.parameters", f"{target} given twice")
            out[target] = x.astype(float)
        else:
            if target not in varied:
                _fail(src, "samples.parameters", f"{nm!r} is the between-patient spread of "
                      f"{target}: give [patients] variability.{target} (any CV > 0; the "
                      "sample's spread replaces it)")
            om = x if nm == "load_sigma" else np.sqrt(np.log1p(x ** 2))
            spread[nm] = (target, om.astype(float), x.astype(float))
    return out, spread


def _patients(src, doc, params, seed):
    pt = doc.get("patients", {})
    _check_keys(src, "patients", pt, FIELDS["patients"])
    if not pt:
        return {}, []
    n = _int(src, "patients.n", pt.get("n", 1), 1, MAX_DIM)
    var = pt.get("variability", {})
    _check_keys(src, "patients.variability", var, set(params.values))
    for nm, cv in sorted(var.items()):
        if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 <= cv <= 10:
            _fail(src, f"patients.variability.{nm}", f"must be a CV in [0, 10], got {cv!r}")
    if "seed" in pt:
        seed = check_seed(src, "patients.seed", pt["seed"])
    rng = np.random.default_rng(seed)
    out = lognormal_factors(rng, var, n, by="patient")
    return out, [Dim("patient", np.arange(n), "1", "patient", "virtual patient")]


def _outputs(src, doc):
    o = doc.get("outputs")
    if o is None:
        _fail(src, "outputs", "missing: give residual_days, relapse_free_years/days or "
              "assessment_days")
    _check_keys(src, "outputs", o, FIELDS["outputs"])
    if "relapse_free_days" in o and "relapse_free_years" in o:
        _fail(src, "outputs.relapse_free_years", "give relapse_free_days or _years, not both")
    res = tuple(_numbers(src, "outputs.residual_days", o.get("residual_days", []), nonneg=True,
                         nonempty=False))
    if "relapse_free_years" in o:
        rfs = tuple(x * DAYS_PER_YEAR for x in _numbers(
            src, "outputs.relapse_free_years", o["relapse_free_years"], positive=True))
    else:
        rfs = tuple(_numbers(src, "outputs.relapse_free_days", o.get("relapse_free_days", []),
                             positive=True, nonempty=False))
    ass = tuple(_numbers(src, "outputs.assessment_days", o.get("assessment_days", []),
                         nonneg=True, nonempty=False))
    if not (res or rfs or ass):
        _fail(src, "outputs", "no output requested")
    return OutputDays(res, rfs, ass)


def _solver(src, doc):
    s = doc.get("solver", {})
    _check_keys(src, "solver", s, FIELDS["solver"])
    rtol, atol = s.get("rtol", 1e-6), s.get("atol", 1e-8)
    for k, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            _fail(src, f"solver.{k}", f"must be a number in (0, 1), got {v!r}")
    dtype = s.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        _fail(src, "solver.dtype", f"must be float32 or float64, got {dtype!r}")
    method = s.get("method", "tsit5")
    if method not in METHODS:
        _fail(src, "solver.method", f"unknown method {method!r}{suggest(str(method), METHODS)}")
    chunk = _int(src, "solver.chunk", s.get("chunk", 4096))
    buckets = _int(src, "solver.buckets", s.get("buckets", 1))
    max_iters = _int(src, "solver.max_iters", s.get("max_iters", 200_000))
    backend = s.get("backend", "auto")
    if backend not in BACKENDS:
        _fail(src, "solver.backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    block = _int(src, "solver.block", s.get("block", 128))
    if block & (block - 1):
        _fail(src, "solver.block", f"must be a power of two, got {block}")
    event_step = s.get("event_step", EngineOptions.event_step)
    if isinstance(event_step, bool) or not isinstance(event_step, (int, float)) or not (
            0 < event_step < float("inf")):
        _fail(src, "solver.event_step", f"must be a positive number, got {event_step!r}")
    opts = EngineOptions(method=method, rtol=float(rtol), atol=float(atol), dtype=dtype,
                         buckets=buckets, max_iters=max_iters, backend=backend, block=block,
                         event_step=float(event_step))
    return opts, chunk


def parse_sweep(doc: dict, src: str, text: str = "") -> SweepSpec:
    for k in doc:
        if k not in TABLES:
            _fail(src, k, f"unknown table{suggest(k, TABLES)}")
    sw = doc.get("sweep", {})
    _check_keys(src, "sweep", sw, FIELDS["sweep"])
    seed = check_seed(src, "sweep.seed", sw.get("seed", 0))
    model = sw.get("model", "human")
    if not isinstance(model, str) or not model:
        _fail(src, "sweep.model", f"must be a parameter set name or file, got {model!r}")
    try:
        params = load_model_parameters(model)
    except InputError as e:
        _fail(src, "sweep.model", f"{model}: {e.field}: {e.problem}")
    inputs = [_input(src, "sweep.model", params.source)]  # packaged sets too, by content
    sched_dims, scheds, sched_inputs = _schedule_dims(src, doc, sw.get("schedule", "clever-combo"),
                                                      params.species)
    inputs += sched_inputs
    grids, grid_dims = _grids(src, doc, params)
    samples, sample_dims, params, spread = _samples(src, doc, params, seed, inputs)
    both = set(grids) & set(samples)
    if both:
        _fail(src, f"parameters.{sorted(both)[0]}", "is both a grid and a sampled parameter")
    patients, patient_dims = _patients(src, doc, params, seed + 1)
    sample_spread = {}
    for target, om in spread.items():
        cv = doc["patients"]["variability"][target]
        if not cv > 0:
            _fail(src, f"patients.variability.{target}", "must be > 0 where a posterior spread "
                  "scales it (the sample's spread replaces it)")
        sample_spread[target] = om / lognormal_sigma(cv)
    outputs = _outputs(src, doc)
    opts, chunk = _solver(src, doc)
    dims = tuple(sched_dims + grid_dims + sample_dims + patient_dims)
    if not dims:
        dims = (Dim("case", np.arange(1), "1", "case", "single case"),)
    size = math.prod(d.values.size for d in dims)
    if size > MAX_SWEEP_SIZE:
        sizes = " x ".join(str(d.values.size) for d in dims)
        _fail(src, "sweep", f"{size:,} trajectories ({sizes}) is more than {MAX_SWEEP_SIZE:,}")
    last = max(outputs.residual_days + outputs.rfs_days + outputs.assessment_days)
    if last > 100 * DAYS_PER_YEAR:
        _fail(src, "outputs", f"horizon {last:g} days is beyond 100 years")
    return SweepSpec(src, text, str(sw.get("name", Path(src).stem)), params, scheds, dims,
                     outputs, opts, chunk, samples, patients, grids, tuple(inputs),
                     sample_spread)


def load_sweep_spec(path: str | Path) -> SweepSpec:
    path = str(path)
    doc, text = read_toml(path)
    return parse_sweep(doc, path, text)


def describe(spec: SweepSpec) -> str:
    dims = " x ".join(f"{d.name} {d.values.size}" for d in spec.dims)
    return f"{spec.name}: {dims} = {spec.size:,} trajectories"


def schedule_of(spec: SweepSpec, sid: int) -> Schedule:
    return spec.schedules[sid]
