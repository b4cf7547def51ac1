"""The mouse study as a population problem: one animal likelihood per mouse.

    problem = study_problem(study, params, free=("dormant_initial", "k_dr", "delta_max",
                            "burden_sigma"), random=("dormant_initial", "k_dr"))

An animal is a `mouse_id` of the study: a burden mouse (its residual counts, usually one at
sacrifice), a survival mouse (its relapse or censoring day), or both when the same id is in
both files (the study's sacrifice design keeps them separate animals; both are supported). Its
likelihood is the pooled fit's, per unit (`likelihood.burden_loglik_unit`,
`likelihood.relapse_loglik_unit`): the ODE of its arm's schedule solved with its own parameters
``phi_i = theta + E eta_i`` (transform scale, so a random effect on a log-scale parameter is
log-normal between animals) by the fit's fixed-step solver (`integrate.FixedSteps`, smooth in
the parameters, cheap under the forward-over-reverse Hessians of the inner problems) from day 0
to the last day of the study, read at the animal's own days only. With every eta = 0 the sum
over animals is the pooled fit's log-likelihood (the same solve per arm; tested).

The drug signals that drive the rates (the PK and the Hill functions of the mTOR gate and the
deficit effect, most of the vector field's cost) depend on the typical values only when no
random effect is on a parameter they read (`signal_parameters`), and are then computed once
per arm at the stage times of the step grid (`StudyAnimalLikelihood.shared`) and read by every
animal of the arm (`integrate.FixedSteps.dense_tabulated`): the same numbers to rounding,
~3x cheaper per animal (benchmarks/RESULTS.md).

Covariate effects on the typical values (`covariates=("k_dr~body_weight_g", "delta_max~arm")`,
`covariates.study_covariates`): power models of the numeric columns of the study's animals.csv
and categorical models of its text columns and of the animal's arm (dose group); a covariate on
a parameter the drug signals read makes every animal's signals its own, as a random effect does.

Bad input (`errors.InputError`, one line): a random effect on an unknown parameter, on a
parameter that is not free (fixed), on the noise sd, named twice; an animal id in two arms;
the covariate errors of `covariates`.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model.errors import InputError, suggest
from dormancy_model.fitting.likelihood import (
    arm_prediction,
    burden_loglik_unit,
    pk_log_median,
    pk_loglik_unit,
    relapse_loglik_unit,
)
from dormancy_model.fitting.objective import NUISANCE, PK_SIGMAS, free_parameters
from dormancy_model.fitting.population.covariates import check_covariates, study_covariates
from dormancy_model.fitting.population.problem import (
    AbstractAnimalLikelihood,
    PopulationProblem,
)
from dormancy_model.fitting.study import Study, StudyArrays, stacked_dosing, unit_arrays
from dormancy_model.model.clock import course_clock
from dormancy_model.model.integrate import FixedSteps
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.params.transforms import SCALE_CODE, from_scale_codes_jnp, to_scale


class StudyAnimalLikelihood(AbstractAnimalLikelihood):
    """Burden + relapse log-likelihood of one mouse; `phi` holds the free parameters (`names`)
    on their scales (`codes`), `burden_sigma` among them or fixed at `sigma_fixed`."""

    base: Parameters
    codes: jax.Array
    sigma_fixed: jax.Array
    t_end: jax.Array
    names: tuple = eqx.field(static=True)
    model_names: tuple = eqx.field(static=True)
    options: FixedSteps = eqx.field(static=True)
    model: DormancyModel = eqx.field(static=True)
    # the arms' schedules (leading arm axis) and each animal's arm: `shared` tabulates the drug
    # signals once per arm; None (or `tabulate` False) solves every animal from its own course
    arm_dosing: object = None
    arm_of: jax.Array | None = None
    tabulate: bool = eqx.field(static=True, default=False)
    # sd of log HCQ and EVE concentrations when not free (a study with pk.csv)
    pk_sigma_fixed: jax.Array | None = None

    def pk(self, phi, animal: StudyArrays):
        """PK log-likelihood of one animal (0.0 without PK rows): its concentrations under
        its own parameters (random effects on hcq_cl, eve_cl, ... act here)."""
        if animal.pk_mask is None:
            return jnp.zeros(())
        p, _ = self.params(phi)
        x = from_scale_codes_jnp(phi, self.codes)
        vals = dict(zip(self.names, list(x), strict=True))
        sd = [vals.get(n, self.pk_sigma_fixed[i]) for i, n in enumerate(PK_SIGMAS)]
        return pk_loglik_unit(pk_log_median(self.model, p, animal.dosing, animal), animal, *sd)

    def params(self, phi):
        """(model `Parameters`, burden sd) at phi (d,)."""
        x = from_scale_codes_jnp(phi, self.codes)
        vals = dict(zip(self.names, list(x), strict=True))
        p = self.base.replace(**{n: vals[n] for n in self.model_names})
        return p, vals.get("burden_sigma", self.sigma_fixed)

    def shared(self, phi_typical):
        """What every animal of an arm shares at the typical values phi_typical (d,): the step
        grid and the drug signals at its stage times (`rates.DrugSignals`), and the lesions'
        growth clock (`model.clock`: it reads a subset of what the signals read), per animal
        (leading animal axis, gathered from one computation per arm); None when the random
        effects reach the signals (a random effect on a PK or drug-effect parameter: then
        each animal's are its own) or `tabulate` is off. Exact: the signals depend on the
        typical values only."""
        if not self.tabulate:
            return None
        p, _ = self.params(phi_typical)

        def arm(dosing):
            course = self.model.drug_course(p, dosing)
            ts, stages = self.options.stage_times(course, dosing, jnp.zeros_like(self.t_end),
                                                  self.t_end)
            sig = self.model.drug_signals_at(stages.ravel(), p, course)
            clock = course_clock(course, p, jnp.zeros_like(self.t_end), self.t_end)
            return ts, jax.tree.map(lambda v: v.reshape(stages.shape), sig), clock

        return jax.tree.map(lambda v: v[self.arm_of], jax.vmap(arm)(self.arm_dosing))

    def parts(self, phi, animal: StudyArrays, shared=None):
        """(burden log-likelihood, relapse log-likelihood, solver status) of one animal;
        `shared`: this animal's row of `shared(...)` (or None)."""
        p, sigma = self.params(phi)
        pred = arm_prediction(self.model, p, animal.dosing, animal.grid, self.options,
                              t1=self.t_end, signals=None if shared is None else shared[:2],
                              clock=None if shared is None else shared[2])
        return (burden_loglik_unit(pred, animal, sigma), relapse_loglik_unit(pred, animal),
                pred.status)

    def __call__(self, phi, animal, shared=None):
        lb, lr, status = self.parts(phi, animal, shared)
        if animal.pk_mask is None:
            return lb + lr, status
        return lb + lr + self.pk(phi, animal), status


class _Recording(dict):
    """A dict that remembers the keys read from it."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def signal_parameters(model: DormancyModel, params: Parameters, dosing,
                      course_only: bool = False) -> set:
    """Names of the parameters that the drug signals of one arm read (the PK, the body
    weight and the drug-effect parameters; `course_only`: the PK and the body weight, which
    also place the dose times in the step grid): random effects on any of them make every
    animal's signals its own."""
    rec = _Recording(params.values)
    p = eqx.tree_at(lambda q: q.values, params, rec)
    course = model.drug_course(p, dosing)
    if not course_only:
        model.drug_signals_at(jnp.zeros(1), p, course)
    return set(rec.read)


def check_random(random, free, params: Parameters, source: str = "--random") -> tuple:
    """The random-effect names, validated against the free parameters (InputError)."""
    random = tuple(random)
    if not random:
        raise InputError(source, "random", "no random effect given")
    if len(set(random)) != len(random):
        raise InputError(source, "random", "a random effect is named twice")
    for r in random:
        if r in NUISANCE:
            raise InputError(source, "random", f"{r} is the noise sd of the counts, not an "
                             "animal parameter; it cannot carry a random effect")
        if r not in params.spec:
            raise InputError(source, "random", f"unknown parameter {r!r}"
                             f"{suggest(r, list(free) + list(params.spec))}")
        if r not in free:
            raise InputError(source, "random", f"{r} is fixed (not among --free "
                             f"{','.join(free)}); a random effect needs a free typical value")
    return random


def animal_table(study: Study):
    """(ids, arm index per animal, burden row -> animal, survival row -> animal); an id in two
    arms raises InputError."""
    ids, arm = [], []
    index = {}
    sources = (("burden", study.burden), ("survival", study.survival))
    for src, rows in sources + ((("pk", study.pk),) if study.pk is not None else ()):
        for mid, a in zip(rows.mouse_id, rows.arm, strict=True):
            mid = str(mid)
            if mid in index:
                k = index[mid]
                if arm[k] != int(a):
                    raise InputError(f"{study.path}/{src}.csv", "mouse_id",
                                     f"mouse {mid!r} is in arm {study.arm_names[int(a)]!r} "
                                     f"and in arm {study.arm_names[arm[k]]!r}: one arm per "
                                     "animal")
                continue
            index[mid] = len(ids)
            ids.append(mid)
            arm.append(int(a))
    b_of = np.array([index[str(m)] for m in study.burden.mouse_id], int)
    s_of = np.array([index[str(m)] for m in study.survival.mouse_id], int)
    return tuple(ids), np.array(arm, int), b_of, s_of


def pk_owner(study: Study, ids):
    """The animal (index into `ids`) of each PK row; None without pk.csv."""
    if study.pk is None:
        return None
    index = {m: i for i, m in enumerate(ids)}
    return np.array([index[str(m)] for m in study.pk.mouse_id], int)


def animal_arrays(study: Study, dtype=jnp.float64):
    """(ids, per-animal `StudyArrays` with a leading animal axis on every leaf, last study day).

    Each animal's `grid` is 0, its own days (sorted) and padding with its last day; `*_idx`
    index into it; `dosing` is its arm's schedule; `body_weight_kg` its weight from the
    study's covariate table (`animals.csv`), else the study's."""
    ids, arm, b_of, s_of = animal_table(study)
    n = len(ids)
    b, s = study.burden, study.survival
    days = [np.unique(np.concatenate([[0.0], b.day[b_of == i], s.day[s_of == i]]))
            for i in range(n)]
    G = max(d.size for d in days)
    grid = np.stack([np.concatenate([d, np.full(G - d.size, d[-1])]) for d in days])
    bidx = np.array([np.searchsorted(days[i], t) for i, t in zip(b_of, b.day, strict=True)], int)
    sidx = np.array([np.searchsorted(days[i], t) for i, t in zip(s_of, s.day, strict=True)], int)
    arm_dosing = stacked_dosing([a.schedule for a in study.arms], dtype)
    dosing = jax.tree.map(lambda x: x[jnp.asarray(arm)], arm_dosing)
    arrays = unit_arrays(study, b_of, s_of, n, bidx, sidx, dosing, grid, dtype,
                         body_weight_kg=study.animal_body_weight_kg(ids),
                         pk_owner=pk_owner(study, ids))
    t_end = float(max(np.max(b.day, initial=0.0), np.max(s.day, initial=0.0)))
    return ids, arrays, t_end


def study_problem(study: Study, params: Parameters, free, random, *, covariance="diagonal",
                  sigma: float = 0.5, solver: FixedSteps | None = None,
                  model: DormancyModel | None = None,
                  sd_bounds=(0.01, 3.0), tabulate: bool = True,
                  covariates=()) -> PopulationProblem:
    """The population problem of a mouse study: typical values of `free` (model parameters
    and/or `burden_sigma`, bounds and scales from the parameter table), random effects on
    `random` (a subset of the free model parameters), `covariance` "diagonal" or "full";
    `sigma`: the noise sd when `burden_sigma` is not free; `solver`: the fixed-step solver
    (default the pooled fit's step grid, `estimate.fit_solver_options()`, with its stages in
    bounded (scan) loops so that the third derivatives of the Laplace gradient can be taken);
    `tabulate`: share each arm's drug signals between its animals (`StudyAnimalLikelihood.
    shared`; used only when no random effect reaches them; False: every animal computes its
    own, the reference of the tests); `covariates`: covariate effects on typical values
    (specifications as strings, `covariates.SYNTAX`, or `covariates.CovariateSpec`s)."""
    from dormancy_model.fitting.estimate import fit_solver_options

    fp = free_parameters(params, tuple(free))
    names = tuple(f.name for f in fp)
    random = check_random(random, names, params)
    specs = check_covariates(covariates, names, params)
    ids, arrays, t_end = animal_arrays(study)
    base = params.replace(body_weight=study.body_weight_kg)
    codes = np.array([SCALE_CODE[f.scale] for f in fp])
    _, arm, _, _ = animal_table(study)
    cov = study_covariates(study, ids, arm, specs, names, tuple(f.scale for f in fp))
    shifted = set(random) | {s.parameter for s in specs}
    model = model or DormancyModel()
    arm_dosing = stacked_dosing([a.schedule for a in study.arms], jnp.float64)
    options = solver or dataclasses.replace(fit_solver_options(), scan_kind="bounded")
    reads = signal_parameters(model, base, jax.tree.map(lambda v: v[0], arm_dosing))
    pk = signal_parameters(model, base, jax.tree.map(lambda v: v[0], arm_dosing), True)
    if isinstance(options, FixedSteps) and not options.drop_repeats and not pk & set(names):
        # the step grids depend on the dosing and the (fixed) PK only: drop their repeats
        options = dataclasses.replace(options, drop_repeats=min(
            options.repeats(model.drug_course(base, d), d, 0.0, t_end)
            for d in (jax.tree.map(lambda v, i=i: v[i], arm_dosing)
                      for i in range(len(study.arms)))))
    lik = StudyAnimalLikelihood(
        base=base, codes=jnp.asarray(codes), sigma_fixed=jnp.asarray(float(sigma)),
        t_end=jnp.asarray(t_end), names=names,
        model_names=tuple(f.name for f in fp if not f.nuisance), options=options,
        model=model, arm_dosing=arm_dosing, arm_of=jnp.asarray(arm),
        tabulate=tabulate and isinstance(options, FixedSteps) and not reads & shifted,
        pk_sigma_fixed=jnp.asarray([NUISANCE[n]["value"] for n in PK_SIGMAS]))
    lo = np.array([to_scale(f.lower, f.scale) for f in fp])
    hi = np.array([to_scale(f.upper, f.scale) for f in fp])
    n_obs = int(np.asarray(arrays.burden_mask).sum() + np.asarray(arrays.surv_mask).sum()
                + (0 if arrays.pk_mask is None else np.asarray(arrays.pk_mask).sum()))
    # the problem orders random effects as the typical values
    random = tuple(n for n in names if n in random)
    return PopulationProblem(likelihood=lik, animals=arrays, lower=jnp.asarray(lo),
                             upper=jnp.asarray(hi), names=names,
                             scales=tuple(f.scale for f in fp), random=random,
                             covariance=covariance, sd_bounds=tuple(sd_bounds), n_obs=n_obs,
                             animal_ids=ids, covariates=cov)


@eqx.filter_jit
def animal_parts(problem: PopulationProblem, theta, eta):
    """Per-animal (burden log-likelihood, relapse log-likelihood, status) at the outer vector
    `theta` and random effects `eta` (n_animals, q)."""
    shared = problem.shared(theta)

    def one(e, a, s, x):
        return problem.likelihood.parts(problem.phi(theta, e, x), a, s)
    return jax.vmap(one)(eta, problem.animals, shared, problem.design)
