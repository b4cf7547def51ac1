"""Population (mixed-effects) fitting: log-normal random effects per animal.

`problem` (the `PopulationProblem` every estimator shares), `laplace` (the Laplace marginal
likelihood, per-animal inner modes batched with `jax.vmap`, implicit outer gradient),
`estimate` (`fit_laplace`: multistart, the pooled fit's L-BFGS in sigmoid-bounded
coordinates), `nuts` (`fit_nuts`: numpyro NUTS on the same problem, arviz InferenceData),
`animals` (`study_problem`: the mouse-study animal likelihood, the pooled fit's laws per
animal), `study_fit` (`fit_study_laplace`, `fit_study_nuts`: a study's population fit as a
`FitResult` with a population block, what `dormancy fit --method laplace|nuts` runs),
`result` (`PopulationResult`), `covariates` (power and categorical covariate models on the
typical values: body weight, dose group, any animals.csv column; `dormancy fit --covariate`).
"""
