"""Agent model on several JAX devices: each chunk's lanes split over the devices (shard_map)
give the same replicates as one device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

import dormancy_model as dm
from dormancy_model.agents import Heterogeneity, simulate_agents


def _outcomes(method):
    """Outcomes (as lists) of a small run: per-replicate parameters for the fast method (a
    batched hazard table), one shared parameter set for the exact method; 7 replicates in
    chunks of 4, so chunks wrap around and are padded to the device count."""
    p = dm.load_model_parameters("human").replace(dormant_initial=12.0, k_pd=0.01)
    n = 7
    if method == "fast":
        p = p.replace(k_dr=np.linspace(0.5, 2.0, n) * float(p["k_dr"]))
    res = simulate_agents(dm.DormancyModel(), p, dm.get_schedule("clever-combo"),
                          n_replicates=n, key=jax.random.PRNGKey(3), t1=400.0, method=method,
                          heterogeneity=Heterogeneity(autophagy_cv=0.5, strata=2),
                          count_days=(84.0, 400.0), assess_days=(168.0,), switch_size=20.0,
                          chunk_size=4)
    assert res.ok, res.message
    names = ("cleared", "clearance_day", "relapsed", "relapse_day", "counts",
             "aspirate_count", "n_events")
    return {k: np.where(np.isinf(v := np.asarray(getattr(res, k), float)), -1.0, v).tolist()
            for k in names}


TWO_DEVICES = textwrap.dedent(f"""
    import json, sys
    from dormancy_model.devices import use_cpu_cores
    assert use_cpu_cores(2)
    import jax
    sys.path.insert(0, {str(os.path.dirname(os.path.abspath(__file__)))!r})
    from test_agents_devices import _outcomes
    assert jax.local_device_count() == 2
    print(json.dumps({{m: _outcomes(m) for m in ("fast", "exact")}}))
""")


def test_two_cpu_devices_give_the_same_replicates():
    """Replicate i always uses fold_in(key, i), so splitting the lanes over two CPU devices
    (`devices.use_cpu_cores(2)`, as `dormancy agents` does on two cores) changes no outcome;
    event days agree to 1e-9 days (two compilations may round the last bit differently)."""
    r = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True,
                       timeout=400, env={**os.environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    two = json.loads(r.stdout.strip().splitlines()[-1])
    for method in ("fast", "exact"):
        one = _outcomes(method)
        assert max(one["n_events"]) > 10
        for k, v in one.items():
            np.testing.assert_allclose(np.asarray(two[method][k]), np.asarray(v), rtol=0,
                                       atol=1e-9, err_msg=f"{method} {k}")
