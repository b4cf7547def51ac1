"""Small two-group right-censored samples with tied times (rounded), for survival tests."""

import numpy as np


def tied_samples(seed=11, repeats=5, n=60):
    """Yield (durations, events, group) with exponential times (rates 1 and 0.4) and uniform
    censoring, rounded to 0.1 so that ties occur."""
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        g = rng.integers(0, 2, n)
        t = np.round(rng.exponential(1 / np.where(g == 1, 0.4, 1.0)), 1)
        c = np.round(rng.uniform(0.2, 3, n), 1)
        yield np.minimum(t, c), t <= c, g
