"""Run a test module's function in a subprocess whose JAX has two CPU devices
(`devices.use_cpu_cores(2)`, as the CLI does on two cores) and return its JSON result."""

import glob
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
    sys.path[:0] = sys.argv[1].split(":")  # the module's folder and tests/
    fn = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
    assert jax.local_device_count() == 2
    print(json.dumps(fn()))
""")


def on_two_cpu_devices(module: str, function: str, timeout: float = 400):
    """JSON-decoded `module.function()` (a test module in a folder under tests/) on two CPU
    devices."""
    here = os.path.dirname(os.path.abspath(__file__))
    (path,) = glob.glob(os.path.join(here, "*", f"{module}.py"))
    r = subprocess.run([sys.executable, "-c", SCRIPT, f"{os.path.dirname(path)}:{here}", module,
                        function],
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
