"""Pharmacokinetics.

Schedules as data (`schedule`), named presets and `get_schedule` (`presets`, which imports
`schedule`, never the reverse), closed-form linear PK (`closed_form`).
"""
