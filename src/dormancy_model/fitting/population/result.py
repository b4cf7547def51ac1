"""`PopulationResult`: what a population fit reports, whatever the estimator.

Typical values (transform scale and natural), the between-animal covariance Omega on the
transform scale, CVs (log-normal: sqrt(exp(omega^2) - 1); on a lin or logit scale the sd
itself), relative standard errors (RSE%, from the inverse outer Hessian: for a typical value
by the delta method on its natural value, for a variance 2 se(log sd)), covariate effects
(beta, SE, RSE%, Wald 95% CI: `covariates.effect_rows`), per-animal empirical Bayes estimates
eta, eta shrinkage (1 - sd(eta_k) / omega_k), objective (-log-likelihood), AIC, BIC (with the
number of observations; every beta counts as a parameter) and convergence flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dormancy_model.fitting.estimate import covariate_lines

Z95 = 1.959963984540054


def cv_of(sd, scale: str):
    """Between-animal coefficient of variation of a parameter with sd `sd` on `scale`."""
    sd = np.asarray(sd, float)
    return np.sqrt(np.expm1(np.minimum(sd**2, 700.0))) if scale == "log" else sd


@dataclass
class PopulationStart:
    start: int
    theta0: list
    theta: list
    objective: float
    converged: bool
    iterations: int
    message: str


@dataclass
class PopulationResult:
    method: str  # "laplace" (or "nuts")
    names: tuple  # typical values
    scales: tuple
    random: tuple
    covariance_structure: str  # "diagonal" or "full"
    typical_scale: dict  # transform scale
    typical: dict  # natural (internal units)
    typical_ci_low: dict  # natural, Wald 95% on the transform scale
    typical_ci_high: dict
    typical_rse: dict  # percent
    omega: list  # q x q, transform scale
    sd: dict  # sqrt(diag omega)
    cv: dict
    cv_ci_low: dict
    cv_ci_high: dict
    omega_rse: dict  # percent, of the variance
    theta: list  # the outer vector at the optimum
    theta_names: tuple
    covariance: list  # inverse outer Hessian (outer vector), nan where singular
    eta: dict  # animal id -> [q]
    eta_sd: dict  # animal id -> [q] conditional sd of the EBE (from H_i)
    shrinkage: dict  # random name -> fraction
    objective: float  # -log-likelihood (Laplace)
    aic: float
    bic: float
    n_obs: int
    n_animals: int
    converged: bool  # outer optimiser, positive-definite Hessian and every inner mode
    inner_converged: int  # animals whose mode converged
    hessian_pd: bool
    starts: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seed: int = 0
    wall_time_s: float = 0.0
    covariates: list = field(default_factory=list)  # `covariates.effect_rows`, one per beta
    profile: dict = field(default_factory=dict)  # random name -> `profile.profile_sd` result

    @property
    def n_params(self) -> int:
        return len(self.theta)

    def summary(self) -> str:
        rows = [f"{self.method}: -loglik {self.objective:.3f}  AIC {self.aic:.2f}  "
                f"BIC {self.bic:.2f}  {self.n_animals} animals  "
                f"{'converged' if self.converged else 'NOT CONVERGED'} "
                f"({sum(s.converged for s in self.starts)}/{len(self.starts)} starts, "
                f"{self.inner_converged}/{self.n_animals} inner modes)"]
        for n in self.names:
            rows.append(f"  {n:<20} {self.typical[n]:.4g}  95% CI [{self.typical_ci_low[n]:.4g},"
                        f" {self.typical_ci_high[n]:.4g}]  RSE {self.typical_rse[n]:.1f}%")
        for r in self.random:
            rows.append(f"  omega({r:<12}) sd {self.sd[r]:.3g}  CV {100 * self.cv[r]:.1f}% "
                        f"[{100 * self.cv_ci_low[r]:.1f}, {100 * self.cv_ci_high[r]:.1f}]  "
                        f"RSE {self.omega_rse[r]:.1f}%  shrinkage "
                        f"{100 * self.shrinkage[r]:.0f}%")
        rows += covariate_lines(self.covariates)
        return "\n".join(rows)
