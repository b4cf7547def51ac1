"""Demo stage: fit the shipped SYNTHETIC mouse study with a short setting (figures in fit/)."""

from __future__ import annotations

from pathlib import Path

from dormancy_model.cli.fit import DEFAULT_FREE, run_fit

ROOT = Path(__file__).resolve().parents[3]


def run(out: Path) -> str:
    out = Path(out) / "fit"
    result, study, _, names = run_fit(
        ROOT / "data" / "mouse_synthetic", "mouse", DEFAULT_FREE,
        starts=4, seed=0, out=out / "fit.json", figures=out, adam_steps=10, lbfgs_steps=20)
    est = ", ".join(f"{n} {result.estimate[n]:.3g}" for n in result.names)
    return (f"SYNTHETIC study, {len(study.arms)} arms: nll {result.objective:.2f}, "
            f"{result.n_converged}/{len(result.starts)} starts converged; {est}; "
            f"{len(names)} figures")
