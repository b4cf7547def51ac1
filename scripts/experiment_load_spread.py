"""What a wider DTC-load spread and a wider drug-sensitivity spread do to the virtual CLEVER
trial (issue 14, deliverable 2): replicated trials with the packaged calibration, the load
log-SD and the delta_max CV set here, analysed by the validation document's trial rows.

    python scripts/experiment_load_spread.py --load-sigma 3.0 --cv-delta-max 4.0 --replicates 24
    python scripts/experiment_load_spread.py --load-sigma 1.5 --dispersion 0 --replicates 24

Prints the trial rows (published vs model, inside). Measured 2026-12-07 on the 2-core CPU (seed
1, 24 trials): see the note of issue 14 and docs/validation.md ("What a wider DTC-load spread
does").
"""

from __future__ import annotations

import argparse
import time

import jax
import pandas as pd

jax.config.update("jax_enable_x64", True)

from dormancy_model.params.table import load_model_parameters  # noqa: E402
from dormancy_model.trials import validation as V  # noqa: E402
from dormancy_model.trials.calibrate import load_calibration  # noqa: E402
from dormancy_model.trials.design import clever_design  # noqa: E402
from dormancy_model.trials.population import (  # noqa: E402
    DEFAULT_CV,
    LOAD_SIGMA,
    Population,
)
from dormancy_model.trials.protocol import trial  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load-sigma", type=float, default=LOAD_SIGMA,
                    help="log-SD of the DTC load")
    ap.add_argument("--dispersion", type=float, default=None,
                    help="aspirate_dispersion a (negative binomial; 0: Poisson; default: file)")
    ap.add_argument("--cv-delta-max", type=float, default=DEFAULT_CV["delta_max"],
                    help="between-patient CV of delta_max")
    ap.add_argument("--replicates", type=int, default=24, help="replicated trials")
    ap.add_argument("--seed", type=int, default=1, help="random seed")
    a = ap.parse_args(argv)
    cv = dict(DEFAULT_CV, delta_max=a.cv_delta_max)
    pop = Population(cv=cv, load_sigma=a.load_sigma).replace(typical=load_calibration())
    t = time.perf_counter()
    params = load_model_parameters("human")
    if a.dispersion is not None:
        params = params.replace(aspirate_dispersion=a.dispersion)
    res = trial(clever_design(), params, key=jax.random.key(a.seed),
                replicates=a.replicates, population=pop)
    rows = V.trial_rows(res.summary(), res.patients)
    df = pd.DataFrame([r.record() for r in rows])[["quantity", "published", "model", "inside"]]
    with pd.option_context("display.width", 250, "display.max_colwidth", 80):
        print(f"load log-SD {a.load_sigma}, aspirate_dispersion "
              f"{float(params['aspirate_dispersion']):g}, delta_max CV {a.cv_delta_max}, "
              f"{a.replicates} trials, seed {a.seed}: {time.perf_counter() - t:.0f} s")
        print(df.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
