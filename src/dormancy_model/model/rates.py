"""The rate functions of the model, written once.

Everything that needs a cell-fate rate (the ODE, the stochastic agents, fitting, sweeps) calls
these functions; there is no second copy of the biology. Inputs are drug concentrations in ng/mL
(EVE in plasma/blood, HCQ at its effect site); outputs are per-cell rates in 1/day.

Mechanism (MODEL.md sections 2-3, refined):

* mTORC1 activity  M = 1 - Imax_E C_E^n / (IC50_E^n + C_E^n)            (direct link, [S70])
* lysosomal block  B = Imax_H Ce_H^n / (IC50_H^n + Ce_H^n)              (HCQ effect site)
* autophagy demand  S = 1 + sigma (1 - M)   (mTOR inhibition induces autophagy, [S8, S50])
* degradation capacity  cap = rho (1 - B)   (saturable: at most rho times basal demand)
* flux = min(S, cap);  deficit = max(S - cap, 0)   (0 when untreated because rho >= 1)

  This is the quasi-steady state of the Martin-type vesicle balance
  dA/dt = beta S - gamma (1 - B) Vmax A / (Km + A): vesicle turnover (hours) is far faster than
  cell fate (weeks), so A is at steady state whenever S < cap, and when demand exceeds the
  saturated capacity vesicles pile up and the deficit S - cap persists for as long as the drugs
  do. This gives the sustained deficit MODEL.md asks for and keeps the ODE non-stiff.

* EVE alone kills dormant cells because it raises demand above capacity when sigma (1 - M) >
  rho - 1 (chosen mechanism: demand exceeding the saturable degradation capacity). HCQ lowers the
  capacity; the combination is stronger than either without any synergy factor.
* mTOR gate  g(M) = M^n (K^n + 1) / (K^n + M^n),  g(1) = 1: reactivation, commitment and
  division need mTORC1 activity.
* lesions (clones past the switch size) grow at lesion_growth_rate * rho, rho = g(M)
  (`lesion_growth_factor`): EVE slows them (cytostatic), HCQ does not act on them directly.
* dormant death  delta_D = delta_D0 + a delta_max deficit^h / (K_d^h + deficit^h), with `a` the
  cell's autophagy dependence (1 for the mean-field model).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

# Exponents of the rate functions. Passed as Python floats (constants of a compiled function),
# x ** 2.0 compiles to x * x; as traced values each power is a libm `pow` per element on the
# CPU (`agents._tables` makes them constants when all replicates share them).
EXPONENTS = ("eve_hill", "hcq_hill", "mtor_hill", "deficit_hill")


def hill(x, k, n):
    """x^n / (k^n + x^n) for x >= 0, safe for x = 0 (value and gradients finite)."""
    pos = x > 0
    xs = jnp.where(pos, x, 1.0)
    return jnp.where(pos, 1.0 / (1.0 + (k / xs) ** n), 0.0)


def mtor_activity(c_eve, p):
    """mTORC1 activity M in [1 - Imax, 1] from EVE concentration (ng/mL)."""
    return 1.0 - p["eve_imax"] * hill(c_eve, p["eve_ic50"], p["eve_hill"])


def lysosomal_block(ce_hcq, p):
    """Fractional block of lysosomal degradation from HCQ effect-site concentration (ng/mL)."""
    return p["hcq_imax"] * hill(ce_hcq, p["hcq_ic50"], p["hcq_hill"])


class Autophagy(NamedTuple):
    demand: object
    capacity: object
    flux: object
    deficit: object


def autophagy(m, block, p) -> Autophagy:
    """Autophagy demand, capacity, flux and deficit, all relative to basal demand (= 1)."""
    demand = 1.0 + p["autophagy_induction"] * (1.0 - m)
    capacity = p["autophagy_reserve"] * (1.0 - block)
    flux = jnp.minimum(demand, capacity)
    deficit = jnp.maximum(demand - capacity, 0.0)
    return Autophagy(demand, capacity, flux, deficit)


def mtor_gate(m, p):
    """g(M), normalised so g(1) = 1."""
    kn = p["mtor_k"] ** p["mtor_hill"]
    mn = jnp.maximum(m, 0.0) ** p["mtor_hill"]
    return mn * (kn + 1.0) / (kn + mn)


class CellRates(NamedTuple):
    """Per-cell rates (1/day) at one instant."""

    reactivation: object  # D -> R
    dormancy_return: object  # R -> D
    commitment: object  # R -> P
    proliferative_return: object  # P -> D
    death_dormant: object
    death_reactivating: object
    division: object  # P -> 2P
    death_proliferating: object


class DrugSignals(NamedTuple):
    """What the drugs do to a cell at one instant: the mTOR gate g(M) and the saturating
    deficit effect hill(deficit) (both dimensionless). They depend on the concentrations and
    the drug-effect parameters only, so a fit can tabulate them once per arm and time
    (`integrate.FixedSteps.dense_tabulated`) and share them between animals whose random
    effects are on other parameters."""

    gate: object
    deficit_effect: object


def drug_signals(c_eve, ce_hcq, p) -> DrugSignals:
    """`DrugSignals` from drug concentrations (ng/mL)."""
    m = mtor_activity(c_eve, p)
    aut = autophagy(m, lysosomal_block(ce_hcq, p), p)
    return DrugSignals(mtor_gate(m, p), hill(aut.deficit, p["deficit_k"], p["deficit_hill"]))


def lesion_growth_factor(s: DrugSignals):
    """rho = g(M) in (0, 1], the factor on the net growth rate `lesion_growth_rate` of an
    established lesion (a clone past the switch size, `observables.SWITCH_SIZE`); 1 untreated.

    In an established lesion division and its mitosis-coupled death both slow with mTORC1
    activity, so the net growth rate scales with the same mTOR gate as division
    (`rates_from_signals`): EVE is cytostatic on lesions (net growth slowed, never reversed:
    rho > 0 as long as EVE's Imax < 1 or M > 0) and there is no drug-insensitive class of
    proliferating cells. HCQ has no direct effect on proliferating cells in this model (its
    lysosomal block acts through the autophagy deficit, on dormant cells), so rho depends on
    EVE only. Lesions integrate rho into their growth clock (`model.clock`)."""
    return s.gate


def rates_from_signals(s: DrugSignals, p, autophagy_dependence=1.0,
                       reactivation_propensity=1.0) -> CellRates:
    """All per-cell rates from the drug signals (see `cell_rates`)."""
    g = s.gate
    death_d = p["delta_d0"] + autophagy_dependence * p["delta_max"] * s.deficit_effect
    return CellRates(
        reactivation=reactivation_propensity * p["k_dr"] * g,
        dormancy_return=p["k_rd"] * jnp.ones_like(g),
        commitment=p["k_rp"] * g,
        proliferative_return=p["k_pd"] * jnp.ones_like(g),
        death_dormant=death_d,
        death_reactivating=p["delta_r"] * jnp.ones_like(g),
        division=p["lambda_p"] * g,
        death_proliferating=p["delta_p"] * jnp.ones_like(g),
    )


def cell_rates(c_eve, ce_hcq, p, autophagy_dependence=1.0, reactivation_propensity=1.0):
    """All per-cell rates from drug concentrations (ng/mL).

    `autophagy_dependence` scales the deficit-induced death and `reactivation_propensity` the
    D -> R rate of an individual cell (both 1 for the mean-field model).
    """
    return rates_from_signals(drug_signals(c_eve, ce_hcq, p), p, autophagy_dependence,
                              reactivation_propensity)


def cell_derivatives(d, r, pr, rates: CellRates, capacity):
    """Mean-field dD/dt, dR/dt, dP/dt and the escape flux into P (cells/day).

    Division slows logistically as P approaches `capacity` (the detection size): a detected
    relapse stops growing in the mean field instead of reaching absurd numbers. For the small
    clones that matter before detection the factor is 1 to within P / capacity.
    """
    to_r = rates.reactivation * d
    to_d = rates.dormancy_return * r
    to_p = rates.commitment * r
    back = rates.proliferative_return * pr
    dd = -to_r + to_d + back - rates.death_dormant * d
    dr = to_r - to_d - to_p - rates.death_reactivating * r
    dp = to_p + (rates.division * (1.0 - pr / capacity) - rates.death_proliferating) * pr - back
    return dd, dr, dp, to_p
