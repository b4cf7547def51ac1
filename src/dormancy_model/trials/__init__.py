"""The virtual CLEVER trial.

Design, population, protocol (`trial`), analysis, calibration, what-ifs, report.
"""
