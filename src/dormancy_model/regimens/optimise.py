"""`design`: the regimen that best achieves the objective within the constraints.

Method (for each combination of the drugs' frequency choices and each cycle length):

1. **Continuous search** on `search_patients` virtual patients (the first of the population;
   a sample-average approximation with common random numbers): the design variables scaled to
   the unit box, an augmented Lagrangian (Powell-Hestenes-Rockafellar) for the inequality
   constraints g_j(x) <= 0,

       L(z; lam, rho) = -J(x(z)) + sum_j (max(0, lam_j + rho g_j)^2 - lam_j^2) / (2 rho),

   minimised in z over the box by scipy's L-BFGS-B with the exact gradient (forward mode
   through the ODE solve); after each inner solve lam_j <- max(0, lam_j + rho g_j), and rho
   grows 10x when the worst violation did not fall below a quarter of the previous one.
   `starts` starting points (the box centre, then a scrambled Sobol sequence from `seed`).
2. **Projection** of the best continuous point of each start to the feasible sets: each amount
   to the nearest allowed tablet sums below and above, days_on and cycles to the whole numbers
   below and above (up to 2^k neighbours), and, with a cap on days on drug, every whole split of
   that budget into days_on x cycles at those amounts; every candidate's constraints are
   re-checked exactly and the feasible ones ranked on the search patients with the accurate
   solver options.
3. **Final evaluation** of the best `keep` regimens (and the reference regimen, CLEVER's, when
   it lies in the design's variables) on the whole population, accurate solver options.

A regimen is feasible only if every constraint holds exactly after projection (the final
feasibility check). If none is, the result says so and names the binding constraint: the one
with the largest violation at the least infeasible continuous point. Every constraint kind is
non-decreasing in every variable, so when the smallest regimen of the box (all lower bounds)
already breaks a constraint the problem is infeasible without a search, and that constraint is
named.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import optimize
from scipy.stats import qmc

from dormancy_model import status as S
from dormancy_model.model.ode import DormancyModel
from dormancy_model.params.table import Parameters
from dormancy_model.regimens.problem import FINAL_OPTIONS, Problem, Regimen
from dormancy_model.regimens.spec import DesignSpec

FEAS_TOL = 1e-6  # relative constraint margin accepted as satisfied


@dataclass(frozen=True)
class Candidate:
    """An evaluated regimen: objective on the whole population, constraint margins."""

    regimen: Regimen
    objective: float
    margins: tuple[float, ...]  # g_j (<= 0 is feasible), in the spec's constraint order
    per_patient: np.ndarray = field(repr=False, default=None)

    @property
    def feasible(self) -> bool:
        return bool(np.all(np.asarray(self.margins) <= FEAS_TOL))


@dataclass(frozen=True)
class DesignResult:
    """What `design` found. `regimens` best first (all feasible; empty when infeasible);
    `history` one row per objective evaluation of the continuous search (start, frequencies,
    outer iteration, objective, worst violation); `continuous` the best continuous point per
    start and frequency choice; `reference` the CLEVER regimen's evaluation (None if it is not
    in the design's variables); `binding` the constraint that makes the problem infeasible."""

    spec: DesignSpec
    regimens: tuple[Candidate, ...]
    history: pd.DataFrame
    continuous: pd.DataFrame
    reference: Candidate | None
    feasible: bool
    binding: str | None
    constraint_names: tuple[str, ...]
    problems: dict = field(repr=False, default_factory=dict)
    seconds: float = 0.0

    @property
    def best(self) -> Candidate | None:
        return self.regimens[0] if self.regimens else None

    def table(self) -> pd.DataFrame:
        """One row per recommended regimen (and the reference): objective, margins."""
        rows = []
        cands = [(f"recommended {i + 1}", c) for i, c in enumerate(self.regimens)]
        if self.reference is not None:
            cands.append(("CLEVER HCQ+EVE", self.reference))
        for label, c in cands:
            row = {"regimen": label, "description": c.regimen.describe(),
                   "objective": c.objective, "feasible": c.feasible}
            for name, g in zip(self.constraint_names, c.margins, strict=True):
                row[f"margin: {name}"] = -g
            rows.append(row)
        return pd.DataFrame(rows)


def _aug_lagrangian(fun_grad, cons, cons_jac, z0, *, history, tag, max_outer=6, tol=1e-4):
    """Minimise f(z) subject to c(z) <= 0 over the unit box (PHR augmented Lagrangian with
    L-BFGS-B inner solves). Returns (z, f, worst violation) of the best outer iterate.

    The objective enters the Lagrangian divided by |f(z0)| (its size at the start), so the
    balance between objective and constraints does not depend on the objective's unit (cells
    per patient differ by 1e3 between DTC scales; with the raw objective a fixed rho left the
    optimum 1.5% outside a constraint)."""
    m = len(cons(z0))
    unit = 1.0 / max(abs(float(fun_grad(np.asarray(z0, float))[0])), 1e-12)
    lam, rho = np.zeros(m), 100.0
    z, prev_viol = np.asarray(z0, float), np.inf
    best = None
    for outer in range(max_outer):
        def L(zz, lam=lam, rho=rho, outer=outer):
            f, g = fun_grad(zz)
            c, J = cons(zz), cons_jac(zz)
            s = np.maximum(0.0, lam + rho * c)
            history.append({**tag, "outer": outer, "objective": -f,
                            "max_violation": float(np.max(c, initial=0.0))})
            val = unit * f + float(np.sum(s**2 - lam**2)) / (2 * rho)
            return val, unit * g + J.T @ s

        r = optimize.minimize(L, z, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(z),
                              options=dict(maxiter=25, ftol=1e-9, gtol=1e-4))
        z = np.clip(r.x, 0.0, 1.0)
        c = cons(z)
        viol = float(np.max(c, initial=0.0))
        f = fun_grad(z)[0]
        score = (max(viol - tol, 0.0), f)
        if best is None or score < best[0]:
            best = (score, z.copy(), f, viol)
        lam_new = np.maximum(0.0, lam + rho * c)
        if viol <= tol and np.max(np.abs(lam_new - lam), initial=0.0) <= 1e-3 * (
                1 + np.max(lam, initial=0.0)):
            break
        if viol > 0.25 * prev_viol:
            rho *= 10.0
        lam, prev_viol = lam_new, viol
    return best[1:]


def _neighbours(problem: Problem, x) -> list[np.ndarray]:
    """Projections of x to the feasible sets: each variable to its nearest allowed values
    below and above (tablet sums for amounts, whole days and cycles)."""
    spec = problem.spec
    options = []
    for i, d in enumerate(problem.drugs):
        allowed = np.asarray(spec.drug(d).allowed_amounts())
        below, above = allowed[allowed <= x[i] + 1e-9], allowed[allowed >= x[i] - 1e-9]
        options.append(sorted({float(below[-1]) if below.size else float(allowed[0]),
                               float(above[0]) if above.size else float(allowed[-1])}))
    k = len(problem.drugs)
    for j, b in ((k, spec.days_on), (k + 1, spec.cycles)):
        v = float(x[j])
        options.append(sorted({float(np.clip(np.floor(v + 1e-9), b.lo, b.hi)),
                               float(np.clip(np.ceil(v - 1e-9), b.lo, b.hi))}))
    out = [np.asarray(c, float) for c in itertools.product(*options)]
    # with a cap on days on drug (days_on x cycles), the other whole splits of the same budget
    # (e.g. 28 x 6, 24 x 7, 21 x 8 days): the continuous optimum lies on the cap's hyperbola,
    # whose whole points are not all neighbours of it
    caps = [c.limit for c in spec.constraints if c.kind == "treatment_days"]
    if caps:
        for amounts in itertools.product(*options[:k]):
            for cyc in range(int(spec.cycles.lo), int(spec.cycles.hi) + 1):
                days = min(float(np.floor(min(caps) / cyc + 1e-9)), spec.days_on.hi)
                if days >= spec.days_on.lo:
                    out.append(np.asarray([*amounts, days, float(cyc)], float))
    return out


def _evaluate_many(problem: Problem, xs, params: Parameters, options) -> tuple[np.ndarray, ...]:
    """Per-patient values (len(xs), n) and statuses of several regimens (one compiled call)."""
    cache = problem.__dict__.setdefault("_evaluators", {})
    key = (id(params), options)
    if key not in cache:  # one compile per problem, population and solver options
        cache[key] = (params, jax.jit(jax.vmap(
            lambda x: problem.per_patient(x, params, options, exact=True))))
    vals, status = cache[key][1](jnp.asarray(np.stack(xs)))
    return np.asarray(vals, float), np.asarray(status)


def _check_status(status) -> None:
    bad = np.asarray(status) != S.OK
    if np.any(bad):
        from dormancy_model.model.simulate import SolveError

        raise SolveError(f"{int(bad.sum())} patient solves failed during the design "
                         f"({S.message(np.asarray(status)[bad].ravel()[0])})")


def design(spec: DesignSpec, params: Parameters, *, key, population=None,
           model: DormancyModel | None = None, keep: int = 3, reference: Regimen | None = None,
           progress=None) -> DesignResult:
    """Optimise the regimen of `spec` over a virtual population (see the module doc).

    `params`: the human parameter set; `population` (`trials.population.Population`): the
    virtual-patient variability and typical values (default: the spec's calibration is applied
    by the caller; here `Population()`); `key`: the JAX key the patients are drawn from;
    `reference`: a regimen evaluated beside the recommended ones (e.g. CLEVER's);
    `progress(text)` is called after each continuous search and evaluation stage.
    """
    from dormancy_model.trials.population import Population, sample_patients

    t_start = time.perf_counter()
    tick = progress or (lambda text: None)
    population = population or Population()
    model = model or DormancyModel()
    scr = sample_patients(key, spec.patients, population, params)
    full = scr.params.astype(jnp.float64)
    search = full.with_values({k: v[:spec.search_patients] for k, v in full.values.items()})
    history, cont_rows, pool = [], [], {}
    problems = {}
    least_infeasible = None
    choices = [(f, cd) for cd in spec.cycle_choices for f in spec.frequency_options()]
    for fi, (freqs, cd) in enumerate(choices):
        sub = spec.for_cycle_length(cd) if len(spec.cycle_choices) > 1 else spec
        full_prob = Problem(sub, full, freqs, model=model)
        if spec.search_patients < spec.patients:
            prob = Problem(sub, search, freqs, model=model)
            prob._unit_trough = {d: full_prob.unit_trough(d) for d in prob.drugs}  # everyone
        else:
            prob = full_prob
        problems[problem_key(freqs, cd)] = full_prob
        # every constraint kind grows with every variable (amounts, days, cycles), so if the
        # smallest regimen of the box breaks one, no regimen meets it: no search
        g_lo = prob.constraint_values(prob.lo)
        if np.any(g_lo > FEAS_TOL):
            if least_infeasible is None or np.max(g_lo) < least_infeasible[0]:
                least_infeasible = (float(np.max(g_lo)), g_lo)
            tick(f"infeasible at the smallest regimen ({','.join(freqs.values())})")
            continue
        span = prob.hi - prob.lo
        free = span > 0
        to_x = lambda z, prob=prob, span=span: prob.lo + span * np.asarray(z)  # noqa: E731

        def obj(x, prob=prob):
            vals, status = prob.per_patient(x)
            return prob.score(vals), status

        # value and forward-mode gradient in one compiled function
        jac_value = jax.jit(jax.jacfwd(lambda x, obj=obj: (obj(x)[0],) * 2, has_aux=True))
        cache = {}

        def fun_grad(z, jac_value=jac_value, to_x=to_x, span=span, free=free, cache=cache):
            key_ = tuple(np.round(z, 12))
            if key_ not in cache:
                g, f = jac_value(jnp.asarray(to_x(z)))
                f, g = float(f), np.asarray(g, float)
                cache[key_] = (-f, -(g * span) * free)
            return cache[key_]

        cons = lambda z, prob=prob, to_x=to_x: prob.constraint_values(to_x(z))  # noqa: E731
        cons_jac = (lambda z, prob=prob, to_x=to_x, span=span, free=free:  # noqa: E731
                    prob.constraint_jacobian(to_x(z)) * (span * free)[None, :])
        sob = qmc.Sobol(d=len(span), scramble=True, seed=spec.seed + fi)
        starts = np.vstack([np.full(len(span), 0.5), sob.random(max(spec.starts - 1, 1))])
        for s, z0 in enumerate(starts[:spec.starts]):
            tag = {"frequencies": ",".join(f"{d}:{f}" for d, f in freqs.items()),
                   "cycle_days": cd, "start": s}
            z, f, viol = _aug_lagrangian(fun_grad, cons, cons_jac, z0, history=history, tag=tag)
            x = to_x(z)
            cont_rows.append({**tag, **dict(zip(prob.names, x, strict=True)),
                              "objective_search": -f, "max_violation": viol})
            if least_infeasible is None or viol < least_infeasible[0]:
                least_infeasible = (viol, prob.constraint_values(x))
            for nb in _neighbours(prob, x):
                if np.all(prob.constraint_values(nb) <= FEAS_TOL):
                    pool[(fi, tuple(nb))] = (prob, full_prob, nb)
            tick(f"search {tag['frequencies']} start {s + 1}/{spec.starts}")
    names = tuple(c.name for c in spec.constraints)
    if not pool:
        j = int(np.argmax(least_infeasible[1])) if len(names) else None
        binding = names[j] if j is not None else None
        return DesignResult(spec, (), pd.DataFrame(history), pd.DataFrame(cont_rows), None,
                            False, binding, names, problems, time.perf_counter() - t_start)
    # rank the feasible projections on the search patients (accurate options), per frequency
    ranked = []
    for fi in sorted({k[0] for k in pool}):
        items = [v for k, v in pool.items() if k[0] == fi]
        prob = items[0][0]
        vals, status = _evaluate_many(prob, [it[2] for it in items], prob.params, FINAL_OPTIONS)
        _check_status(status)
        for it, v in zip(items, vals, strict=True):
            ranked.append((float(prob.score(jnp.asarray(v))), it, v))
    ranked.sort(key=lambda r: -r[0])
    tick("projection")
    finals = []
    top = ranked[:keep]
    ref, ref_x = None, None
    ref_key = (problem_key(reference.frequencies, reference.cycle_days)
               if reference is not None else None)
    if reference is not None and ref_key in problems and set(reference.amounts) == set(
            problems[ref_key].drugs) and reference.cycles <= spec.cycles.hi:
        p_ref = problems[ref_key]
        ref_x = np.asarray([reference.amounts[d] for d in p_ref.drugs]
                           + [reference.days_on, reference.cycles], float)
    for fi_prob in {id(it[1]): it[1] for _, it, _ in top}.values():
        mine = [(it, v) for _, it, v in top if it[1] is fi_prob]
        xs = [it[2] for it, _ in mine]
        with_ref = ref_x is not None and problems[ref_key] is fi_prob
        if mine[0][0][0] is fi_prob and not with_ref:  # ranked on the whole population already
            vals = [v for _, v in mine]
        else:  # the reference regimen in the same compiled batch
            vals, status = _evaluate_many(fi_prob, xs + ([ref_x] if with_ref else []),
                                          fi_prob.params, FINAL_OPTIONS)
            _check_status(status)
            if with_ref:
                ref = Candidate(reference, float(fi_prob.score(jnp.asarray(vals[-1]))),
                                tuple(fi_prob.constraint_values(ref_x)), vals[-1])
                vals = vals[:-1]
        for x, v in zip(xs, vals, strict=True):
            finals.append(Candidate(fi_prob.regimen(x), float(fi_prob.score(jnp.asarray(v))),
                                    tuple(fi_prob.constraint_values(x)), v))
    finals.sort(key=lambda c: -c.objective)
    if reference is not None and ref is None:
        ref = evaluate(spec, problems, reference)
    tick("final evaluation")
    return DesignResult(spec, tuple(finals), pd.DataFrame(history), pd.DataFrame(cont_rows),
                        ref, True, None, names, problems, time.perf_counter() - t_start)


def problem_key(frequencies: dict, cycle_days: int) -> tuple:
    """The key of `DesignResult.problems`: one problem per frequency choice and cycle length."""
    return (tuple(sorted(frequencies.items())), int(cycle_days))


def evaluate(spec: DesignSpec, problems: dict, regimen: Regimen) -> Candidate | None:
    """A regimen (in the design's drugs, frequencies and cycle lengths) on the whole
    population; None if its frequencies or cycle length are not among the design's problems."""
    import dataclasses

    from dormancy_model.regimens.spec import Bounds

    key = problem_key(regimen.frequencies, regimen.cycle_days)
    prob = problems.get(key)
    if prob is None or set(regimen.amounts) != set(prob.drugs):
        return None
    if regimen.cycles > prob.spec.cycles.hi:
        # a longer course than the design allows: a problem whose dose grid covers it, with
        # the objective read on the same day
        wider = dataclasses.replace(prob.spec, cycles=Bounds(spec.cycles.lo, regimen.cycles),
                                    day=None if spec.objective == "rfs" else spec.objective_day)
        prob = Problem(wider, prob.params, prob.frequencies, model=prob.model)
    x = np.asarray([regimen.amounts[d] for d in prob.drugs] + [regimen.days_on,
                                                               regimen.cycles], float)
    vals, status = _evaluate_many(prob, [x], prob.params, FINAL_OPTIONS)
    _check_status(status)
    return Candidate(regimen, float(prob.score(jnp.asarray(vals[0]))),
                     tuple(problems[key].constraint_values(x)), vals[0])
