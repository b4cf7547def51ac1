"""Fitting mouse studies.

Study files (`study`), likelihoods, the objective, estimation (`estimate`), fit files (`files`),
figures.
"""
