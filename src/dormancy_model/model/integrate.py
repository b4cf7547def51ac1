"""The one numerical integration of the dormancy ODE, with the step strategy as a value.

A step strategy says how to step from t0 to t1 and how to read the state between steps:

* `SolverOptions` (adaptive, used by `simulate` and as a fit option): a PID controller that steps
  to every dose time exactly (`jump_ts`); `integrate` is the one `diffeqsolve` call, configured
  by `SolverOptions.controller` (step-size controller, dt0, max_steps).
* `FixedSteps` (the fit's default): a fixed grid of dose times and equal steps, Tsit5 stepped
  with `solver.step` in a `lax.scan` and read from the cubic Hermite interpolant; see its
  docstring for why, and for why this is not `diffeqsolve` with `StepTo`.

Both provide `dense(model, params, course, dosing, t0, t1) -> (at, status)`: `at(t)` the state
(4,) at a time in [t0, t1], `status` a code of `dormancy_model.status`. Callers never switch on
the strategy's type.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dormancy_model import status as S


class Controls(NamedTuple):
    """What `diffeqsolve` needs from a step strategy."""

    stepsize_controller: dfx.AbstractStepSizeController
    dt0: float | None
    max_steps: int


def solver_status(result):
    """Status code of a diffrax result: OK, MAX_STEPS or SOLVER_FAILED."""
    return jnp.where(result == dfx.RESULTS.successful, S.OK,
                     jnp.where(result == dfx.RESULTS.max_steps_reached, S.MAX_STEPS,
                               S.SOLVER_FAILED))


def finite_status(status, *arrays):
    """`status`, or NONFINITE where the solve succeeded but an array holds a non-finite value
    (after a failed solve diffrax fills the unreached outputs with inf: the solver's code
    stays)."""
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where((status == S.OK) & ~finite, S.NONFINITE, status)


def start_status(model, params, course, t0):
    """NONFINITE where the vector field is already non-finite at the initial state (a NaN or
    infinite parameter: an adaptive solver then rejects every step until its step limit, and
    the step limit would be the wrong diagnosis), else OK."""
    f0 = model.vector_field(t0, model.initial_state(params), (params, course))
    return jnp.where(jnp.all(jnp.isfinite(f0)), S.OK, S.NONFINITE)


class SolverOptions(eqx.Module):
    """Adaptive step strategy (numerical options of `simulate`). Defaults: Tsit5 with a PID
    controller that steps to every dose time exactly, rtol 1e-6, atol 1e-9 cells, float64."""

    solver: dfx.AbstractSolver = dfx.Tsit5()
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-9)
    max_steps: int = eqx.field(static=True, default=20_000)
    dtype: str = eqx.field(static=True, default="float64")

    # forced step points after every effective dose time (hours): the absorption transient
    # (ka 0.65-1.15 /h, so the first ~2 h) is resolved instead of being spanned by the long step
    # the controller proposes after a jump, where its error estimate is fooled
    settle_hours: tuple = eqx.field(static=True, default=(0.5, 2.0))
    # differentiation through the solve: "reverse" (diffrax's checkpointed adjoint, for
    # gradients of a scalar in many parameters) or "forward" (`diffrax.ForwardMode`, for
    # `jax.jvp` / `jax.jacfwd` in a few directions, e.g. regimen design's decision variables)
    adjoint: str = eqx.field(static=True, default="reverse")

    def controller(self, course, t0, t1) -> Controls:
        """PID controller with the dose times inside (t0, t1) as jumps (others moved to t1) and
        step points `settle_hours` after each of them.

        Why the step points: right after an oral dose the concentrations rise on the absorption
        time scale (about an hour), but the PID controller starts the step after a jump with the
        size it used before (up to days). Its embedded error estimate then misjudges the pulse:
        at the 2026-12-04 defaults (EVE tlag, slow proliferating turnover) the error against a
        tight LSODA solve stayed ~1e-3 at rtol 1e-6 and did not shrink with a smaller dtmax.
        Two step points per dose, at +0.5 h and +2 h, bring it to ~1e-5 at rtol 1e-5 with about
        the same number of steps (benchmarks/simulate_bench.py; tests/model/test_model.py)."""
        jumps = course.jump_times()
        inside = lambda ts: jnp.sort(jnp.where((ts > t0) & (ts < t1), ts, t1))  # noqa: E731
        jumps = inside(jumps)
        offsets = jnp.asarray(self.settle_hours, dtype=jumps.dtype) / 24.0
        steps = inside((jumps[:, None] + offsets[None, :]).ravel()) if self.settle_hours else None
        return Controls(dfx.PIDController(rtol=self.rtol, atol=self.atol, jump_ts=jumps,
                                          step_ts=steps), None, self.max_steps)

    def diffrax_adjoint(self) -> dfx.AbstractAdjoint:
        if self.adjoint not in ("reverse", "forward"):
            raise ValueError(f"adjoint must be 'reverse' or 'forward', got {self.adjoint!r}")
        return dfx.ForwardMode() if self.adjoint == "forward" else dfx.RecursiveCheckpointAdjoint()

    def dense(self, model, params, course, dosing, t0, t1):
        sol = integrate(model, params, course, t0, t1, self, dfx.SaveAt(dense=True))
        return sol.evaluate, solver_status(sol.result)

    def describe(self) -> dict:
        return dict(method="adaptive Tsit5 (PID)", rtol=self.rtol, atol=self.atol,
                    max_steps=self.max_steps)


def integrate(model, params, course, t0, t1, options: SolverOptions,
              saveat: dfx.SaveAt) -> dfx.Solution:
    """The dormancy ODE from `model.initial_state(params)` at t0 to t1 under `course` (the
    closed-form PK of the dosing), stepped as `options.controller` says; never throws (read
    `solver_status(sol.result)`)."""
    ctl = options.controller(course, t0, t1)
    return dfx.diffeqsolve(
        dfx.ODETerm(model.vector_field), options.solver, t0, t1, ctl.dt0,
        model.initial_state(params), args=(params, course), saveat=saveat,
        stepsize_controller=ctl.stepsize_controller, max_steps=ctl.max_steps, throw=False,
        adjoint=options.diffrax_adjoint())


class FixedSteps(eqx.Module):
    """Fixed-step Tsit5 for fitting: a step grid made of every dose time (kinks of the
    concentrations), `fine` equal steps from day 0 to `washout` days after the arm's last dose
    and `coarse` equal steps from there to the end of the study. Outputs between step points are
    read from the cubic Hermite interpolant (values and derivatives at the step ends).

    Why: with an adaptive controller the objective is only piecewise smooth (the step sequence
    changes with the parameters), so its exact gradient disagrees with its finite differences
    by more than a converged optimiser's gradient tolerance and line searches stall on the
    noise. On a fixed grid the objective is a smooth function of the parameters, every arm and
    start costs the same number of steps (no lane waits for a slower one), and the
    discretisation error is a smooth bias, checked against a tight adaptive solve in
    tests/test_fit.py.

    Why a scan of `solver.step` and not `diffeqsolve` with `StepTo`: the grid has a fixed
    length under jit and so repeats points (dose times clipped to the ends or on a grid point,
    zero-length steps), which `StepTo` rejects (it needs strictly increasing times)."""

    fine: int = eqx.field(static=True, default=256)
    coarse: int = eqx.field(static=True, default=96)
    washout: float = eqx.field(static=True, default=14.0)
    # how Tsit5 loops over its stages: None (diffrax's checkpointed while loop, reverse mode
    # only) or "bounded" (nested scans: any order and mix of forward and reverse mode, which the
    # population fit's Laplace gradient needs: reverse over forward over reverse)
    scan_kind: str | None = eqx.field(static=True, default=None)
    # repeated grid points (zero-length steps: padded doses, doses on a grid point or on the
    # other drug's dose) dropped from the grid, so that the scan is shorter (a zero-length
    # Tsit5 step is the identity: the same solution). Every solve must have at least this many
    # (`repeats`; the grid depends on the dosing and the PK only): one with fewer returns
    # NONFINITE instead of a solution on a truncated grid
    drop_repeats: int = eqx.field(static=True, default=0)

    def step_times(self, course, dosing, t0, t1):
        """The sorted step grid (fine + coarse + 1 + number of doses - drop_repeats,)."""
        amounts = jnp.concatenate([dosing.hcq.amount, dosing.eve.amount])
        times = jnp.concatenate([dosing.hcq.times, dosing.eve.times])
        last = jnp.max(jnp.where(amounts > 0, times, t0))
        t_mid = jnp.clip(last + self.washout, t0, t1)
        jumps = jnp.clip(course.jump_times(), t0, t1)
        fine = t0 + (t_mid - t0) * jnp.arange(self.fine) / self.fine
        coarse = t_mid + (t1 - t_mid) * jnp.arange(self.coarse + 1) / self.coarse
        ts = jnp.sort(jnp.concatenate([fine, coarse, jumps]))
        if not self.drop_repeats:
            return ts
        rep = jnp.concatenate([jnp.zeros(1, bool), ts[1:] == ts[:-1]])
        drop = rep & (jnp.cumsum(rep) <= self.drop_repeats)
        short = jnp.sort(jnp.where(drop, jnp.inf, ts))[:ts.shape[0] - self.drop_repeats]
        # too few repeats: real points were cut, so no solve (NaN: NONFINITE status)
        return jnp.where(jnp.sum(rep) >= self.drop_repeats, short, jnp.nan)

    def repeats(self, course, dosing, t0, t1) -> int:
        """Number of repeated points of the step grid of one solve (host side)."""
        ts = np.asarray(dataclasses.replace(self, drop_repeats=0).step_times(
            course, dosing, t0, t1))
        return int(np.sum(ts[1:] == ts[:-1]))

    def dense(self, model, params, course, dosing, t0, t1):
        ts = self.step_times(course, dosing, t0, t1)
        y0 = model.initial_state(params)
        term = dfx.ODETerm(model.vector_field)
        solver = dfx.Tsit5(scan_kind=self.scan_kind)
        args = (params, course)

        def step(carry, tt):
            y, state = carry
            ta, tb = tt
            # made_jump: the first stage is re-evaluated at every step (an IV dose makes the
            # vector field jump at a step point, so the previous step's last stage is not reused)
            y1, _, dense, state, _ = solver.step(term, ta, tb, y, args, state, made_jump=True)
            k = dense["k"]
            return (y1, state), (y1, k[0], k[-1])

        state0 = solver.init(term, ts[0], ts[1], y0, args)
        _, (ys, fa, fb) = jax.lax.scan(step, (y0, state0), (ts[:-1], ts[1:]))
        return _dense_output(ts, y0, ys, fa, fb)

    def stage_times(self, course, dosing, t0, t1):
        """(step grid ts (N + 1,), the Tsit5 stage times of every step (N, 7), sorted when
        read row by row): where `dense_tabulated` needs the drug signals."""
        ts = self.step_times(course, dosing, t0, t1)
        ta, tb = ts[:-1, None], ts[1:, None]
        c = jnp.asarray(_TSIT5_C, ts.dtype)
        # as diffrax: t0 + c dt, and exactly t1 where c == 1
        return ts, jnp.where(c == 1, tb, ta + c * (tb - ta))

    def dense_tabulated(self, model, params, ts, signals):
        """`dense` with the drug signals read from a table instead of computed from the
        course: `ts` (N + 1,) and `signals` (a `rates.DrugSignals` of (N, 7) arrays) at the
        stage times from `stage_times`. The same Tsit5 steps (the Butcher tableau of
        `diffrax.Tsit5`, every first stage re-evaluated) as `dense`, equal to it to rounding
        (tested); the signals are what the vector field spends most of its time on, and they
        are shared by every animal of an arm whose random effects are on other parameters."""
        from dormancy_model.model import rates as R

        y0 = model.initial_state(params)
        a_lower = [jnp.asarray(a, ts.dtype) for a in _TSIT5.a_lower]
        b_sol = jnp.asarray(_TSIT5.b_sol, ts.dtype)

        def step(y, row):
            ta, tb, sig = row
            dt = tb - ta

            def f(i, yi):
                s = R.DrugSignals(sig.gate[i], sig.deficit_effect[i])
                return model.derivatives(yi, R.rates_from_signals(s, params), params) * dt

            ks = [f(0, y)]
            for i, a in enumerate(a_lower):
                ks.append(f(i + 1, y + jnp.tensordot(a, jnp.stack(ks), axes=1)))
            y1 = y + jnp.tensordot(b_sol, jnp.stack(ks), axes=1)
            return y1, (y1, ks[0], ks[-1])

        _, (ys, fa, fb) = jax.lax.scan(step, y0, (ts[:-1], ts[1:], signals))
        return _dense_output(ts, y0, ys, fa, fb)

    def describe(self) -> dict:
        return dict(method="fixed-step Tsit5", fine_steps=self.fine, coarse_steps=self.coarse,
                    washout_days=self.washout, plus="every dose time")


_TSIT5 = dfx.Tsit5.tableau
_TSIT5_C = (0.0, *(float(c) for c in _TSIT5.c))


def _dense_output(ts, y0, ys, fa, fb):
    """(at, status) of a fixed-step solve: states ys (N, 4) at ts[1:], stage increments fa,
    fb (N, 4) at the ends of each step."""
    ya = jnp.concatenate([y0[None], ys[:-1]])

    def at(t):
        i = jnp.clip(jnp.searchsorted(ts, t, side="right") - 1, 0, ts.shape[0] - 2)
        return _hermite(t, ts[i], ts[i + 1], ya[i], ys[i], fa[i], fb[i])

    return at, finite_status(jnp.asarray(S.OK), ys)


def _hermite(t, ta, tb, ya, yb, fa, fb):
    """Cubic Hermite interpolant on [ta, tb] at t (ya, yb values; fa, fb derivatives)."""
    h = tb - ta
    th = jnp.where(h > 0, (t - ta) / jnp.where(h > 0, h, 1.0), 0.0)
    th2, th3 = th * th, th * th * th
    return ((2 * th3 - 3 * th2 + 1) * ya + (th3 - 2 * th2 + th) * h * fa
            + (3 * th2 - 2 * th3) * yb + (th3 - th2) * h * fb)
