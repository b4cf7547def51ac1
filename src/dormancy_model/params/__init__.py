"""Parameters.

The parameter table (`table`), loaded from TOML files with units, bounds and sources; the scale
transforms (lin/log/logit) and the log-normal CV helper (`transforms`); log-normal
inter-individual variability of virtual patients (`variability`).
"""
