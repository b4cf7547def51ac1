#!/usr/bin/env bash
# One prepared GPU session: the accelerator parts of the agent, sweep, trial and fit benchmarks.
# Run from the repository root on a machine with CUDA jax; JSON and logs go to $OUT.
#   OUT=/tmp/gpu bash benchmarks/gpu_run.sh
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 OUT
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT/device.txt" 2>&1
run() {  # name, time limit (s), command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   rc=$? $(date -u +%H:%M:%S)"; tail -n 25 "$OUT/$name.log"
}
# (a kernel block of 128 replicates did not compile within 200 s on an H200: 64 is the default)
run agents "${AGENTS_S:-150}" python benchmarks/agents_bench.py --gpu --exact-n "${EXACT_N:-0}" \
  --blocks ${BLOCKS:-64}
run sweep "${SWEEP_S:-200}" python benchmarks/sweep_bench.py --gpu --sizes 100000 \
  --engine-sizes 1000000 --lorenz 1048576 --budget "${SWEEP_BUDGET:-200}"
[ -n "${TRIAL_S:-}" ] && run trial "$TRIAL_S" python benchmarks/trial_bench.py --gpu
[ -n "${FIT_S:-}" ] && run fit "$FIT_S" python benchmarks/fit_bench.py --gpu
