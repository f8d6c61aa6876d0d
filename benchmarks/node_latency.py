"""End-to-end latency and sustained rate of the occupancy node.

Two modes, named in the output:

* ``ros`` (needs rclpy and the package's messages; on the GPU machine via scripts/gpu_ros_setup.sh):
  the real node in this process on its own executor (``gausstr_ros.node.executor.make_executor``),
  fed with synthetic 6-camera frames (images, depth, camera_info, tf_static) by
  ``benchmarks/ros_feeder.py``, which also subscribes to every output. The feeder runs in its own
  process (``--feeder process``, default: camera drivers and RViz are other processes on a robot) or
  in a thread of the node's process (``--feeder thread``:
  both sides share one interpreter lock); the output subscribers have a third process
  (``ros_feeder.run_receiver``, ``--subscribers process``, the default) or stay in the feeder
  (``--subscribers feeder``, the harness before 2026-12-06). Every process uses
  config/fastdds_large_images.xml unless ``--dds-profile environment``. Latency = receipt of the
  published occupancy minus publication of the LAST image of its set (CLOCK_MONOTONIC, one clock for
  every process), so it includes DDS
  transport both ways. Closed loop (the next set after the previous result) for the latency
  percentiles; then open loop at ``--rate`` Hz for the sustained output rate and drops. The node's
  worker stages are timed per set (stage 1: TF, conversion, batch, queueing the prediction; stage 2:
  waiting for the device, building and publishing the outputs). ``--simulated-device-ms T`` runs the
  node around ``benchmarks/simulated_device.py`` (one real prediction held, a device queue of T ms
  per set): the node's host side at a GPU's pace on a machine without one.
* ``pipeline`` (no ROS; the GPU machine, whose image has no ROS): the node's per-frame processing,
  ``gausstr_ros.pipeline.FramePipeline`` on message look-alikes (the same conversions, validation,
  batch building, prediction and host copy the node runs) plus the output array preparation (cloud
  points, Gaussian marker arrays, occupancy bytes). Latency = wall clock of that path; the baseline in
  the same run is ``predictor.predict`` alone on a ready batch (CUDA events on a GPU).

Weights are random (``--random-init`` is required: latency does not depend on them, and real runs
must never use random weights). Both modes print a table naming the device and the goal ratios
(30 Hz sustained, p99 <= 40 ms on one H100/H200, issue 12). On CUDA the pipeline mode measures
the eager prediction (the baseline) and the CUDA-graph path in the same run, each one set at a time
and pipelined over two threads as the node runs it, and reports peak GPU memory; with
``--compile-backbone`` also the CUDA-graph path with the image backbone compiled
(``InferenceConfig.compile_backbone``, with and without rendered depth), and its compile time (in
ros mode the flag compiles the node's backbone); ``--profile PATH`` also runs five eager predictions
under torch.profiler (operator table to PATH, kernel time per frame into the result).

    # GPU (no ROS): 6 x 504 x 896 images, talk2dino preset (1,800 Gaussians), Occ3D grid
    python benchmarks/node_latency.py --random-init --mode pipeline --preset talk2dino \\
        --output docs/benchmarks.md
    # CPU: the full rclpy path with the tiny preset (and the same path without ROS, for the breakdown)
    python benchmarks/node_latency.py --random-init --mode ros --preset tiny --threads 1 --frames 15 \\
        --rate 2 --duration 20 --output docs/benchmarks.md
    python benchmarks/node_latency.py --random-init --mode pipeline --preset tiny --threads 1 --frames 10 \\
        --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gil_profile import LockProfile, ProcessCpu, ThreadCpu
from benchmarks.ros_feeder import (
    FeederSpec,
    camera_topics,
    run_feeder,
    run_feeder_process,
    run_receiver,
    synthetic_depth,
    synthetic_rgb,
)
from benchmarks.set_timeline import set_timeline, summarize_timeline, timeline_line

SECTION_START = "<!-- node_latency:start -->"
SECTION_END = "<!-- node_latency:end -->"
SECTION_INTRO = """## Occupancy node latency (`benchmarks/node_latency.py`)

What it measures: end-to-end latency of the occupancy node from the last image of a frame set to the
published occupancy (p50/p99), and the sustained rate; goal on one H100/H200: 30 Hz sustained with
p99 <= 40 ms at 6 x 504 x 896 with 1,800 Gaussians (talk2dino preset). Random weights (latency
does not depend on them). Two modes, each reported in its own block below:

* `ros`: the real node with rclpy, fed by a camera feeder (`benchmarks/ros_feeder.py`) that also
  subscribes to every output (so every message is built). The feeder runs in its own process
  (`ros-process` blocks: camera drivers and RViz are other processes on a robot) or in the node's
  process (`ros-thread` blocks: one interpreter lock for both sides); the output subscribers have a
  process of their own (`--subscribers process`, the default; `feeder` keeps them with the cameras,
  as every run before 2026-12-06 did); every process uses
  `config/fastdds_large_images.xml` unless `--dds-profile environment`. Latency = occupancy received
  minus last image published (DDS both ways included; CLOCK_MONOTONIC, one clock for both
  processes), and the part until the node holds the complete frame set (DDS delivery of the images,
  conversion, synchronisation); closed loop for the percentiles, then open loop at a fixed input
  rate for the sustained rate and drops. Needs the ROS 2 wheels and this package's messages (on the
  GPU machine: `scripts/gpu_ros_setup.sh`).
* `pipeline`: the node's per-frame path without ROS (`gausstr_ros.pipeline.FramePipeline` on message
  look-alikes: conversions, validation, batch building, prediction, host copy, output arrays), one
  set at a time and pipelined over two threads as the node runs it (`TwoStageWorker`). On CUDA the
  baseline is the eager prediction, measured in the same run, and the ratio eager / CUDA graphs is
  reported; `predict` alone on a ready batch (CUDA events) is the model-only reference. With
  `--compile-backbone`, the variant "graphs + compiled backbone" (`InferenceConfig.compile_backbone`:
  the image backbone compiled with `torch.compile`, inside the CUDA graph) is measured in the same run
  too, its ratio to eager reported, and the wall time of its first call (the compilation) noted.
"""
DDS_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_images.xml"
GOAL_RATE_HZ = 30.0
COMPILED = "graphs + compiled backbone"  # the variant's name, also read by realtime_summary.py
COMPILED_NO_DEPTH = "graphs + compiled backbone, no depth subscriber"
# the compiled backbone with Inductor's fused float32 intermediates (compile_emulate_precision_casts off)
COMPILED_FUSED_CASTS = "graphs + compiled backbone, casts fused"
# the CUDA graphs with autocast casting the weights at every frame (cast_weights_once off): the
# graph path as it was before the weights were cast once; also read by realtime_summary.py
GRAPHS_PER_FRAME_CASTS = "graphs, weights cast per frame"
GOAL_P99_MS = 40.0


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    # The CPU machine is shared: the load says how much of it this run had.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, load average {load:.1f} at start)"
    )


def _setup(args, mode: str, predictor, rig, image: tuple[int, int]) -> dict:
    """The header of a result: what was measured, on which device and at which sizes."""
    return {
        "mode": mode,
        "device": device_name(predictor.device),
        "preset": args.preset,
        "views": rig.num_views,
        "image": image,
        "input": predictor.input_size,
        "gaussians": int(predictor.model.config.decoder.queries_per_view) * rig.num_views,
        "grid": predictor.grid.shape,
    }


def build_predictor(preset_name: str, device: str, grid_occ3d: bool):
    """An OccupancyPredictor of a preset with random weights, on the Occ3D grid when asked."""
    from gausstr_core.grid import VoxelGrid
    from gausstr_core.inference.predictor import OccupancyPredictor

    return OccupancyPredictor.with_random_weights(preset_name, device, VoxelGrid() if grid_occ3d else None)


# ---------------------------------------------------------------------------------------------
# pipeline mode (no ROS)
# ---------------------------------------------------------------------------------------------


def output_arrays(result, max_markers: int = 2000) -> None:
    """What the node computes from a FrameResult before the messages (numpy only)."""
    from gausstr_ros.conversions.gaussians import gaussian_marker_data
    from gausstr_ros.conversions.occupancy import occupancy_points

    occupancy_points(result.labels, result.grid, result.class_names, result.free_label, result.confidence)
    keep = result.gaussian_labels < result.free_label
    gaussian_marker_data(
        result.means[keep],
        result.scales[keep],
        result.rotations[keep],
        result.opacities[keep],
        result.gaussian_labels[keep],
        result.class_names,
        max_markers,
    )
    result.labels.tobytes()
    result.confidence.tobytes()
    if result.rendered_depth is not None:
        result.rendered_depth.tobytes()


def synthetic_camera_frames(rig, h: int, w: int, use_depth: bool) -> list:
    """One set of the rig's ``CameraFrame``s (message look-alikes of synthetic images, camera infos,
    32FC1 depth when ``use_depth``, and the cameras' poses): the node's per-set input without ROS."""
    from gausstr_ros.pipeline import CameraFrame
    from gausstr_ros.rig_messages import RigMessages

    msgs = RigMessages(rig, like=True)
    images = synthetic_rgb(rig.num_views, h, w)
    depths = synthetic_depth(rig.num_views, h, w) if use_depth else [None] * rig.num_views
    return [
        CameraFrame(
            name,
            msgs.image(k, images[k], 0),
            msgs.camera_info(k),
            None if depths[k] is None else msgs.depth(k, depths[k], 0),
            msgs.cam_to_target(k),
        )
        for k, name in enumerate(rig.names)
    ]


def run_pipeline_mode(args) -> dict:
    """Runs the measurement in its own thread, as the node runs inference in its worker thread
    (a non-main thread; on a CPU this changes how many OpenMP threads torch uses)."""
    out: dict = {}

    def target():
        try:
            out["result"] = _pipeline_measurement(args)
        except BaseException as exc:
            out["error"] = exc

    worker = threading.Thread(target=target, name="pipeline")
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def _pipeline_measurement(args) -> dict:
    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_ros.pipeline import FramePipeline

    predictor = build_predictor(args.preset, args.device, args.occ3d_grid)
    device = predictor.device
    h, w = args.height or predictor.input_size[0], args.width or predictor.input_size[1]
    rig = nuscenes_rig(h, w)
    pipeline = FramePipeline(predictor)
    # Models without a depth head (talk2dino, featup) take metric depth per camera, as on a robot with
    # depth cameras or a depth network in front of the node: feed a plausible 32FC1 image.
    use_depth = args.depth == "on" or (args.depth == "auto" and not predictor.model.config.depth_head.enabled)
    frames = synthetic_camera_frames(rig, h, w, use_depth)
    batch = pipeline.prepare(frames)  # the baseline's input, already on the device
    # (name, CUDA graphs, compiled backbone, rendered depth, weights cast once, compiled rounding as
    # eager). The baseline is the eager reference: autocast casts the weights at every frame.
    variants = [("eager", False, False, True, False, True)]
    if device.type == "cuda":  # the CUDA-graph path and the compiled backbone exist on CUDA only
        variants += [
            (GRAPHS_PER_FRAME_CASTS, True, False, True, False, True),
            ("graphs", True, False, True, True, True),
            ("graphs, no depth subscriber", True, False, False, True, True),
        ]
        if args.compile_backbone:
            variants += [
                (COMPILED, True, True, True, True, True),
                (COMPILED_NO_DEPTH, True, True, False, True, True),
                (COMPILED_FUSED_CASTS, True, True, True, True, False),
            ]
    results = {}
    for name, graphs, compiled, render, cast, emulate in variants:
        if name != COMPILED_NO_DEPTH:  # (that one keeps the compiled backbone of the variant before)
            # nothing captured yet
            predictor.configure(
                cuda_graphs=graphs,
                compile_backbone=compiled,
                cast_weights_once=cast,
                compile_emulate_precision_casts=emulate,
            )
        results[name] = _measure_variant(args, predictor, pipeline, frames, batch, render, name)
        if compiled:
            results[name]["compile_status"] = predictor.compile_status
            results[name]["compile_s"] = predictor.compile_status.get("compile_s")
    predictor.configure(compile_backbone=False, compile_emulate_precision_casts=True)
    profile = None
    if args.profile:  # the eager reference (weights cast per frame), as the baseline variant
        predictor.configure(cuda_graphs=False, cast_weights_once=False)
        profile = profile_predict(predictor, batch, args.profile)
        predictor.configure(cast_weights_once=True)
    runtime = categories_at_run_time(predictor, batch) if device.type == "cuda" else None
    return {
        **_setup(args, "pipeline (no ROS: FramePipeline + output arrays)", predictor, rig, (h, w)),
        "frames": args.frames,
        "variants": results,
        "categories_at_run_time": runtime,
        "graph_status": predictor.graph_status,
        "cast_status": predictor.cast_status,
        "eager_profile": profile,
    }


def profile_predict(predictor, batch, path: Path, frames: int = 5) -> dict:
    """``frames`` eager predicts (with rendered depth) under torch.profiler: the device time of every
    kernel summed per frame is the floor a CUDA graph of the same kernels cannot go below; the
    operator table (by self device time) goes to ``path``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        predictor.predict(batch, render_depth=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(frames):
            predictor.predict(batch, render_depth=True)
        torch.cuda.synchronize()
    wall_ms = 1e3 * (time.perf_counter() - t0) / frames
    events = prof.key_averages()
    # kernels only: an operator row carries its kernels' time as well (counted twice otherwise)
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    kernel_ms = kernel_us / 1e3 / frames
    table = events.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=80)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"eager predict, {frames} frames under the profiler: device time {kernel_ms:.1f} ms per frame, "
        f"wall {wall_ms:.1f} ms per frame (profiler overhead included)\n\n{table}\n"
    )
    return {"kernel_ms_per_frame": kernel_ms, "wall_ms_per_frame": wall_ms, "table": str(path)}


def _measure_variant(args, predictor, pipeline, frames, batch, render: bool, name: str) -> dict:
    """One configuration: predict alone (CUDA events), the node path one frame at a time, and the
    node path pipelined over two threads (as the node runs it) back to back."""
    from tqdm import tqdm

    device = predictor.device
    cuda = device.type == "cuda"

    def predict_only_ms() -> float:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            predictor.predict(batch, render_depth=render)
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        predictor.predict(batch, render_depth=render)
        return 1e3 * (time.perf_counter() - t0)

    for i in range(args.warmup):  # includes the capture on the graph path and the compilation
        output_arrays(pipeline.run(frames, stamp_ns=i, render_depth=render))
        predict_only_ms()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the other variants' cached blocks must not count as reserved here
        torch.cuda.reset_peak_memory_stats()
    stages = {"prepare": [], "predict": [], "to_host": [], "device": [], "outputs": [], "end_to_end": []}
    predict_only = []
    # The node path and the baseline alternate frame by frame, so that both see the same machine.
    for i in tqdm(range(args.frames), desc=f"{name}: one at a time", unit="frame"):
        t0 = time.perf_counter()
        result = pipeline.run(frames, stamp_ns=i, render_depth=render)
        t1 = time.perf_counter()
        output_arrays(result)
        t2 = time.perf_counter()
        predict_only.append(predict_only_ms())
        for key in ("prepare", "predict", "to_host", "device"):
            if key in result.timings_ms:
                stages[key].append(result.timings_ms[key])
        stages["outputs"].append(1e3 * (t2 - t1))
        stages["end_to_end"].append(1e3 * (t2 - t0))

    # Pipelined over two threads as the node runs it: (a) back to back, the next set offered as soon
    # as the slot is free: the highest sustained rate; (b) at a camera's rate (--rate, open loop):
    # latency offered -> output arrays built, sets dropped by the latest-only slot.
    saturated = _pipelined_run(pipeline, frames, render, max(args.frames, 2 * args.warmup), None)
    camera = _pipelined_run(pipeline, frames, render, args.frames, args.rate)
    out = {
        "render_depth": render,
        "stages": stages,
        "predict_only": predict_only,
        "pipelined": camera["latencies"][args.warmup :],
        "pipelined_rate": args.rate,
        "pipelined_dropped": camera["dropped"],
        "pipelined_out_hz": camera["out_hz"],
        "pipelined_hz": saturated["out_hz"],
        "saturated_latencies": saturated["latencies"],
        "serial_hz": 1e3 / float(np.mean(stages["end_to_end"])),
    }
    if cuda:
        torch.cuda.synchronize()
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def _pipelined_run(pipeline, frames, render: bool, count: int, rate: float | None) -> dict:
    """``count`` sets through a LatestSlot into a TwoStageWorker (the node's threads): offered back to
    back (``rate`` None: each as soon as the slot is free) or every 1/rate s; returns the latencies
    (offered -> output arrays built) of the sets that came out, the drops and the output rate."""
    from gausstr_ros.node.worker import LatestSlot, TwoStageWorker

    slot: LatestSlot[int] = LatestSlot()
    offered: dict[int, float] = {}
    finished: dict[int, float] = {}
    errors = []
    dropped = 0

    def first(i):
        return pipeline.start(frames, stamp_ns=i, render_depth=render)

    def second(i, pending):
        output_arrays(pending.result())
        finished[i] = time.perf_counter()

    worker = TwoStageWorker(slot, first, second, lambda i, exc: errors.append(exc), name="bench")
    worker.start()
    start = time.perf_counter()
    for i in range(count):
        if rate is None:
            while slot.pending():
                time.sleep(0.0002)
        else:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        offered[i] = time.perf_counter()
        if slot.put(i) is not None:
            dropped += 1
    deadline = time.perf_counter() + 60
    while len(finished) + len(errors) + dropped < count and time.perf_counter() < deadline:
        time.sleep(0.001)
    elapsed = max(finished.values(), default=start) - start
    worker.stop()
    if errors:
        raise errors[0]
    return {
        "latencies": [1e3 * (finished[i] - offered[i]) for i in sorted(finished)],
        "dropped": dropped,
        "out_hz": len(finished) / elapsed if elapsed > 0 else float("nan"),
    }


def categories_at_run_time(predictor, batch) -> dict:
    """What changing ``categories`` costs on the graph path: the same layout (a copy into the
    graph's prototype buffers) and a new layout (eager once, then a capture)."""
    from gausstr_core.text.vocabulary import OCC3D_CATEGORIES

    def timed(fn) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - t0)

    predictor.configure(cuda_graphs=True)
    predictor.set_categories(OCC3D_CATEGORIES)
    for _ in range(3):
        predictor.predict(batch, render_depth=False)
    steady = float(np.median([timed(lambda: predictor.predict(batch, render_depth=False)) for _ in range(5)]))
    reordered = list(OCC3D_CATEGORIES)
    reordered[1], reordered[2] = reordered[2], reordered[1]
    same_set = timed(lambda: predictor.set_categories(reordered))
    same_first = timed(lambda: predictor.predict(batch, render_depth=False))
    new = ["car|sedan", "road", "building|wall", "tree", "person"]
    new_set = timed(lambda: predictor.set_categories(new))
    new_first = timed(lambda: predictor.predict(batch, render_depth=False))
    new_second = timed(lambda: predictor.predict(batch, render_depth=False))
    new_third = timed(lambda: predictor.predict(batch, render_depth=False))
    predictor.set_categories(OCC3D_CATEGORIES)
    return {
        "steady_ms": steady,
        "same_layout": {"set_categories_ms": same_set, "first_predict_ms": same_first},
        "new_layout": {
            "set_categories_ms": new_set,
            "first_predict_ms": new_first,
            "second_predict_ms": new_second,
            "third_predict_ms": new_third,
        },
    }


# ---------------------------------------------------------------------------------------------
# ros mode (real node, real rclpy)
# ---------------------------------------------------------------------------------------------


def run_ros_mode(args) -> dict:
    """The real node (rclpy, Fast DDS) in this process; the cameras and the output subscribers in
    ``benchmarks/ros_feeder.py``, in their own process (``--feeder process``, as on a robot) or in a
    thread of this one (``--feeder thread``: one interpreter lock for both sides)."""
    import multiprocessing

    import rclpy
    from rclpy.parameter import Parameter

    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_ros.node.executor import make_executor, spin
    from gausstr_ros.node.occupancy_node import OccupancyNode

    predictor = build_predictor(args.preset, args.device, args.occ3d_grid)
    predictor.configure(compile_backbone=args.compile_backbone)  # compiled in the warm-up frames
    h, w = args.height or predictor.input_size[0], args.width or predictor.input_size[1]
    rig = nuscenes_rig(h, w)
    # As in pipeline mode: a model without a depth head (talk2dino, featup) takes metric depth per
    # camera, so the feeder publishes a 32FC1 depth image with every colour image.
    use_depth = args.depth == "on" or (args.depth == "auto" and not predictor.model.config.depth_head.enabled)
    if args.simulated_device_ms:
        predictor = simulated_predictor(predictor, rig, h, w, use_depth, args.simulated_device_ms)
    if args.dds_profile == "large-images":
        # docs/node.md's setting for cameras on the node's machine (Fast DDS shared memory with a
        # segment that holds full-size images); set before the first participant of either process
        # (the spawned feeder inherits it). Without it, images of a few MB go over UDP fragments.
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
    context = rclpy.Context()
    rclpy.init(context=context)
    ns = f"/bench_{uuid.uuid4().hex[:6]}"
    names = list(rig.names)
    topics = camera_topics(names)
    spec = FeederSpec(
        namespace=ns,
        height=h,
        width=w,
        image_topics=topics["image"],
        camera_info_topics=topics["camera_info"],
        depth_topics=topics["depth"] if use_depth else [],
        warmup=args.warmup,
        frames=args.frames,
        rate=args.rate,
        duration=args.duration,
        info_every_set=args.camera_info_every_set,
    )
    params = {
        "camera_names": names,
        "image_topics": spec.image_topics,
        "camera_info_topics": spec.camera_info_topics,
        "image_qos": "reliable",
        "status_period_s": 0.5,
        "sync_timeout_s": 5.0,
        "use_depth": use_depth,
    }
    if use_depth:
        params["depth_topics"] = spec.depth_topics
    if args.switch_interval_ms is not None:
        params["python_switch_interval_ms"] = float(args.switch_interval_ms)
    if args.executor_coalesce_ms is not None:
        params["executor_coalesce_ms"] = float(args.executor_coalesce_ms)
    if args.output_process is not None:
        params["output_process"] = args.output_process
    if args.input_process:
        params["input_process"] = True
    if args.occupancy_confidence is not None:
        params["occupancy_confidence"] = args.occupancy_confidence == "on"
    node = OccupancyNode(
        predictor=predictor,
        context=context,
        namespace=ns,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    executor = make_executor(context, node.config.executor_coalesce_ms / 1e3)  # the node's own
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()

    # When each set is complete inside the node (FrameSet.arrival, time.monotonic like the feeder's
    # clock): DDS delivery of the images, their conversion to Python messages and the synchronizer.
    arrivals: dict[int, float] = {}
    slot_put = node._slot.put

    def recording_put(frame):
        arrivals[frame.stamp_ns] = frame.arrival
        return slot_put(frame)

    node._slot.put = recording_put
    stage_ms, marks = instrument_node_stages(node)
    mp = multiprocessing.get_context("spawn")  # a fresh interpreter: no CUDA or DDS state forked
    ours, theirs = mp.Pipe()
    receiver_process, to_receiver = None, None
    if args.subscribers == "process":  # the output subscribers in a process of their own
        to_receiver, receiver_end = mp.Pipe()
        receiver_process = mp.Process(target=run_receiver, args=(receiver_end, spec), daemon=True)
        receiver_process.start()
    if args.feeder == "process":
        feeder = mp.Process(target=run_feeder_process, args=(theirs, spec, to_receiver), daemon=True)
    else:
        feeder = threading.Thread(target=run_feeder, args=(theirs, spec, context, to_receiver), daemon=True)
    feeder.start()

    def receive(timeout: float) -> dict:
        if not ours.poll(timeout):
            raise RuntimeError(f"the feeder sent nothing for {timeout:.0f} s")
        msg = ours.recv()
        if msg["event"] == "error":
            raise RuntimeError(f"the feeder failed: {msg['error']}")
        return msg

    try:
        receive(60)  # subscribed
        deadline = time.monotonic() + 30
        # CameraInfo in, and every output matched from the node's side too (a publisher in another
        # process, the output process, can match its subscribers later than they see it)
        # and the rig's static TF (published once, latched: with several processes starting on few
        # cores it can come seconds later, and a set without it is refused, which ends a closed loop)
        while time.monotonic() < deadline and (
            node.inputs.missing_camera_info()
            or not all(node.outputs.subscription_counts().values())
            or not node_has_static_tf(node, names)
        ):
            time.sleep(0.05)
        ours.send("ready")
        receive(120 * (args.warmup + args.frames))  # closed_loop_done
        # The feeder can hold the last closed-loop occupancy before the node counts that set as
        # published (the count follows the publish; with the output process, its acknowledgement):
        # the open loop's counts start once every closed-loop set is counted.
        counted_by = time.monotonic() + 5
        while node.stats.snapshot().processed < args.warmup + args.frames and time.monotonic() < counted_by:
            time.sleep(0.005)
        closed = node.stats.snapshot()
        dropped_before = closed.dropped
        emitted_before = node.inputs.sets_emitted
        thread_cpu = ThreadCpu()
        helpers = {
            name: h.pid
            for name, h in (("input process", node.inputs), ("output process", node.outputs))
            if getattr(h, "pid", None)
        }
        helper_cpu = ProcessCpu(helpers)
        helper_cpu.start()
        lock = LockProfile(args.lock_profile, args.duration) if args.lock_profile else None
        lock_error = lock.start() if lock else None
        thread_cpu.start()
        ours.send("go")
        result = receive(args.duration + 60)
        # the window: the sets being sent, then at most 1 s of the node catching up
        threads = thread_cpu.stop(result["send_window"] + 1.0)
        helper_use = helper_cpu.stop(result["send_window"] + 1.0)
        lock_use = (lock.finish() if lock_error is None else {"error": lock_error}) if lock else None
        snap = node.stats.snapshot()
        open_loop = open_loop_counts(closed, snap, node.inputs.sets_emitted - emitted_before)
    finally:
        feeder.join(timeout=15)
        if receiver_process is not None:
            receiver_process.join(timeout=15)
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
    stamps = result["closed"]
    open_published, open_received = result["open_published_last"], result["open_received"]
    open_stamps = [s for s in sorted(open_received) if s in open_published]
    cameras = "their own process" if args.feeder == "process" else "the node's process"
    subscribers = "another process" if args.subscribers == "process" else "the cameras' process"
    where = f"cameras in {cameras}, output subscribers in {subscribers}"
    return {
        **_setup(args, f"ros (real node, rclpy, Fast DDS; {where})", predictor, rig, (h, w)),
        "feeder": args.feeder,
        "subscribers": args.subscribers,
        "camera_info_every_set": args.camera_info_every_set,
        "simulated_device_ms": args.simulated_device_ms or None,
        "switch_interval_ms": round(1e3 * sys.getswitchinterval(), 3),
        "executor_coalesce_ms": node.config.executor_coalesce_ms,
        "output_process": node.outputs_in_process,
        "output_process_setting": node.config.output_process,
        "occupancy_confidence": node.config.occupancy_confidence,
        "input_process": node.config.input_process,
        "dds_profile": os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or "Fast DDS defaults",
        "latencies": [1e3 * (result["received"][s] - result["published_last"][s]) for s in stamps],
        # every open-loop set answered: last image published -> its occupancy received
        "open_latencies": [1e3 * (open_received[s] - open_published[s]) for s in open_stamps],
        "dds_in": [1e3 * (arrivals[s] - result["published_last"][s]) for s in stamps if s in arrivals],
        # each answered set's end-to-end latency split into its consecutive segments
        "timeline_ms": {
            "closed": summarize_timeline(
                set_timeline(stamps, result["published_last"], arrivals, marks, result["received"])
            ),
            "open": summarize_timeline(
                set_timeline(open_stamps, open_published, arrivals, marks, open_received)
            ),
        },
        # first image sent -> set complete in the node: never negative, whichever process sends
        "set_in": [1e3 * (arrivals[s] - result["published_first"][s]) for s in stamps if s in arrivals],
        "graph_status": getattr(predictor, "graph_status", {}),
        "compile_status": predictor.compile_status,
        "frames": args.frames,
        "node_p50": closed.latency_p50_ms,
        "node_p99": closed.latency_p99_ms,
        "outputs_seen": result["outputs_seen"],
        "input_rate": args.rate,
        "sent": result["sent"],
        "outputs": result["outputs"],
        # outputs received while the sets were being sent, over that window (until 2026-12-06:
        # every output over the window plus the 1 s tail after it, 6/7 of the rate for --duration 6)
        "sustained_hz": result["outputs_in_window"] / result["send_window"],
        "send_lag_ms": result["send_lag_ms"],
        "dropped": snap.dropped - dropped_before,
        "open_loop": open_loop,
        "node_stages_ms": stage_ms,
        "thread_cpu": threads,
        "helper_cpu": helper_use,
        "lock_profile": lock_use,
    }


def node_has_static_tf(node, camera_names) -> bool:
    """Whether the node's TF has every camera's optical frame (static: any stamp)."""
    from gausstr_ros.rig_messages import optical_frame

    try:
        for name in camera_names:
            node.tf.lookup(node.config.target_frame, optical_frame(name), 0, 0.0)
    except Exception:  # not (yet) known: the TF lookup's own error types differ by backend
        return False
    return True


def instrument_node_stages(node) -> tuple[dict[str, list[float]], dict[int, dict[str, float]]]:
    """Wall time of the node's worker stages, per set (lists filled as the node runs): "start"
    (TF, conversion, batch, queueing the prediction; "camera_frames": its TF lookups), "wait" (for the
    device and the host copies) and "publish" (every output message built and handed to rclpy); and
    the CPU time of the thread in "start" and "publish" ("start_cpu", "publish_cpu": wall minus CPU
    is time spent waiting, for the interpreter lock, the device or a buffer).

    Also each set's marks (``time.monotonic()``, by stamp [ns]): "taken" (the prepare thread took
    it), "prepared" (stage 1 done), "handed" (the publish thread took it), "ready" (the prediction's
    results on the host), "occupancy_out" (its occupancy handed to rclpy, in the node or in its
    output process): ``set_timeline`` turns them into segments."""
    marks: dict[int, dict[str, float]] = {}

    def mark(stamp: int, key: str, t: float | None = None) -> None:
        marks.setdefault(stamp, {})[key] = time.monotonic() if t is None else t

    times: dict[str, list[float]] = {
        "start": [],
        "start_cpu": [],
        "camera_frames": [],
        "wait": [],
        "publish": [],
        "publish_cpu": [],
    }

    def timed(key, fn):
        def wrapper(*a, **k):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                times[key].append(1e3 * (time.perf_counter() - t0))
                if f"{key}_cpu" in times:
                    times[f"{key}_cpu"].append(1e3 * (time.thread_time() - c0))

        return wrapper

    worker = node._worker  # holds the stage callables it was built with
    first = worker._first

    def first_marked(frame):
        mark(frame.stamp_ns, "taken")
        try:
            return first(frame)
        finally:
            mark(frame.stamp_ns, "prepared")

    worker._first = timed("start", first_marked)
    node._camera_frames = timed("camera_frames", node._camera_frames)  # looked up per call: patchable
    publish = node.outputs.publish

    def publish_marked(result, *args, on_occupancy_published=None, **kwargs):
        def occupancy_out(t: float) -> None:  # the time the occupancy went to rclpy (any process)
            mark(result.stamp_ns, "occupancy_out", t)
            if on_occupancy_published is not None:
                on_occupancy_published(t)

        return publish(result, *args, on_occupancy_published=occupancy_out, **kwargs)

    node.outputs.publish = timed("publish", publish_marked)
    finish = worker._second

    def finish_timed(frame, pending):
        mark(frame.stamp_ns, "handed")
        t0 = time.perf_counter()
        pending.result()  # cached: the node's own call below returns at once
        times["wait"].append(1e3 * (time.perf_counter() - t0))
        mark(frame.stamp_ns, "ready")
        return finish(frame, pending)

    worker._second = finish_timed
    return times, marks


def simulated_predictor(predictor, rig, h: int, w: int, use_depth: bool, device_ms: float):
    """``benchmarks.simulated_device.SimulatedDevicePredictor`` around ``predictor``, holding its
    prediction of one synthetic frame set of the rig (computed here, once)."""
    from benchmarks.simulated_device import SimulatedDevicePredictor
    from gausstr_ros.pipeline import FramePipeline

    frames = synthetic_camera_frames(rig, h, w, use_depth)
    t0 = time.perf_counter()
    wrapped = SimulatedDevicePredictor(predictor, FramePipeline(predictor).prepare(frames), device_ms)
    took = time.perf_counter() - t0
    print(f"simulated device: {device_ms:g} ms per set; the held prediction took {took:.1f} s")
    return wrapped


def open_loop_counts(before, after, sets_complete: int) -> dict:
    """What became of the open-loop sets inside the node (``StatsSnapshot`` before and after): sets
    the synchronizer completed, published, dropped while busy, rejected by reason (``incomplete``:
    an image of the set never came), images the middleware reported lost."""
    kinds = set(before.rejected_by_kind) | set(after.rejected_by_kind)
    rejected = {k: after.rejected_by_kind.get(k, 0) - before.rejected_by_kind.get(k, 0) for k in kinds}
    return {
        "sets_complete": sets_complete,
        "published": after.processed - before.processed,
        "dropped_busy": after.dropped - before.dropped,
        "rejected": {k: v for k, v in sorted(rejected.items()) if v},
        "images_lost": after.images_lost - before.images_lost,
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def report(r: dict, wall_s: float) -> str:
    head = (
        f"{r['mode']} on {r['device']}, {time.strftime('%Y-%m-%d')}: preset {r['preset']} (random weights), "
        f"{r['views']} x {r['image'][0]}x{r['image'][1]} images -> input {r['input'][0]}x{r['input'][1]}, "
        f"{r['gaussians']} Gaussians, grid {'x'.join(map(str, r['grid']))}, {r['frames']} frames. "
        f"Command: `python benchmarks/node_latency.py {' '.join(sys.argv[1:])}`"
    )
    lines = [head, ""]
    if "variants" in r:
        lines += pipeline_table(r)
    else:
        lines += ros_table(r)
    lines.append(f"Benchmark wall time {wall_s:.0f} s.")
    return "\n".join(lines)


def _p(values, q):
    return f"{percentile(values, q):.1f}" if len(values) else "-"


def pipeline_table(r: dict) -> list[str]:
    variants = r["variants"]
    names = list(variants)
    rows = [
        ("predict alone on a ready batch (CUDA events on a GPU)", lambda v: v["predict_only"]),
        ("messages -> batch on device (host)", lambda v: v["stages"]["prepare"]),
        ("predict: host time to queue it", lambda v: v["stages"]["predict"]),
        ("wait for the device + host copies", lambda v: v["stages"]["to_host"]),
        ("device time, prediction + copies (CUDA events)", lambda v: v["stages"]["device"]),
        ("output arrays (cloud, markers)", lambda v: v["stages"]["outputs"]),
        ("**end to end, one set at a time**", lambda v: v["stages"]["end_to_end"]),
        ("**end to end, pipelined (2 threads, as the node), input at --rate**", lambda v: v["pipelined"]),
    ]
    header = "| measure [ms] | " + " | ".join(f"{n} p50 | {n} p99" for n in names)
    base = names[0]
    # the ratios to the eager baseline: the CUDA graphs, and the compiled backbone when measured
    against = [
        n for n in names[1:] if n in ("graphs", GRAPHS_PER_FRAME_CASTS, COMPILED, COMPILED_FUSED_CASTS)
    ]
    header += "".join(f" | {base} / {n} (p50)" for n in against)
    lines = [header + " |", "|" + " --- |" * (1 + 2 * len(names) + len(against))]
    for label, get in rows:
        cells = []
        for n in names:
            values = get(variants[n])
            cells += [_p(values, 50), _p(values, 99)]
        for n in against:
            a, b = get(variants[base]), get(variants[n])
            ratio = percentile(a, 50) / percentile(b, 50) if len(a) and len(b) else float("nan")
            cells.append(f"{ratio:.2f}x" if np.isfinite(ratio) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names:
        v = variants[n]
        p99 = percentile(v["pipelined"], 99)
        mem = (
            f", peak GPU memory {v['peak_gib']:.2f} GiB allocated ({v['reserved_gib']:.2f} GiB reserved by "
            f"the caching allocator; weights included)"
            if "peak_gib" in v
            else ""
        )
        lines.append(
            f"* {n} (rendered depth {'on' if v['render_depth'] else 'off'}): pipelined at "
            f"{v['pipelined_rate']:g} Hz input {v['pipelined_out_hz']:.1f} Hz out, {v['pipelined_dropped']} "
            f"dropped, p99 {p99:.1f} ms = {p99 / GOAL_P99_MS:.2f}x the {GOAL_P99_MS:.0f} ms budget; highest "
            f"sustained rate (back to back) "
            f"{v['pipelined_hz']:.1f} Hz = {v['pipelined_hz'] / GOAL_RATE_HZ:.2f}x the 30 Hz goal "
            f"({v['serial_hz']:.1f} Hz one set at a time){mem}."
        )
    runtime = r.get("categories_at_run_time")
    if runtime:
        same, new = runtime["same_layout"], runtime["new_layout"]
        steady = runtime["steady_ms"]
        lines.append(
            f"* categories changed at run time (graphs, no rendering; steady predict {steady:.1f} ms wall): "
            f"same layout (17 reordered: a copy into the graph's prototype buffers) set_categories "
            f"{same['set_categories_ms']:.1f} ms + next predict {same['first_predict_ms']:.1f} ms; "
            f"new layout (5 categories) set_categories {new['set_categories_ms']:.1f} ms, then predict "
            f"{new['first_predict_ms']:.1f} ms (eager), {new['second_predict_ms']:.1f} ms (capture + "
            f"replay), {new['third_predict_ms']:.1f} ms (replay)."
        )
    status = r.get("graph_status") or {}
    if status.get("enabled"):
        failures = "; ".join(status.get("failures", [])) or "none"
        captures = ", ".join(f"{ms:.0f}" for ms in status.get("capture_ms", []))
        lines.append(f"* CUDA graph captures took {captures} ms; eager fallbacks: {failures}.")
    if COMPILED in variants:
        lines.append(f"* {COMPILED}: {compile_text(variants[COMPILED].get('compile_status') or {})}.")
    return lines


def compile_text(status: dict) -> str:
    """One line of ``OccupancyPredictor.compile_status``: compiled in how long, or why not."""
    if not status.get("enabled"):
        return "not compiled (option off or not on CUDA)"
    if status.get("failures"):
        return "compilation FAILED, the backbone ran eagerly: " + "; ".join(status["failures"])
    s = status.get("compile_s")
    took = f"{s:.1f} s" if s is not None else "an unmeasured time"
    return f"backbone compiled (torch.compile, Inductor default mode) in {took} (wall time of its first call)"


def ros_table(r: dict) -> list[str]:
    lat = r["latencies"]
    lines = []
    if r.get("simulated_device_ms"):
        lines += [
            f"Simulated device (`--simulated-device-ms {r['simulated_device_ms']:g}`): one real prediction "
            "held and answered at once, the device modelled as an in-order queue of that many ms per set; "
            "everything else (rclpy, DDS, conversions, the node's threads, output messages) is real.",
            "",
        ]
    lines += ["| measure [ms] | p50 | p99 |", "| --- | --- | --- |"]
    lines.append(f"| last image published -> occupancy received | {_p(lat, 50)} | {_p(lat, 99)} |")
    if r.get("open_latencies"):
        o = r["open_latencies"]
        lines.append(
            f"| the same at {r['input_rate']:g} Hz input (open loop, every set answered) "
            f"| {_p(o, 50)} | {_p(o, 99)} |"
        )
    if r.get("dds_in"):
        lines.append(
            f"| last image published -> frame set complete in the node (DDS in, conversion, sync) | "
            f"{_p(r['dds_in'], 50)} | {_p(r['dds_in'], 99)} |"
        )
    lines.append(
        "| the node's own status (arrival -> publish; one set at a time, warm-up sets included) | "
        f"{r['node_p50']:.1f} | {r['node_p99']:.1f} |"
    )
    stage_names = {
        "start": "node worker, stage 1: TF, conversion, batch, queue the prediction",
        "start_cpu": "node worker, stage 1, of it: the thread's CPU time (the rest is waiting)",
        "camera_frames": "node worker, stage 1, of it: TF lookups and camera frames",
        "wait": "node worker, stage 2: wait for the device and the host copies",
        "publish": "node worker, stage 2: build and publish every output",
        "publish_cpu": "node worker, stage 2, publishing: the thread's CPU time (the rest is waiting)",
    }
    for key, label in stage_names.items():
        values = (r.get("node_stages_ms") or {}).get(key) or []
        if values:
            lines.append(f"| {label} | {_p(values, 50)} | {_p(values, 99)} |")
    loaded = r.get("open_latencies") or []
    p99 = percentile(loaded if loaded else lat, 99)
    which = "open loop" if loaded else "one set at a time"
    rate = r["sustained_hz"]
    lines += [
        "",
        f"Open loop at {r['input_rate']:g} Hz input ({r['sent']} sets): {r['outputs']} "
        f"published, sustained {rate:.2f} Hz = {rate / GOAL_RATE_HZ:.2f}x the 30 Hz goal, "
        f"{r['dropped']} dropped (latest-only queue); p99 {p99:.1f} ms = "
        f"{p99 / GOAL_P99_MS:.2f}x the {GOAL_P99_MS:.0f} ms budget ({which}). Outputs also received: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(r['outputs_seen'].items()))}.",
    ]
    timeline = r.get("timeline_ms") or {}
    for key, what in (("closed", "one set at a time"), ("open", f"at {r['input_rate']:g} Hz input")):
        line = timeline_line(timeline.get(key), what)
        if line:
            lines.append(line)
    if r.get("send_lag_ms"):
        lag = r["send_lag_ms"]
        lines.append(
            f"The cameras' process sent each set p50 {_p(lag, 50)} / p99 {_p(lag, 99)} ms after its "
            f"schedule (max {max(lag):.1f} ms): late sets arrive in bursts, and a latest-only node "
            "drops the earlier ones of a burst."
        )
    if r.get("open_loop"):
        o = r["open_loop"]
        rejected = ", ".join(f"{k} {v}" for k, v in o["rejected"].items()) or "none"
        lines.append(
            f"Inside the node, open loop: {o['sets_complete']} of {r['sent']} sets completed by the "
            f"synchronizer, {o['published']} published, {o['dropped_busy']} dropped while busy; rejected: "
            f"{rejected}; images reported lost by the middleware: {o['images_lost']}."
        )
    lines += thread_cpu_lines(r.get("thread_cpu"))
    if r.get("helper_cpu"):
        lines.append(
            "CPU of the node's helper processes over that window (% of one core): "
            + ", ".join(f"{h['name']} {100 * h['share']:.0f} %" for h in r["helper_cpu"])
            + "."
        )
    lines += lock_profile_lines(r.get("lock_profile"))
    if r.get("camera_info_every_set"):
        lines.append("CameraInfo published with every set (as camera drivers do).")
    if r.get("dds_profile"):
        profile = r["dds_profile"]
        lines.append(f"DDS: {Path(profile).name if profile.endswith('.xml') else profile}.")
    if r.get("switch_interval_ms") is not None:
        lines.append(f"Python thread switch interval: {r['switch_interval_ms']:g} ms.")
    if r.get("executor_coalesce_ms"):
        lines.append(f"Executor coalescing: {r['executor_coalesce_ms']:g} ms before each wait.")
    if r.get("input_process"):
        lines.append(
            "Cameras taken and synchronized in the node's input process (input_process: true); the image "
            "bytes reach the node through shared memory."
        )
    if r.get("output_process"):
        lines.append(
            f"Outputs built and published in the node's output process (output_process: "
            f"{r.get('output_process_setting', 'always')}); the "
            "node's publishing stage is the hand-over (the arrays copied into shared memory)."
        )
    if r.get("graph_status", {}).get("enabled"):
        lines.append(f"CUDA graph path: {r['graph_status']}.")
    if r.get("compile_status", {}).get("enabled"):
        lines.append(f"Image backbone: {compile_text(r['compile_status'])}.")
    return lines


def thread_cpu_lines(threads: list[dict] | None, top: int = 8) -> list[str]:
    """The node process's busiest threads over the open-loop window (``ThreadCpu``)."""
    if not threads:
        return []
    total = sum(t["share"] for t in threads)
    busiest = ", ".join(
        f"{t['name']} {100 * t['share']:.0f} % "
        f"({100 * t.get('sys_s', 0) / max(t['cpu_s'], 1e-9):.0f} % of it in the kernel)"
        for t in threads[:top]
    )
    return [
        f"CPU of the node's process over the open-loop window (% of one core): {100 * total:.0f} % in "
        f"all; busiest threads: {busiest}."
    ]


def lock_profile_lines(lock: dict | None) -> list[str]:
    """Who held the interpreter lock over the open-loop window (``LockProfile``, py-spy)."""
    if not lock:
        return []
    if "error" in lock:
        return [f"Interpreter lock profile: not measured ({lock['error']})."]
    parts = ", ".join(f"{k} {100 * v:.0f} %" for k, v in lock["by_activity"].items())
    threads = ", ".join(f"{k} {100 * v:.0f} %" for k, v in lock["by_thread"].items())
    frames = "; ".join(f"`{k}` {100 * v:.1f} %" for k, v in lock["top_frames"][:6])
    return [
        f"Interpreter lock held {100 * lock['held']:.0f} % of the open-loop window (py-spy --gil, "
        f"{lock['rate']:g} samples/s, {lock['samples']} samples): by activity {parts}; by thread "
        f"{threads}; innermost frames: {frames}."
    ]


def write_section(path: Path, key: str, text: str) -> None:
    """Replace this benchmark's sub-section ``key`` (a mode) inside its section of a markdown file."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    sub_start, sub_end = f"<!-- node_latency:{key}:start -->", f"<!-- node_latency:{key}:end -->"
    block = f"{sub_start}\n{text}\n{sub_end}"
    if SECTION_START not in doc:
        doc = doc.rstrip("\n") + f"\n\n{SECTION_START}\n{SECTION_INTRO}\n{SECTION_END}\n"
    head, rest = doc.split(SECTION_START, 1)
    body, tail = rest.split(SECTION_END, 1)
    if sub_start in body:
        before, after = body.split(sub_start, 1)
        body = before + block + after.split(sub_end, 1)[1]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(head + SECTION_START + body + SECTION_END + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--random-init", action="store_true", required=True, help="acknowledge random weights (latency only)"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "pipeline", "ros"),
        default="auto",
        help="auto: ros when rclpy and the messages import, else pipeline",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="tiny, talk2dino or featup (default: talk2dino on CUDA, tiny on the CPU)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--height", type=int, default=0, help="camera image height (default: the input's)")
    parser.add_argument("--width", type=int, default=0, help="camera image width (default: the input's)")
    parser.add_argument(
        "--depth",
        choices=("auto", "on", "off"),
        default="auto",
        help="feed depth images (both modes; auto: when the model has no depth head)",
    )
    parser.add_argument("--frames", type=int, default=50, help="measured frames")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rate", type=float, default=30.0, help="open-loop input rate [Hz] (both modes)")
    parser.add_argument("--duration", type=float, default=10.0, help="ros mode: open-loop duration [s]")
    parser.add_argument(
        "--dds-profile",
        choices=("large-images", "environment"),
        default="large-images",
        help="ros mode: config/fastdds_large_images.xml for both processes (docs/node.md's setting for "
        "same-host cameras), or whatever FASTRTPS_DEFAULT_PROFILES_FILE says (unset: Fast DDS defaults)",
    )
    parser.add_argument(
        "--feeder",
        choices=("process", "thread"),
        default="process",
        help="ros mode: the cameras and output subscribers in their own process (as on a robot) or in a "
        "thread of the node's process (sharing its interpreter lock)",
    )
    parser.add_argument(
        "--subscribers",
        choices=("feeder", "process"),
        default="process",
        help="ros mode: the output subscribers in a process of their own (the default since 2026-12-06: "
        "as a robot's consumers are; the cameras then send on time) or with the cameras (the feeder; "
        "every earlier run: under load that process sent sets up to 13 ms late, in bursts, "
        "docs/benchmarks.md)",
    )
    parser.add_argument(
        "--small-grid",
        dest="occ3d_grid",
        action="store_false",
        help="keep the preset's grid instead of forcing the Occ3D 200x200x16 grid",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); on a shared CPU 1 is the steadiest",
    )
    parser.add_argument(
        "--compile-backbone",
        action="store_true",
        help="CUDA only: pipeline mode also measures the CUDA-graph path with the image backbone "
        f"compiled (variant {COMPILED!r}, same run); ros mode runs the node with it "
        "(InferenceConfig.compile_backbone)",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        help="ros mode: the node's python_switch_interval_ms (default: the node's default; 5 = "
        "Python's own, the baseline the node's setting is compared with)",
    )
    parser.add_argument(
        "--simulated-device-ms",
        type=float,
        default=0.0,
        help="ros mode: the node around benchmarks/simulated_device.py's stand-in (one real prediction, "
        "computed once; this many ms of simulated device time per set): the node's host side at a "
        "GPU's pace on a machine without one (use --device cpu)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="CUDA, pipeline mode: profile 5 eager predicts afterwards; the operator table goes here and "
        "the device time per frame (the floor of the graph path) into the result",
    )
    parser.add_argument(
        "--input-process",
        action="store_true",
        help="ros mode: the node's input_process on (cameras taken and synchronized in a child process)",
    )
    parser.add_argument(
        "--output-process",
        choices=("auto", "always", "never"),
        help="ros mode: the node's output_process (outputs built and published in a child process; "
        "default: the node's default, auto = on with CUDA)",
    )
    parser.add_argument(
        "--occupancy-confidence",
        choices=("on", "off"),
        help="ros mode: the node's occupancy_confidence (the occupancy's per-voxel confidence, 2.56 MB of "
        "its 3.2 MB on the Occ3D grid; default: the node's default, on)",
    )
    parser.add_argument(
        "--executor-coalesce-ms",
        type=float,
        help="ros mode: the node's executor_coalesce_ms (default: the node's default, 0 = off)",
    )
    parser.add_argument(
        "--camera-info-every-set",
        action="store_true",
        help="ros mode: the cameras publish their CameraInfo with every set, as camera drivers do "
        "(6 more messages per set for the node to take); default: only until the node is ready",
    )
    parser.add_argument(
        "--lock-profile",
        type=Path,
        help="ros mode: attach py-spy --gil to this process over the open-loop window (raw samples "
        "written here) and report who held the interpreter lock (benchmarks/gil_profile.py)",
    )
    parser.add_argument("--output", type=Path, help="markdown file whose node_latency section is updated")
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from gausstr_core.device import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    args.preset = args.preset or ("talk2dino" if device.type == "cuda" else "tiny")
    mode = args.mode
    if mode == "auto":
        try:
            import rclpy  # noqa: F401

            import gausstr_ros.msg  # noqa: F401

            mode = "ros"
        except ImportError:
            mode = "pipeline"
    start = time.perf_counter()
    result = run_ros_mode(args) if mode == "ros" else run_pipeline_mode(args)
    text = report(result, time.perf_counter() - start)
    print(text)
    if args.json:
        import json

        args.json.write_text(json.dumps(result, indent=1, default=str))
    if args.output:
        key = f"ros-{args.feeder}" if mode == "ros" else mode
        write_section(args.output, f"{key}-{device.type}", text)
        print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
