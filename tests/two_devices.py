"""Run a test module's function in a subprocess whose JAX has two CPU devices
(`devices.use_cpu_cores(2)`, as the CLI does on two cores) and return its JSON result."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    from dormancy_model.engine.devices import use_cpu_cores
    assert use_cpu_cores(2)
    import importlib, jax
    sys.path.insert(0, sys.argv[1])
    fn = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
    assert jax.local_device_count() == 2
    print(json.dumps(fn()))
""")


def on_two_cpu_devices(module: str, function: str, timeout: float = 400):
    """JSON-decoded `module.function()` (a module of the tests folder) on two CPU devices."""
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", SCRIPT, here, module, function],
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
