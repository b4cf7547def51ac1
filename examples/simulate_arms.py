"""Simulate the CLEVER arms and a custom schedule; print key numbers.

Run: python examples/simulate_arms.py
"""

from pathlib import Path

import dormancy_model as dm

HERE = Path(__file__).resolve().parent

model = dm.DormancyModel()
params = dm.load_model_parameters("human")
for name in ("observation", "clever-hcq", "clever-eve", "clever-combo"):
    traj = dm.simulate(model, params, dm.get_schedule(name), years=5)
    print(f"{name:>13}: {traj.message}; residual after 6 cycles {traj.at(168):7.2f} cells, "
          f"3-year relapse-free {traj.at(3 * 365.25, 'relapse_free'):.3f}")

custom = dm.load_schedule(HERE / "schedule_custom.toml")
traj = dm.simulate(model, params, custom, years=1, save_every_hours=6)
print(f"{custom.name}: {custom.describe()}")
print(traj.to_dataframe().iloc[::28 * 4][["time_day", "residual", "hcq_ng_ml", "eve_ng_ml"]])
