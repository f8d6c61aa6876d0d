#!/usr/bin/env bash
# Issue 12 ("real time on one GPU") in ONE call on the lent GPU machine, about 4 minutes:
#   setup     carried wheels (.whl/) -> $SITE; ROS 2 Jazzy for Python 3.12 (.whl_ros/, in parallel)
#   build     the CUDA voxelizer and gsplat, compiled once, in parallel
#   tests     gpu tests of the fast path: CUDA-graph parity with eager (labels, confidences,
#             categories at run time), the capturable voxelizer, the pipeline on CUDA
#   node      benchmarks/node_latency.py --mode pipeline: eager baseline and CUDA graphs in one run
#             (and the compiled image backbone with COMPILE=1)
#   ros       benchmarks/node_latency.py --mode ros: the real node through rclpy/Fast DDS
#   inputs    benchmarks/node_inputs.py: the node's input stage alone at 12 and 30 Hz, its executor
#             against rclpy's MultiThreadedExecutor (about 70 s; not in the default STAGES)
#   train     benchmarks/train_throughput.py, one GPU, short
#   summary   benchmarks/realtime_summary.py: compact table; docs/benchmarks.md updated
# Every stage has its own time limit, and all of them share a global DEADLINE (seconds from the
# start, default 235), so a failing or slow stage cannot eat the others. Without CUDA every GPU stage
# is skipped with the reason (a dry run of the plumbing). What comes back ($OUT, at most 8 files):
# summary.md, results.json, benchmarks.md (the updated doc), logs.tgz (every stage's log).
#   OUT=/tmp/out benchmarks/realtime_suite.sh            # all stages
#   STAGES="build tests" benchmarks/realtime_suite.sh    # a subset (setup always runs)
# Knobs: DEADLINE, NODE_FRAMES (30), NODE_LIMIT (90 s), ROS_FRAMES (15), ROS_THREAD (1; 0 skips the in-process feeder
# run), ROS_SWITCH5 (1: the ros stage again with Python's 5 ms thread switch interval, the baseline
# of the node's python_switch_interval_ms; 0 skips it), ROS_INFO (0; 1: the ros stage again with
# CameraInfo published with every set, as camera drivers do), ROS_COALESCE (0; 1: the ros stage again
# with the node's executor_coalesce_ms 3), ROS_INNODE (1: stage ros_innode, the outputs published by
# the node itself, output_process never: the baseline of the default, which with CUDA uses the output
# process; 0 skips it), ROS_INPROC / ROS_HELPERS (0; 1: stages ros_inproc / ros_helpers, the node's
# input_process with the outputs in the node / in the output process), ROS_SHARED (0; 1: stage
# ros_shared, the ros stage with the output subscribers in the cameras' process, the harness of every
# run before 2026-12-06; the ros stages keep them in a process of their own, as a robot's consumers), ROS_NOCONF
# (0; 1: stage ros_noconf, the occupancy without its per-voxel confidence), LOCK (1: py-spy samples the interpreter
# lock's holder in the ros stages' open loop, benchmarks/gil_profile.py), EXTRA_TESTS (more pytest paths), TESTS_LIMIT
# (seconds, 60), MAX_JOBS, TAIL. COMPILE=1: the image backbone compiled with torch.compile
# (InferenceConfig.compile_backbone) too: the node stage measures it as more variants in the same run (node_latency.py --compile-backbone), the ros stage adds
# ros_compiled (the real node with it, feeder in its own process), and the tests stage adds its parity
# test; those stages get COMPILE_EXTRA more seconds (default 150) for the compilation, so raise
# DEADLINE as well.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
DEADLINE=${DEADLINE:-235}
OUT=${OUT:-$ROOT/gpu_out}
WORK=${WORK:-/tmp/gausstr_realtime}
STAGES=${STAGES:-build tests node ros train}
SITE=${GAUSSTR_GPU_SITE:-/tmp/gausstr_site}
ROS_VENV=${ROS_VENV:-/tmp/gausstr_ros312}
PY=${PY:-python3}
rm -rf "$WORK"; mkdir -p "$OUT" "$WORK"
export GAUSSTR_EXTENSIONS_DIR=${GAUSSTR_EXTENSIONS_DIR:-/tmp/gausstr_ext}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-14}

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( DEADLINE - $(elapsed) )); }
declare -A RC SECS
stage() {  # stage NAME LIMIT COMMAND...: run with min(LIMIT, time left), log to $WORK/NAME.log
  local name=$1 limit=$2; shift 2
  local budget; budget=$(left)
  (( budget > limit )) && budget=$limit
  if (( budget < 10 )); then
    echo "=== $name: SKIPPED, only ${budget}s left before the ${DEADLINE}s deadline"
    RC[$name]=skipped; return
  fi
  echo "=== $name (limit ${budget}s, at $(elapsed)s)"
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=5 "$budget" "$@" > "$WORK/$name.log" 2>&1
  RC[$name]=$?; SECS[$name]=$(( $(date +%s) - t0 ))
  echo "=== $name rc=${RC[$name]} in ${SECS[$name]}s"
  tail -n "${TAIL:-8}" "$WORK/$name.log"
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
# COMPILE=1: the flag for node_latency.py, and the seconds the stages that compile get on top.
COMPILE_FLAG=; COMPILE_S=0
if [ "${COMPILE:-0}" = 1 ]; then COMPILE_FLAG=--compile-backbone; COMPILE_S=${COMPILE_EXTRA:-150}; fi
COMPILED_PARITY=test/test_inference_graphs.py::test_compiled_backbone_with_graphs_matches_eager_talk2dino

# --- setup --------------------------------------------------------------------------------------
bash scripts/install_gpu_wheels.sh "$SITE" "$PY" > "$WORK/wheels.log" 2>&1 ||
  echo "wheel install failed (see logs.tgz: wheels.log)"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
CUDA=$($PY -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$CUDA" = 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$WORK/gpu.txt"
  # the host CPU too: the node's host work (rclpy, conversions, publishing) differs between machine
  # instances of the same GPU type by up to 1.4x (docs/benchmarks.md, fourth sitting)
  grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /host CPU: /' | tee -a "$WORK/gpu.txt"
else
  echo "no CUDA GPU visible: every GPU stage is SKIPPED (dry run of the plumbing)" | tee "$WORK/gpu.txt"
fi
ROS_PID=
if want ros || want inputs; then  # CPU-only, in parallel with the build
  ( PY=$PY bash scripts/gpu_ros_setup.sh "$ROS_VENV" > "$WORK/ros_setup.log" 2>&1; echo "rc=$?" >> "$WORK/ros_setup.log" ) &
  ROS_PID=$!
fi

gpu_stage() {  # gpu_stage NAME LIMIT COMMAND...
  if [ "$CUDA" != 1 ]; then echo "=== $1: SKIPPED (no CUDA)"; RC[$1]=skipped; return; fi
  stage "$@"
}

# --- build: the two CUDA extensions, in parallel (two processes, two build directories) ----------
if want build; then
  gpu_stage build 150 bash -c '
    python3 -c "from gausstr_core.voxelize import cuda; r = cuda.unavailable_reason(); print(\"voxelizer:\", r or \"built\"); raise SystemExit(r is not None)" &
    v=$!
    python3 -c "from gsplat.cuda._backend import _C; print(\"gsplat:\", \"built\" if _C is not None else \"NOT built\"); raise SystemExit(_C is None)" &
    g=$!
    wait $v; a=$?; wait $g; b=$?; exit $(( a | b ))'
fi

# --- tests ---------------------------------------------------------------------------------------
if want tests; then
  # the compiled-backbone parity test compiles the ViT: only with COMPILE=1
  DESELECT=$( [ -z "$COMPILE_FLAG" ] && echo "--deselect $COMPILED_PARITY" )
  gpu_stage tests $(( ${TESTS_LIMIT:-60} + COMPILE_S )) $PY -m pytest -m gpu -p no:cacheprovider -o addopts="" -q -rs -s --durations=8 \
    test/test_inference_graphs.py test/test_voxelize_cuda.py::test_cuda_capturable_forward_in_a_graph_is_bitwise_the_eager_kernel \
    $DESELECT ${EXTRA_TESTS:-}
fi

# --- node, pipeline mode: eager baseline and CUDA graphs (and the compiled backbone) in the same run
if want node; then
  gpu_stage node $(( ${NODE_LIMIT:-90} + COMPILE_S )) $PY benchmarks/node_latency.py --random-init --mode pipeline --preset talk2dino \
    --frames ${NODE_FRAMES:-30} --warmup 4 $COMPILE_FLAG --output docs/benchmarks.md --json "$WORK/node_pipeline.json" \
    --profile "$WORK/predict_profile.txt"
fi

# --- node, ros mode: the real node through rclpy and Fast DDS -------------------------------------
if want ros; then
  if [ -n "$ROS_PID" ]; then wait "$ROS_PID"; fi
  echo "=== ros setup: $(grep -E '^(python|rc=)' "$WORK/ros_setup.log" | tr '\n' ' ')"
  if [ "$CUDA" = 1 ] && grep -q "^rc=0" "$WORK/ros_setup.log"; then
    EXTRA=$(sed -n 's/^ROS_PYTHONPATH_EXTRA=//p' "$WORK/ros_setup.log")
    # the cameras in their own process and the output subscribers in another, as on a robot; then,
    # for comparison, the cameras in the node's process (one interpreter lock for both sides)
    # LOCK=1: py-spy (a carried wheel, $SITE/bin) samples who holds the interpreter lock in the open loop
    LOCK_FLAG() { [ "${LOCK:-1}" = 1 ] && echo "--lock-profile $WORK/lock_$1.txt"; }
    export PY_SPY=$SITE/bin/py-spy
    stage ros 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --output docs/benchmarks.md --json "$WORK/node_ros.json" $(LOCK_FLAG ros)
    [ "${ROS_THREAD:-1}" = 1 ] && stage ros_thread 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder thread --output docs/benchmarks.md --json "$WORK/node_ros_thread.json"
    # ROS_INFO=1: the cameras also publish CameraInfo with every set, as drivers do (6 more messages
    # per set for the node's executor; the ros stage publishes them only until the node is ready)
    [ "${ROS_INFO:-0}" = 1 ] && stage ros_info 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --camera-info-every-set --json "$WORK/node_ros_info.json" $(LOCK_FLAG ros_info)
    # ROS_COALESCE=1: the node's executor sleeps 3 ms before each wait (executor_coalesce_ms), against
    # the ros stage's plain executor as the baseline of the same run
    [ "${ROS_COALESCE:-0}" = 1 ] && stage ros_coalesce 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --executor-coalesce-ms 3 --json "$WORK/node_ros_coalesce.json" $(LOCK_FLAG ros_coalesce)
    # The ros stage runs the node's defaults: with CUDA its outputs go through the output process
    # (output_process auto). ROS_INNODE=1 (default on): the outputs built and published by the node
    # itself (output_process never), the baseline of that default in the same run. ROS_INPROC=1 /
    # ROS_HELPERS=1: the cameras taken in the input process, with the outputs in the node / in the
    # output process (input_process), against the ros stage
    [ "${ROS_INNODE:-1}" = 1 ] && stage ros_innode 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --output-process never --json "$WORK/node_ros_innode.json" $(LOCK_FLAG ros_innode)
    [ "${ROS_INPROC:-0}" = 1 ] && stage ros_inproc 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --input-process --output-process never --json "$WORK/node_ros_inproc.json" $(LOCK_FLAG ros_inproc)
    [ "${ROS_HELPERS:-0}" = 1 ] && stage ros_helpers 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --input-process --output-process always --json "$WORK/node_ros_helpers.json" $(LOCK_FLAG ros_helpers)
    [ "${ROS_SHARED:-0}" = 1 ] && stage ros_shared 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --subscribers feeder --json "$WORK/node_ros_shared.json" $(LOCK_FLAG ros_shared)
    # ROS_NOCONF=1: the occupancy without its per-voxel confidence (occupancy_confidence off: 0.64 of
    # its 3.2 MB), against the ros stage
    [ "${ROS_NOCONF:-0}" = 1 ] && stage ros_noconf 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --occupancy-confidence off --json "$WORK/node_ros_noconf.json" $(LOCK_FLAG ros_noconf)
    # the same with Python's own 5 ms thread switch interval: the baseline of the node's setting
    [ "${ROS_SWITCH5:-1}" = 1 ] && stage ros_switch5 60 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_latency.py \
      --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 --rate 30 --duration 6 \
      --feeder process --switch-interval-ms 5 --json "$WORK/node_ros_switch5.json"
    if [ -n "$COMPILE_FLAG" ]; then  # the node as it would run with compile_backbone on
      stage ros_compiled $(( 60 + COMPILE_S )) env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" \
        benchmarks/node_latency.py --random-init --mode ros --preset talk2dino --frames ${ROS_FRAMES:-15} --warmup 4 \
        --rate 30 --duration 6 --feeder process --compile-backbone --json "$WORK/node_ros_compiled.json"
    fi
  else
    echo "=== ros: SKIPPED ($( [ "$CUDA" = 1 ] && echo 'ROS setup failed, see ros_setup.log' || echo 'no CUDA'))"
    RC[ros]=skipped
  fi
fi

# --- the node's input stage alone through rclpy (no inference; the host's cores, not the GPU) ------
if want inputs; then
  if [ -n "$ROS_PID" ]; then wait "$ROS_PID"; fi
  if grep -q "^rc=0" "$WORK/ros_setup.log" 2>/dev/null; then
    EXTRA=$(sed -n 's/^ROS_PYTHONPATH_EXTRA=//p' "$WORK/ros_setup.log")
    stage inputs 100 env PYTHONPATH="$PYTHONPATH${EXTRA:+:$EXTRA}" "$ROS_VENV/bin/python" benchmarks/node_inputs.py \
      --rates 12 30 --gil-load-ms 0 10 --duration 4 --output docs/benchmarks.md --json "$WORK/node_inputs.json"
  else
    echo "=== inputs: SKIPPED (ROS setup failed or not run, see ros_setup.log)"
    RC[inputs]=skipped
  fi
fi

# --- training throughput, one GPU ----------------------------------------------------------------
if want train; then
  gpu_stage train 75 $PY benchmarks/train_throughput.py --batch-sizes 1 2 --steps 6 --warmup 2 --channel-chunks 32 129 \
    --render-scales 1 0.5 \
    --output docs/benchmarks.md --section train_throughput_1gpu --json "$WORK/train.json" \
    --profile "$WORK/train_profile.txt"
fi

# --- summary -------------------------------------------------------------------------------------
for k in "${!RC[@]}"; do echo "$k ${RC[$k]} ${SECS[$k]:-0}"; done > "$WORK/stages.txt"
$PY benchmarks/realtime_summary.py --work "$WORK" --output docs/benchmarks.md --summary "$OUT/summary.md" \
  --json "$OUT/results.json" || echo "summary failed"
cp docs/benchmarks.md "$OUT/benchmarks.md"
tar -C "$WORK" -czf "$OUT/logs.tgz" . 2>/dev/null
echo "=== done in $(elapsed)s; \$OUT: $(ls "$OUT" | tr '\n' ' ')"
