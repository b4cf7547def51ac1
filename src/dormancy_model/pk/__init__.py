"""Pharmacokinetics.

Schedules as data (`schedule`), named presets (`presets`), closed-form linear PK
(`closed_form`).
"""
