"""Independent reference implementation of the full model in NumPy/SciPy (validation only).

Written separately from the package's JAX code on purpose: PK as ordinary ODE states (not the
closed form), doses applied as state jumps between solve_ivp segments, the relapse hazard from
the cumulative escape read at the lagged times of the relapse-lag law (lags written out here; only
the Gauss nodes and weights of the law are taken from the package, `observables.lag_rule`, which
tests/model/test_relapse_law.py checks against scipy quadrature). Used by the tests (Radau, tight
tolerances) and by the benchmark as the scipy baseline (LSODA).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def _hill(x, k, n):
    x = np.maximum(x, 0.0)
    return x**n / (k**n + x**n) if x > 0 else 0.0


class ReferenceModel:
    """Full 11-state ODE: D, R, P, E, EVE (depot, central, periph), HCQ (depot, central,
    periph, effect). Parameter values in internal units (dict of floats)."""

    def __init__(self, p: dict, per_kg: bool = False):
        self.p = {k: float(v) for k, v in p.items()}
        bw = self.p["body_weight"] if per_kg else 1.0
        self.bw = self.p["body_weight"]
        self.vol = {d: (self.p[f"{d}_v1"] * bw, self.p[f"{d}_v2"] * bw) for d in ("eve", "hcq")}
        self.flow = {d: (self.p[f"{d}_cl"] * bw, self.p[f"{d}_q"] * bw) for d in ("eve", "hcq")}

    def rhs(self, t, y):
        p = self.p
        D, R, P, E, ea, ec, ep, ha, hc, hp, he = y
        out = np.empty(11)
        for i0, d, amts in ((4, "eve", (ea, ec, ep)), (7, "hcq", (ha, hc, hp))):
            a, c, per = amts
            (v1, v2), (cl, q) = self.vol[d], self.flow[d]
            ka = p[f"{d}_ka"]
            out[i0] = -ka * a
            out[i0 + 1] = ka * a - cl / v1 * c - q / v1 * c + q / v2 * per
            out[i0 + 2] = q / v1 * c - q / v2 * per
        c_eve = 1000.0 * ec / self.vol["eve"][0]
        c_hcq = 1000.0 * hc / self.vol["hcq"][0]
        out[10] = p["hcq_ke0"] * (c_hcq - he)
        M = 1.0 - p["eve_imax"] * _hill(c_eve, p["eve_ic50"], p["eve_hill"])
        block = p["hcq_imax"] * _hill(he, p["hcq_ic50"], p["hcq_hill"])
        demand = 1.0 + p["autophagy_induction"] * (1.0 - M)
        cap = p["autophagy_reserve"] * (1.0 - block)
        deficit = max(demand - cap, 0.0)
        kn = p["mtor_k"] ** p["mtor_hill"]
        mn = max(M, 0.0) ** p["mtor_hill"]
        g = mn * (kn + 1.0) / (kn + mn)
        death_d = p["delta_d0"] + p["delta_max"] * _hill(deficit, p["deficit_k"], p["deficit_hill"])
        to_r = p["k_dr"] * g * D
        to_d = p["k_rd"] * R
        to_p = p["k_rp"] * g * R
        back = p["k_pd"] * P
        out[0] = -to_r + to_d + back - death_d * D
        out[1] = to_r - to_d - to_p - p["delta_r"] * R
        div = p["lambda_p"] * g * (1.0 - P / p["detection_size"])
        out[2] = to_p + (div - p["delta_p"]) * P - back
        out[3] = to_p
        return out

    def dose_events(self, schedule):
        """Sorted list of (effective time, state index, amount added in mg)."""
        ev = []
        for drug, i0 in (("eve", 4), ("hcq", 7)):
            t, a, k, o = schedule.events(drug)
            for ti, ai, ki, oi in zip(t, a, k, o, strict=True):
                if ai == 0:
                    continue
                amount = ai * (self.bw if ki else 1.0)
                if oi:
                    ev.append((ti + self.p[f"{drug}_tlag"], i0, self.p[f"{drug}_f"] * amount))
                else:
                    ev.append((ti, i0 + 1, amount))
        ev.sort()
        return ev

    def relapse_lags(self, switch_size):
        """(nodes, weights) of the relapse lag of a surviving clone: birth-death growth to the
        switch size, (ln(S r / b) - y) / r with r = b - d, then ln(N_det / S) / g."""
        from dormancy_model.model.observables import lag_rule

        p = self.p
        y, w = lag_rule()
        b, r = p["lambda_p"], p["lambda_p"] - p["delta_p"]
        to_switch = np.maximum((np.log(switch_size * r / b) - y) / r, 0.0)
        return to_switch + np.log(p["detection_size"] / switch_size) / p["lesion_growth_rate"], w

    def gate(self, ec):
        """mTOR gate g(M) from the EVE amount in the central compartment (mg)."""
        p = self.p
        M = 1.0 - p["eve_imax"] * _hill(1000.0 * ec / self.vol["eve"][0], p["eve_ic50"],
                                        p["eve_hill"])
        kn = p["mtor_k"] ** p["mtor_hill"]
        mn = max(M, 0.0) ** p["mtor_hill"]
        return mn * (kn + 1.0) / (kn + mn)

    def growth_clock(self, schedule, t1, rtol=1e-11, atol=1e-13):
        """kappa(t) = integral_0^t g(M(u)) du (the lesions' growth clock; t before 0: t), from
        the EVE ODE with a clock state, solved between EVE doses with DOP853 and its dense
        output (the EVE system alone is not stiff)."""
        p = self.p
        (v1, v2), (cl, q) = self.vol["eve"], self.flow["eve"]
        ka = p["eve_ka"]

        def rhs(t, y):
            a, c, per, _ = y
            return [-ka * a, ka * a - cl / v1 * c - q / v1 * c + q / v2 * per,
                    q / v1 * c - q / v2 * per, self.gate(c)]

        events = [e for e in self.dose_events(schedule) if e[1] in (4, 5) and e[0] < t1]
        y, t, segs, i = np.zeros(4), 0.0, [], 0
        while i < len(events) and events[i][0] <= t:
            y[events[i][1] - 4] += events[i][2]
            i += 1
        for tb in sorted({e[0] for e in events if e[0] > 0} | {t1}):
            sol = solve_ivp(rhs, (t, tb), y, method="DOP853", rtol=rtol, atol=atol,
                            dense_output=True)
            if not sol.success:
                raise RuntimeError(sol.message)
            segs.append((t, tb, sol.sol))
            y, t = sol.y[:, -1].copy(), tb
            while i < len(events) and events[i][0] <= t:
                y[events[i][1] - 4] += events[i][2]
                i += 1

        ends = np.array([b for _, b, _ in segs])

        def kappa(x):
            if x <= 0.0:
                return x
            j = int(np.searchsorted(ends, x))
            if j < len(segs):
                return float(segs[j][2](x)[3])
            return float(segs[-1][2](segs[-1][1])[3]) + (x - segs[-1][1])

        return kappa

    def detected_switch(self, schedule, ts, tau):
        """r(t): the latest switch day of a lesion detected by t, kappa(r) = kappa(t) - tau
        (brentq on the clock; kappa(x) <= x, so r is in [kappa(t) - tau, t])."""
        from scipy.optimize import brentq

        kappa = self.growth_clock(schedule, float(np.max(ts)))
        out = []
        for t in ts:
            target = kappa(t) - tau
            if target <= 0.0:
                out.append(target)
            else:
                out.append(brentq(lambda x, k=target: kappa(x) - k, target, t, xtol=1e-10))
        return np.array(out)

    def history(self, rtol=1e-11, atol=1e-14):
        """The untreated history of `history_days` T before day 0, solved numerically: from one
        dormant cell at -T (no drug, so the full right-hand side with empty PK states), scaled
        so that D(0) = dormant_initial. Returns (R at day 0, Psi(s) = escape between s and day
        0 counted negative, as a function of days s <= 0)."""
        T = self.p["history_days"]
        if T <= 0:
            return 0.0, lambda s: np.zeros_like(np.asarray(s, float))
        y0 = np.zeros(11)
        y0[0] = 1.0
        sol = solve_ivp(self.rhs, (-T, 0.0), y0, method="Radau", rtol=rtol, atol=atol,
                        dense_output=True)
        if not sol.success:
            raise RuntimeError(sol.message)
        c = self.p["dormant_initial"] / sol.y[0, -1]
        e_end = sol.y[3, -1]

        def psi(s):
            s = np.clip(np.asarray(s, float), -T, 0.0)
            return c * (sol.sol(s.ravel())[3].reshape(s.shape) - e_end)

        return c * sol.y[1, -1], psi

    def solve(self, schedule, ts, method="Radau", rtol=1e-10, atol=1e-12, switch_size=1e4):
        """States (len(ts), 11) at ts (days), and the hazard at ts (conditional on no relapse
        before ts[0] = 0 when there is a history)."""
        p = self.p
        lags, weights = self.relapse_lags(switch_size)
        ts = np.asarray(ts, float)
        raw = ts[:, None] - lags[None, :]
        if any(e[1] == 4 for e in self.dose_events(schedule)):  # EVE: lesions on the clock
            tau = np.log(p["detection_size"] / switch_size) / p["lesion_growth_rate"]
            raw = raw + (self.detected_switch(schedule, ts, tau) - (ts - tau))[:, None]
        lagged = np.maximum(raw, ts[0])
        want = np.unique(np.concatenate([ts, lagged.ravel()]))
        r_hist, psi = self.history()
        y = np.zeros(11)
        y[0] = p["dormant_initial"]
        y[1] = p["reactivating_initial"] + r_hist
        y[2] = p["proliferating_initial"]
        out = {}
        t = ts[0]
        events = [e for e in self.dose_events(schedule) if e[0] < ts[-1]]
        bounds = sorted({e[0] for e in events if e[0] > t} | {ts[-1]})
        ei = 0
        nfev = 0
        while ei < len(events) and events[ei][0] <= t:
            y[events[ei][1]] += events[ei][2]
            ei += 1
        wanted = set(want.tolist())
        for tb in bounds:
            if tb > t:
                sel = want[(want >= t) & (want < tb)]
                t_eval = np.append(sel, tb)
                sol = solve_ivp(self.rhs, (t, tb), y, method=method, rtol=rtol, atol=atol,
                                t_eval=t_eval)
                nfev += sol.nfev
                if not sol.success:
                    raise RuntimeError(sol.message)
                for tt, yy in zip(sol.t, sol.y.T, strict=True):
                    if tt in wanted:
                        out.setdefault(tt, yy.copy())
                y = sol.y[:, -1].copy()
            t = tb
            while ei < len(events) and events[ei][0] <= t:
                y[events[ei][1]] += events[ei][2]
                ei += 1
        states = np.array([out[tt] for tt in ts])
        e_lag = np.array([[out[tt][3] for tt in row] for row in lagged])
        e_mean = np.sum(np.where(raw > ts[0], weights, 0.0) * e_lag, axis=1)
        # clones founded in the history and detected after day 0 (the history's escape from
        # -L_q on; before it they were detected before day 0)
        e_mean += np.sum(weights * (psi(np.minimum(raw - ts[0], 0.0)) - psi(-lags)), axis=1)
        hazard = (1.0 - p["delta_p"] / p["lambda_p"]) * e_mean
        self.nfev = nfev
        return states, hazard
