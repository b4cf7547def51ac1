"""The deterministic model.

Rate laws (`rates`), the ODE (`ode`), `simulate`, summaries and figures.
"""
