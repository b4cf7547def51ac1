"""Regenerate the validation document docs/validation.md (+ validation.csv, validation.png):
every published PK, PD, trial and prognosis number beside the model's, computed from the package
(`dormancy_model.trials.validation`).

Run from the repository root:
    python scripts/validation.py [--replicates 40] [--seed 1] [--untreated 4000] [--out docs]
        [--posterior fits/clever_posterior.json [--replicates-per-draw 8]]
The acceptance of issue 14 uses --replicates 200; the default 40 takes a few minutes on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=40, help="replicated CLEVER trials")
    ap.add_argument("--seed", type=int, default=1, help="random seed")
    ap.add_argument("--untreated", type=int, default=4000,
                    help="screened candidates in the untreated cohort (~30%% DTC+)")
    ap.add_argument("--model", default="human", help="parameter set name or TOML file")
    ap.add_argument("--method", default="fast", choices=("fast", "exact"),
                    help="agent method")
    ap.add_argument("--posterior", default=None,
                    help="posterior file (dormancy calibrate --posterior): the trial rows "
                    "become the posterior predictive check over its draws")
    ap.add_argument("--replicates-per-draw", type=int, default=8,
                    help="with --posterior: trials per posterior draw (default 8)")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="output directory")
    a = ap.parse_args(argv)

    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # before any JAX operation: one CPU device per core
    from dormancy_model.errors import InputError
    from dormancy_model.trials import validation as V

    command = (f"python scripts/validation.py --replicates {a.replicates} --seed {a.seed} "
               f"--untreated {a.untreated}"
               + (f" --model {a.model}" if a.model != "human" else "")
               + (f" --method {a.method}" if a.method != "fast" else "")
               + (f" --posterior {a.posterior}" if a.posterior else "")
               + (f" --replicates-per-draw {a.replicates_per_draw}"
                  if a.posterior and a.replicates_per_draw != 8 else ""))
    try:
        v = V.build(replicates=a.replicates, seed=a.seed, untreated=a.untreated, model=a.model,
                    method=a.method, progress=lambda t: print(t, flush=True),
                    posterior=a.posterior, replicates_per_draw=a.replicates_per_draw)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = V.write(v, a.out, command=command)
    t = v.table
    print(f"wrote {', '.join(map(str, files.values()))}: "
          f"{(t['inside'] == 'yes').sum()} inside, {(t['inside'] == 'no').sum()} outside, "
          f"{(t['inside'] == '-').sum()} predictions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
