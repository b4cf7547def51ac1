"""Linear oral PK of HCQ and EVE in closed form.

Each drug is a linear compartment system x' = A x with states (amounts in mg, effect site in
ng/mL):

    depot --ka--> central (V1) <--Q--> peripheral (V2);  central --CL-->;  [effect site, ke0]

Every dose is an exact bolus at its time (into the depot, scaled by F, when oral; into the
central compartment when IV). Between doses the solution is x(t) = expm(A (t - tau_k)) x_k,
and because the eigenvalues of A are known in closed form (depot -ka, the two disposition
rates of the central/peripheral block, effect site -ke0) the matrix exponential is the
Sylvester sum  expm(A s) = sum_j P_j exp(lambda_j s)  with spectral projectors P_j. The state
after each dose is propagated once per dose (a scan); a concentration at any time costs one
`searchsorted` and a handful of exponentials. Nothing here is integrated numerically.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from dormancy_model.params.table import Parameters

# float32 products on a GPU default to TF32 (about 3 significant digits): the PK projectors and
# propagators are always computed at full precision
HIGHEST = jax.lax.Precision.HIGHEST

MG_PER_L_TO_NG_PER_ML = 1000.0


class DoseEvents(eqx.Module):
    """Dose events of one drug: times (day), amount (mg or mg/kg), per_kg and oral flags."""

    times: jax.Array
    amount: jax.Array
    per_kg: jax.Array
    oral: jax.Array


class Dosing(eqx.Module):
    """Dose events of both drugs (arrays only, so a schedule change never recompiles)."""

    hcq: DoseEvents
    eve: DoseEvents

    @staticmethod
    def from_schedule(schedule, dtype=None) -> Dosing:
        dtype = dtype or jnp.result_type(float)

        def ev(drug):
            t, a, k, o = schedule.events(drug)
            return DoseEvents(jnp.asarray(t, dtype), jnp.asarray(a, dtype), jnp.asarray(k),
                              jnp.asarray(o))

        return Dosing(hcq=ev("hcq"), eve=ev("eve"))


class DrugSystem(eqx.Module):
    """A drug's linear system and its spectral decomposition."""

    A: jax.Array  # (n, n) per day
    lam: jax.Array  # (n,) eigenvalues
    proj: jax.Array  # (n, n, n) projectors, proj[j] = P_j
    obs: jax.Array  # (m, n) rows: concentrations (ng/mL) observed from the state
    f_oral: jax.Array  # bioavailability
    tlag: jax.Array  # absorption lag (day)
    v1: jax.Array  # central volume (L)
    cl: jax.Array  # clearance (L/day)
    min_gap: jax.Array  # smallest relative eigenvalue separation (degeneracy check)


def _block_eigs(k10, k12, k21):
    s = k10 + k12 + k21
    disc = jnp.sqrt(jnp.maximum((k10 - k21) ** 2 + k12**2 + 2 * k12 * (k10 + k21), 0.0))
    alpha = 0.5 * (s + disc)
    beta = 2.0 * k10 * k21 / (s + disc)  # stable form of (s - disc) / 2
    return alpha, beta


def drug_system(p: Parameters, drug: str) -> DrugSystem:
    """Build the linear PK system of `drug` ('hcq' or 'eve') from parameters (internal units).

    The spectral decomposition is always computed in float64 and then cast to the parameters'
    dtype: in float32 the projector products lose ~1e-3 relative accuracy when the rates span
    three decades (HCQ: absorption 28/day, terminal phase 0.017/day), while the cast float64
    projectors keep a float32 solve at ~1e-6. It is a handful of 4x4 products per solve."""
    dtype = jnp.result_type(p[f"{drug}_cl"])
    sys = _drug_system(lambda name: jnp.asarray(p[name], jnp.float64), p.pk_per_kg, drug)
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), sys)


def _drug_system(val, pk_per_kg: bool, drug: str) -> DrugSystem:
    g = lambda name: val(f"{drug}_{name}")  # noqa: E731
    scale = val("body_weight") if pk_per_kg else 1.0
    cl, v1, q, v2 = g("cl") * scale, g("v1") * scale, g("q") * scale, g("v2") * scale
    ka = g("ka")
    k10, k12, k21 = cl / v1, q / v1, q / v2
    alpha, beta = _block_eigs(k10, k12, k21)
    effect = drug == "hcq"
    n = 4 if effect else 3
    z = jnp.zeros((), dtype=jnp.result_type(cl))
    rows = [
        [-ka, z, z] + ([z] if effect else []),
        [ka, -(k10 + k12), k21] + ([z] if effect else []),
        [z, k12, -k21] + ([z] if effect else []),
    ]
    lam = [-ka, -alpha, -beta]
    obs = [[z, MG_PER_L_TO_NG_PER_ML / v1, z] + ([z] if effect else [])]
    if effect:
        ke0 = g("ke0")
        rows.append([z, ke0 * MG_PER_L_TO_NG_PER_ML / v1, z, -ke0])
        lam.append(-ke0)
        obs.append([z, z, z, jnp.ones((), dtype=z.dtype)])
    A = jnp.stack([jnp.stack(r) for r in rows])
    lam = jnp.stack(lam)
    eye = jnp.eye(n, dtype=A.dtype)
    projs, gaps = [], []
    for j in range(n):
        P = eye
        for i in range(n):
            if i != j:
                d = lam[j] - lam[i]
                P = jnp.matmul(P, A - lam[i] * eye, precision=HIGHEST) / d
                gaps.append(jnp.abs(d) / (jnp.abs(lam[j]) + jnp.abs(lam[i]) + 1e-30))
        projs.append(P)
    return DrugSystem(A, lam, jnp.stack(projs), jnp.stack([jnp.stack(o) for o in obs]),
                      g("f"), g("tlag"), v1, cl, jnp.min(jnp.stack(gaps)))


def propagator(sys: DrugSystem, s):
    """expm(A s) for a scalar s >= 0, via the spectral projectors."""
    return jnp.einsum("j,jab->ab", jnp.exp(sys.lam * s), sys.proj, precision=HIGHEST)


class PKSolution(eqx.Module):
    """Closed-form PK of one drug: post-dose states at each (effective) dose time."""

    tau: jax.Array  # (K,) effective dose times (day), sorted
    modes: jax.Array  # (K, m, n) observation coefficients of each mode after dose k
    states: jax.Array  # (K, n) state just after dose k
    sys: DrugSystem

    def observe(self, t):
        """Observed concentrations (m,) at scalar time t (ng/mL); zero before the first dose."""
        return self._observe_after(t, jnp.searchsorted(self.tau, t, side="right") - 1)

    def observe_sorted(self, ts):
        """`observe` at each of the sorted times ts (T,) -> (T, m). The last dose at or before
        each time comes from one pass over the doses instead of a search per time: dose k
        applies from position searchsorted(ts, tau_k) on, so the index is a running count."""
        start = jnp.searchsorted(ts, self.tau, side="left")
        k = jnp.cumsum(jnp.zeros(ts.shape[0] + 1, jnp.int32).at[start].add(1))[:-1] - 1
        return jax.vmap(self._observe_after)(ts, k)

    def _observe_after(self, t, k):
        """Observed concentrations at t given k, the index of the last dose at or before t."""
        kc = jnp.clip(k, 0, self.tau.shape[0] - 1)
        s = jnp.maximum(t - self.tau[kc], 0.0)
        val = jnp.matmul(self.modes[kc], jnp.exp(self.sys.lam * s), precision=HIGHEST)
        # at a dose time itself the mode sum is obs . (sum_j P_j) . x_k, equal to obs . x_k only
        # to rounding (~1e-15 of the dose's scale): use the exact value there, so that an oral
        # dose shows zero concentration at its own (lagged) time
        exact = jnp.matmul(self.sys.obs, self.states[kc], precision=HIGHEST)
        val = jnp.where(s > 0, val, exact)
        return jnp.where(k >= 0, val, jnp.zeros_like(val))

    def state(self, t):
        """Full PK state (n,) at scalar time t."""
        k = jnp.searchsorted(self.tau, t, side="right") - 1
        kc = jnp.clip(k, 0, self.tau.shape[0] - 1)
        x = jnp.matmul(propagator(self.sys, jnp.maximum(t - self.tau[kc], 0.0)),
                       self.states[kc], precision=HIGHEST)
        return jnp.where(k >= 0, x, jnp.zeros_like(x))


def effective_doses(sys: DrugSystem, events: DoseEvents, body_weight):
    """(tau, input vectors) sorted by effective time: lag and F for oral, central for IV."""
    n = sys.A.shape[0]
    amount = events.amount * jnp.where(events.per_kg, body_weight, 1.0)
    tau = events.times + jnp.where(events.oral, sys.tlag, 0.0)
    depot = jnp.zeros(n).at[0].set(1.0)
    central = jnp.zeros(n).at[1].set(1.0)
    u = jnp.where(events.oral[:, None], sys.f_oral * depot[None, :], central[None, :])
    u = (amount[:, None] * u).astype(sys.A.dtype)
    order = jnp.argsort(tau, stable=True)
    return tau[order].astype(sys.A.dtype), u[order]


def solve_pk(sys: DrugSystem, events: DoseEvents, body_weight) -> PKSolution:
    tau, u = effective_doses(sys, events, body_weight)
    dt = jnp.diff(tau, prepend=tau[:1])

    def step(x, inp):
        d, uk = inp
        x = jnp.matmul(propagator(sys, d), x, precision=HIGHEST) + uk
        return x, x

    x0 = jnp.zeros(sys.A.shape[0], dtype=sys.A.dtype)
    _, states = jax.lax.scan(step, x0, (dt, u))
    # modes[k, i, j] = obs_i . P_j . x_k
    modes = jnp.einsum("ia,jab,kb->kij", sys.obs, sys.proj, states, precision=HIGHEST)
    return PKSolution(tau, modes, states, sys)
