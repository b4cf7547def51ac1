"""Summaries of a trajectory at protocol time points (numbers only; no plotting)."""

from __future__ import annotations

import numpy as np

from dormancy_model.model.simulate import COLUMNS
from dormancy_model.pk.schedule import Schedule
from dormancy_model.units import DAYS_PER_YEAR


def assessment_day(schedule: Schedule, cycle: int) -> float:
    """Day at the end of `cycle` (cycle length of the schedule, 28 days when untreated)."""
    return schedule.start_of_treatment + cycle * schedule.cycle_days


def summarize(traj, schedule: Schedule) -> dict:
    """Key numbers of one simulated individual (JSON-ready floats; `meaning`: what the
    residual_*, lesion_cells_* and p_dtc_positive_* keys and the trajectory.csv columns are).
    residual_* are the marrow DTCs (`Trajectory.residual`), lesions apart."""
    traj.raise_if_failed()
    t_end = schedule.end_of_treatment or assessment_day(schedule, 6)
    horizon = float(np.asarray(traj.times)[-1])
    out = {
        "schedule": schedule.name,
        "schedule_description": schedule.describe(),
        "end_of_treatment_day": float(t_end),
        "residual_start": traj.at(0.0),
        "residual_end_of_treatment": traj.at(t_end),
        "residual_reduction_end_of_treatment": 1.0 - traj.at(t_end) / traj.at(0.0),
    }
    for c in (3, 6):
        day = assessment_day(schedule, c)
        if day <= horizon:
            out[f"residual_after_cycle_{c}"] = traj.at(day)
            out[f"residual_reduction_after_cycle_{c}"] = 1.0 - traj.at(day) / traj.at(0.0)
            out[f"p_dtc_positive_after_cycle_{c}"] = traj.at(day, "p_dtc_positive")
    out["p_dtc_positive_start"] = traj.at(0.0, "p_dtc_positive")
    out["lesion_cells_start"] = traj.at(0.0, "lesion_cells")
    out["lesion_cells_end_of_treatment"] = traj.at(t_end, "lesion_cells")
    for y in (1, 3, 5):
        if y * DAYS_PER_YEAR <= horizon + 1e-9:
            out[f"relapse_free_{y}y"] = traj.at(y * DAYS_PER_YEAR, "relapse_free")
            out[f"lesion_cells_{y}y"] = traj.at(y * DAYS_PER_YEAR, "lesion_cells")
    out["max_hcq_ng_ml"] = float(np.max(np.asarray(traj.hcq_ng_ml)))
    out["max_eve_ng_ml"] = float(np.max(np.asarray(traj.eve_ng_ml)))
    out["max_autophagy_deficit"] = float(np.max(np.asarray(traj.autophagy_deficit)))
    out["solver_steps"] = int(np.asarray(traj.num_steps))
    out["meaning"] = {
        "residual_*": "expected marrow DTCs D + R + proliferating cells below the switch size "
                      "(cells; what an aspirate samples)",
        "lesion_cells_*": "expected cells in undetected lesions (cells; a mean over patients, "
                          "most of whom have none)",
        "p_dtc_positive_*": "probability that one aspirate of the marrow shows >= 1 DTC",
        "trajectory.csv": COLUMNS}
    return out
