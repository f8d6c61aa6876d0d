#!/usr/bin/env bash
# The CPU half of docs/results.md, unattended: synthetic data (100 scenes, 80 train / 20 held-out val),
# the two trivial baselines, and the tiny preset trained with depth only, features only and both
# losses, each scored by gausstr-eval on the held-out scenes; prints the results table.
# Training wall times are what results.md reports: run it on a quiet machine.
#   scripts/run_results_cpu.sh                     # everything (about 1 h on 2 cores)
#   VARIANTS=both scripts/run_results_cpu.sh       # only the full model
# Environment: OUT (runs/results), DATA (runs/data/synth112), VARIANTS, THREADS (2), PY (.venv python).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${OUT:-runs/results}
DATA=${DATA:-runs/data/synth112}
VARIANTS=${VARIANTS:-both depth_only features_only}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS PYTHONUNBUFFERED=1
mkdir -p "$OUT"
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(uname -sm); load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"

if [ ! -f "$DATA/nuscenes/synthetic.json" ]; then
  echo "==> synthetic data -> $DATA"
  /usr/bin/time -f "%e s" "$PY" -m gausstr_core.data.synthetic.cli --out "$DATA" --scenes 100 --seed 0 \
    --resolution 112 200 --patch-size 8 --workers 2 2>&1 | tail -n 6
fi

for baseline in all-free depth-unprojection; do
  echo "==> baseline $baseline"
  "$PY" -m gausstr_core.evaluation.cli --baseline "$baseline" --preset tiny --data "$DATA" \
    --out "$OUT/eval_$baseline" --threads "$THREADS" 2>&1 | grep -v "evaluate:" | tail -n 2
done

: > "$OUT/times.tsv.new"
for variant in $VARIANTS; do
  case $variant in
    both) SET=() ;;
    depth_only) SET=(--set loss.feature_weight=0 --set loss.centered_feature_weight=0) ;;
    features_only) SET=(--set loss.depth_weight=0 --set loss.depth_head_weight=0) ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  echo "==> train tiny ($variant)"
  rm -rf "$OUT/tiny_$variant"
  start=$(date +%s)
  "$PY" -m gausstr_core.train.cli --preset tiny --data "$DATA" --out "$OUT/tiny_$variant" --threads "$THREADS" \
    --no-eval "${SET[@]}" 2>&1 | tr '\r' '\n' | grep -v "^train: " | tail -n 3
  seconds=$(( $(date +%s) - start ))
  steps=$("$PY" -c "import sys; from gausstr_core.train.state import load_state; \
print(int(load_state(sys.argv[1])['step']))" "$OUT/tiny_$variant/checkpoints/last.pt")
  printf "tiny, %s\t%s\t%s\n" "${variant//_/ }" "$seconds" "$steps" >> "$OUT/times.tsv.new"
  echo "    trained $steps steps in $seconds s"
  echo "==> evaluate tiny ($variant)"
  "$PY" -m gausstr_core.evaluation.cli --checkpoint "$OUT/tiny_$variant/model.safetensors" --data "$DATA" \
    --out "$OUT/eval_tiny_$variant" --threads "$THREADS" 2>&1 | grep -v "evaluate:" | tail -n 1
done
# keep the times of variants not re-run this time
touch "$OUT/times.tsv"
grep -v -F -f <(cut -f1 "$OUT/times.tsv.new") "$OUT/times.tsv" >> "$OUT/times.tsv.new" || true
mv "$OUT/times.tsv.new" "$OUT/times.tsv"

RUNS=("all free=$OUT/eval_all-free" "depth unprojection + nearest prototype=$OUT/eval_depth-unprojection")
for variant in depth_only features_only both; do
  [ -f "$OUT/eval_tiny_$variant/metrics.json" ] && RUNS+=("tiny, ${variant//_/ }=$OUT/eval_tiny_$variant")
done
"$PY" scripts/results_table.py "${RUNS[@]}" --times "$OUT/times.tsv" --per-class | tee "$OUT/table.md"
