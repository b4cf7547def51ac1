"""One JAX CPU device per core, for the sweep engine and the agent model's event loops.

XLA runs a computation on one device. On a CPU it may split a large fused loop over the cores of
its thread pool, but the sweep engine's lock-step loop is ~90 small fused loops per step attempt
over a few thousand lanes, and splitting each of them costs about as much synchronisation as it
saves. One device per core instead lets `engine.solve_sharded` give each core its own share of
the lanes and its own loop (`shard_map`), with no synchronisation until the end. On the 2-core
benchmark machine two devices were 1.28-1.47x faster than one for RK4 and 1.03-1.71x for Tsit5
(N = 1,000-16,000, benchmarks/RESULTS.md). `simulate_agents` splits each chunk of replicates
the same way (the vmapped XLA loop; not the one-device GPU kernel): 1.33x for the fast method,
2.26x for the exact one (benchmarks/agents_bench.py, two cores).

JAX fixes its CPU device count when its backends start (the first JAX operation), so
`use_cpu_cores` must run before that: `dormancy sweep`, `dormancy sensitivity`, `dormancy
agents`, `dormancy trial` and the demo call it first thing; library users call it right after
`import dormancy_model`.
"""

from __future__ import annotations

import os

import jax


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> bool:
    """Ask JAX for `n` CPU devices (default: one per core). Returns True if set; False (and
    changes nothing) when the count was already chosen (XLA_FLAGS or `jax_num_cpu_devices`) or
    JAX's backends have already started."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    if jax.config.jax_num_cpu_devices > 0:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", int(n or cpu_cores()))
    except RuntimeError:  # backends already initialised: keep what they have
        return False
    return True


def compilation_cache_dir(environ=None) -> str | None:
    """The directory `use_compilation_cache` uses: JAX_COMPILATION_CACHE_DIR when set, else
    DORMANCY_CACHE_DIR/jax, else XDG_CACHE_HOME/dormancy_model/jax (default
    ~/.cache/dormancy_model/jax); None when DORMANCY_CACHE_DIR is off (or 0, false, no, none)."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return env["JAX_COMPILATION_CACHE_DIR"]
    base = env.get("DORMANCY_CACHE_DIR")
    if base is not None and base.strip().lower() in ("off", "0", "false", "no", "none"):
        return None
    if base:
        return os.path.join(os.path.expanduser(base), "jax")
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "dormancy_model", "jax")


def use_compilation_cache(environ=None) -> str | None:
    """Keep compiled XLA programs on disk between runs (JAX's persistent compilation cache), so
    that a command's second run skips most of the compilation its first run paid for (the
    virtual trial compiles a few hundred programs). The directory is `compilation_cache_dir`'s
    (JAX_COMPILATION_CACHE_DIR, which JAX reads itself, is left alone); it is not size-capped
    (JAX's cap needs the filelock package) and may be deleted at any time;
    DORMANCY_CACHE_DIR=off turns it off. Must run before the first
    compilation (the CLI calls it first thing). Returns the directory used, or None."""
    env = os.environ if environ is None else environ
    path = compilation_cache_dir(env)
    if path is None or env.get("JAX_COMPILATION_CACHE_DIR"):
        return path
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            return None
        jax.config.update("jax_compilation_cache_dir", path)
    except (OSError, RuntimeError):  # unwritable home, or JAX already compiled: run uncached
        return None
    return path
