"""Parameters.

The parameter table (`table`), loaded from TOML files with units, bounds and sources.
"""
