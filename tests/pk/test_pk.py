"""PK must-holds: closed form vs ODE vs independent superposition, half-lives, tmax, mass balance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.linalg import expm

import dormancy_model as dm
from dormancy_model.pk.closed_form import Dosing, drug_system, solve_pk
from scipy_reference import ReferenceModel


def independent_matrix(p, drug, per_kg):
    """The drug's rate matrix built from raw values (not from the package's pk.py)."""
    v = {k: float(x) for k, x in p.values.items()}
    s = v["body_weight"] if per_kg else 1.0
    cl, v1, q, v2 = (v[f"{drug}_{k}"] * s for k in ("cl", "v1", "q", "v2"))
    ka = v[f"{drug}_ka"]
    A = np.array([[-ka, 0, 0], [ka, -(cl + q) / v1, q / v2], [0, q / v1, -q / v2]])
    if drug == "hcq":
        ke0 = v["hcq_ke0"]
        A = np.pad(A, ((0, 1), (0, 1)))
        A[3, 1], A[3, 3] = ke0 * 1000.0 / v1, -ke0
    return A, v1


def superposition(p, drug, sched, ts, per_kg):
    """Sum of single-dose responses: C(t) = sum_i c . expm(A (t - tau_i)) u_i."""
    A, v1 = independent_matrix(p, drug, per_kg)
    v = {k: float(x) for k, x in p.values.items()}
    times, amount, pk_, oral = sched.events(drug)
    conc = np.zeros((len(ts), 2))
    for t_i, a_i, k_i, o_i in zip(times, amount, pk_, oral, strict=True):
        amt = a_i * (v["body_weight"] if k_i else 1.0)
        tau = t_i + (v[f"{drug}_tlag"] if o_i else 0.0)
        u = np.zeros(A.shape[0])
        u[0 if o_i else 1] = amt * (v[f"{drug}_f"] if o_i else 1.0)
        for j, t in enumerate(ts):
            if t >= tau:
                x = expm(A * (t - tau)) @ u
                conc[j, 0] += 1000.0 * x[1] / v1
                if A.shape[0] == 4:
                    conc[j, 1] += x[3]
    return conc


CASES = [("human", "clever-combo", 2), ("mouse", "mouse-combo-hcq60-eve5-transient", None)]


@pytest.mark.parametrize("species,preset,cycles", CASES)
@pytest.mark.parametrize("drug", ["hcq", "eve"])
def test_closed_form_and_ode_match_superposition(species, preset, cycles, drug, human, mouse):
    p = human if species == "human" else mouse
    sched = dm.get_schedule(preset, cycles)
    horizon = sched.end_of_treatment + 10.0
    ts = np.unique(np.concatenate([np.linspace(0.0, horizon, 157), [0.3, 1.05, 2.51]]))
    ref = superposition(p, drug, sched, ts, p.pk_per_kg)
    # the package's closed form
    sol = solve_pk(drug_system(p, drug), Dosing.from_schedule(sched).__getattribute__(drug),
                   p["body_weight"])
    got = np.asarray(jax.vmap(sol.observe)(jnp.asarray(ts)))
    # an ODE solution of the same PK (scipy LSODA, doses as state jumps)
    rm = ReferenceModel({k: float(v) for k, v in p.values.items()}, per_kg=p.pk_per_kg)
    states, _ = rm.solve(sched, ts, method="LSODA", rtol=1e-12, atol=1e-14)
    v1 = rm.vol[drug][0]
    ode = np.stack([1000.0 * states[:, 5 if drug == "eve" else 8] / v1,
                    states[:, 10] if drug == "hcq" else np.zeros(len(ts))], axis=1)
    n_obs = 2 if drug == "hcq" else 1
    for k in range(n_obs):
        scale = np.abs(ref[:, k]).max()
        mask = np.abs(ref[:, k]) > 1e-6 * scale
        rel_cf = np.abs(got[mask, k] - ref[mask, k]) / np.abs(ref[mask, k])
        rel_ode = np.abs(ode[mask, k] - ref[mask, k]) / np.abs(ref[mask, k])
        assert rel_cf.max() < 1e-6, (drug, k, rel_cf.max())
        assert rel_ode.max() < 1e-6, (drug, k, rel_ode.max())


@pytest.mark.parametrize("drug", ["hcq", "eve"])
def test_observe_sorted_equals_observe(drug, human):
    """The one-pass dose index of `observe_sorted` (hazard tables) equals the per-time search
    of `observe`, also at times equal to dose times, before the first dose and after the
    last; the concentrations are then the same numbers."""
    sched = dm.get_schedule("clever-combo", 2)
    sol = solve_pk(drug_system(human, drug), getattr(Dosing.from_schedule(sched), drug),
                   human["body_weight"])
    tau = np.asarray(sol.tau)
    ts = np.sort(np.concatenate([np.linspace(-1.0, tau.max() + 5.0, 2001), tau, tau[:7],
                                 tau[-3:] + 1e-9]))
    ts = jnp.asarray(ts)
    np.testing.assert_array_equal(np.asarray(sol.observe_sorted(ts)),
                                  np.asarray(jax.vmap(sol.observe)(ts)))


def single_dose(p, drug, amount=10.0, horizon=2.0, n=20001):
    sched = dm.Schedule("single", (dm.DoseLine(drug, amount, "mg", "oral", 24.0, (1,), 1, 1),))
    sol = solve_pk(drug_system(p, drug), getattr(Dosing.from_schedule(sched), drug),
                   p["body_weight"])
    ts = jnp.linspace(0.0, horizon, n)
    return np.asarray(ts), np.asarray(jax.vmap(sol.observe)(ts))[:, 0], sol


def terminal_half_life(ts, c, t_from, t_to):
    m = (ts >= t_from) & (ts <= t_to)
    slope = np.polyfit(ts[m], np.log(c[m]), 1)[0]
    return np.log(2) / -slope


def test_everolimus_half_life_and_tmax(human):
    ts, c, _ = single_dose(human, "eve", 10.0, horizon=12.0)
    t_half_h = terminal_half_life(ts, c, 6.0, 12.0) * 24.0
    tmax_h = ts[np.argmax(c)] * 24.0
    assert 26.0 <= t_half_h <= 38.0, t_half_h
    assert 1.0 <= tmax_h <= 2.0, tmax_h


def test_hcq_half_life(human):
    ts, c, _ = single_dose(human, "hcq", 600.0, horizon=400.0, n=4001)
    t_half_d = terminal_half_life(ts, c, 150.0, 400.0)
    assert 30.0 <= t_half_d <= 50.0, t_half_d


@pytest.mark.parametrize("species", ["human", "mouse"])
@pytest.mark.parametrize("drug", ["hcq", "eve"])
def test_mass_balance(species, drug, human, mouse):
    """F * dose = amount still in depot/central/peripheral + integral of CL * C (eliminated)."""
    p = human if species == "human" else mouse
    amount = 50.0
    sched = dm.Schedule("single", (dm.DoseLine(drug, amount, "mg", "oral", 24.0, (1,), 1, 1),))
    sol = solve_pk(drug_system(p, drug), getattr(Dosing.from_schedule(sched), drug),
                   p["body_weight"])
    cl = float(sol.sys.cl)
    observe = jax.jit(lambda t: sol.observe(t))
    state = jax.jit(lambda t: sol.state(t))
    t_end = 3.0
    tlag = float(p[f"{drug}_tlag"])
    eliminated, _ = quad(lambda t: cl * float(observe(t)[0]) / 1000.0, tlag, t_end, limit=400,
                         epsabs=1e-12, epsrel=1e-10, points=[tlag + 0.01, tlag + 0.1])
    remaining = float(np.sum(np.asarray(state(t_end))[:3]))
    given = float(p[f"{drug}_f"]) * amount
    assert abs(remaining + eliminated - given) / given < 1e-6
