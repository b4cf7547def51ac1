"""The deterministic model.

Rate laws (`rates`), the ODE (`ode`), `simulate`, summaries and figures; Kaplan-Meier
estimates of relapse-free survival (`survival`, used by the fit and the trial).
"""
