"""The CLI keeps compiled programs between runs (`engine.devices.use_compilation_cache`): the
directory it picks from the environment, its opt-out, and that a jitted program run after it
lands on disk (in a fresh interpreter: the test process has its own cache set by conftest, and
JAX's cache directory must be chosen before the first compilation)."""

import json
import os
import subprocess
import sys

from dormancy_model.engine.devices import compilation_cache_dir

SCRIPT = r"""
import json, os, sys
import jax, jax.numpy as jnp
from dormancy_model.engine.devices import use_compilation_cache
out = {"chosen": use_compilation_cache()}
out["config"] = jax.config.jax_compilation_cache_dir
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.jit(lambda x: jnp.sin(x) * 2 + 1)(jnp.arange(5.0)).block_until_ready()
out["files"] = sorted(os.listdir(out["chosen"])) if out["chosen"] else []
print(json.dumps(out))
"""


def test_cache_directory_follows_the_environment():
    assert compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/a/b",
                                  "DORMANCY_CACHE_DIR": "/c"}) == "/a/b"
    assert compilation_cache_dir({"DORMANCY_CACHE_DIR": "/c"}) == os.path.join("/c", "jax")
    for off in ("off", "OFF", "0", "false", "no", "none"):
        assert compilation_cache_dir({"DORMANCY_CACHE_DIR": off, "XDG_CACHE_HOME": "/x"}) is None
    assert compilation_cache_dir({"XDG_CACHE_HOME": "/x"}) == os.path.join(
        "/x", "dormancy_model", "jax")
    assert compilation_cache_dir({}) == os.path.join(
        os.path.expanduser("~"), ".cache", "dormancy_model", "jax")


def _run(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "DORMANCY_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(extra)
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_compiled_programs_land_in_the_cache_and_off_turns_it_off(tmp_path):
    out = _run(tmp_path, DORMANCY_CACHE_DIR=str(tmp_path / "mine"))
    assert out["chosen"] == str(tmp_path / "mine" / "jax") == out["config"]
    assert out["files"], "no compiled program was written to the cache directory"
    off = _run(tmp_path, DORMANCY_CACHE_DIR="off", XDG_CACHE_HOME=str(tmp_path / "x"))
    assert off["chosen"] is None and off["config"] is None
    assert not (tmp_path / "x").exists()
