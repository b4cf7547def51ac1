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

    def growth_clock(self, schedule, t1, rtol=1e-11, atol=1e-13, with_gate=False):
        """kappa(t) = integral_0^t g(M(u)) du (the lesions' growth clock; t before 0: t), from
        the EVE ODE with a clock state, solved between EVE doses with DOP853 and its dense
        output (the EVE system alone is not stiff). `with_gate`: also return the gate g(M(t))
        (a function of one day) and the segment ends."""
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

        def gate_at(x):
            if x < 0.0:
                return 1.0
            j = int(np.searchsorted(ends, x))
            return self.gate(float(segs[j][2](x)[1])) if j < len(segs) else 1.0

        def kappa_many(xs):  # kappa at sorted days xs >= 0 (vectorised per segment)
            out = np.empty(len(xs))
            j = np.searchsorted(ends, xs)
            for k in np.unique(j):
                sel = j == k
                if k < len(segs):
                    out[sel] = segs[k][2](xs[sel])[3]
                else:
                    out[sel] = float(segs[-1][2](segs[-1][1])[3]) + (xs[sel] - segs[-1][1])
            return out

        kappa.many = kappa_many
        return (kappa, gate_at, ends) if with_gate else kappa

    def clone_clock(self, schedule, t1, switch_size):
        """The birth-death clock of a marrow clone under EVE (the package's `model.founding`,
        written out): G(u) = lambda_p kappa(u) - delta_p u, the survival of a clone founded at e
        p(e) = 1 / B(e), B(e) = integral_e^inf b e^-(G - G(e)), solved backward as the ODE
        B' = -b + (b - delta_p) B from B(t1) = lambda_p / r (untreated after t1, the clock's
        end) with DOP853 between the EVE doses (b = lambda_p g(M) from the clock's EVE states),
        closed form before day 0; H(e) = G(e) - ln B(e); and the running maximum of G (on a
        0.001-day grid). Returns (G, Ghat, H, p) as functions of one day."""
        p = self.p
        lam, dlt = p["lambda_p"], p["delta_p"]
        r = lam - dlt
        kappa, gate_at, ends = self.growth_clock(schedule, t1, with_gate=True)

        def net(x):
            return lam * kappa(x) - dlt * x

        cuts = sorted({0.0, t1} | {float(e) for e in ends if 0.0 < e < t1})
        segs, b_end = [], lam / r
        for a, b in zip(cuts[-2::-1], cuts[:0:-1], strict=True):  # backward, segment by segment
            def rhs(e, y):
                bb = lam * gate_at(e)
                return [-bb + (bb - dlt) * y[0]]

            sol = solve_ivp(rhs, (b, a), [b_end], method="DOP853", rtol=1e-12, atol=1e-14,
                            dense_output=True)
            segs.append((a, b, sol.sol))
            b_end = float(sol.y[0, -1])
        b0 = b_end

        segs.reverse()  # in time order
        starts = np.array([a for a, _, _ in segs])

        def big_b(e):
            if e >= t1:
                return lam / r
            if e < 0:
                u = np.exp(r * e)
                return lam / r * (1.0 - u) + u * b0
            k = max(int(np.searchsorted(starts, e, side="right")) - 1, 0)
            return float(segs[k][2](e)[0])

        def big_b_many(es):  # at sorted days in [0, t1), vectorised per segment
            out = np.empty(len(es))
            k = np.maximum(np.searchsorted(starts, es, side="right") - 1, 0)
            for j in np.unique(k):
                sel = k == j
                out[sel] = segs[j][2](es[sel])[0]
            return out

        grid = np.arange(0.0, t1 + 0.001, 0.001)
        run = np.maximum.accumulate(lam * kappa.many(grid) - dlt * grid)

        def peak(x):
            if x <= 0:
                return net(x)
            return max(float(run[min(int(x / 0.001), len(run) - 1)]), net(x))

        def level(e):
            return net(e) - np.log(big_b(e))

        level.many = lambda es: lam * kappa.many(es) - dlt * es - np.log(big_b_many(es))
        return net, peak, level, lambda e: 1.0 / big_b(e)

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

        # its derivative, the escape flux k_rp R (no drug: gate 1), vectorised (for the clocked
        # hazard's history part)
        self.history_flux = lambda s: c * self.p["k_rp"] * sol.sol(np.asarray(s, float))[1]
        return c * sol.y[1, -1], psi

    def solve(self, schedule, ts, method="Radau", rtol=1e-10, atol=1e-12, switch_size=1e4):
        """States (len(ts), 11) at ts (days), and the hazard at ts (conditional on no relapse
        before ts[0] = 0 when there is a history)."""
        p = self.p
        lags, weights = self.relapse_lags(switch_size)
        ts = np.asarray(ts, float)
        raw = ts[:, None] - lags[None, :]
        clone = None
        if any(e[1] == 4 for e in self.dose_events(schedule)):  # EVE: lesions on the clock
            tau = np.log(p["detection_size"] / switch_size) / p["lesion_growth_rate"]
            clone = self.clone_clock(schedule, float(ts[-1]), switch_size)
            raw, raw0 = self._founding_times(clone, schedule, ts, tau, switch_size)
        lagged = np.maximum(raw, ts[0])
        want = np.unique(np.concatenate([ts, lagged.ravel()]))
        r_hist, psi = self.history()
        y = np.zeros(11)
        y[0] = p["dormant_initial"]
        y[1] = p["reactivating_initial"] + r_hist
        y[2] = p["proliferating_initial"]
        rhs = self.rhs
        if clone is not None:  # a 12th state: the survival-weighted escape, p(t) dE
            y = np.append(y, 0.0)
            surv = clone[3]

            def rhs(t, yy):
                d = self.rhs(t, yy[:11])
                return np.append(d, surv(t) * d[3])
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
                sol = solve_ivp(rhs, (t, tb), y, method=method, rtol=rtol, atol=atol,
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
        states = np.array([out[tt][:11] for tt in ts])
        self.nfev = nfev
        if clone is not None:
            return states, self._clocked_hazard(clone, out, raw, raw0, psi, weights)
        e_lag = np.array([[out[tt][3] for tt in row] for row in lagged])
        e_mean = np.sum(np.where(raw > ts[0], weights, 0.0) * e_lag, axis=1)
        # clones founded in the history and detected after day 0 (the history's escape from
        # -L_q on; before it they were detected before day 0)
        e_mean += np.sum(weights * (psi(np.minimum(raw - ts[0], 0.0)) - psi(-lags)), axis=1)
        hazard = (1.0 - p["delta_p"] / p["lambda_p"]) * e_mean
        return states, hazard

    def _founding_times(self, clone, schedule, ts, tau, switch_size):
        """e*_q(t) (T, K) and e*_q(0) (K,): the founding time whose clones, at node y_q, have
        switched by the latest detected switch r(t): H(e*) = Ghat(r) - ln S + y_q (brentq; H
        is increasing), at most r."""
        from scipy.optimize import brentq

        from dormancy_model.model.observables import lag_rule

        net, peak, level, _ = clone
        y, _ = lag_rule()
        sig = self.detected_switch(schedule, np.append(ts, 0.0), tau)
        # H on a 0.01-day grid over the course (for the bracket), brentq to 1e-11 days
        t1 = float(np.max(ts))
        grid = np.arange(0.0, t1, 0.01)
        h_grid = level.many(grid)

        def est(sigma):
            out = []
            for yq in y:
                target = peak(sigma) - np.log(switch_size) + yq
                if level(sigma) <= target:
                    out.append(sigma)
                    continue
                if target >= h_grid[0]:
                    j = int(np.searchsorted(h_grid, target))
                    lo, hi = grid[max(j - 1, 0)], min(grid[min(j, len(grid) - 1)], sigma)
                else:
                    lo, hi = min(-50.0, sigma), min(0.0, sigma)
                    while level(lo) > target:
                        lo -= 2.0 * abs(lo)
                out.append(brentq(lambda e, v=target: level(e) - v, lo, hi, xtol=1e-11))
            return np.array(out)

        return np.array([est(s) for s in sig[:-1]]), est(sig[-1])

    def _clocked_hazard(self, clone, out, raw, raw0, psi, weights):
        """Lambda(t) - Lambda(0) = sum_q w_q (F(e*_q(t)) - F(e*_q(0))), F(x) = integral_0^x p dE
        (the 12th state) after day 0 and -integral_x^0 p dPsi before (Simpson on a 0.005-day
        grid of p psi, psi the history solve's escape flux, linear between)."""
        surv = clone[3]
        T = self.p["history_days"]
        if T > 0:  # -integral_x^0 p psi on a 0.005-day grid (Simpson per pair of cells)
            g = np.linspace(-T, 0.0, int(np.ceil(T / 0.005)) * 2 + 1)
            f = np.array([surv(v) for v in g]) * self.history_flux(g)
            pair = (g[2] - g[0]) / 6.0 * (f[:-2:2] + 4.0 * f[1:-1:2] + f[2::2])
            cum = np.concatenate([[0.0], np.cumsum(pair)])
            hist_f = cum - cum[-1]  # at g[::2]

        def big_f(x):
            if x >= 0:
                return out[x][11]
            if T <= 0 or x >= 0:
                return 0.0
            return float(np.interp(max(x, -T), g[::2], hist_f))

        f0 = np.array([big_f(x) for x in raw0])
        return np.array([np.sum(weights * (np.array([big_f(x) for x in row]) - f0))
                         for row in raw])
