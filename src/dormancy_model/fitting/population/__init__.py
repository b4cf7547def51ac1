"""Population (mixed-effects) fitting: log-normal random effects per animal.

`problem` (the `PopulationProblem` every estimator shares), `laplace` (the Laplace marginal
likelihood, per-animal inner modes batched with `jax.vmap`, implicit outer gradient),
`estimate` (`fit_laplace`: multistart, the pooled fit's L-BFGS in sigmoid-bounded
coordinates), `animals` (`study_problem`: the mouse-study animal likelihood, the pooled fit's
laws per animal), `result` (`PopulationResult`).
"""
