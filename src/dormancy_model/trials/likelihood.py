"""Likelihood of each published CLEVER statistic given the model's per-patient quantities.

Pure functions (JAX numpy, also fine on NumPy inputs and under `jax.grad`), used by the
posterior calibration (`trials/posterior.py`). Published numbers (DeMichele et al., Nat Med 2025
[S1]; ESMO 2023 244MO [S2]) and how each enters:

* screening positivity 55/184: Binomial(55; 184, p_scr), p_scr = P(one aspirate DTC+) of a
  screened candidate (exact for the population law, `screening_probability`);
* per-arm 3-year RFS 91.7 / 92.9 / 100% (HCQ n=15 / EVE n=15 / HCQ+EVE n=21, Kaplan-Meier
  landmarks): read as the binomial number relapse-free by 3 years among the patients at risk.
  A KM estimate with one event is 1 - 1/n_at_risk: 91.7% = 11/12 and 92.9% = 13/14 give the
  numbers at risk (12, 14); for the 100% arm (no event) the number at risk at 3 years is the
  arm's expected number followed that long (n x P(censoring > 3 y) under the design's follow-up
  law, 21 x 0.635 -> 13). The model side is p_a = the pooled KM 3-year RFS of arm a over all
  replicated trials (a per-patient probability with censoring handled as in the trial). Chosen
  over a synthetic likelihood because the published statistic IS a (censored) proportion and
  one or zero events per arm make any Gaussian approximation poor.
* recurrences: 2 in 51 over follow-up. The two events are the landmark events above (1 + 1 + 0),
  so counting "2 in 51" again would use them twice. The relapse term is the remainder: 0
  relapses after 3 years among the n_late patients relapse-free and followed beyond 3 years
  (expected number: (51 - 2) x P(censoring > 3 y) -> 31), Binomial(0; n_late, q_late) with
  q_late = the model's P(relapse between 3 years and censoring | relapse-free at 3 years);
  `relapse_count_loglik` is the plain binomial of k in n for either reading.
* HR of relapse cleared vs persistent 0.21 (95% CI 0.01-3.4): the reported interval as the
  sampling distribution of the estimate, log 0.21 ~ Normal(log HR_model, se^2), se from the CI
  width, (ln 3.4 - ln 0.01) / (2 x 1.96) = 1.49.
* DTC reductions at C3 80 / 78 / 87% (Poisson-regression estimates, no CI published): synthetic
  likelihood, z = ln(1 - r) (the Poisson regression's beta_post; r clipped at 0.99 because an
  arm with no post-treatment DTC gives r = 1) ~ Normal(mean, sd^2) fitted to the replicated
  trials' per-trial z at each parameter point.
* DTC clearance, 80% (Penn Medicine press release 2025: "clear dormant tumor cells from 80
  percent of the study participants"; no count, no interval): read as the fraction of the 51
  treated patients DTC-negative at their last on-treatment aspirate (C6, or C12 after the
  extension), the reading `docs/validation.md` compares with, and entered as Binomial(41; 51,
  p_clear) (0.80 x 51 = 40.8; assumption: the press release's denominator is every treated
  participant). p_clear = the pooled fraction over the replicated trials. It is the one
  published number that says how many patients persist through treatment, so it is what pins
  the between-patient sensitivity spread (cv_delta_max) and the load spread.
* Untreated prognosis (`PublishedTargets.prognosis`; no CLEVER number says how often untreated
  screen-positive survivors relapse, and without it the trial data alone let the load spread
  grow until DTC-positivity predicts relapse far more strongly than it does in the clinic):
  - the relapse-rate ratio, screen-positive vs screen-negative, over 5 years untreated: Braun et
    al. NEJM 2005 [S4] report an incidence-rate ratio of 2.13 for DFS (pooled, n = 4,703, no CI
    in the abstract; P < 0.001). Entered as ln 2.13 ~ Normal(ln IRR_model, s^2) with s = (ln 3 -
    ln 1.5) / (2 x 1.96) = 0.177: the validation document's tolerance 1.5-3 read as a 95%
    interval. Assumption: s is not Braun's sampling error (about 0.06 with ~1,000 events) but
    the transport of a ratio measured at diagnosis over 10 years to CLEVER's survivors over 5;
  - the 5-year relapse-free fraction of the untreated screen-positive: the range 0.62-0.85
    derived in docs/prognosis.md (Braun's ratio applied to an assumed 1.5-4.5%/year relapse
    rate of DTC-negative high-risk survivors), read as the 95% interval of a normal on the logit
    scale (mean 1.11, sd 0.316). A derived constraint, not a published statistic; the 3-year
    range comes from the same rate and is not entered twice.
  The model side (`posterior.prognosis_quantities`): an untreated cohort of screened candidates
  per design point (agent model, as `untreated.untreated_cohort`).

Emulator uncertainty is propagated: a Gaussian term adds the emulator's variance to the
sampling variance; a binomial term whose probability is emulated on the logit scale with mean m
and variance v is marginalised over logit p ~ Normal(m, v) by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp

Z975 = 1.959963984540054
REDUCTION_CAP = 0.99  # r above this (an arm with no post-treatment DTC: r = 1) is read as 0.99


# ----------------------------------------------------------------------------- building blocks
def binomial_loglik(k, n, p):
    """log Binomial(k; n, p)."""
    k, n, p = jnp.asarray(k, float), jnp.asarray(n, float), jnp.asarray(p, float)
    logc = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return logc + jnp.where(k > 0, k * jnp.log(p), 0.0) + jnp.where(n - k > 0,
                                                                    (n - k) * jnp.log1p(-p), 0.0)


def _log_sigmoid(x):
    return -jnp.logaddexp(0.0, -x)


@functools.lru_cache(maxsize=4)
def _gauss_hermite(order: int):
    x, w = np.polynomial.hermite.hermgauss(order)  # weight exp(-x^2)
    return x, np.log(w / np.sqrt(np.pi))


def binomial_logit_loglik(k, n, logit_mean, logit_var=0.0, order: int = 11):
    """log E[Binomial(k; n, sigmoid(eta))], eta ~ Normal(logit_mean, logit_var) (Gauss-Hermite;
    logit_var = 0 gives the plain binomial at p = sigmoid(logit_mean))."""
    k, n = jnp.asarray(k, float), jnp.asarray(n, float)
    x, lw = _gauss_hermite(order)
    eta = jnp.asarray(logit_mean, float)[..., None] + jnp.sqrt(
        2.0 * jnp.asarray(logit_var, float))[..., None] * x
    logc = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    ll = logc[..., None] + k[..., None] * _log_sigmoid(eta) + (n - k)[..., None] * _log_sigmoid(
        -eta)
    return logsumexp(ll + lw, axis=-1)


def normal_loglik(x, mean, var):
    """log Normal(x; mean, var)."""
    x, mean, var = jnp.asarray(x, float), jnp.asarray(mean, float), jnp.asarray(var, float)
    return -0.5 * (jnp.log(2 * jnp.pi * var) + (x - mean) ** 2 / var)


# ----------------------------------------------------------------------------- per statistic
def screening_probability(load_median, load_sigma, aspirate_fraction, dispersion=0.0,
                          order: int = 60):
    """P(one screening aspirate sees >= 1 DTC): the candidate's cells are Poisson(N),
    N ~ LogNormal(ln load_median, load_sigma^2), the aspirate Poisson(f x cells x G) with G
    ~ Gamma of mean 1 and variance a = `dispersion` (negative binomial, `observables.
    p_dtc_positive`; a = 0: G = 1). Given G, P(none seen) = exp(-N (1 - e^(-f G))); with
    f G << 1 (f = 2.7e-6) this is exp(-fe G N), fe = 1 - e^-f (relative error < f G / 2),
    so P = E[1 - (1 + a fe N)^(-1/a)] (exactly E[1 - exp(-fe N)] at a = 0), Gauss-Hermite
    in ln N (`population.sample_patients`)."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    fe = -np.expm1(-float(aspirate_fraction))
    m = fe * jnp.asarray(load_median, float)[..., None] * jnp.exp(
        jnp.asarray(load_sigma, float)[..., None] * x)
    a = float(dispersion)
    p = -jnp.expm1(-jnp.log1p(a * m) / a) if a > 0 else -jnp.expm1(-m)
    return jnp.sum(w * p, axis=-1) / math.sqrt(2 * math.pi)


def screening_loglik(positive, screened, p):
    """Screening positivity `positive`/`screened` (CLEVER 55/184): binomial."""
    return binomial_loglik(positive, screened, p)


def relapse_count_loglik(relapses, n, p):
    """`relapses` in `n` patients, each relapsing with probability p over follow-up: binomial."""
    return binomial_loglik(relapses, n, p)


def hr_se_from_ci(lower: float, upper: float, level: float = 0.95) -> float:
    """Standard error of log HR from a symmetric (on the log scale) confidence interval."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + level / 2)
    return float((math.log(upper) - math.log(lower)) / (2 * z))


def hr_loglik(hr, lower, upper, log_hr_model, extra_var=0.0, level: float = 0.95):
    """Published HR with its CI: log hr ~ Normal(log_hr_model, se^2 + extra_var)."""
    se = hr_se_from_ci(lower, upper, level)
    return normal_loglik(math.log(hr), log_hr_model, se ** 2 + jnp.asarray(extra_var, float))


def reduction_to_z(r, cap: float = REDUCTION_CAP):
    """The synthetic likelihood's scale for a DTC reduction r: z = ln(1 - min(r, cap))."""
    r = np.asarray(r, float)
    return np.log1p(-np.minimum(r, cap))


def synthetic_loglik(z_obs, mean, var):
    """Gaussian synthetic likelihood of an observed statistic (already on its scale)."""
    return normal_loglik(z_obs, mean, var)


def landmark_counts(km: float, n_arm: int, p_followed: float) -> tuple[int, int]:
    """(relapse-free, at risk) read from a published KM landmark (see the module doc): a KM
    value below 1 with one event step is 1 - 1/n_at_risk; a value of 1 gives the expected
    number followed to the landmark, round(n_arm x p_followed)."""
    if km >= 1.0:
        n = max(1, int(round(n_arm * p_followed)))
        return n, n
    n = int(round(1.0 / (1.0 - km)))
    if not 1 < n <= n_arm:
        raise ValueError(f"KM {km} is not one event among at most {n_arm} at risk")
    return n - 1, n


def km_landmark_stats(times, events, t: float) -> tuple[float, float]:
    """(KM S(t), its Greenwood variance) of one cohort."""
    d = np.asarray(times, float)
    e = np.asarray(events, bool)
    et, deaths = np.unique(d[e], return_counts=True)
    at_risk = d.size - np.searchsorted(np.sort(d), et, side="left")
    keep = et <= t
    if d.size == 0:
        return float("nan"), float("nan")
    s = float(np.prod(1.0 - deaths[keep] / at_risk[keep]))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.sum(deaths[keep] / (at_risk[keep] * (at_risk[keep] - deaths[keep])))
    return s, float(s * s * g)


def late_relapse_stats(times, events, t: float) -> tuple[int, int]:
    """(relapses after t, patients relapse-free and still followed at t) of one cohort."""
    d = np.asarray(times, float)
    e = np.asarray(events, bool)
    at_risk = d > t
    return int(np.sum(at_risk & e)), int(np.sum(at_risk))


# ----------------------------------------------------------------------------- the targets
ARMS = ("HCQ", "EVE", "HCQ+EVE")


def p_followed(design, t_days: float) -> float:
    """P(administrative censoring > t_days) under the design's follow-up law (censoring month
    = min + (max - min) u^(1/a), u uniform; `protocol.trial`)."""
    from dormancy_model.trials.design import MONTH_DAYS

    lo, hi = design.followup_min_months, design.followup_max_months
    q = (t_days / MONTH_DAYS - lo) / (hi - lo)
    return float(1.0 - np.clip(q, 0.0, 1.0) ** design.followup_beta_a)


@dataclass(frozen=True)
class PublishedTargets:
    """The published statistics as likelihood data (see the module doc): screening
    (positive, screened); per-arm 3-year landmark (relapse-free, at risk); late relapses
    (relapses after 3 years, at risk after 3 years); HR (estimate, lower, upper of the 95% CI);
    per-arm DTC reduction at C3. `published`: the numbers as printed, for the record."""

    screen: tuple = (55, 184)
    rfs: dict = field(default_factory=dict)
    late: tuple = (0, 31)
    hr: tuple = (0.21, 0.01, 3.4)
    reduction_C3: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    cleared: tuple | None = None  # (DTC- at the last on-treatment aspirate, treated); None: off
    # untreated prognosis: {"irr": (point, lo95, hi95), "rfs5_positive": (lo95, hi95)}; None: off
    prognosis: dict | None = None

    @classmethod
    def clever(cls, p_followed_3y: float = 0.635) -> PublishedTargets:
        """CLEVER [S1, S2]; `p_followed_3y`: P(censoring > 3 y) of the follow-up law
        (`p_followed(clever_design(), 3 * 365.25)` = 0.635)."""
        km = {"HCQ": 0.917, "EVE": 0.929, "HCQ+EVE": 1.0}
        arm_n = {"HCQ": 15, "EVE": 15, "HCQ+EVE": 21}
        rfs = {a: landmark_counts(km[a], arm_n[a], p_followed_3y) for a in ARMS}
        relapses, n = 2, 51
        landmark_events = sum(n_ - k for k, n_ in rfs.values())
        late = (relapses - landmark_events, int(round((n - relapses) * p_followed_3y)))
        return cls(screen=(55, 184), rfs=rfs, late=late, hr=(0.21, 0.01, 3.4),
                   reduction_C3={"HCQ": 0.80, "EVE": 0.78, "HCQ+EVE": 0.87},
                   cleared=(int(round(0.80 * n)), n),
                   prognosis={"irr": (2.13, 1.5, 3.0), "rfs5_positive": (0.62, 0.85)},
                   published={"cleared_eot": "80% of participants (press release)",
"screen_positivity": "55/184", "rfs_3y": km, "arm_n": arm_n,
                              "relapses": f"{relapses} in {n}",
                              "hr_cleared": "0.21 (95% CI 0.01-3.4)",
                              "reduction_C3": {"HCQ": 0.80, "EVE": 0.78, "HCQ+EVE": 0.87}})

    def describe(self) -> dict:
        return {
            "published": self.published,
            "screen_positivity": {"positive": self.screen[0], "screened": self.screen[1],
                                  "likelihood": "binomial in P(aspirate DTC+) (exact)"},
            "rfs_3y": {a: {"relapse_free": c[0], "at_risk": c[1],
                           "likelihood": "binomial in the pooled KM 3-year RFS (emulated)"}
                       for a, c in self.rfs.items()},
            "relapses": {"late_relapses": self.late[0], "at_risk_after_3y": self.late[1],
                         "likelihood": "binomial: relapses after the 3-year landmark "
                         "(the landmark events are in rfs_3y)"},
            "hr_cleared": {"hr": self.hr[0], "ci95": list(self.hr[1:]),
                           "se_log_hr": hr_se_from_ci(*self.hr[1:]),
                           "likelihood": "normal on log HR around the pooled model log HR"},
            "reduction_C3": {a: {"published": v, "z": float(reduction_to_z(v)),
                                 "likelihood": "synthetic: Gaussian in ln(1 - r) over "
                                 "replicated trials"}
                             for a, v in self.reduction_C3.items()},
            **({"cleared_eot": {
                "cleared": self.cleared[0], "treated": self.cleared[1],
                "likelihood": "binomial in the pooled fraction DTC- at the last on-treatment "
                "aspirate (emulated; the count 41/51 read from the press release's 80%)"}}
               if self.cleared is not None else {}),
            **({"prognosis_irr": {
                "irr": self.prognosis["irr"][0], "range95": list(self.prognosis["irr"][1:]),
                "sd_log": prognosis_sd(*self.prognosis["irr"][1:]),
                "likelihood": "normal on log IRR (screen-positive vs negative, untreated, 5 "
                "years; Braun 2005, the range as a 95% interval: transport, assumption)"},
                "prognosis_rfs5_positive": {
                "range95": list(self.prognosis["rfs5_positive"]),
                "likelihood": "normal on logit 5-year RFS of the untreated screen-positive "
                "(range derived in docs/prognosis.md, read as a 95% interval)"}}
               if self.prognosis is not None else {}),
        }


def prognosis_sd(lo: float, hi: float, scale=math.log) -> float:
    """SD of a normal whose 95% interval is (lo, hi) on `scale`."""
    return float((scale(hi) - scale(lo)) / (2 * Z975))


def _logit_np(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def range_loglik(x_model, lo: float, hi: float, extra_var=0.0, scale=math.log):
    """A range read as a 95% interval: scale(mid) ~ Normal(x_model, sd^2 + extra_var), mid and
    sd on `scale` (x_model already on that scale)."""
    mid = 0.5 * (scale(lo) + scale(hi))
    sd = prognosis_sd(lo, hi, scale)
    return normal_loglik(mid, x_model, sd ** 2 + jnp.asarray(extra_var, float))


def joint_loglik(pred: dict, targets: PublishedTargets, *, parts: bool = False):
    """Sum of the log-likelihoods of every published statistic given model predictions.

    `pred` (JAX scalars): "p_screen"; for each arm a "logit_rfs:a" and its emulator variance
    "logit_rfs:a:var"; "logit_late" (+ ":var"); "log_hr" (+ ":var"); "z_mean:a" (+ ":var")
    and "z_logsd:a" (+ ":var"; the synthetic variance is E[sd^2] = exp(2 m + 2 v) over the
    emulator's normal for ln sd); with `targets.cleared`, "logit_cleared" (+ ":var"); with
    `targets.prognosis`, "log_irr" and "logit_rfs5_pos" (+ ":var"). Returns the total, or a
    dict of terms with `parts`.
    """
    out = {"screen_positivity": screening_loglik(*targets.screen, pred["p_screen"])}
    for a, (k, n) in targets.rfs.items():
        out[f"rfs_3y:{a}"] = binomial_logit_loglik(k, n, pred[f"logit_rfs:{a}"],
                                                   pred[f"logit_rfs:{a}:var"])
    k, n = targets.late
    out["relapses"] = binomial_logit_loglik(k, n, pred["logit_late"], pred["logit_late:var"])
    out["hr_cleared"] = hr_loglik(*targets.hr, pred["log_hr"], pred["log_hr:var"])
    for a, r in targets.reduction_C3.items():
        sd2 = jnp.exp(2.0 * (pred[f"z_logsd:{a}"] + pred[f"z_logsd:{a}:var"]))
        var = sd2 + pred[f"z_mean:{a}:var"]
        out[f"reduction_C3:{a}"] = synthetic_loglik(float(reduction_to_z(r)),
                                                    pred[f"z_mean:{a}"], var)
    if targets.cleared is not None:
        k, n = targets.cleared
        out["cleared_eot"] = binomial_logit_loglik(k, n, pred["logit_cleared"],
                                                   pred["logit_cleared:var"])
    if targets.prognosis is not None:
        irr, lo, hi = targets.prognosis["irr"]
        out["prognosis_irr"] = normal_loglik(math.log(irr), pred["log_irr"],
                                             prognosis_sd(lo, hi) ** 2 + pred["log_irr:var"])
        lo, hi = targets.prognosis["rfs5_positive"]
        out["prognosis_rfs5_positive"] = range_loglik(pred["logit_rfs5_pos"], lo, hi,
                                                      pred["logit_rfs5_pos:var"], _logit_np)
    if parts:
        return out
    return sum(out.values())
