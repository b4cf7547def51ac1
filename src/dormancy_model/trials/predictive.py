"""Posterior predictive trials: replicated virtual CLEVER trials over posterior draws.

The posterior file (`dormancy calibrate --posterior`, `posterior.posterior_record`) holds draws
of the population parameters (natural units). A posterior predictive trial is one replicated
trial at one draw: `posterior_trials` takes `draws` parameter sets from the file (a seeded
choice without replacement over all chains) and simulates `replicates_per_draw` trials at each,
so the spread of a statistic over all trials carries the parameter uncertainty and the
replicate noise together. Each draw's trials use their own key (`fold_in(key, draw)`), the
trial numbers run over draws (trial = draw x replicates_per_draw + replicate) and the patient
and trial tables carry a `draw` column.

`PosteriorDraws` is the loaded file: names, the draws as an (n, d) array, the median, and the
`Population` at any draw (`population_at`: the same map the calibration used).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PosteriorDraws:
    names: tuple
    draws: np.ndarray  # (n, d), natural units
    source: str
    record: dict

    @classmethod
    def load(cls, path, params=None) -> PosteriorDraws:
        """Read and check a posterior file (`params.postfile.read_posterior`: one clear line
        naming the file and the field for any problem)."""
        from dormancy_model.params.postfile import read_posterior

        pf = read_posterior(path, params)
        x = np.stack([pf.draws[n] for n in pf.names], -1)
        return cls(tuple(pf.names), x, pf.source, {"describe": pf.describe(),
                                                   "sha256": pf.sha256,
                                                   "warnings": list(pf.warnings)})

    @property
    def n(self) -> int:
        return self.draws.shape[0]

    def median(self) -> dict:
        return {n: float(np.median(self.draws[:, i])) for i, n in enumerate(self.names)}

    def choose(self, k: int, seed: int) -> np.ndarray:
        """Indices of k draws (without replacement while k <= n), seeded."""
        rng = np.random.default_rng(seed)
        if k <= self.n:
            return np.sort(rng.choice(self.n, size=k, replace=False))
        return rng.choice(self.n, size=k, replace=True)

    def population(self, i, base=None):
        """The `Population` at draw i (or at a dict of natural values, e.g. `median()`)."""
        from dormancy_model.trials.population import Population
        from dormancy_model.trials.posterior import population_at

        v = i if isinstance(i, dict) else dict(zip(self.names, self.draws[i], strict=True))
        theta = np.log([v[n] for n in self.names])
        return population_at(theta, self.names, base or Population())


def posterior_trials(design, params, posterior: PosteriorDraws, *, key, draws: int,
                     replicates_per_draw: int, method: str = "fast", base_population=None,
                     chunk: int = 512, progress=None):
    """(patients, trials): `draws` posterior draws x `replicates_per_draw` replicated trials
    (see the module doc). `progress(i, n)` after each draw."""
    from dormancy_model.trials.protocol import TrialResult, trial

    if draws < 1 or replicates_per_draw < 1:
        raise ValueError("need draws >= 1 and replicates_per_draw >= 1")
    seed = int(np.asarray(jax.random.randint(jax.random.fold_in(key, 0x5050), (), 0,
                                             2**31 - 1)))
    idx = posterior.choose(draws, seed)
    pats, summ, screens = [], [], []
    for j, i in enumerate(idx):
        pop = posterior.population(int(i), base_population)
        res = trial(design, params, key=jax.random.fold_in(key, j),
                    replicates=replicates_per_draw, population=pop, method=method,
                    chunk=chunk)
        s = res.summary()
        off = j * replicates_per_draw
        for df in (res.patients, s, res.screening):
            df["trial"] = df["trial"] + off
            df["draw"] = int(i)
        pats.append(res.patients)
        summ.append(s)
        screens.append(res.screening)
        if progress:
            progress(j + 1, len(idx))
    patients = pd.concat(pats, ignore_index=True)
    out = TrialResult(patients, pd.concat(screens, ignore_index=True), design,
                      draws * replicates_per_draw,
                      f"method={method}; posterior {posterior.source}, {draws} draws x "
                      f"{replicates_per_draw}")
    return out, pd.concat(summ, ignore_index=True)
