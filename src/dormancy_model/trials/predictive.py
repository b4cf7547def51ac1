"""Posterior predictive trials: replicated virtual CLEVER trials over posterior draws.

The posterior file (`dormancy calibrate --posterior`, `posterior.posterior_record`) holds draws
of the population parameters (natural units), read by `params.postfile.read_posterior`. Which
draws and how many trials each is a `uncertainty.ParameterUncertainty` (the same object the
what-ifs use): `posterior_trials` simulates `unc.replicates` trials at each of its D draws, so
the spread of a statistic over all trials carries the parameter uncertainty and the replicate
noise together. Draw j's trials use their own key (`fold_in(key, j)`), the trial numbers run
over draws (trial = j x replicates + replicate) and the patient and trial tables carry a `draw`
column (the draw's row in the posterior file). `untreated_over_draws` does the same for the
untreated cohort of the prognosis rows.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from dormancy_model.trials.uncertainty import ParameterUncertainty, posterior_uncertainty


def predictive_draws(pfile, *, key, draws: int, replicates_per_draw: int,
                     population=None) -> ParameterUncertainty:
    """`draws` posterior draws (a seeded choice without replacement, from `key`) with
    `replicates_per_draw` trials each and no centre trials."""
    if draws < 1 or replicates_per_draw < 1:
        raise ValueError("need draws >= 1 and replicates_per_draw >= 1")
    seed = int(np.asarray(jax.random.randint(jax.random.fold_in(key, 0x5050), (), 0,
                                             2**31 - 1)))
    return posterior_uncertainty(pfile, draws=draws, replicates=replicates_per_draw,
                                 centre_replicates=0, seed=seed, population=population)


def posterior_trials(design, params, unc: ParameterUncertainty, *, key, method: str = "fast",
                     chunk: int = 512, progress=None):
    """(TrialResult over all draws, per-trial summaries): `unc.replicates` replicated trials at
    each of the `unc.draws` draws (see the module doc). `progress(i, n)` after each draw."""
    from dormancy_model.trials.protocol import TrialResult, trial

    per = unc.replicates
    pats, summ, screens = [], [], []
    for j in range(unc.draws):
        res = trial(design, params, key=jax.random.fold_in(key, j), replicates=per,
                    population=unc.population_at(j), method=method, chunk=chunk)
        s = res.summary()
        for df in (res.patients, s, res.screening):
            df["trial"] = df["trial"] + j * per
            df["draw"] = unc.row(j)
        pats.append(res.patients)
        summ.append(s)
        screens.append(res.screening)
        if progress:
            progress(j + 1, unc.draws)
    out = TrialResult(pd.concat(pats, ignore_index=True), pd.concat(screens, ignore_index=True),
                      design, unc.draws * per,
                      f"method={method}; posterior {unc.source}, {unc.draws} draws x {per}")
    return out, pd.concat(summ, ignore_index=True)


def untreated_over_draws(params, unc: ParameterUncertainty, *, key, n: int,
                         method: str = "fast") -> pd.DataFrame:
    """An untreated cohort of `n` screened candidates spread evenly over the draws (n // D
    each, at least 2; `untreated.untreated_cohort` at each draw's population, key
    fold_in(key, j)), with a `draw` column."""
    from dormancy_model.trials.untreated import untreated_cohort

    per = max(2, n // unc.draws)
    out = []
    for j in range(unc.draws):
        c = untreated_cohort(params, unc.population_at(j), key=jax.random.fold_in(key, j),
                             n=per, method=method)
        c["draw"] = unc.row(j)
        out.append(c)
    return pd.concat(out, ignore_index=True)
