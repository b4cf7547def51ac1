"""The trial runs end to end: replicated virtual trials with analysis, what-ifs and the report
(`run_trial_report`), and the calibration written to a JSON record (`run_calibration`). Used by
`dormancy trial`, `dormancy calibrate`, the demo and the tests."""

from __future__ import annotations

import time
from pathlib import Path

from dormancy_model.errors import InputError, check_range, check_seed

MAX_SPAN = 5.0  # calibration grid half-width in ln units (a factor e**5 ~ 150 either way)


def run_trial_report(out: Path, *, design: str = "clever", replicates: int = 100, seed: int = 1,
                     model: str = "human", calibration: str | None = None,
                     what_if: list[str] | None = None, method: str = "fast",
                     discontinuation: float = 0.0, chunk: int = 512, progress=None,
                     posterior: str | None = None, posterior_draws: int = 20,
                     posterior_replicates: int | None = None) -> dict:
    """Run, analyse and write OUT/report.md, report.html, trials.csv (+ figures, whatif_*.csv).

    `calibration`: a calibration JSON for the population's typical values; None: the packaged
    default (`calibrate.DEFAULT_CALIBRATION`); "": none (the parameter file's values).
    `posterior`: the posterior calibration file the what-ifs draw parameter sets from
    (`params.postfile`); None: `fits/clever_posterior.json` if it exists, else none; "none":
    none (the what-ifs then show replicate noise at the calibration only). A file named here
    (not the default one) also makes the main run the posterior predictive check: the
    replicated trials run over min(posterior_draws, replicates) draws x replicates // draws
    trials (`predictive.posterior_trials`), so the report's reported-vs-simulated intervals
    carry the parameter uncertainty. With a posterior each
    what-if runs `posterior_draws` draws x `posterior_replicates` trials (default
    max(2, what-if replicates // 5)) plus the what-if replicates at the posterior centre, and
    reports the pooled interval, the replicate-only interval and the variance decomposition
    (`whatif.compare_designs_posterior` and siblings).
    `progress(advance_text)` is called as work proceeds. Returns headline numbers, the
    "reported vs simulated" table (`check`), the per-trial table (`trials`) and
    `agent_failures` (patients with agent_status != "ok") and the report's `notes`.
    """
    import jax
    import numpy as np

    from dormancy_model.io import atomic_write_csv, check_out_dir, output_dir
    from dormancy_model.params.postfile import posterior_path, read_posterior
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.trials import whatif as W
    from dormancy_model.trials.calibrate import (
        DEFAULT_CALIBRATION,
        load_calibration,
        reported_vs_simulated,
    )
    from dormancy_model.trials.design import get_design
    from dormancy_model.trials.population import Population
    from dormancy_model.trials.protocol import trial
    from dormancy_model.trials.report import write_report

    if replicates < 1:
        raise InputError("--replicates", "replicates", f"must be >= 1, got {replicates}")
    if method not in ("fast", "exact"):
        raise InputError("--method", "method", f"must be fast or exact, got {method!r}")
    if not 0 <= discontinuation <= 1:
        raise InputError("--discontinuation", "discontinuation", "must be in [0, 1]")
    check_seed("--seed", "seed", seed)
    specs = [W.parse_whatif(s) for s in (what_if or [])]  # validate before any work
    d = get_design(design).replace(discontinuation_prob=discontinuation)
    params = load_model_parameters(model)
    # the default file is only looked for when a what-if will use it; a given one is checked
    post_path = posterior_path(posterior) if (specs or posterior is not None) else None
    pfile = read_posterior(post_path, params) if post_path is not None else None
    if pfile is not None:
        if isinstance(posterior_draws, bool) or not isinstance(posterior_draws, int) or not (
                2 <= posterior_draws <= MAX_POSTERIOR_DRAWS):
            raise InputError("--posterior-draws", "posterior_draws", f"must be a whole number "
                             f"in [2, {MAX_POSTERIOR_DRAWS}], got {posterior_draws!r}")
        if posterior_replicates is not None and (
                isinstance(posterior_replicates, bool) or not isinstance(posterior_replicates, int)
                or not 2 <= posterior_replicates <= MAX_POSTERIOR_REPLICATES):
            raise InputError("--posterior-replicates", "posterior_replicates", f"must be a whole"
                             f" number in [2, {MAX_POSTERIOR_REPLICATES}], got "
                             f"{posterior_replicates!r}")
    # a posterior named on the command line also makes the main run the posterior predictive
    # check (replicated trials over its draws); the default file only serves the what-ifs
    ppc = pfile is not None and posterior is not None
    pop = Population()
    notes = []
    if ppc:
        pass  # the posterior's draws set the population (notes below)
    elif calibration != "":
        typical = load_calibration(calibration, params)
        pop = pop.replace(typical=typical)
        label = calibration or f"the packaged {DEFAULT_CALIBRATION}"
        notes.append(f"population typical values from {label}: " + ", ".join(
            f"{k} = {v:.4g} /day" for k, v in typical.items()))
    else:
        notes.append("no calibration file: parameter-file typical values")
    check_out_dir(out)  # nothing is created until the run succeeds (output_dir below)
    with output_dir(out) as out_dir:
        key = jax.random.key(seed)
        tick = progress or (lambda text: None)
        if ppc:  # the main run is the posterior predictive check
            from dormancy_model.trials.predictive import posterior_trials, predictive_draws

            n_draws = min(posterior_draws, replicates)
            per_draw = max(1, replicates // n_draws)
            ppc_unc = predictive_draws(pfile, key=key, draws=n_draws,
                                       replicates_per_draw=per_draw)
            n_draws = ppc_unc.draws  # the file may hold fewer draws
            res, trials = posterior_trials(
                d, params, ppc_unc, key=key, method=method, chunk=chunk,
                progress=lambda i, n: tick(f"simulate posterior draw {i}/{n}"))
            notes.append(f"posterior predictive check: the replicated trials run over "
                         f"{n_draws} draws of {pfile.source} x {per_draw} trials each "
                         f"({n_draws * per_draw} trials), so each simulated interval carries "
                         "the parameter uncertainty and the replicate noise; parameters the "
                         "posterior does not calibrate at the parameter-file values (as in its "
                         "calibration), not --calibration")
        else:
            res = trial(d, params, key=key, replicates=replicates, population=pop,
                        method=method, chunk=chunk,
                        progress=lambda i, n, t: tick(f"simulate {t}"))
            trials = res.summary()
        tick("analysis")
        check = reported_vs_simulated(trials, res.patients)
        whatifs = {}
        wkey = jax.random.fold_in(key, 7)
        wrep = max(2, replicates // 4)
        unc = None
        if pfile is not None and specs:
            unc = W.posterior_uncertainty(
                pfile, draws=posterior_draws, centre_replicates=wrep, seed=seed,
                replicates=posterior_replicates or max(2, wrep // 5))
            notes.append("what-ifs over the posterior: " + unc.describe() + "; each answer: "
                         "median [5%, 95%] of the pooled trials (parameters and replicate "
                         "noise), rep_p05-rep_p95 the replicate-only interval, share_parameters"
                         " = between-draw / total variance (law of total variance); the "
                         "posterior's population: parameter-file values for everything it "
                         "does not calibrate (as in its calibration), not --calibration")
            notes += [f"posterior file warning: {w}" for w in pfile.warnings]
        elif pfile is not None and not ppc:
            notes.append(f"posterior {pfile.source} read and checked; it is used by the "
                         "what-ifs only (none asked)")
        elif specs:
            notes.append("what-ifs: replicate noise only, at the calibration point (no "
                         "posterior file: --posterior FILE, or `dormancy calibrate --posterior` "
                         "to write fits/clever_posterior.json)")
        for name, vals in specs:
            if unc is not None:
                tab = _posterior_whatif(W, name, vals, d, params, wkey, unc, method, tick)
                notes.append(W.posterior_note(tab, name))
                atomic_write_csv(out_dir / f"whatif_{name}.csv", tab)
                whatifs[f"{name} (posterior: {unc.draws} draws x {unc.replicates} trials; "
                        f"replicate-only: {unc.centre_replicates} trials)"] = W.report_view(tab)
                tick(f"what-if {name}")
                continue
            if name == "cycles":
                tab = W.compare_designs(W.cycles_designs(d, vals), params, key=wkey,
                                        replicates=wrep, population=pop, method=method)
            elif name == "dose":
                tab = W.compare_designs(W.dose_designs(d, vals), params, key=wkey, replicates=wrep,
                                        population=pop, method=method)
            elif name == "combo":
                tab, best = W.combo_vs_single(d, params, n_per_arm=vals[0], key=wkey,
                                              replicates=wrep, population=pop, method=method)
                notes.append(f"combo n={vals[0]} per arm: P(HCQ+EVE best of the three arms) = "
                             + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
            else:
                tab, summ = W.sample_size(d, params, key=wkey, population=pop, sizes=vals,
                                          method=method)
                notes.append("confirmatory trial HCQ+EVE vs observation (3-year RFS "
                             f"{summ['rfs_3y_treated']:.3f} vs {summ['rfs_3y_observation']:.3f}): "
                             f"n per arm for 80% power, Schoenfeld {summ['n_per_arm_schoenfeld']:g}"
                             f", resampled log-rank {summ['n_per_arm_resampled']}")
            atomic_write_csv(out_dir / f"whatif_{name}.csv", tab)
            whatifs[f"{name} ({wrep} replicates)" if name != "sample-size" else name] = tab
            tick(f"what-if {name}")
        head = write_report(res, trials, out_dir, check=check, whatifs=whatifs, notes=notes)
        tick("report")
    failed = int(np.sum(res.patients["agent_status"] != "ok"))
    return {"check": check, "trials": trials, "agent_failures": failed, "notes": notes, **head}


MAX_POSTERIOR_DRAWS = 10_000  # parameter sets per what-if (each runs its own trials)
MAX_POSTERIOR_REPLICATES = 10_000  # trials per draw


def _posterior_whatif(W, name, vals, d, params, key, unc, method, tick):
    """One what-if over the posterior (`whatif.*_posterior`)."""
    prog = lambda i, n, t: tick(f"what-if {name}: {t}")  # noqa: E731
    if name == "cycles":
        designs = W.cycles_designs(d, vals)
        ref = f"{d.cycles} cycles" if f"{d.cycles} cycles" in designs else None
        return W.compare_designs_posterior(designs, params, key=key, unc=unc, reference=ref,
                                           method=method, progress=prog)
    if name == "dose":
        return W.compare_designs_posterior(W.dose_designs(d, vals), params, key=key, unc=unc,
                                           reference="full dose", method=method, progress=prog)
    if name == "combo":
        return W.combo_vs_single_posterior(d, params, n_per_arm=vals[0], key=key, unc=unc,
                                           method=method, progress=prog)
    return W.sample_size_posterior(d, params, key=key, unc=unc, sizes=vals, method=method,
                                   progress=prog)


def run_calibration(out: Path, *, model: str = "human", replicates: int = 16,
                    check_replicates: int = 32, points: int = 3, span: float = 1.0,
                    seed: int = 2026, command: str | None = None, progress=None):
    """Calibrate the CLEVER design's typical delta_max and k_dr (`calibrate.calibrate`) and
    write the JSON record to `out` (all inputs are validated before any work).

    `command`: the command line recorded in the file. `progress(text)` is called after each
    simulated grid point and the check. Returns (CalibrationResult, record).
    """
    import jax

    from dormancy_model.io import atomic_write_json, check_out_file, prepare_out_dir
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.trials.calibrate import calibrate, calibration_record
    from dormancy_model.trials.design import clever_design

    for flag, v in (("--replicates", replicates), ("--check-replicates", check_replicates)):
        if v < 1:
            raise InputError(flag, flag[2:].replace("-", "_"), f"must be >= 1, got {v}")
    if points < 3:  # the quadratic response surface has 6 coefficients: >= 3 x 3 points
        raise InputError("--points", "points", f"must be >= 3, got {points}")
    check_range("--span", "span", span, 0, MAX_SPAN, lo_open=True)
    check_seed("--seed", "seed", seed)
    out = Path(out)
    if out.suffix != ".json":
        raise InputError(str(out), "--out", "must be a .json file path")
    check_out_file(out)  # before the expensive run
    params = load_model_parameters(model)
    t = time.perf_counter()
    tick = progress or (lambda text: None)
    res = calibrate(clever_design(), params, key=jax.random.key(seed), replicates=replicates,
                    span=span, points=points, check_replicates=check_replicates,
                    progress=lambda i, n, s: tick(f"{s} {i}/{n} "
                                                  f"({time.perf_counter() - t:.0f} s)"))
    rec = calibration_record(res, params, seed)
    if command is not None:
        rec["command"] = command
    rec["wall_seconds"] = round(time.perf_counter() - t, 1)
    prepare_out_dir(out.parent)
    atomic_write_json(out, rec)
    return res, rec


def run_posterior_calibration(out: Path, *, model: str = "human", points: int = 64,
                              replicates: int = 32, parameters=None, chains: int = 4,
                              warmup: int = 500, samples: int = 500, box_sd: float = 2.5,
                              seed: int = 2026, netcdf: bool = True, method: str = "fast",
                              untreated: int | None = None, command: str | None = None,
                              refine_points: int = 0, refine_margin: float | None = None,
                              first_wave: Path | None = None, progress=None):
    """Posterior calibration of the CLEVER design's population parameters
    (`posterior.calibrate_posterior`), written to the JSON file `out` (draws, diagnostics,
    provenance) and, with `netcdf`, the arviz InferenceData next to it (`out` with suffix
    .nc). Every input is validated before any work. Returns (PosteriorResult, record)."""
    import jax

    from dormancy_model.errors import suggest
    from dormancy_model.io import atomic_write_json, check_out_file, prepare_out_dir
    from dormancy_model.params.table import load_model_parameters
    from dormancy_model.trials import posterior as P
    from dormancy_model.trials.calibrate import _git_commit
    from dormancy_model.trials.design import clever_design
    from dormancy_model.trials.emulator import n_features

    names = tuple(P.DEFAULT_PARAMETERS if parameters is None else parameters)
    if not names:
        raise InputError("--parameters", "parameters", "empty")
    for n in names:
        if n not in P.PRIOR_LOG_SD:
            raise InputError("--parameters", "parameters", f"unknown calibration parameter "
                             f"{n!r}{suggest(n, P.PRIOR_LOG_SD)}; known: "
                             + ", ".join(P.PRIOR_LOG_SD))
    if len(set(names)) != len(names):
        raise InputError("--parameters", "parameters", "duplicate names")
    need = n_features(len(names)) + 1
    if points < need:
        raise InputError("--design-points", "design_points", f"must be >= {need} for a "
                         f"quadratic emulator in {len(names)} parameters, got {points}")
    if replicates < 3:  # the synthetic likelihood needs a spread over trials
        raise InputError("--replicates", "replicates", f"must be >= 3 with --posterior, "
                         f"got {replicates}")
    for flag, v, lo in (("--chains", chains, 1), ("--warmup", warmup, 10),
                        ("--samples", samples, 10)):
        if v < lo:
            raise InputError(flag, flag[2:], f"must be >= {lo}, got {v}")
    check_range("--box-sd", "box_sd", box_sd, 0, 4, lo_open=True)
    if method not in ("fast", "exact"):
        raise InputError("--method", "method", f"must be fast or exact, got {method!r}")
    check_seed("--seed", "seed", seed)
    untreated = P.DEFAULT_UNTREATED if untreated is None else untreated
    if untreated < 100:  # the prognosis terms' rate ratio needs events in both groups
        raise InputError("--untreated", "untreated", f"must be >= 100, got {untreated}")
    out = Path(out)
    if out.suffix != ".json":
        raise InputError(str(out), "--out", "must be a .json file path")
    check_out_file(out)
    if netcdf:
        check_out_file(out.with_suffix(".nc"))
    if refine_points < 0 or (refine_points and refine_points < need):
        raise InputError("--refine-points", "refine_points", f"must be 0 (no second wave) or "
                         f">= {need} for a quadratic emulator in {len(names)} parameters, "
                         f"got {refine_points}")
    refine_margin = P.REFINE_MARGIN if refine_margin is None else refine_margin
    check_range("--refine-margin", "refine_margin", refine_margin, 0, 2)
    params = load_model_parameters(model)
    try:
        P.default_prior(params, None, names, box_sd)
    except ValueError as e:
        raise InputError(str(model), "parameters", str(e)) from None
    wave1 = None
    if first_wave is not None:
        wave1, wave1_rec = first_wave_from_file(
            Path(first_wave), names=names, points=points, replicates=replicates,
            untreated=untreated, seed=seed, box_sd=box_sd, method=method,
            parameter_file=params.source)
    t = time.perf_counter()
    tick = progress or (lambda text: None)
    try:
        res = P.calibrate_posterior(
            clever_design(), params, key=jax.random.key(seed), names=names, points=points,
            replicates=replicates, chains=chains, warmup=warmup, samples=samples,
            box_sd=box_sd, method=method, untreated=untreated, refine_points=refine_points,
            refine_margin=refine_margin, first_wave=wave1,
            progress=lambda i, n, s: tick(f"{s} {i}/{n} ({time.perf_counter() - t:.0f} s)"))
    except ValueError as e:
        if wave1 is None or not str(e).startswith("first wave"):
            raise
        raise InputError(str(first_wave), "design", str(e)) from None
    if wave1 is not None:  # where the reused simulations came from, and what they cost
        res.settings["first_wave_file"] = dict(
            path=str(first_wave), git_commit=wave1_rec.get("git_commit"),
            created_utc=wave1_rec.get("created_utc"),
            simulation_seconds=wave1_rec.get("settings", {}).get("simulation_seconds"),
            mc_var=wave1_rec["_mc_var_source"])
    rec = P.posterior_record(res, params, seed, command, _git_commit())
    rec["wall_seconds"] = round(time.perf_counter() - t, 1)
    prepare_out_dir(out.parent)
    atomic_write_json(out, rec)
    if netcdf:
        P.write_netcdf(res, out.with_suffix(".nc"), {
            "git_commit": rec["git_commit"], "command": command, "seed": seed,
            "posterior_json": out.name})
    return res, rec


def first_wave_from_file(path: Path, *, names, points: int, replicates: int, untreated: int,
                         seed: int, box_sd: float, method: str, parameter_file: str):
    """(theta, values, mc_var) of the first design wave stored in an earlier posterior file,
    after checking that the file was made with the settings given now (the parameters, design
    points, replicates, untreated cohort, seed, box, agent method and parameter file): only
    then are its simulations the ones this run would make. Files written before the design
    rows carried their Monte-Carlo variances ("var:" columns) give each output the mean
    variance of their `emulator_cv` (mc_sd squared), which is the only use the emulator makes
    of them (its variance floor). Returns also the file's record."""
    import json
    import math

    import numpy as np

    if not path.is_file():
        raise InputError(str(path), "--first-wave", "no such file")
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(str(path), "--first-wave", f"not a JSON file ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("design"), list):
        raise InputError(str(path), "design", "missing: not a posterior calibration file")
    st = rec.get("settings", {})
    want = dict(parameters=list(names), points=points, replicates=replicates,
                untreated=untreated, seed=seed, box_sd=box_sd, method=method,
                parameter_file=parameter_file)
    have = dict(parameters=rec.get("parameters"), points=st.get("points"),
                replicates=st.get("replicates"), untreated=st.get("untreated"),
                seed=rec.get("seed"), box_sd=st.get("box_sd"), method=st.get("method"),
                parameter_file=rec.get("parameter_file"))
    for k, v in want.items():
        h = have[k]
        if k == "parameter_file":  # the same packaged file in another checkout
            same = isinstance(h, str) and Path(h).name == Path(v).name
        elif isinstance(v, float) and isinstance(h, (int, float)):
            same = math.isclose(h, v)
        else:
            same = h == v
        if not same:
            raise InputError(str(path), k, f"{h!r} in the file, {v!r} in this run: the first "
                             "wave can be reused only with the same settings")
    rows = [r for r in rec["design"] if r.get("wave", 1) == 1]
    if len(rows) != points:
        raise InputError(str(path), "design", f"{len(rows)} first-wave rows, expected {points}")
    theta = np.log(np.array([[r[n] for n in names] for r in rows], float))
    skip = set(names) | {"wave", "in_emulator"}
    outs = [k for k in rows[0] if k not in skip and not k.startswith("var:")]

    def col(k):
        return np.array([np.nan if r.get(k) is None else r[k] for r in rows], float)

    values = {k: col(k) for k in outs}
    if all(f"var:{k}" in rows[0] for k in outs):
        mc_var = {k: col(f"var:{k}") for k in outs}
        rec["_mc_var_source"] = "per point, from the file's design rows"
    else:
        mc = {c["output"]: c["mc_sd"] ** 2 for c in rec.get("emulator_cv") or []}
        missing = [k for k in outs if k not in mc]
        if missing:
            raise InputError(str(path), "emulator_cv", f"no Monte-Carlo sd for {missing[0]!r}")
        mc_var = {k: np.full(points, mc[k]) for k in outs}
        rec["_mc_var_source"] = ("the file's emulator_cv mc_sd squared for every point (the "
                                 "file predates per-point variances)")
    return (theta, values, mc_var), rec
