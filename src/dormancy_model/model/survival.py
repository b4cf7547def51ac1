"""Kaplan-Meier estimates of survival from right-censored times (NumPy).

`survival_at` gives S(t) at one time (the trial's per-replicate 3-year RFS, what-if pools);
`kaplan_meier` gives the step function with its exponential-Greenwood confidence band (fit and
trial figures). Both are tested equal to lifelines' `KaplanMeierFitter`
(tests/test_survival.py); lifelines itself costs ~15 ms a fit, too slow for loops over
replicated trials. Durations in any unit; events are True for an observed event, False for
censoring; an event and a censoring at the same time count the censored subject at risk.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats


class KaplanMeier(NamedTuple):
    """Step function (right-continuous, `where="post"`): S = survival[i] on [times[i],
    times[i+1]). Starts at (0, 1); one point per event time; ends at the last duration when
    that is after the last event. lower/upper: the pointwise confidence band."""

    times: np.ndarray
    survival: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _event_table(durations, events):
    """(durations, distinct event times, events at each, number at risk at each)."""
    d = np.asarray(durations, float)
    e = np.asarray(events, bool)
    times, deaths = np.unique(d[e], return_counts=True)
    at_risk = d.size - np.searchsorted(np.sort(d), times, side="left")
    return d, times, deaths, at_risk


def survival_at(durations, events, t: float) -> float:
    """Kaplan-Meier S(t); events at exactly t count (S is right-continuous). NaN for no data."""
    d, times, deaths, at_risk = _event_table(durations, events)
    if d.size == 0:
        return float("nan")
    keep = times <= t
    if not keep.any():
        return 1.0
    return float(np.prod(1.0 - deaths[keep] / at_risk[keep]))


def kaplan_meier(durations, events, alpha: float = 0.05) -> KaplanMeier:
    """The Kaplan-Meier step function and its 1 - alpha exponential Greenwood band
    (log(-log S) scale, as lifelines)."""
    d, times, deaths, at_risk = _event_table(durations, events)
    surv = np.cumprod(1.0 - deaths / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = deaths / (at_risk * (at_risk - deaths))
        var = np.cumsum(np.where(np.isinf(var), 0.0, var))
        v = np.log(surv)
        half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(var) / v
        lower = np.exp(-np.exp(np.log(-v) - half))
        upper = np.exp(-np.exp(np.log(-v) + half))
    lower, upper = (np.where(np.isnan(b), 1.0, b) for b in (lower, upper))
    t, s = np.r_[0.0, times], np.r_[1.0, surv]
    lo, hi = np.r_[1.0, lower], np.r_[1.0, upper]
    if d.size and d.max() > t[-1]:
        t, s, lo, hi = np.r_[t, d.max()], np.r_[s, s[-1]], np.r_[lo, lo[-1]], np.r_[hi, hi[-1]]
    return KaplanMeier(t, s, lo, hi)
