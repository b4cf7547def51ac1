"""The statistics of a VPC (NumPy): censoring-aware percentiles and their prediction intervals,
the fraction below the detection limit, Kaplan-Meier curves on a day grid, NPDE.

Below the limit (BLQ): counts are compared on the log scale in cells (count / sampled
fraction) against the bin's limit (the largest detection limit / sampled fraction among its
rows); a censored count, or one below that limit, is BLQ. A percentile (linear interpolation
between order statistics, numpy's default) is BLQ when the lower of the two order statistics it
interpolates is BLQ (the interpolated value is not known then), coded -inf. The prediction
interval of a statistic is the `level` central interval of its values over the replicates,
with BLQ below every value (a bound that falls between a BLQ replicate and a quantified one is
BLQ too). An observed statistic is inside its interval when lo <= observed <= hi with these
codes (an observed BLQ percentile is inside when the lower bound is BLQ).

NPDE (normalised prediction distribution errors; Brendel et al. 2006, censored data as in
Nguyen et al. 2012): per animal, its observed log counts and the replicates' latent log counts
are decorrelated by the Cholesky factor of the replicates' covariance, pde = the fraction of
replicates below the observation (clipped to [1 / 2R, 1 - 1 / 2R]), npde = Phi^-1(pde). A
censored observation is first imputed: its pd is drawn uniformly below the replicates' fraction
below the limit and the value taken as that quantile of the replicates.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from dormancy_model.model.survival import kaplan_meier

PERCENTILES = (10.0, 50.0, 90.0)
BLQ = -np.inf
SENTINEL = -1e300  # BLQ inside interpolations (finite, so no inf - inf)


def censored_percentiles(log_cells, blq, log_limit, q=PERCENTILES):
    """Percentiles `q` (in %) over the last axis of `log_cells` (..., n) with BLQ rows `blq`
    (..., n) bool; BLQ (or below `log_limit`) percentiles are -inf. Returns (..., len(q))."""
    x = np.where(np.asarray(blq) | (log_cells < log_limit), BLQ, log_cells)
    s = np.sort(x, axis=-1)
    n = s.shape[-1]
    out = []
    for p in q:
        h = (n - 1) * p / 100.0
        lo = int(np.floor(h))
        hi = min(lo + 1, n - 1)
        a, b = s[..., lo], s[..., hi]
        with np.errstate(invalid="ignore"):
            v = np.where(np.isfinite(a), a + (h - lo) * (b - a), BLQ)
        out.append(v)
    return np.stack(out, axis=-1)


def prediction_interval(values, log_limit=None, level: float = 0.9, axis: int = 0):
    """(lo, median, hi) of `values` over the replicate `axis`: the central `level` interval and
    the median (numpy's linear quantiles), with -inf (BLQ) below every value; any bound below
    `log_limit` (or interpolated from a BLQ replicate) is -inf."""
    v = np.where(np.isneginf(values), SENTINEL, values)
    qs = np.quantile(v, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=axis)
    bad = qs < (SENTINEL / 2 if log_limit is None else np.maximum(log_limit, SENTINEL / 2))
    return tuple(np.where(bad, BLQ, qs))


def inside(observed, lo, hi):
    """lo <= observed <= hi, -inf (BLQ) below every value; False where observed is NaN."""
    return (np.asarray(lo) <= observed) & (observed <= np.asarray(hi))


def km_on_grid(durations, events, days):
    """Kaplan-Meier relapse-free fraction at `days` (right-continuous step function)."""
    km = kaplan_meier(durations, events)
    k = np.searchsorted(km.times, np.asarray(days), side="right") - 1
    return km.survival[np.clip(k, 0, km.times.size - 1)]


def npde(obs_log, obs_censored, log_limit, sim_log, animal, rng):
    """NPDE of each observation (n,): `obs_log` observed log counts (any value where
    censored), `obs_censored` (n,), `log_limit` (n,) their log detection limits, `sim_log`
    (R, n) the replicates' latent log counts, `animal` (n,) labels grouping rows of one animal
    (decorrelated together), `rng` a numpy Generator (censored imputation)."""
    sim_log = np.asarray(sim_log, float)
    R, n = sim_log.shape
    y = np.array(obs_log, float)
    cens = np.asarray(obs_censored, bool)
    for j in np.flatnonzero(cens):
        pd_lim = max(np.mean(sim_log[:, j] < log_limit[j]), 1.0 / R)
        y[j] = np.quantile(sim_log[:, j], rng.uniform(0.0, pd_lim))
    out = np.full(n, np.nan)
    animal = np.asarray(animal)
    for a in np.unique(animal):
        idx = np.flatnonzero(animal == a)
        S = sim_log[:, idx]
        m = S.mean(axis=0)
        cov = np.atleast_2d(np.cov(S, rowvar=False))
        try:
            L = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:  # degenerate (identical replicates): no decorrelation
            L = np.diag(np.sqrt(np.maximum(np.diag(cov), 1e-300)))
        Sd = np.linalg.solve(L, (S - m).T).T
        yd = np.linalg.solve(L, y[idx] - m)
        pde = np.mean(Sd < yd, axis=0)
        out[idx] = stats.norm.ppf(np.clip(pde, 0.5 / R, 1 - 0.5 / R))
    return out
