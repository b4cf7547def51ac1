"""Posterior calibration of the virtual CLEVER trial's population parameters.

Parameters (theta, natural log of each; `PARAMETERS`):

=================  ================================================  =========================
name               meaning                                           prior (log-normal)
=================  ================================================  =========================
delta_max          typical drug-induced death of dormant cells       parameter file's value,
                                                                     log-sd 0.8
k_dr               typical per-cell reactivation                     file's value, log-sd 1.5
load_median        median DTC load of screened candidates (cells)    the value solved for 30%
                                                                     positivity, log-sd 1.0
load_sigma         log-SD of the DTC load                            1.0, log-sd 0.5
cv_delta_max       between-patient CV of delta_max (sensitivity)     0.5, log-sd 0.5
cv_k_dr            between-patient CV of k_dr (optional)             0.76, log-sd 0.5
=================  ================================================  =========================

The load median is a free parameter (not solved for the screening positivity as in the point
calibration): the published 55/184 then enters as a binomial with its sampling uncertainty, and
the k_dr x load ridge that the relapse data leave (the parameter table: "only k_dr x load is
constrained") shows in the posterior instead of being fixed by construction. Priors are centred
on the parameter file's values, not on the packaged point calibration (which used the same
data); each is truncated to a design box of +-`box_sd` prior SDs (default 2.5; cut to the
parameter table's bounds where it would leave them), where the emulator is fitted, so it is
never extrapolated.

Method:
1. a scrambled Sobol design of `points` parameter points in the box; at each point `replicates`
   virtual trials are simulated with the SAME key (common random numbers) through
   `protocol.trial` (the CLEVER design without its observation arm, which no target uses);
2. per point, the model quantities the likelihood needs (`point_quantities`): pooled KM 3-year
   RFS per arm (logit), P(relapse after 3 years | relapse-free and followed at 3 years) (logit),
   pooled Cox log HR cleared vs persistent, and the mean and log-sd over trials of
   z = ln(1 - DTC reduction at C3) per arm, the pooled fraction DTC- at the last on-treatment
   aspirate (logit), each with its Monte-Carlo variance; and, where the targets include the
   untreated prognosis, from an untreated cohort of `untreated` screened candidates (agent
   model, 5 years, the same key at every point) the log relapse-rate ratio screen-positive vs
   negative and the logit 5-year RFS of the screen-positive (`prognosis_quantities`);
3. a quadratic emulator of each quantity (`emulator.py`) with its uncertainty, checked by
   leave-one-out cross-validation; the screening probability is exact (`likelihood.py`);
4. NUTS (numpyro, several chains) on the emulated log-likelihood of every published statistic
   (`likelihood.joint_loglik`) plus the log priors; diagnostics: R-hat, bulk and tail ESS
   (arviz), divergences, mean acceptance;
5. optionally (`refine_points`) a second wave: a smaller box around the first posterior (its
   central 99% widened by a margin), new Sobol points there simulated with the same random
   numbers, the emulator refitted on every point inside that box, NUTS again on the prior
   truncated to it; the first wave's emulator is tested at the new points (out of sample).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dormancy_model.trials import likelihood as L
from dormancy_model.trials.emulator import QuadraticEmulator, fit_emulator, n_features

THREE_YEARS_DAYS = 3 * 365.25
DEFAULT_PARAMETERS = ("delta_max", "k_dr", "load_median", "load_sigma", "cv_delta_max")
PRIOR_LOG_SD = {"delta_max": 0.8, "k_dr": 1.5, "load_median": 1.0, "load_sigma": 0.5,
                "cv_delta_max": 0.5, "cv_k_dr": 0.5}
PRIOR_SOURCE = {
    "delta_max": "parameter file value (assumption, docs/pkpd_anchors.md); log-sd 0.8 keeps "
                 "+-2.5 SD inside the table's bounds [0.001, 0.5] /day",
    "k_dr": "parameter file value (assumption; only k_dr x load is constrained); log-sd 1.5",
    "load_median": "solved for the 30% screening positivity at the default load_sigma "
                   "(population.py); log-sd 1.0",
    "load_sigma": "population.py default 1.0, near the Ribba 2012 P0 CV of 94% [S11]; log-sd 0.5",
    "cv_delta_max": "population.py default 0.5 (assumption); log-sd 0.5",
    "cv_k_dr": "population.py default 0.76 (Ribba 2012 IIV 76% [S11]); log-sd 0.5",
}
Z_SD_FLOOR = 0.05  # smallest sd over trials of z = ln(1 - reduction) (5% relative)
EMULATED = ("logit_rfs", "logit_late", "log_hr", "z_mean", "z_logsd", "logit_cleared",
            "log_irr", "logit_rfs5_pos")
DEFAULT_UNTREATED = 1000  # screened candidates per design point for the prognosis terms


@dataclass(frozen=True)
class Prior:
    names: tuple
    median: np.ndarray  # natural units (internal: 1/day for rates, cells for the load)
    log_sd: np.ndarray
    box_sd: float = 2.5
    sources: dict = field(default_factory=dict)
    bounds: np.ndarray | None = None  # (d, 2) natural-unit limits of the box (parameter table)

    @property
    def mu(self):
        return np.log(self.median)

    @property
    def lower(self):
        lo = self.mu - self.box_sd * self.log_sd
        return lo if self.bounds is None else np.maximum(lo, np.log(self.bounds[:, 0]))

    @property
    def upper(self):
        hi = self.mu + self.box_sd * self.log_sd
        return hi if self.bounds is None else np.minimum(hi, np.log(self.bounds[:, 1]))

    def describe(self) -> dict:
        return {n: {"median": float(m), "log_sd": float(s),
                    "box": [float(math.exp(lo)), float(math.exp(hi))],
                    "source": self.sources.get(n, "")}
                for n, m, s, lo, hi in zip(self.names, self.median, self.log_sd, self.lower,
                                           self.upper, strict=True)}


def default_prior(params, population=None, names=DEFAULT_PARAMETERS, box_sd: float = 2.5,
                  log_sd: dict | None = None) -> Prior:
    """Log-normal priors around the parameter file's and `Population`'s current values."""
    from dormancy_model.trials.population import Population

    pop = population or Population()
    base = pop.base_params(params)
    current = {"delta_max": float(base["delta_max"]), "k_dr": float(base["k_dr"]),
               "load_median": pop.median_load(params), "load_sigma": pop.load_sigma,
               "cv_delta_max": pop.cv.get("delta_max", 0.5), "cv_k_dr": pop.cv.get("k_dr", 0.76)}
    unknown = [n for n in names if n not in current]
    if unknown:
        raise ValueError(f"unknown calibration parameters {unknown}; known: {sorted(current)}")
    sd = {**PRIOR_LOG_SD, **(log_sd or {})}
    spec = params.spec
    bounds = np.array([spec[n].bounds if n in spec else (1e-300, np.inf) for n in names],
                      float)
    prior = Prior(tuple(names), np.array([current[n] for n in names]),
                  np.array([sd[n] for n in names], float), box_sd,
                  {n: PRIOR_SOURCE[n] for n in names}, bounds)
    if np.any(prior.lower >= prior.upper) or np.any(~np.isfinite(prior.mu)):
        raise ValueError("a prior median lies outside its parameter's bounds")
    return prior


def population_at(theta_row, names, population):
    """The Population with the calibrated parameters set to exp(theta_row)."""
    v = dict(zip(names, np.exp(np.asarray(theta_row, float)).tolist(), strict=True))
    typical = {**population.typical, **{k: v[k] for k in ("delta_max", "k_dr") if k in v}}
    cv = dict(population.cv)
    for k in ("delta_max", "k_dr"):
        if f"cv_{k}" in v:
            cv[k] = v[f"cv_{k}"]
    kw = dict(typical=typical, cv=cv)
    if "load_sigma" in v:
        kw["load_sigma"] = v["load_sigma"]
    if "load_median" in v:
        kw["load_median"] = v["load_median"]
    return population.replace(**kw)


def sobol_design(prior: Prior, points: int, seed: int) -> np.ndarray:
    """(points, d) scrambled Sobol points (theta, log units) in the prior's design box."""
    import warnings

    from scipy.stats import qmc

    with warnings.catch_warnings():  # balance is best at powers of two (the default 64)
        warnings.simplefilter("ignore", UserWarning)
        u = qmc.Sobol(len(prior.names), scramble=True, seed=seed).random(points)
    return qmc.scale(u, prior.lower, prior.upper)


# ----------------------------------------------------------------------------- model quantities
def _logit(p):
    return math.log(p) - math.log1p(-p)


def point_quantities(patients: pd.DataFrame, trials: pd.DataFrame, arms=L.ARMS,
                     landmark: float = THREE_YEARS_DAYS) -> tuple[dict, dict]:
    """Model quantities at one parameter point from its replicated trials (values, MC variances;
    names as `likelihood.joint_loglik` expects, without the screening probability)."""
    from dormancy_model.trials.analysis import cox_binary

    val, var = {}, {}
    for a in arms:
        g = patients[patients["arm"] == a]
        n = len(g)
        s, gw = L.km_landmark_stats(g["rfs_time"], g["rfs_event"], landmark)
        s = min(max(s, 0.5 / n), 1 - 0.5 / n)  # a pooled KM of 0 or 1 events: continuity
        val[f"logit_rfs:{a}"] = _logit(s)
        var[f"logit_rfs:{a}"] = max(gw, s * (1 - s) / n) / (s * (1 - s)) ** 2
        z = L.reduction_to_z(trials.loc[trials["arm"] == a, "reduction_C3"].to_numpy(float))
        z = z[np.isfinite(z)]
        if z.size >= 3:
            # floor: where every trial's reduction is capped (no post-treatment DTC in any
            # trial: r = 1 -> 0.99) the spread is 0; Z_SD_FLOOR keeps ln sd finite
            sd = max(float(np.std(z, ddof=1)), Z_SD_FLOOR)
            val[f"z_mean:{a}"], var[f"z_mean:{a}"] = float(z.mean()), sd ** 2 / z.size
            val[f"z_logsd:{a}"], var[f"z_logsd:{a}"] = math.log(sd), 1 / (2 * (z.size - 1))
        else:
            for k in ("z_mean", "z_logsd"):
                val[f"{k}:{a}"], var[f"{k}:{a}"] = np.nan, np.nan
    tr = patients[patients["arm"].isin(arms)]
    k, n = L.late_relapse_stats(tr["rfs_time"], tr["rfs_event"], landmark)
    q = (k + 0.5) / (n + 1.0)
    val["logit_late"], var["logit_late"] = _logit(q), 1.0 / ((n + 1.0) * q * (1 - q))
    if "cleared_eot_observed" in tr:  # DTC- at the last on-treatment aspirate, pooled
        k, n = int(tr["cleared_eot_observed"].sum()), len(tr)
        q = (k + 0.5) / (n + 1.0)  # continuity: every patient cleared (or none) stays finite
        val["logit_cleared"], var["logit_cleared"] = _logit(q), 1.0 / ((n + 1.0) * q * (1 - q))
    cox = cox_binary(tr["rfs_time"], tr["rfs_event"], tr["cleared_observed"].astype(float))
    if cox.estimable:
        val["log_hr"] = math.log(cox.hr)
        var["log_hr"] = ((math.log(cox.upper95) - math.log(cox.lower95)) / (2 * L.Z975)) ** 2
    else:
        val["log_hr"], var["log_hr"] = np.nan, np.nan
    return val, var


def prognosis_quantities(cohort: pd.DataFrame) -> tuple[dict, dict]:
    """From an untreated cohort (`untreated.untreated_cohort`): the log relapse-rate ratio
    screen-positive vs negative over 5 years (events over person-time; MC variance 1/e1 + 1/e0,
    0.5 added to each count so that no event stays finite) and the logit 5-year RFS of the
    screen-positive (binomial variance)."""
    five = 5 * 365.25
    pos = cohort["baseline_count"].to_numpy() >= 1
    rd = cohort["relapse_day"].to_numpy(float)
    e1, e0 = float(np.sum(rd[pos] <= five)) + 0.5, float(np.sum(rd[~pos] <= five)) + 0.5
    t1 = max(float(np.sum(np.minimum(rd[pos], five))), 1.0)
    t0 = max(float(np.sum(np.minimum(rd[~pos], five))), 1.0)
    n = int(pos.sum())
    val, var = {}, {}
    if n == 0 or (~pos).sum() == 0:
        return {"log_irr": np.nan, "logit_rfs5_pos": np.nan}, \
            {"log_irr": np.nan, "logit_rfs5_pos": np.nan}
    val["log_irr"] = math.log((e1 / t1) / (e0 / t0))
    var["log_irr"] = 1.0 / e1 + 1.0 / e0
    q = (float(np.sum(rd[pos] > five)) + 0.5) / (n + 1.0)
    val["logit_rfs5_pos"], var["logit_rfs5_pos"] = _logit(q), 1.0 / ((n + 1.0) * q * (1 - q))
    return val, var


class TrialSimulator:
    """The virtual CLEVER trial at design points (common random numbers: one key for all)."""

    def __init__(self, design, params, prior: Prior, *, key, replicates: int,
                 population=None, method: str = "fast", chunk: int = 512,
                 untreated: int = 0):
        from dormancy_model.trials.population import Population

        self.design = design.replace(observation_n=0)
        self.params = params
        self.prior = prior
        self.population = population or Population()
        self.key = key
        self.replicates = int(replicates)
        self.method = method
        self.chunk = chunk
        self.untreated = int(untreated)
        base = self.population.base_params(params)
        self.aspirate_fraction = float(base["aspirate_fraction"])
        self.aspirate_dispersion = float(base["aspirate_dispersion"])
        self.seconds = 0.0

    def exact(self, theta) -> dict:
        """The screening probability (exact; the load's median and log-SD from theta when they
        are calibrated, else the population's)."""
        names = self.prior.names
        get = {n: jnp.exp(theta[..., i]) for i, n in enumerate(names)}
        sigma = get.get("load_sigma", self.population.load_sigma)
        med = get.get("load_median")
        if med is None:
            med = self.population.median_load(self.params)
        return {"p_screen": L.screening_probability(med, sigma, self.aspirate_fraction,
                                                    self.aspirate_dispersion)}

    def run(self, theta_points, progress=None) -> tuple[dict, dict]:
        from dormancy_model.trials.protocol import trial

        vals, vars_ = [], []
        t0 = time.perf_counter()
        for i, th in enumerate(np.asarray(theta_points)):
            pop = population_at(th, self.prior.names, self.population)
            res = trial(self.design, self.params, key=self.key, replicates=self.replicates,
                        population=pop, method=self.method, chunk=self.chunk)
            v, w = point_quantities(res.patients, res.summary())
            if self.untreated:
                from dormancy_model.trials.untreated import untreated_cohort

                cohort = untreated_cohort(self.params, pop, key=jax.random.fold_in(self.key, 11),
                                          n=self.untreated, method=self.method)
                pv, pw = prognosis_quantities(cohort)
                v.update(pv)
                w.update(pw)
            vals.append(v)
            vars_.append(w)
            if progress:
                progress(i + 1, len(theta_points), "design point")
        self.seconds += time.perf_counter() - t0
        keys = vals[0].keys()
        return ({k: np.array([v[k] for v in vals]) for k in keys},
                {k: np.array([w[k] for w in vars_]) for k in keys})


# ----------------------------------------------------------------------------- inference
@dataclass
class PosteriorResult:
    names: tuple
    prior: Prior
    draws: dict  # name -> (chains, samples) of theta (log units)
    design_theta: np.ndarray
    design_values: dict
    design_mc_var: dict
    emulator: QuadraticEmulator
    diagnostics: dict
    summary: pd.DataFrame
    predictive: pd.DataFrame
    settings: dict = field(default_factory=dict)
    idata: object = None
    design_wave: np.ndarray | None = None  # per design point: 1 = first wave, 2 = refinement
    design_used: np.ndarray | None = None  # per design point: in the final emulator's fit

    def values(self) -> dict:
        """Posterior medians in natural units."""
        return {n: float(np.exp(np.median(self.draws[n]))) for n in self.names}


def log_posterior_fn(emulator: QuadraticEmulator, exact, targets: L.PublishedTargets):
    """theta -> emulated log-likelihood of every published statistic (no prior)."""
    def loglik(theta):
        pred = emulator.predict(theta)
        pred.update(exact(theta))
        return L.joint_loglik(pred, targets)
    return loglik


def _box_transform(prior: Prior):
    """Unconstrained z -> theta in the design box, and the log prior density of z (truncated
    normal in theta plus the log Jacobian of theta = lo + (hi - lo) sigmoid(z))."""
    lo, hi = jnp.asarray(prior.lower), jnp.asarray(prior.upper)
    mu, sd = jnp.asarray(prior.mu), jnp.asarray(prior.log_sd)

    def theta_of(z):
        return lo + (hi - lo) * jax.nn.sigmoid(z)

    def log_prior(z):
        th = theta_of(z)
        jac = jnp.log(hi - lo) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)
        return jnp.sum(-0.5 * ((th - mu) / sd) ** 2 + jac)

    return theta_of, log_prior


def run_nuts(loglik, prior: Prior, *, key, chains: int = 4, warmup: int = 500,
             samples: int = 500):
    """NUTS (numpyro, `potential_fn` form) on the prior (normal in log units truncated to the
    design box) + loglik. Returns (theta draws (chains, samples, d), extra fields)."""
    from numpyro.infer import MCMC, NUTS

    theta_of, log_prior = _box_transform(prior)

    def potential(z):
        return -(log_prior(z) + loglik(theta_of(z)))

    k_init, k_run = jax.random.split(key)
    # over-dispersed starts, as R-hat assumes: uniform on (-2, 2) in z, most of the design box
    init = jax.random.uniform(k_init, (chains, len(prior.names)), minval=-2.0, maxval=2.0)
    # dense mass matrix: 5 parameters, and the relapse data leave a k_dr x load ridge
    mcmc = MCMC(NUTS(potential_fn=potential, target_accept_prob=0.9, dense_mass=True),
                num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    mcmc.run(k_run, init_params=init if chains > 1 else init[0],
             extra_fields=("diverging", "accept_prob", "num_steps"))
    z = mcmc.get_samples(group_by_chain=True)
    th = np.asarray(jax.vmap(jax.vmap(theta_of))(jnp.asarray(z).reshape(chains, samples, -1)))
    extra = {k: np.asarray(v).reshape(chains, samples)
             for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return th, extra


def diagnostics(theta_draws, extra, names) -> tuple[dict, object]:
    """R-hat, bulk / tail ESS (arviz), divergences, acceptance; and the arviz InferenceData."""
    import arviz as az

    idata = az.from_dict(
        posterior={f"ln_{n}": theta_draws[..., i] for i, n in enumerate(names)},
        sample_stats={"diverging": extra["diverging"], "acceptance_rate": extra["accept_prob"],
                      "n_steps": extra["num_steps"]})
    rhat = az.rhat(idata)
    ess_b = az.ess(idata, method="bulk")
    ess_t = az.ess(idata, method="tail")
    div = extra["diverging"]
    out = {"rhat": {n: float(rhat[f"ln_{n}"]) for n in names},
           "ess_bulk": {n: float(ess_b[f"ln_{n}"]) for n in names},
           "ess_tail": {n: float(ess_t[f"ln_{n}"]) for n in names},
           "divergences": int(div.sum()),
           "mean_accept_prob": float(np.mean(extra["accept_prob"])),
           "mean_leapfrog_steps": float(np.mean(extra["num_steps"])),
           "chains": int(div.shape[0]), "draws_per_chain": int(div.shape[1])}
    out["max_rhat"] = max(out["rhat"].values())
    out["min_ess_bulk"] = min(out["ess_bulk"].values())
    return out, idata


def summarize(draws: dict, prior: Prior) -> pd.DataFrame:
    rows = []
    for i, n in enumerate(prior.names):
        x = np.asarray(draws[n]).ravel()
        q = np.exp(np.quantile(x, [0.05, 0.5, 0.95]))
        edge = np.mean((x < prior.lower[i] + 0.02 * (prior.upper[i] - prior.lower[i]))
                       | (x > prior.upper[i] - 0.02 * (prior.upper[i] - prior.lower[i])))
        rows.append(dict(parameter=n, p05=q[0], median=q[1], p95=q[2],
                         prior_p05=math.exp(prior.mu[i] - 1.645 * prior.log_sd[i]),
                         prior_median=float(prior.median[i]),
                         prior_p95=math.exp(prior.mu[i] + 1.645 * prior.log_sd[i]),
                         sd_ratio=float(np.std(x) / prior.log_sd[i]),
                         at_box_edge=float(edge)))
    return pd.DataFrame(rows)


EDGE_HINT = "widen --box-sd (the emulator is not fitted beyond it)"


def quality_warnings(diag: dict, summary: pd.DataFrame, edge_hint: str = EDGE_HINT
                     ) -> list[str]:
    """Plain-language flags for a posterior that should not be used as is."""
    out = []
    if np.isfinite(diag["max_rhat"]) and diag["max_rhat"] > 1.01:
        out.append(f"R-hat {diag['max_rhat']:.3f} > 1.01: chains disagree; run longer")
    if diag["min_ess_bulk"] < 400:
        out.append(f"bulk ESS {diag['min_ess_bulk']:.0f} < 400: too few effective draws")
    if diag["divergences"]:
        out.append(f"{diag['divergences']} divergent transitions")
    for r in summary.itertuples():
        if r.at_box_edge > 0.05:
            out.append(f"{r.parameter}: {r.at_box_edge:.0%} of the draws at the design box's "
                       f"edge: {edge_hint}")
    for c in diag.get("emulator_cv", []):
        if c["loo_z_rms"] > 2:
            out.append(f"emulator {c['output']}: leave-one-out errors {c['loo_z_rms']:.1f}x "
                       "their predicted sd: more design points or a narrower box")
    return out


def emulated_predictive(draws: dict, prior: Prior, emulator, exact, targets, *, key,
                        max_draws: int = 2000) -> pd.DataFrame:
    """Posterior predictive 90% interval of each published statistic through the emulator
    (a replicated 51-patient trial's statistic at each posterior draw: binomial counts, the
    HR estimate's sampling law, the synthetic law of the reductions)."""
    th = np.stack([np.asarray(draws[n]).ravel() for n in prior.names], -1)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64))
    th = th[rng.permutation(len(th))[:max_draws]]
    pred = jax.vmap(lambda t: {**emulator.predict(t), **exact(t)})(jnp.asarray(th))
    pred = {k: np.asarray(v) for k, v in pred.items()}
    m = len(th)

    def draw_logit(k):
        return 1 / (1 + np.exp(-(pred[k] + np.sqrt(pred[k + ":var"]) * rng.standard_normal(m))))

    rows = []
    pos, scr = targets.screen
    rows.append(("screen_positivity", "all", pos / scr, rng.binomial(scr, pred["p_screen"]) / scr))
    for a, (k, n) in targets.rfs.items():
        rows.append(("rfs_3y (relapse-free/at risk)", a, k / n,
                     rng.binomial(n, draw_logit(f"logit_rfs:{a}")) / n))
    k, n = targets.late
    rows.append(("late relapses", "all treated", k, rng.binomial(n, draw_logit("logit_late"))))
    se = L.hr_se_from_ci(*targets.hr[1:])
    rows.append(("hr_cleared", "all treated", targets.hr[0], np.exp(
        pred["log_hr"] + np.sqrt(se ** 2 + pred["log_hr:var"]) * rng.standard_normal(m))))
    for a, r in targets.reduction_C3.items():
        sd = np.exp(pred[f"z_logsd:{a}"] + pred[f"z_logsd:{a}:var"])
        z = (pred[f"z_mean:{a}"]
             + np.sqrt(sd ** 2 + pred[f"z_mean:{a}:var"]) * rng.standard_normal(m))
        rows.append(("reduction_C3", a, r, 1 - np.exp(z)))
    if targets.cleared is not None and "logit_cleared" in pred:
        k, n = targets.cleared
        rows.append(("cleared at the last on-treatment aspirate", "all treated", k / n,
                     rng.binomial(n, draw_logit("logit_cleared")) / n))
    if targets.prognosis is not None and "log_irr" in pred:
        # the published/derived value against the model's value with the range's own spread
        irr, lo, hi = targets.prognosis["irr"]
        s_irr = L.prognosis_sd(lo, hi)
        rows.append(("relapse-rate ratio DTC+ vs DTC-, untreated 5 y", "untreated", irr, np.exp(
            pred["log_irr"] + np.sqrt(s_irr ** 2 + pred["log_irr:var"])
            * rng.standard_normal(m))))
        lo, hi = targets.prognosis["rfs5_positive"]
        s_rfs = L.prognosis_sd(lo, hi, L._logit_np)
        x = (pred["logit_rfs5_pos"] + np.sqrt(s_rfs ** 2 + pred["logit_rfs5_pos:var"])
             * rng.standard_normal(m))
        rows.append(("5-year RFS of the untreated DTC+ (range midpoint)", "untreated",
                     1 / (1 + math.exp(-0.5 * (L._logit_np(lo) + L._logit_np(hi)))),
                     1 / (1 + np.exp(-x))))
    out = []
    for stat, arm, obs, x in rows:
        lo, med, hi = np.quantile(x, [0.05, 0.5, 0.95])
        out.append(dict(statistic=stat, arm=arm, reported=float(obs), pred_p05=float(lo),
                        pred_median=float(med), pred_p95=float(hi),
                        inside_90=bool(lo <= obs <= hi)))
    return pd.DataFrame(out)


def posterior_from_design(theta, values, mc_var, prior: Prior, exact, targets, *, key,
                          chains: int = 4, warmup: int = 500, samples: int = 500,
                          settings: dict | None = None,
                          edge_hint: str = EDGE_HINT) -> PosteriorResult:
    """Emulator + NUTS + diagnostics from simulated design points (any simulator)."""
    em = fit_emulator(theta, values, mc_var, centre=(prior.lower + prior.upper) / 2,
                      half_width=(prior.upper - prior.lower) / 2)
    k_mcmc, k_pred = jax.random.split(key)
    th, extra = run_nuts(log_posterior_fn(em, exact, targets), prior, key=k_mcmc,
                         chains=chains, warmup=warmup, samples=samples)
    diag, idata = diagnostics(th, extra, prior.names)
    diag["emulator_cv"] = em.cv_table()
    draws = {n: th[..., i] for i, n in enumerate(prior.names)}
    summ = summarize(draws, prior)
    pp = emulated_predictive(draws, prior, em, exact, targets, key=k_pred)
    diag["warnings"] = quality_warnings(diag, summ, edge_hint)
    return PosteriorResult(prior.names, prior, draws, np.asarray(theta), values, mc_var, em,
                           diag, summ, pp, dict(settings or {}), idata)


# ----------------------------------------------------------------------------- a second wave
REFINE_QUANTILE = 0.005  # the refined box spans the first posterior's central 99% ...
REFINE_MARGIN = 0.25  # ... widened by this fraction of its width on each side


def refine_prior(draws: dict, prior: Prior, margin: float = REFINE_MARGIN,
                 q: float = REFINE_QUANTILE) -> Prior:
    """The prior truncated to a smaller box around a first posterior: per parameter the
    draws' [q, 1 - q] quantiles widened by `margin` x their width each side, inside the first
    box. The prior's centre and spread are unchanged; only its truncation (the box where the
    emulator is fitted and NUTS samples) shrinks."""
    import dataclasses

    th = np.stack([np.asarray(draws[n]).ravel() for n in prior.names], -1)
    lo, hi = np.quantile(th, [q, 1 - q], axis=0)
    w = np.maximum(hi - lo, 1e-9)
    lo = np.maximum(lo - margin * w, prior.lower)
    hi = np.minimum(hi + margin * w, prior.upper)
    return dataclasses.replace(prior, bounds=np.exp(np.stack([lo, hi], -1)))


def emulator_error_at(emulator: QuadraticEmulator, theta, values: dict) -> list[dict]:
    """Out-of-sample check of an emulator at new simulated points: per output the RMSE, the
    mean error (bias) and the RMS of the errors over their predicted sd (about 1 when the
    emulator's stated uncertainty is right)."""
    pred = emulator.predict(jnp.asarray(np.asarray(theta, float)))
    out = []
    for k in emulator.outputs:
        y = np.asarray(values[k], float)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        e = y[ok] - np.asarray(pred[k])[ok]
        sd = np.sqrt(np.asarray(pred[k + ":var"])[ok])
        out.append(dict(output=k, rmse=float(np.sqrt(np.mean(e ** 2))), bias=float(e.mean()),
                        z_rms=float(np.sqrt(np.mean((e / sd) ** 2))), points=int(ok.sum())))
    return out


def refine_posterior(first: PosteriorResult, simulate, exact, targets, *, key, points: int,
                     seed: int, margin: float = REFINE_MARGIN, chains: int = 4,
                     warmup: int = 500, samples: int = 500, progress=None) -> PosteriorResult:
    """A second design wave inside the first posterior (history matching's refocusing): the
    box of `refine_prior`, `points` new Sobol points there simulated by `simulate(theta,
    progress) -> (values, mc_var)` (the same simulator and random numbers as the first wave),
    the quadratic emulator refitted on every point inside that box (the new ones and the first
    wave's that fall in it), and NUTS again on the prior truncated to the box. A quadratic
    surface over the whole prior box can miss where the posterior sits; refitted on the smaller
    region it need not. The first wave's emulator is checked at the new points
    (`diagnostics["first_wave_error"]`, an out-of-sample test of what the first posterior
    relied on)."""
    prior2 = refine_prior(first.draws, first.prior, margin)
    need = n_features(len(prior2.names)) + 1
    if points < need:
        raise ValueError(f"refine points must be >= {need} for a quadratic emulator in "
                         f"{len(prior2.names)} parameters, got {points}")
    theta2 = sobol_design(prior2, points, seed)
    v2, w2 = simulate(theta2, progress)
    check = emulator_error_at(first.emulator, theta2, v2)
    th1 = np.asarray(first.design_theta)
    wave1 = (np.ones(len(th1), int) if first.design_wave is None
             else np.asarray(first.design_wave))
    inside = np.all((th1 >= prior2.lower) & (th1 <= prior2.upper), axis=1)
    keys = [k for k in first.design_values if k in v2]
    theta = np.concatenate([th1[inside], theta2])
    values = {k: np.concatenate([np.asarray(first.design_values[k], float)[inside], v2[k]])
              for k in keys}
    mc_var = {k: np.concatenate([np.asarray(first.design_mc_var[k], float)[inside], w2[k]])
              for k in keys}
    settings = dict(first.settings)
    settings["refine"] = dict(points=points, margin=margin, quantile=REFINE_QUANTILE,
                              first_wave_points_inside=int(inside.sum()),
                              first_box={n: d["box"] for n, d in first.prior.describe().items()},
                              box={n: d["box"] for n, d in prior2.describe().items()})
    res = posterior_from_design(
        theta, values, mc_var, prior2, exact, targets, key=key, chains=chains, warmup=warmup,
        samples=samples, settings=settings,
        edge_hint="the refined box ends there (where it is also the first box's edge, widen "
                  "--box-sd; otherwise raise --refine-margin or add a wave)")
    res.diagnostics["first_wave_error"] = check
    res.diagnostics["first_wave_emulator_cv"] = first.diagnostics.get("emulator_cv")
    res.diagnostics["first_wave_summary"] = first.summary.to_dict(orient="records")
    # every simulated point is kept in the result (and the file), marked by wave and use
    res.design_theta = np.concatenate([th1, theta2])
    res.design_values = {k: np.concatenate([np.asarray(first.design_values[k], float), v2[k]])
                         for k in keys}
    res.design_mc_var = {k: np.concatenate([np.asarray(first.design_mc_var[k], float),
                                            w2[k]]) for k in keys}
    res.design_wave = np.concatenate([wave1, np.full(points, wave1.max() + 1)])
    res.design_used = np.concatenate([inside, np.ones(points, bool)])
    return res


def calibrate_posterior(design, params, *, key, population=None, names=DEFAULT_PARAMETERS,
                        points: int = 64, replicates: int = 32, chains: int = 4,
                        warmup: int = 500, samples: int = 500, box_sd: float = 2.5,
                        targets: L.PublishedTargets | None = None, method: str = "fast",
                        untreated: int = DEFAULT_UNTREATED, refine_points: int = 0,
                        refine_margin: float = REFINE_MARGIN, first_wave=None,
                        progress=None) -> PosteriorResult:
    """Posterior over the population parameters `names` (see the module doc). `untreated`:
    screened candidates per design point in the untreated cohort of the prognosis terms (used
    only when the targets include them). `refine_points` > 0: a second design wave of that
    many points inside the first posterior (`refine_posterior`). `first_wave`: (theta,
    values, mc_var) of the first wave's design points simulated earlier with the same key and
    settings (an earlier posterior file's design, `pipeline.first_wave_from_file`), reused
    instead of simulated again; the points must equal the ones the key regenerates."""
    prior = default_prior(params, population, names, box_sd)
    targets = targets or L.PublishedTargets.clever(L.p_followed(design, THREE_YEARS_DAYS))
    need = n_features(len(names)) + 1
    if points < need:
        raise ValueError(f"points must be >= {need} for a quadratic emulator in "
                         f"{len(names)} parameters, got {points}")
    k_design, k_sim, k_inf = jax.random.split(key, 3)
    seed = int(np.asarray(jax.random.randint(k_design, (), 0, 2**31 - 1)))
    theta = sobol_design(prior, points, seed)
    if targets.prognosis is not None and untreated < 100:
        raise ValueError(f"untreated must be >= 100 for the prognosis terms, got {untreated}")
    sim = TrialSimulator(design, params, prior, key=k_sim, replicates=replicates,
                         population=population, method=method,
                         untreated=untreated if targets.prognosis is not None else 0)
    if first_wave is None:
        values, mc_var = sim.run(theta, progress)
    else:
        theta_file, values, mc_var = first_wave
        if np.shape(theta_file) != theta.shape or not np.allclose(theta_file, theta,
                                                                   rtol=1e-9, atol=0):
            raise ValueError("first wave: its design points are not the ones this seed, "
                             "box and parameter list give (a different calibration)")
        bad = [k for k, v in values.items() if np.shape(v) != (points,)]
        if bad:
            raise ValueError(f"first wave: {bad[0]!r} has {np.shape(values[bad[0]])} values, "
                             f"the design has {points} points")
    t, s1 = time.perf_counter(), sim.seconds
    settings = dict(points=points, replicates=replicates, trials=points * replicates,
                    untreated=sim.untreated,
                    chains=chains, warmup=warmup, samples=samples, box_sd=box_sd, method=method,
                    design=sim.design.describe(), simulation_seconds=round(sim.seconds, 1))
    if first_wave is not None:
        settings["first_wave_reused"] = True
    res = posterior_from_design(theta, values, mc_var, prior, sim.exact, targets, key=k_inf,
                                chains=chains, warmup=warmup, samples=samples, settings=settings)
    res.design_wave = np.ones(points, int)
    res.design_used = np.ones(points, bool)
    if refine_points:
        s0 = sim.seconds
        res = refine_posterior(res, sim.run, sim.exact, targets,
                               key=jax.random.fold_in(k_inf, 2), points=refine_points,
                               seed=seed + 1, margin=refine_margin, chains=chains,
                               warmup=warmup, samples=samples, progress=progress)
        res.settings["refine"]["simulation_seconds"] = round(sim.seconds - s0, 1)
        res.settings["trials"] = (points + refine_points) * replicates
    res.settings["inference_seconds"] = round(time.perf_counter() - t - (sim.seconds - s1), 1)
    res.settings["targets"] = targets.describe()
    return res


# ----------------------------------------------------------------------------- the file
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def posterior_record(res: PosteriorResult, params, seed: int, command: str | None = None,
                     git_commit: str = "unknown") -> dict:
    """JSON-ready posterior file: provenance, priors, targets, design, emulator CV,
    diagnostics, summary, emulated posterior predictive and every draw (natural units)."""
    import datetime as _dt

    from dormancy_model._version import __version__

    names = res.names
    wave = (np.ones(len(res.design_theta), int) if res.design_wave is None
            else res.design_wave)
    used = (np.ones(len(res.design_theta), bool) if res.design_used is None
            else res.design_used)
    design = [{**{n: float(np.exp(t[i])) for i, n in enumerate(names)},
               **{k: res.design_values[k][j] for k in res.design_values},
               **{f"var:{k}": res.design_mc_var[k][j] for k in res.design_mc_var},
               "wave": int(wave[j]), "in_emulator": bool(used[j])}
              for j, t in enumerate(res.design_theta)]
    rec = {
        "what": "posterior over population parameters of the virtual CLEVER trial",
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit,
        "package_version": __version__,
        "command": command,
        "seed": seed,
        "parameter_file": params.source,
        "method": __doc__.split("Method:")[1].strip(),
        "units": "natural: delta_max and k_dr in 1/day, load_median in cells, load_sigma "
                 "(log-SD) and cv_* dimensionless; draws and design in the same units",
        "parameters": list(names),
        "priors": res.prior.describe(),
        "targets": res.settings.get("targets"),
        "settings": {k: v for k, v in res.settings.items() if k != "targets"},
        "diagnostics": {k: v for k, v in res.diagnostics.items() if k != "emulator_cv"},
        "emulator_cv": res.diagnostics.get("emulator_cv"),
        "posterior_median": res.values(),
        "summary": res.summary.to_dict(orient="records"),
        "posterior_predictive_emulated": res.predictive.to_dict(orient="records"),
        "design": design,
        "draws": {n: np.exp(res.draws[n]).tolist() for n in names},
    }
    return _jsonable(rec)


def write_netcdf(res: PosteriorResult, path, attrs: dict) -> None:
    """The arviz InferenceData (log-unit draws, sample stats) as NetCDF, with provenance."""
    from dormancy_model.io import atomic_write_netcdf

    idata = res.idata
    for k, v in attrs.items():
        idata.posterior.attrs[k] = str(v)
    atomic_write_netcdf(idata, path)
