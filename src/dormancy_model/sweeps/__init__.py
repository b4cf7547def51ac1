"""Parameter and dose sweeps.

Specs (`spec`), the model as lanes (`lanes`), the streamed run (`run`), Sobol sensitivity,
figures.
"""
