#!/usr/bin/env bash
# The GPU half of docs/results.md, unattended on one GPU (about 8-10 minutes with the defaults):
#   1. synthetic data at paper scale: 120 scenes (96 train / 24 held-out val), 6 cameras rendered at
#      216 x 384 (the model input is 432 x 768), 512-d feature targets at 27 x 48 built from a
#      random-init CLIP ViT-B/16 text tower (the featup preset's text encoder, seed 0);
#   2. the two trivial baselines on the held-out scenes;
#   3. the featup preset at paper size (1,800 Gaussians, 512-d features, precomputed-feature input,
#      3 decoder layers) trained with the official schedule (AdamW 2e-4, 200-step warm-up, x0.1 at
#      epoch 16 of 24, bf16) for at most TRAIN_MINUTES, then scored on the held-out scenes;
#   4. the training-throughput benchmark (talk2dino, 6 x 504 x 896, 1,800 Gaussians; with 2+ GPUs
#      visible also torchrun DDP scaling).
# Results: $OUT/gpu_results.md (table), $OUT/*.log, $OUT/eval_*/ (metrics.json, PNGs).
#   scripts/run_results_gpu.sh                          # all stages
#   STAGES="data baselines train" scripts/run_results_gpu.sh
#   VARIANTS="both depth_only features_only" TRAIN_MINUTES=4 scripts/run_results_gpu.sh
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_out}
WORK=${WORK:-/tmp/gausstr_results}
SCENES=${SCENES:-120}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
VARIANTS=${VARIANTS:-both}
STAGES=${STAGES:-data baselines train throughput}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
SITE=${GAUSSTR_GPU_SITE:-/tmp/gausstr_site}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
DATA=$WORK/synth
TEXT=(--set text.random_init_seed=0)
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")

run() {  # run NAME SECONDS COMMAND...: log to $OUT/NAME.log, show the tail
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"
  local start=$(date +%s)
  timeout --signal=INT "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $(( $(date +%s) - start ))s"
  tr '\r' '\n' < "$OUT/$name.log" | grep -v -E "^(train|evaluate|gausstr-synth): " | tail -n 12
  return $rc
}

for stage in $STAGES; do
  case $stage in
    data)
      [ -f "$DATA/nuscenes/synthetic.json" ] || run data 600 $PY -m gausstr_core.data.synthetic.cli --out "$DATA" \
        --scenes "$SCENES" --seed 0 --resolution 216 384 --patch-size 8 --text-preset featup --text-seed 0 \
        --feature-dtype float16 --workers "$(nproc)" --quiet ;;
    baselines)
      for b in all-free depth-unprojection; do
        run "eval_$b" 300 $PY -m gausstr_core.evaluation.cli --baseline "$b" --preset featup "${TEXT[@]}" \
          --data "$DATA" --out "$OUT/eval_$b"
      done ;;
    train)
      for v in $VARIANTS; do
        case $v in
          both) SET=() ;;
          depth_only) SET=(--set loss.feature_weight=0 --set loss.centered_feature_weight=0) ;;
          features_only) SET=(--set loss.depth_weight=0 --set loss.depth_head_weight=0) ;;
          *) echo "unknown variant $v"; continue ;;
        esac
        rm -rf "$WORK/featup_$v"
        start=$(date +%s)
        run "train_featup_$v" $(( TRAIN_MINUTES * 60 + 240 )) $PY -m gausstr_core.train.cli --preset featup \
          --data "$DATA" --out "$WORK/featup_$v" --max-minutes "$TRAIN_MINUTES" --num-workers 8 --no-eval \
          --image-every 200 --checkpoint-every 500 "${TEXT[@]}" --set model.head.segment_classes=0 "${SET[@]}"
        steps=$($PY -c "import sys; from gausstr_core.train.state import load_state; \
print(int(load_state(sys.argv[1])['step']))" "$WORK/featup_$v/checkpoints/last.pt" 2>/dev/null || echo 0)
        printf "featup (paper size), %s\t%s\t%s\n" "${v//_/ }" "$(( $(date +%s) - start ))" "$steps" >> "$OUT/times.tsv"
        run "eval_featup_$v" 300 $PY -m gausstr_core.evaluation.cli --checkpoint "$WORK/featup_$v/model.safetensors" \
          --data "$DATA" --out "$OUT/eval_featup_$v"
        cp -r "$WORK/featup_$v/tensorboard" "$OUT/tensorboard_featup_$v" 2>/dev/null
      done ;;
    throughput)
      DDP=()
      [ "$GPUS" -ge 2 ] && DDP=(--ddp 2)
      run throughput 420 $PY benchmarks/train_throughput.py "${DDP[@]}" --output docs/benchmarks.md \
        --json "$OUT/train_throughput.json"
      cp docs/benchmarks.md "$OUT/benchmarks.md" ;;
    *) echo "unknown stage $stage" ;;
  esac
done

RUNS=()
[ -f "$OUT/eval_all-free/metrics.json" ] && RUNS+=("all free=$OUT/eval_all-free")
[ -f "$OUT/eval_depth-unprojection/metrics.json" ] && RUNS+=("depth unprojection + nearest prototype=$OUT/eval_depth-unprojection")
for v in depth_only features_only both; do
  [ -f "$OUT/eval_featup_$v/metrics.json" ] && RUNS+=("featup (paper size), ${v//_/ }=$OUT/eval_featup_$v")
done
[ ${#RUNS[@]} -gt 0 ] && $PY scripts/results_table.py "${RUNS[@]}" --times "$OUT/times.tsv" --per-class \
  | tee "$OUT/gpu_results.md"
