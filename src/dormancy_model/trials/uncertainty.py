"""Parameter uncertainty from a posterior file: the draws a predictive run uses.

`ParameterUncertainty` holds D draws of the calibrated population parameters (natural log,
columns `names`, with their row numbers in the file), R replicated trials per draw and the
centre (the posterior mean of the log draws) with its R_c trials. It is the one source of "which
parameter sets, how many trials each" for both the what-ifs (`whatif`, D x R trials per level
plus R_c at the centre) and the posterior predictive check (`predictive`, D x R trials, no
centre). `population_at` maps a draw to the `Population` the calibration used
(`posterior.population_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dormancy_model.trials.population import Population


@dataclass(frozen=True)
class ParameterUncertainty:
    """D posterior draws (natural log, columns `names`) of population parameters, R trials per
    draw, and the centre (posterior mean of the log draws) with its R_c trials. `index`: each
    draw's row in the file (chains flattened)."""

    names: tuple
    theta: np.ndarray  # (D, d)
    centre: np.ndarray  # (d,)
    population: Population  # base population the draws modify (`posterior.population_at`)
    replicates: int  # R per draw
    centre_replicates: int  # R_c at the centre
    source: str = ""
    index: np.ndarray = field(default=None)  # (D,) rows in the file; None: 0..D-1

    @property
    def draws(self) -> int:
        return int(self.theta.shape[0])

    def row(self, d: int) -> int:
        """Draw d's row in the posterior file."""
        return int(d if self.index is None else self.index[d])

    def population_at(self, d: int | None) -> Population:
        """The `Population` at draw d (None: at the centre)."""
        from dormancy_model.trials.posterior import population_at

        th = self.centre if d is None else self.theta[d]
        return population_at(th, self.names, self.population)

    def centre_values(self) -> dict:
        """The centre in natural units (the geometric mean of the draws)."""
        return {n: float(np.exp(v)) for n, v in zip(self.names, self.centre, strict=True)}

    def describe(self) -> str:
        return (f"{self.draws} posterior draws of {', '.join(self.names)} from {self.source} x "
                f"{self.replicates} replicated trials per draw (common random numbers across "
                f"levels); replicate-only interval: {self.centre_replicates} trials at the "
                "posterior mean of the log parameters")


def posterior_uncertainty(pfile, *, draws: int, replicates: int, centre_replicates: int = 0,
                          seed: int = 0, population: Population | None = None
                          ) -> ParameterUncertainty:
    """`draws` draws (without replacement, seeded; all of them if the file has fewer) of a read
    posterior file (`params.postfile.read_posterior`)."""
    th = pfile.theta()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(th), size=min(int(draws), len(th)), replace=False))
    return ParameterUncertainty(tuple(pfile.names), th[idx], th.mean(axis=0),
                                population or Population(), int(replicates),
                                int(centre_replicates), pfile.source, idx)
