"""Virtual patients: inter-individual variability and screening by bone-marrow aspirate.

Each patient's parameter is the typical value (the parameter file's value, read as the median)
times exp(eta), eta ~ Normal(0, omega^2), omega^2 = ln(1 + CV^2) (NONMEM-style log-normal IIV,
`params.variability`, shared with the sweep's `[patients]`), clipped to the parameter's bounds.
Default CVs and their sources:

=================  =====  =================================================================
parameter          CV     source
=================  =====  =================================================================
eve_cl             0.35   de Wit 2016 popPK, IIV on CL/F 35.1% [S63]
eve_v1             0.86   de Wit 2016 popPK, IIV on V1/F 86.4% [S63]
hcq_cl             0.50   assumption: 11-fold range of HCQ blood levels at similar doses [S86]
                          read as +-2.5 SD of log exposure (omega ~ 0.48)
eve_ic50           0.50   assumption: PBMC mTOR inhibition varies widely (~56% max) [S67]
hcq_ic50           0.50   assumption: blood HCQ does not track autophagy inhibition [S87]
k_dr               0.76   assumption: glioma P/Q transition IIV 76% (Ribba 2012) [S11]
delta_max          0.50   assumption: between-patient spread of drug-induced DTC death
=================  =====  =================================================================

`delta_max` (the patient's autophagy dependence of DTC death), `eve_ic50` (mTOR dependence)
and `hcq_ic50` are the patient-level drug sensitivities: a patient whose cells die slowly under
the drugs stays DTC+ after cycle 6 more often, so the persistent (who get the extension cycles)
are enriched for cells that the extension kills less well. The trial's patient table carries each
patient's values (columns named after the parameters) so this enrichment can be measured.
Their factors are independent by default; `Population(correlation=...)` correlates them (for
example with `k_dr`, reactivation) as a what-if: no published data constrain such a correlation.

Total DTC load (cells in the marrow pool at screening) is log-normal with median `load_median`
and log-SD `load_sigma`. One aspirate sees a negative-binomial count of mean f N (f =
aspirate_fraction = aspirate_cells / marrow_cells, dispersion a = aspirate_dispersion;
`model.observables`), so the screening positivity is E[1 - (1 + a f N)^(-1/a)] (E[1 - exp(-f N)]
at a = 0); `load_median_for_positivity` solves it for the CLEVER 30% (55/184, ESMO 2023) by
Gauss-Hermite quadrature. Screening enrols only aspirate-positive patients, so the enrolled loads
are larger than the screened ones (size-biased), and their baseline counts are >= 1.

The load spread (`LOAD_SIGMA` = 1.0). Positivity alone does not identify it: any log-SD has a
median that gives 30%. What the data allow, measured with this detection law (a = 1) on the
untreated screened cohort of the validation rows (`untreated.untreated_cohort`, agent model,
packaged calibration, 1,000 candidates, seed 1, 2026-12-07):

==========================================  ==============  ==============  =================
                                            log-SD 1.0      log-SD 1.5      published
==========================================  ==============  ==============  =================
relapse-rate ratio DTC+ vs DTC-, 5 years    2.0             3.5             2.13 (Braun 2005)
relapse in 4 y by cells seen 0/1/2/>=3 (%)  7.9/13/14/28    6.9/16/20/38    12.4/21.3/19.4/42.5
ratio >= 3 vs 1 cell                        2.1             2.3             2.0 (Borgen 2004)
untreated DTC+ 3-year / 5-year RFS          0.87 / 0.82     0.82 / 0.75     0.75-0.90 / 0.62-0.85
==========================================  ==============  ==============  =================

(IRR s.e. ~20% at this size). The published prognosis (Braun's IRR above all) asks for a
narrow spread, ~1.0; the CLEVER observation arm and the ESMO posterior probabilities ask for
enrolled patients who stay DTC+ without drug, which needs a wide one: the share DTC- at a repeat
aspirate of an unchanged marrow is 0.59 / 0.51 / 0.44 / 0.38 at log-SD 1.0 / 1.5 / 2.0 / 2.5
(a = 1; numpy, 4e5 draws), and the ESMO rows were reached near 2.5-3 (docs/validation.md, 'What a
wider DTC-load spread does'). The two conflict within this model; the default follows the
published outcome data (1.0, also near the Ribba 2012 P0 CV of 94% [S11], log-SD 0.8).
Per-aspirate overdispersion (a > 0) is aspirate noise, not patient spread: it widens the
baseline counts (enrolled with 1 / 2 / >= 3 cells: 59 / 20 / 21% at a = 1 against 69 / 20 / 11%
with the earlier Poisson law) but does not keep the enrolled positive at a repeat aspirate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import jax
import numpy as np
from scipy import optimize

from dormancy_model.model import observables as O
from dormancy_model.params.table import Parameters
from dormancy_model.params.variability import lognormal_factors

DEFAULT_CV = {
    "eve_cl": 0.35, "eve_v1": 0.86, "hcq_cl": 0.50, "eve_ic50": 0.50, "hcq_ic50": 0.50,
    "k_dr": 0.76, "delta_max": 0.50,
}
SCREENING_POSITIVITY = 55 / 184  # ESMO 2023 244MO: "184/197 ... baseline BMA, 55 (30%) DTC+"


@functools.lru_cache(maxsize=8)
def _hermite(order: int):
    return np.polynomial.hermite_e.hermegauss(order)


LOAD_SIGMA = 1.0  # log-SD of the DTC load between patients (module doc)


def screening_positivity(load_median: float, load_sigma: float, f: float,
                         dispersion: float = 0.0, order: int = 80):
    """E[P(DTC+ | N)], N ~ LogNormal(ln load_median, load_sigma^2), P(DTC+ | N) = 1 - (1 + a f
    N)^(-1/a) (a = dispersion; 1 - exp(-f N) at 0; `observables.p_dtc_positive`), by
    Gauss-Hermite quadrature."""
    x, w = _hermite(order)
    m = f * load_median * np.exp(load_sigma * x)
    a = float(dispersion)
    p = -np.expm1(-np.log1p(a * m) / a) if a > 0 else -np.expm1(-m)
    return float(np.sum(w * p) / np.sqrt(2 * np.pi))


def load_median_for_positivity(target: float, load_sigma: float, f: float,
                               dispersion: float = 0.0) -> float:
    """Median DTC load giving screening positivity `target` for one aspirate."""
    if not 0 < target < 1:
        raise ValueError("target positivity must be in (0, 1)")
    g = lambda lm: screening_positivity(np.exp(lm), load_sigma, f, dispersion) - target  # noqa
    return float(np.exp(optimize.brentq(g, np.log(1e-6 / f), np.log(1e6 / f), xtol=1e-12)))


@dataclass(frozen=True)
class Population:
    """Virtual-patient population: CV per parameter and the DTC load distribution.

    `correlation` optionally correlates the log-normal factors, e.g.
    `{("delta_max", "k_dr"): -0.5}` (default: independent; no data constrain it, see the
    module doc).

    `load_median=None` means: solve it from `positivity` for the parameter set's aspirate
    fraction. `typical` overrides typical values (internal units) of the parameter file, which
    is how calibration moves population-level parameters.
    """

    cv: dict = field(default_factory=lambda: dict(DEFAULT_CV))
    load_sigma: float = LOAD_SIGMA
    load_median: float | None = None
    positivity: float = SCREENING_POSITIVITY
    typical: dict = field(default_factory=dict)
    correlation: dict = field(default_factory=dict)

    def base_params(self, params: Parameters) -> Parameters:
        return params.replace(**self.typical) if self.typical else params

    def median_load(self, params: Parameters) -> float:
        if self.load_median is not None:
            return float(self.load_median)
        base = self.base_params(params)
        return load_median_for_positivity(self.positivity, self.load_sigma,
                                          float(base["aspirate_fraction"]),
                                          float(base["aspirate_dispersion"]))

    def replace(self, **kw) -> Population:
        from dataclasses import replace

        return replace(self, **kw)


@dataclass(frozen=True)
class Screened:
    """Enrolled (screen-positive) virtual patients.

    params: Parameters with a leading axis n on every value; load: (n,) integer DTC counts at
    screening; baseline_count: (n,) DTCs seen in the screening aspirate (>= 1);
    candidate_index: (n,) position of each enrolled patient in the stream of screened
    candidates (so candidate_index[-1] + 1 candidates were aspirated to find the n positives).
    """

    params: Parameters
    load: np.ndarray
    baseline_count: np.ndarray
    candidate_index: np.ndarray

    @property
    def n_screened(self) -> int:
        return int(self.candidate_index[-1]) + 1 if len(self.candidate_index) else 0


def batched_params(params: Parameters, n: int, updates: dict) -> Parameters:
    """Parameters with a leading axis n on every value (host numpy arrays, float64)."""
    vals = {k: np.broadcast_to(np.asarray(v, float), (n,)).copy()
            for k, v in params.values.items()}
    vals.update({k: np.asarray(v, float) for k, v in updates.items()})
    return params.with_values(vals)


def host_rng(key, *salt: int) -> np.random.Generator:
    """A numpy Generator derived from a JAX key (and salts): host-side randomness that is
    reproducible from the key without compiling a JAX kernel per array shape."""
    data = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64)
    return np.random.default_rng([*map(int, data), *salt])


def sample_patients(key, n: int, pop: Population, params: Parameters, *,
                    screen: bool = True) -> Screened:
    """Draw `n` enrolled patients: candidates are screened by one aspirate until n are DTC+.

    Candidate i has log-normal mean load, an integer DTC count Poisson(load) (the cells the
    agent model starts with, passed as `dormant_initial`), and a screening aspirate
    negative binomial of mean f * cells (dispersion `aspirate_dispersion`; Poisson at 0, then
    the draws are the Poisson ones of earlier versions). Deterministic for a given key. With
    `screen=False` every candidate is enrolled (baseline count may be 0).
    """
    base = pop.base_params(params)
    f = float(base["aspirate_fraction"])
    disp = float(base["aspirate_dispersion"])
    med = pop.median_load(params)
    rng = host_rng(key, 0)
    loads, counts, where = [], [], []
    batch = max(64, int(np.ceil(3.5 * n)))
    i = 0
    while sum(len(x) for x in loads) < n:
        mean = med * np.exp(pop.load_sigma * rng.standard_normal(batch))
        cells = rng.poisson(mean).astype(np.int64)
        seen = O.draw_aspirate_np(rng, cells, f, disp).astype(np.int64)
        keep = seen >= 1 if screen else np.ones(batch, bool)
        need = n - sum(len(x) for x in loads)
        idx = np.flatnonzero(keep)[:need]  # candidates are screened in order
        where.append(i * batch + idx)
        loads.append(cells[idx])
        counts.append(seen[idx])
        i += 1
    load = np.concatenate(loads)[:n]
    baseline = np.concatenate(counts)[:n]
    updates = {}
    spec = base.spec
    factors = lognormal_factors(host_rng(key, 1), pop.cv, n, by="parameter",
                                correlation=pop.correlation)
    for name, cv in sorted(pop.cv.items()):
        if cv <= 0:
            continue
        lo, hi = spec[name].bounds
        updates[name] = np.clip(float(base[name]) * factors[name], lo, hi)
    updates["dormant_initial"] = load.astype(float)
    return Screened(batched_params(base, n, updates), load, baseline, np.concatenate(where)[:n])
