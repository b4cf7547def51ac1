"""`make demo`: the main job end to end. Each capability adds a stage to STAGES.

Run: python -m dormancy_model.cli.demo --out out/demo
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

# (title, "module:function"); each function takes the output directory and returns a short
# one-line result text.
STAGES = [
    ("CLEVER arms, deterministic model", "dormancy_model.cli.demo_simulate:run"),
    ("HCQ x EVE dose-grid sweep", "dormancy_model.cli.demo_sweep:run"),
    ("Fit the synthetic mouse study", "dormancy_model.cli.demo_fit:run"),
    ("CLEVER arms, stochastic agents", "dormancy_model.cli.demo_agents:run"),
    ("Virtual CLEVER trial and report", "dormancy_model.cli.demo_trial:run"),
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--only", default=None, help="run only stages whose title contains this")
    args = ap.parse_args(argv)
    from dormancy_model.engine.devices import use_cpu_cores

    use_cpu_cores()  # one JAX CPU device per core (the sweep stage splits its lanes over them)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for title, target in STAGES:
        if args.only and args.only.lower() not in title.lower():
            continue
        mod, fn = target.split(":")
        t0 = time.perf_counter()
        print(f"== {title}", flush=True)
        result = getattr(importlib.import_module(mod), fn)(out)
        print(f"   {result} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"demo outputs in {out}/")


if __name__ == "__main__":
    main()
