#!/usr/bin/env bash
# Runs, on a GPU machine, the gpu-marked tests and then the GPU benchmarks, each stage under its own
# time limit so one slow stage cannot take the others down. Logs and the updated docs/benchmarks.md
# go to $OUT (default ./gpu_out). Stages: tests voxelize render model node train (default: all), or a
# path to an extra Python script. GPU_TESTS narrows the tests stage (e.g. GPU_TESTS=test/test_render_gpu.py).
#   benchmarks/run_gpu_suite.sh tests voxelize
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
STAGES=${*:-tests voxelize render model node train}
SITE=${GAUSSTR_GPU_SITE:-/tmp/gausstr_site}
bash scripts/install_gpu_wheels.sh "$SITE"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$(date +%s)
  timeout --signal=INT "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $(( $(date +%s) - start ))s"
  tail -n 25 "$OUT/$name.log"
}
for s in $STAGES; do
  case $s in
    tests) stage tests 330 python3 -m pytest -m gpu ${GPU_TESTS:-} -p no:cacheprovider -o addopts="" -q -rs --durations=15 --continue-on-collection-errors ;;
    voxelize) stage voxelize 200 python3 benchmarks/voxelize.py --output docs/benchmarks.md ;;
    render) stage render 120 python3 benchmarks/render.py --output docs/benchmarks.md ;;
    model) stage model 150 python3 benchmarks/model_forward.py --random-init --output docs/benchmarks.md ;;
    node) stage node 120 python3 benchmarks/node_latency.py --random-init --mode pipeline --preset talk2dino --output docs/benchmarks.md ;;
    train) stage train 240 python3 benchmarks/train_throughput.py --output "$OUT/train_throughput.md" --json "$OUT/train_throughput.json" ;;
    *.py) stage "$(basename "$s" .py)" 150 python3 "$s" ;;  # an extra script, e.g. a diagnostic
    *) echo "unknown stage $s" ;;
  esac
done
cp docs/benchmarks.md "$OUT/benchmarks.md"
