#!/usr/bin/env bash
# The GPU half of docs/results.md on the lent GPU machine (Python 3.12 with torch, no network):
# installs the carried pure-Python wheels (.whl/, scripts/fetch_gpu_wheels.sh), then runs
# scripts/results_gpu.py (synthetic data, baselines, trainings several at a time on the one GPU,
# held-out scores, tune-world density sweeps, results.md + results.json). Arguments go to it, e.g.
#   scripts/run_results_gpu.sh --runs featup_all_free featup_init featup_unprojection featup_both \
#       featup_depth_only featup_features_only --minutes 6 --parallel 3
#   scripts/run_results_gpu.sh --list
# Environment: OUT (default ./gpu_out), WORK (/tmp/gausstr_results), PACK=1 packs $OUT into
# $OUT/results.tgz (everything but checkpoints), for machines that return only a few files.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_out}
WORK=${WORK:-/tmp/gausstr_results}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
SITE=${GAUSSTR_GPU_SITE:-/tmp/gausstr_site}
bash scripts/install_gpu_wheels.sh "$SITE" "$PY"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$PY scripts/results_gpu.py --out "$OUT" --work "$WORK" "$@"
rc=$?
if [ "${PACK:-0}" = 1 ]; then
  # a run killed at its deadline may still be writing: pack what is there
  tar -C "$OUT" --exclude='*.safetensors' --exclude='results.tgz*' --warning=no-file-changed \
    -czf "$OUT/results.tgz.tmp" . ; mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
  ls -la "$OUT"
fi
exit $rc
