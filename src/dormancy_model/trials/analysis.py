"""Trial analysis as the CLEVER investigators did it, on a per-patient table.

* DTC clearance per arm: fraction of treated patients with no DTC in the aspirate at an
  assessment (and, because the model knows it, the fraction with truly no cell left).
* DTC reduction: Poisson regression (log link) of aspirate counts on an indicator of the
  post-treatment assessment (after cycle 3), per arm; reduction = 1 - exp(beta_post). The GLM is
  fitted by Newton / IRLS here (no statsmodels); for a single binary covariate the MLE equals the
  closed form  exp(beta_post) = sum(post counts) / sum(baseline counts)  (tested).
* Posterior probability of reduction versus observation: Bayesian Gamma-Poisson model of the
  post-assessment DTC rate per aspirate in each arm, lambda ~ Gamma(a0, b0) a priori (default
  a0 = 0.5, b0 = 0.1 per aspirate: vague, mean 5 DTCs per aspirate; the published priors were
  not found), posterior Gamma(a0 + sum y, b0 + n). P(lambda_arm < (1 - r) lambda_obs) is the
  regularised incomplete beta function of k / (1 + k), k = (1 - r) b_arm / b_obs (exact).
* 3-year RFS per arm: Kaplan-Meier (`model.survival.survival_at`, NumPy, tested equal to
  lifelines, which costs ~15 ms per fit).
* Hazard ratio of relapse, DTC cleared vs persistent: Cox regression with one binary covariate
  (lifelines `cox_hazard_ratio`; the per-trial loop uses `cox_binary`, Newton on the same Efron
  partial likelihood, tested equal); NaN (not estimable) when there is no relapse, or when all
  relapses fall in one group (the MLE is then 0 or infinity).

Times are in days.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import special

from dormancy_model.model.survival import survival_at

THREE_YEARS_DAYS = 3 * 365.25
DEFAULT_PRIOR = (0.5, 0.1)  # Gamma(shape, rate per aspirate) on a DTC rate


class PoissonFit(NamedTuple):
    coef: np.ndarray
    se: np.ndarray
    loglik: float
    converged: bool
    iterations: int


def poisson_glm(X, y, offset=None, *, max_iter: int = 100, tol: float = 1e-10) -> PoissonFit:
    """Maximum-likelihood Poisson regression with log link by Newton-Raphson (= IRLS).

    X: (n, k) design matrix, y: (n,) counts, offset: (n,) log exposure. Step-halving keeps the
    log-likelihood increasing. `converged` is False when a coefficient runs off to -inf (e.g. a
    group with only zero counts), in which case `coef` holds the last iterate.
    """
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    off = np.zeros(len(y)) if offset is None else np.asarray(offset, float)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError("X must be (n, k) and y (n,)")
    if np.any(y < 0):
        raise ValueError("counts must be >= 0")

    def loglik(b):
        eta = X @ b + off
        return float(np.sum(y * eta - np.exp(eta) - special.gammaln(y + 1)))

    # start from the intercept-only fit when the first column is constant
    b = np.zeros(X.shape[1])
    if np.allclose(X[:, 0], 1.0) and y.sum() > 0:
        b[0] = np.log(y.mean()) - np.mean(off)
    ll = loglik(b)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        mu = np.exp(X @ b + off)
        grad = X.T @ (y - mu)
        hess = X.T @ (X * mu[:, None])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:
            nb = b + t * step
            nll = loglik(nb)
            if nll >= ll - 1e-12:
                break
            t *= 0.5
        b, ll_old, ll = nb, ll, nll
        if np.max(np.abs(t * step)) < tol * (1 + np.max(np.abs(b))) or abs(ll - ll_old) < 1e-14:
            converged = bool(np.all(np.abs(b) < 30))
            break
    mu = np.exp(X @ b + off)
    hess = X.T @ (X * mu[:, None])
    with np.errstate(all="ignore"):
        try:
            se = np.sqrt(np.diag(np.linalg.inv(hess)))
        except np.linalg.LinAlgError:
            se = np.full(X.shape[1], np.nan)
    return PoissonFit(b, se, ll, converged, it)


def dtc_reduction(baseline_counts, post_counts) -> float:
    """Estimated fractional reduction of the DTC count rate from baseline to a post assessment.

    Poisson regression of the stacked counts on [1, post]; returns 1 - exp(beta_post). When all
    post counts are zero the MLE is beta -> -inf and the reduction is exactly 1. NaN when there
    are no baseline DTCs at all (not estimable) or no patients.
    """
    b = np.asarray(baseline_counts, float)
    p = np.asarray(post_counts, float)
    b, p = b[np.isfinite(b)], p[np.isfinite(p)]
    if b.size == 0 or p.size == 0 or b.sum() == 0:
        return float("nan")
    if p.sum() == 0:
        return 1.0
    y = np.concatenate([b, p])
    X = np.column_stack([np.ones(y.size), np.r_[np.zeros(b.size), np.ones(p.size)]])
    fit = poisson_glm(X, y)
    return float(1.0 - np.exp(fit.coef[1]))


def gamma_posterior(counts, prior=DEFAULT_PRIOR) -> tuple[float, float]:
    """(shape, rate) of the Gamma posterior of a Poisson rate per aspirate."""
    c = np.asarray(counts, float)
    c = c[np.isfinite(c)]
    return prior[0] + c.sum(), prior[1] + c.size


def posterior_prob_reduction(arm_counts, observation_counts, *, min_reduction: float = 0.0,
                             prior=DEFAULT_PRIOR) -> float:
    """P(lambda_arm < (1 - min_reduction) * lambda_obs | data), Gamma-Poisson, exact.

    With U = b_arm lambda_arm ~ Gamma(a_arm), V = b_obs lambda_obs ~ Gamma(a_obs) independent,
    U / (U + V) ~ Beta(a_arm, a_obs), so the probability is I_x(a_arm, a_obs) with
    x = k / (1 + k), k = (1 - min_reduction) b_arm / b_obs.
    """
    if np.asarray(observation_counts).size == 0:
        return float("nan")
    a1, b1 = gamma_posterior(arm_counts, prior)
    a2, b2 = gamma_posterior(observation_counts, prior)
    k = (1.0 - min_reduction) * b1 / b2
    return float(special.betainc(a1, a2, k / (1.0 + k)))


class CoxResult(NamedTuple):
    hr: float
    lower95: float
    upper95: float
    estimable: bool


def cox_hazard_ratio(durations, events, group, *, penalizer: float = 0.0) -> CoxResult:
    """Hazard ratio of `group` (1 vs 0) by Cox regression (lifelines, Efron ties).

    Not estimable (NaN) when there is no event, or when one group is empty. When all events
    fall in one group the MLE diverges; lifelines then stops at a large |log HR| and the
    result is flagged not estimable unless `penalizer` > 0 (ridge on log HR) is given.
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    d = np.asarray(durations, float)
    e = np.asarray(events, bool)
    g = np.asarray(group, float)
    nan = CoxResult(float("nan"), float("nan"), float("nan"), False)
    if e.sum() == 0 or g.min() == g.max():
        return nan
    separated = e[g == 1].sum() == 0 or e[g == 0].sum() == 0
    if separated and penalizer == 0.0:
        return nan
    df = pd.DataFrame({"T": d, "E": e, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cph = CoxPHFitter(penalizer=penalizer).fit(df, "T", "E")
        except Exception:  # lifelines ConvergenceError and friends
            return nan
    beta = float(cph.params_["g"])
    ci = cph.confidence_intervals_.loc["g"].to_numpy()
    return CoxResult(float(np.exp(beta)), float(np.exp(ci[0])), float(np.exp(ci[1])), True)


def cox_binary(durations, events, group, *, max_iter: int = 50) -> CoxResult:
    """Cox regression with one covariate by Newton on the Efron partial likelihood (lifelines'
    default tie handling); tested equal to `cox_hazard_ratio`. Same estimability rules."""
    d = np.asarray(durations, float)
    e = np.asarray(events, bool)
    x = np.asarray(group, float)
    nan = CoxResult(float("nan"), float("nan"), float("nan"), False)
    if e.sum() == 0 or x.min() == x.max() or e[x == 1].sum() == 0 or e[x == 0].sum() == 0:
        return nan
    times = np.unique(d[e])
    risk = d[None, :] >= times[:, None]  # (J, n)
    tied = (d[None, :] == times[:, None]) & e[None, :]
    ndead = tied.sum(axis=1)
    xsum = (tied * x).sum()

    def derivs(b):
        w = np.exp(b * x)
        s0, s1 = (risk * w).sum(1), (risk * w * x).sum(1)
        t0, t1 = (tied * w).sum(1), (tied * w * x).sum(1)
        ll, g, h = b * xsum, xsum, 0.0
        for j in range(times.size):
            for k in range(ndead[j]):
                phi = k / ndead[j]
                a0, a1 = s0[j] - phi * t0[j], s1[j] - phi * t1[j]  # x is 0/1 so x^2 = x
                ll -= np.log(a0)
                g -= a1 / a0
                h -= a1 / a0 - (a1 / a0) ** 2
        return ll, g, h

    b = 0.0
    ll, g, h = derivs(b)
    for _ in range(max_iter):
        step = -g / h if h < 0 else 0.0
        t = 1.0
        while t > 1e-8:
            nll, ng, nh = derivs(b + t * step)
            if nll >= ll - 1e-12:
                break
            t *= 0.5
        b, ll, g, h = b + t * step, nll, ng, nh
        if abs(t * step) < 1e-10:
            break
    if not np.isfinite(b) or abs(b) > 20 or h >= 0:
        return nan
    se = 1.0 / np.sqrt(-h)
    return CoxResult(float(np.exp(b)), float(np.exp(b - 1.959963984540054 * se)),
                     float(np.exp(b + 1.959963984540054 * se)), True)


# ----------------------------------------------------------------------------- whole trials
ARM_METRICS = ("n", "clearance_C3", "clearance_C6", "clearance_eot", "cleared_true_eot",
               "extension_fraction", "reduction_C3", "posterior_prob", "posterior_prob_80",
               "rfs_3y", "relapses")


def analyze_one_trial(pat: pd.DataFrame, screening: pd.DataFrame | None = None) -> list[dict]:
    """Per-arm endpoints of one trial (rows: each arm, 'observation', and 'all treated').

    clearance_C3: fraction DTC- in the aspirate after cycle 3; clearance_C6: DTC- at the last
    planned assessment (C6; DTC+ there means persistent and triggers the extension);
    clearance_eot: DTC- at the last on-treatment aspirate (C6, or C12 after an extension);
    cleared_true_eot: no cell left at the
    end of treatment (known only to the model); reduction_C3: Poisson-regression reduction of
    DTC counts baseline -> C3; posterior_prob(_80): P(C3 DTC rate below (20% of) the observation
    arm's 3-month rate); posterior_prob_80_baseline: P(C3 rate below 20% of the same arm's
    screening rate); early_relapses: relapses before day 84 (3 cycles); rfs_3y: Kaplan-Meier
    3-year RFS; hr_cleared: Cox HR of relapse, cleared
    (DTC- at C6) vs persistent (DTC+ at C6), all treated patients of the trial pooled.
    """
    obs = pat[pat["arm"] == "observation"]
    obs_c3 = obs["count_C3"].to_numpy(float)
    treated = pat[pat["arm"] != "observation"]
    out = []

    def arm_row(name, g, is_obs=False):
        c3 = g["count_C3"].to_numpy(float) if "count_C3" in g else np.full(len(g), np.nan)
        row = dict(arm=name, n=len(g),
                   clearance_C3=float(np.mean(c3 == 0)) if np.isfinite(c3).all() else np.nan,
                   reduction_C3=dtc_reduction(g["baseline_count"], c3))
        if is_obs:
            return row
        row.update(
            clearance_C6=float(g["cleared_observed"].mean()),
            clearance_eot=float(g["cleared_eot_observed"].mean()),
            cleared_true_eot=float(g["cleared_true_eot"].mean()),
            extension_fraction=float(g["extension"].mean()),
            posterior_prob=posterior_prob_reduction(c3, obs_c3) if obs_c3.size else np.nan,
            posterior_prob_80=(posterior_prob_reduction(c3, obs_c3, min_reduction=0.8)
                               if obs_c3.size else np.nan),
            # the other reading of ESMO's endpoint: against the arm's own screening counts
            posterior_prob_80_baseline=posterior_prob_reduction(
                c3, g["baseline_count"].to_numpy(float), min_reduction=0.8),
            early_relapses=int((g["rfs_event"] & (g["rfs_time"] < 84.0)).sum()),
            rfs_3y=survival_at(g["rfs_time"], g["rfs_event"], THREE_YEARS_DAYS),
            relapses=int(g["rfs_event"].sum()))
        return row

    for name, g in treated.groupby("arm", sort=False):
        out.append(arm_row(name, g))
    if len(obs):
        out.append(arm_row("observation", obs, is_obs=True))
    allrow = arm_row("all treated", treated)
    cox = cox_binary(treated["rfs_time"], treated["rfs_event"],
                     treated["cleared_observed"].astype(float))
    allrow.update(hr_cleared=cox.hr, hr_lower95=cox.lower95, hr_upper95=cox.upper95)
    if screening is not None and len(screening):
        allrow["screen_positivity"] = float(screening["enrolled"].sum()
                                            / screening["screened"].sum())
    out.append(allrow)
    return out


def analyze_trials(result, progress=None) -> pd.DataFrame:
    """One row per replicated trial and arm (the trials.csv table)."""
    rows = []
    scr = result.screening.groupby("trial")
    pats = result.patients.groupby("trial", sort=True)
    for i, (t, pat) in enumerate(pats):
        for r in analyze_one_trial(pat, scr.get_group(t)):
            rows.append({"trial": int(t), **r})
        if progress:
            progress(i + 1, result.replicates, "analysis")
    return pd.DataFrame(rows)


def pooled_hazard_ratio(patients: pd.DataFrame) -> CoxResult:
    """Cox HR cleared vs persistent over all treated patients of all replicated trials (the
    model's HR with little sampling noise)."""
    tr = patients[patients["arm"] != "observation"]
    return cox_hazard_ratio(tr["rfs_time"], tr["rfs_event"], tr["cleared_observed"].astype(float))


def spread(trials: pd.DataFrame, metric: str, arm: str, q=(0.05, 0.5, 0.95)) -> tuple:
    """(5%, median, 95%) of a metric over replicated trials for one arm (NaN rows dropped)."""
    v = trials.loc[trials["arm"] == arm, metric].to_numpy(float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan,) * len(q)
    return tuple(float(x) for x in np.quantile(v, q))
