"""The stochastic agent model.

`simulate` (simulate_agents), hazard tables (`hazard`), event loops (`loops`), GPU kernel
(`kernel`), report.
"""
