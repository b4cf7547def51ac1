"""Agent model on several JAX devices: each chunk's lanes split over the devices (shard_map)
give the same replicates as one device."""

import jax
import numpy as np
import pytest

import dormancy_model as dm
from dormancy_model.agents.simulate import AgentOptions, Heterogeneity, simulate_agents
from two_devices import on_two_cpu_devices


def _outcomes(method):
    """Outcomes (as lists) of a small run: per-replicate parameters for the fast method (a
    batched hazard table), one shared parameter set for the exact method; 7 replicates in
    chunks of 4, so chunks wrap around and are padded to the device count."""
    p = dm.load_model_parameters("human").replace(dormant_initial=12.0, k_pd=0.01,
                                                  history_days=0.0)
    n = 7
    if method == "fast":
        p = p.replace(k_dr=np.linspace(0.5, 2.0, n) * float(p["k_dr"]))
    res = simulate_agents(dm.DormancyModel(), p, dm.get_schedule("clever-combo"),
                          n_replicates=n, key=jax.random.PRNGKey(3), t1=400.0,
                          heterogeneity=Heterogeneity(autophagy_cv=0.5, strata=2),
                          options=AgentOptions(method=method, count_days=(84.0, 400.0),
                                               assess_days=(168.0,), switch_size=20.0,
                                               chunk_size=4))
    assert res.ok, res.message
    names = ("cleared", "clearance_day", "relapsed", "relapse_day", "counts",
             "aspirate_count", "n_events")
    return {k: np.where(np.isinf(v := np.asarray(getattr(res, k), float)), -1.0, v).tolist()
            for k in names}


def _both_methods():
    return {m: _outcomes(m) for m in ("fast", "exact")}


@pytest.mark.slow  # 50 s on 2 cores (a subprocess compiles both methods on two devices)
def test_two_cpu_devices_give_the_same_replicates():
    """Replicate i always uses fold_in(key, i), so splitting the lanes over two CPU devices
    (`devices.use_cpu_cores(2)`, as `dormancy agents` does on two cores) changes no outcome;
    event days agree to 1e-9 days (two compilations may round the last bit differently)."""
    two = on_two_cpu_devices("test_agents_devices", "_both_methods")
    for method in ("fast", "exact"):
        one = _outcomes(method)
        assert max(one["n_events"]) > 10
        for k, v in one.items():
            np.testing.assert_allclose(np.asarray(two[method][k]), np.asarray(v), rtol=0,
                                       atol=1e-9, err_msg=f"{method} {k}")
