"""Visual predictive checks of a fit (`dormancy vpc FIT.json --out DIR`).

`model` (`fitted_model`: the fitted model read from a fit JSON), `simulate`
(`simulate_replicates`: replicate studies with the study's design from the likelihood's own
laws), `stats` (censoring-aware percentiles and their prediction intervals, the fraction below
the detection limit, Kaplan-Meier bands, NPDE), `plots` (vpc_burden.png, vpc_km.png, gof.png),
`pipeline` (`vpc`: fit and study in, `VpcResult` out; `run_vpc`: read, check, simulate, write).
"""
