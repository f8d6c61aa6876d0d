"""``gausstr-bag-eval``: replay a rosbag2 through the occupancy node's pipeline and write a report.

    gausstr-bag-eval                                     # the built-in bag and model -> runs/bag_eval
    gausstr-bag-eval my_drive/ --params config/occupancy.yaml --checkpoint model.safetensors --out runs/d1
    gausstr-bag-eval my_drive.mcap --occ3d data/nuscenes --out runs/d2       # Occ3D labels from a dataset
    gausstr-bag-eval --live --rate 1 --out runs/live     # play into the real node through rclpy

Offline (default; no ROS needed): the bag is read with rosbags, messages go through the node's input
rules (per-topic stamp checks, the same approximate-time synchronizer and parameters, latest
CameraInfo) and TF from /tf_static and /tf, and every frame set runs through the node's own
``FramePipeline`` (the same ``OccupancyPredictor``). Live (``--live``): the bag is played into ROS
topics at ``--rate`` (0 = lockstep) through rclpy, the real node runs as its own process, and its
outputs are recorded; the report adds end-to-end latency and drop rate.

Topics, frames and the model come from the node's params file (``--params``) or the node's defaults,
overridden by flags; without a checkpoint the built-in model is used, without a bag the built-in bag.
Ground truth: a gausstr_ros/SemanticOccupancy topic (``--ground-truth-topic``, default
/ground_truth/occupancy when present; its confidence field is the camera mask) or an Occ3D dataset
(``--occ3d``), matched by stamp.

The report folder (written completely or not at all): ``summary.json`` (setup, frame counts, Occ3D
IoU / mIoU / per-class IoU over camera-visible voxels, latency statistics), ``frames.csv`` (one row per
frame set), ``latency.png``, ``per_class.md``, ``confusion.png``, and for ``--pictures`` frames
``bev/`` (prediction | ground truth | error), ``depth/`` (image | input depth | rendered depth) and
``gaussians/`` (Gaussians from above).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict, deque
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from gausstr_ros.bag.options import DEFAULT_GROUND_TRUTH_TOPIC, BagEvalOptions, ResolvedSetup, resolve_setup
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.report import ReportDir, picture_indices
from gausstr_ros.bag.results import FrameGaussians, FrameViews, ResultCollector
from gausstr_ros.bag.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, SEMANTIC_OCCUPANCY, TF_MESSAGE
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.transport import message_type_name

TF_TOPICS = ("/tf_static", "/tf")
PREDICTION_TOPIC = "/occupancy"


# ---------------------------------------------------------------------------------------------
# Set-up shared by both modes
# ---------------------------------------------------------------------------------------------


def check_inputs(source: BagSource, config: NodeConfig) -> list[str]:
    """Check that the bag has what the configuration needs; returns the TF topics it has.

    Raises:
        BagError: missing topics (naming what the bag has), wrong types, unknown types, no TF, or a
            bag with a different number of cameras than the configuration.
    """
    compressed = [t for t in config.image_topics if f"{t}/compressed" in source.topics]
    if compressed and not any(t in source.topics for t in config.image_topics):
        raise BagError(
            f"bag {source.path} has the camera images as CompressedImage topics "
            f"({[f'{t}/compressed' for t in compressed]}), not {config.image_topics}: add "
            f"--image-transport compressed (params: image_transport: compressed)"
        )
    packed = [t for t in config.depth_topics if f"{t}/compressedDepth" in source.topics]
    if config.use_depth and packed and not any(t in source.topics for t in config.depth_topics):
        raise BagError(
            f"bag {source.path} has the depth images as compressedDepth topics "
            f"({[f'{t}/compressedDepth' for t in packed]}), not {config.depth_topics}: add "
            f"--depth-transport compressedDepth (params: depth_transport: compressedDepth)"
        )
    n = len(config.camera_names)
    images_in_bag = [t.name for t in source.topics.values() if t.msgtype == IMAGE]
    missing = [t for t in config.image_topics if t not in source.topics]
    if missing and images_in_bag and len([t for t in images_in_bag if "depth" not in t]) != n:
        raise BagError(
            f"the configuration has {n} cameras ({config.camera_names}) with image topics "
            f"{config.image_topics}, but bag {source.path} has {len(images_in_bag)} Image topics: "
            f"{sorted(images_in_bag)}; set camera_names and the topic lists to match the bag "
            f"(--cameras/--image-topics/--camera-info-topics or a params file)"
        )
    for role, topics in (("camera images (image_topics)", config.image_topics),) + (
        (("depth images (depth_topics, use_depth is true)", config.depth_topics),) if config.use_depth else ()
    ):
        for msgtype in (IMAGE, COMPRESSED_IMAGE):
            same = [t for t in topics if message_type_name(t) == msgtype]
            if same:
                source.require(same, msgtype, role)
    source.require(config.camera_info_topics, CAMERA_INFO, "camera calibration (camera_info_topics)")
    tf_topics = [t for t in TF_TOPICS if t in source.topics]
    if not tf_topics:
        raise BagError(
            f"bag {source.path} has neither /tf_static nor /tf, so the camera poses "
            f"({config.target_frame} <- camera frames) are unknown; topics in the bag: "
            f"{source.describe_topics()}"
        )
    source.require(tf_topics, TF_MESSAGE, "transforms")
    return tf_topics


def picture_depth_topics(source: BagSource, config: NodeConfig) -> list[str] | None:
    """The depth topics to show next to rendered depth: the inputs, or (without use_depth) the bag's
    depth topics when it has all of them as Image topics; None otherwise."""
    present = all(
        source.topics.get(t) is not None
        and source.topics[t].msgtype in (IMAGE, COMPRESSED_IMAGE)
        and source.topics[t].msgtype not in source.unknown_types
        for t in config.depth_topics
    )
    return list(config.depth_topics) if present else None


def open_ground_truth(source: BagSource, options: BagEvalOptions):
    """The ground-truth source the options ask for, or None (then nothing is scored).

    Raises:
        BagError: an explicitly requested topic is missing or of another type; both a topic and an
            Occ3D directory were given.
    """
    from gausstr_ros.bag.groundtruth import BagGroundTruth, Occ3DGroundTruth

    tolerance = round(options.gt_tolerance_s * 1e9)
    if options.occ3d is not None:
        if options.ground_truth_topic is not None:
            raise BagError("give either --ground-truth-topic or --occ3d, not both")
        return Occ3DGroundTruth(options.occ3d, tolerance)
    topic = options.ground_truth_topic
    if topic is None:
        info = source.topics.get(DEFAULT_GROUND_TRUTH_TOPIC)
        if info is None or info.msgtype != SEMANTIC_OCCUPANCY:
            return None
        topic = DEFAULT_GROUND_TRUTH_TOPIC
    source.require([topic], SEMANTIC_OCCUPANCY, "ground truth (--ground-truth-topic)")
    return BagGroundTruth(source.path, topic, tolerance)


def build_predictor(config: NodeConfig):
    """The predictor the node would build from these parameters (checkpoint, or a preset with random
    weights), configured (grid, threshold, templates, categories)."""
    from gausstr_core.inference.predictor import OccupancyPredictor
    from gausstr_ros.pipeline import configure_predictor, random_weight_predictor

    try:
        if config.checkpoint:
            predictor = OccupancyPredictor.from_checkpoint(
                Path(config.checkpoint).expanduser(), device=config.device
            )
        else:
            predictor = random_weight_predictor(config.model_preset, config.device)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:
        what = f"checkpoint {config.checkpoint!r}" if config.checkpoint else f"preset {config.model_preset!r}"
        raise ValueError(f"cannot load the model from {what}: {type(exc).__name__}: {exc}") from exc
    model = getattr(predictor, "model", None)
    if not config.use_depth and model is not None and getattr(model, "depth_head", True) is None:
        raise ValueError(
            "this model has no depth head, so it needs metric depth for every camera: set "
            "use_depth and depth_topics"
        )
    configure_predictor(predictor, config)
    return predictor


def setup_summary(setup: ResolvedSetup, mode: str) -> dict[str, Any]:
    c = setup.config
    return {
        "mode": mode,
        "bag": str(setup.bag),
        "bag_source": setup.bag_source,
        "checkpoint": c.checkpoint or None,
        "model_preset": c.model_preset or None,
        "checkpoint_source": setup.checkpoint_source,
        "categories": list(c.categories),
        "categories_source": setup.categories_source,
        "cameras": list(c.camera_names),
        "image_topics": list(c.image_topics),
        "use_depth": c.use_depth,
        "target_frame": c.target_frame,
        "grid_range": list(c.grid_range),
        "voxel_size": c.voxel_size,
        "sync_slop_s": c.sync_slop_s,
    }


class DepthCache:
    """The latest few depth images per topic, by stamp (for pictures when depth is not an input)."""

    def __init__(self, topics: list[str], keep: int = 32):
        self.topics = {t: OrderedDict() for t in topics}
        self.keep = keep

    def add(self, topic: str, msg) -> None:
        from gausstr_ros.node.sync import stamp_to_ns

        cache = self.topics[topic]
        cache[stamp_to_ns(msg.header.stamp)] = msg
        while len(cache) > self.keep:
            cache.popitem(last=False)

    def nearest(self, topic: str, stamp_ns: int, tolerance_ns: int):
        cache = self.topics.get(topic) or {}
        best = min(cache, key=lambda s: abs(s - stamp_ns), default=None)
        return cache[best] if best is not None and abs(best - stamp_ns) <= tolerance_ns else None


def frame_views(images, depths) -> FrameViews:
    """Host copies of a frame set's images (RGB) and depth maps (metres) for pictures."""
    from gausstr_ros.conversions import ConversionError
    from gausstr_ros.conversions.images import depth_image_to_metres, image_to_rgb

    rgb = [np.ascontiguousarray(image_to_rgb(m)) for m in images]
    depth = None
    if depths is not None:
        depth = []
        for m in depths:
            try:
                depth.append(None if m is None else np.array(depth_image_to_metres(m), dtype=np.float32))
            except ConversionError:
                depth.append(None)
    return FrameViews(rgb, depth)


# ---------------------------------------------------------------------------------------------
# Offline
# ---------------------------------------------------------------------------------------------


def evaluate_offline(setup: ResolvedSetup, options: BagEvalOptions, report: ReportDir) -> dict[str, Any]:
    """Run every frame set of the bag through ``FramePipeline`` and collect the report.

    Returns:
        The summary (also in ``summary.json``).
    """
    from tqdm import tqdm

    from gausstr_ros.bag.frames import FrameAssembler
    from gausstr_ros.bag.writer import BagWriter, occupancy_like
    from gausstr_ros.conversions.camera import distortion_warning
    from gausstr_ros.node.tf import TransformBuffer
    from gausstr_ros.pipeline import FramePipeline, FrameRejected, camera_frames_of

    config = setup.config
    started = time.perf_counter()
    warnings: list[str] = []
    with ExitStack() as stack:
        source = stack.enter_context(BagSource(setup.bag))
        tf_topics = check_inputs(source, config)
        ground_truth = open_ground_truth(source, options)
        if ground_truth is not None:
            stack.callback(ground_truth.close)
        else:
            warnings.append(
                f"no ground truth ({DEFAULT_GROUND_TRUTH_TOPIC} is not in the bag and no --occ3d): "
                f"nothing is scored"
            )
        depth_topics = list(config.depth_topics) if config.use_depth else picture_depth_topics(source, config)
        depth_cache = DepthCache(depth_topics) if depth_topics and not config.use_depth else None

        predictor = build_predictor(config)
        pipeline = FramePipeline(
            predictor, config.input_size_override, min_valid_depth_fraction=config.min_valid_depth_fraction
        )
        collector = ResultCollector(
            report, predictor.class_names, predictor.grid, config.camera_names, ground_truth
        )
        tf = TransformBuffer(config.tf_cache_s)
        refused: list[str] = []
        assembler = FrameAssembler(
            config,
            on_reject=lambda kind, reason: refused.append(reason),
            on_time_reset=lambda reason: (tf.clear(), warnings.append(reason)),
        )
        expected = source.count(config.image_topics[0])
        if options.max_frames:
            expected = min(expected, options.max_frames)
        pictures = picture_indices(expected, options.pictures)
        recorder = None
        if options.record:
            recorder = stack.enter_context(BagWriter(report.path / "predictions", "mcap"))
        warned: set[int] = set()
        timings: dict[str, list[float]] = {"total": [], "prepare": [], "predict": [], "to_host": []}
        tf_wait_ns = round(config.tf_timeout_s * 1e9)
        pending: deque = deque()
        index = 0
        bar = stack.enter_context(
            tqdm(
                total=expected,
                desc="bag-eval",
                unit="frame",
                disable=not options.progress,
                dynamic_ncols=True,
            )
        )

        def process(frame) -> None:
            nonlocal index
            i = index
            index += 1
            bar.update(1)
            for v, info in enumerate(frame.infos):
                if info is not None and v not in warned:
                    text = distortion_warning(info, config.image_topics[v])
                    if text:
                        warned.add(v)
                        warnings.append(text)
            want_picture = i in pictures
            try:
                cameras = camera_frames_of(
                    frame.images,
                    frame.infos,
                    frame.depths,
                    config.camera_names,
                    config.target_frame,
                    frame.stamp_ns,
                    tf.lookup,
                )
                result = pipeline.run(cameras, frame.stamp_ns, render_depth=want_picture)
            except FrameRejected as exc:
                collector.add_frame(i, frame.stamp_ns, f"rejected:{exc.kind}", exc.reason)
                return
            total = sum(result.timings_ms.values())
            timings["total"].append(total)
            for stage in ("prepare", "predict", "to_host"):
                timings[stage].append(result.timings_ms[stage])
            views = None
            if want_picture:
                depths = frame.depths
                if depth_cache is not None:
                    tolerance = round(config.sync_slop_s * 1e9)
                    depths = [
                        depth_cache.nearest(
                            t,
                            frame.images[v].header.stamp.sec * 1_000_000_000
                            + frame.images[v].header.stamp.nanosec,
                            tolerance,
                        )
                        for v, t in enumerate(depth_topics)
                    ]
                views = frame_views(frame.images, depths)
            gaussians = FrameGaussians(
                result.means, result.scales, result.rotations, result.opacities, result.gaussian_labels
            )
            extra = {f"{k}_ms": round(v, 2) for k, v in result.timings_ms.items()}
            extra["total_ms"] = round(total, 2)
            collector.add_frame(
                i,
                frame.stamp_ns,
                "ok",
                labels=result.labels,
                gaussians=gaussians,
                rendered_depth=result.rendered_depth,
                views=views,
                picture=want_picture,
                extra=extra,
            )
            if recorder is not None:
                recorder.write(
                    PREDICTION_TOPIC,
                    SEMANTIC_OCCUPANCY,
                    occupancy_like(
                        result.labels,
                        result.grid,
                        result.class_names,
                        result.free_label,
                        config.target_frame,
                        frame.stamp_ns,
                        result.confidence,
                    ),
                    frame.stamp_ns,
                )

        def done() -> bool:
            return bool(options.max_frames) and index >= options.max_frames

        topics = [*assembler.input_topics, *tf_topics, *(depth_topics if depth_cache is not None else [])]
        for topic, log_time, msg in source.messages(topics):
            if topic in TF_TOPICS:
                for t in msg.transforms:
                    try:
                        tf.set_transform_message(t, static=topic == "/tf_static")
                    except ValueError as exc:
                        warnings.append(f"ignored transform {t.header.frame_id} <- {t.child_frame_id}: {exc}")
            elif (
                depth_cache is not None
                and topic in depth_cache.topics
                and topic not in assembler.input_topics
            ):
                depth_cache.add(topic, msg)
            else:
                for frame in assembler.add(topic, msg, log_time / 1e9):
                    # Like the node's TF wait: a set is processed once the bag has moved tf_timeout_s past
                    # its last message, so transforms logged just after the images are used.
                    pending.append((round(frame.arrival * 1e9) + tf_wait_ns, frame))
            while pending and pending[0][0] <= log_time and not done():
                process(pending.popleft()[1])
            if done():
                break
        while pending and not done():
            process(pending.popleft()[1])
        bar.close()

        summary = setup_summary(setup, "offline")
        summary["device"] = str(pipeline.device)
        summary["input_size"] = list(pipeline.input_size)
        summary["frames"] = {
            "sets": index,
            "predicted": collector.status.get("ok", 0),
            "rejected": {k: v for k, v in collector.status.items() if k.startswith("rejected")},
            "rejected_examples": collector.reasons,
            "messages_refused": len(refused),
            "rate_limited": assembler.sets_rate_limited,
        }
        if refused:
            warnings.append(f"{len(refused)} message(s) refused by the stamp checks, e.g. {refused[0]}")
        if index == 0:
            raise BagError(
                f"bag {source.path} produced no synchronized frame set from the topics "
                f"{config.image_topics}: check that all cameras publish with stamps within "
                f"sync_slop_s = {config.sync_slop_s} s of each other"
            )
        summary["warnings"] = warnings
        summary["wall_time_s"] = round(time.perf_counter() - started, 2)
        return collector.finish(
            summary,
            {"pipeline (prepare + predict + to host)": timings["total"]},
            f"offline per-frame pipeline time on {pipeline.device}",
            ground_truth.description if ground_truth is not None else None,
            {stage: timings[stage] for stage in ("prepare", "predict", "to_host")},
        )


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def evaluate_bag(options: BagEvalOptions) -> dict[str, Any]:
    """Evaluate a bag (offline, or live with ``options.live``) and write the report to ``options.out``.

    Returns:
        The summary (``summary.json``), with ``"report"`` = the report directory.
    Raises:
        BagError: a bag that cannot be evaluated; ValueError / FileNotFoundError / FileExistsError:
            bad options. Nothing is left in ``options.out`` then.
    """
    import torch

    setup = resolve_setup(options)
    if options.threads:
        torch.set_num_threads(options.threads)
    with ReportDir(options.out, options.overwrite) as report:
        if options.live:
            from gausstr_ros.bag.live import evaluate_live

            summary = evaluate_live(setup, options, report)
        else:
            summary = evaluate_offline(setup, options, report)
        out = report.commit()
    summary["report"] = str(out)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-bag-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    a = p.add_argument
    a("bag", nargs="?", type=Path, help="bag directory or .mcap/.db3 file (default: the built-in bag)")
    a("--out", type=Path, default=Path("runs/bag_eval"), help="report directory (default runs/bag_eval)")
    a("--overwrite", action="store_true", help="replace an existing report directory")
    a(
        "--checkpoint",
        type=Path,
        help="model checkpoint (default: the params file's, else the built-in model)",
    )
    a(
        "--params",
        type=Path,
        help="the node's params file, e.g. config/occupancy.yaml (topics, frames, model)",
    )
    a(
        "--categories",
        nargs="+",
        help="vocabulary, e.g. 'car|sedan' road (default: params file, else the checkpoint's own)",
    )
    a("--cameras", dest="camera_names", nargs="+", help="camera names (overrides camera_names)")
    a("--image-topics", nargs="+", help="image topic per camera")
    a("--camera-info-topics", nargs="+", help="CameraInfo topic per camera")
    a("--depth-topics", nargs="+", help="depth topic per camera")
    a(
        "--image-transport",
        choices=("raw", "compressed"),
        help="read <image topic>/compressed (CompressedImage, JPEG/PNG), like image_transport",
    )
    a(
        "--depth-transport",
        choices=("raw", "compressedDepth", "compressed"),
        help="read <depth topic>/compressedDepth (or /compressed) CompressedImage depth",
    )
    a(
        "--use-depth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="feed the depth topics to the model (default: the params' use_depth)",
    )
    a("--target-frame", help="output frame (default: the params' target_frame)")
    a(
        "--ground-truth-topic",
        help=f"SemanticOccupancy ground truth (default {DEFAULT_GROUND_TRUTH_TOPIC} when present)",
    )
    a("--occ3d", type=Path, help="Occ3D dataset directory (nuScenes layout) to score against instead")
    a("--gt-tolerance-ms", type=float, default=50.0, help="largest frame-to-ground-truth stamp difference")
    a("--device", help="inference device: auto, cpu, cuda (default: the params' device)")
    a("--max-frames", type=int, default=0, help="evaluate at most N frame sets (0 = all)")
    a("--pictures", type=int, default=4, help="frames drawn as pictures (default 4)")
    a("--threads", type=int, help="torch CPU threads")
    a("--record", action="store_true", help="also write the predictions as a bag (predictions/)")
    a("--live", action="store_true", help="play the bag into the real node through rclpy (needs ROS 2)")
    a("--rate", type=float, default=1.0, help="live playback speed, 1 = real time, 0 = lockstep (default 1)")
    a("--namespace", default="", help="live: ROS namespace for the node and the replayed topics")
    a("--node-timeout", type=float, default=120.0, help="live: seconds the node may take to start / answer")
    a("--no-progress", action="store_true", help="no progress bars")
    return p


def options_from_args(args: argparse.Namespace) -> BagEvalOptions:
    return BagEvalOptions(
        bag=args.bag,
        out=args.out,
        checkpoint=args.checkpoint,
        params=args.params,
        categories=args.categories,
        camera_names=args.camera_names,
        image_topics=args.image_topics,
        camera_info_topics=args.camera_info_topics,
        depth_topics=args.depth_topics,
        image_transport=args.image_transport,
        depth_transport=args.depth_transport,
        use_depth=args.use_depth,
        target_frame=args.target_frame,
        ground_truth_topic=args.ground_truth_topic,
        occ3d=args.occ3d,
        gt_tolerance_s=args.gt_tolerance_ms / 1000.0,
        device=args.device,
        max_frames=args.max_frames,
        pictures=args.pictures,
        threads=args.threads,
        overwrite=args.overwrite,
        record=args.record,
        live=args.live,
        rate=args.rate,
        namespace=args.namespace,
        node_timeout_s=args.node_timeout,
        progress=not args.no_progress,
    )


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: scores, frames, latency and where the pictures are."""
    lines = []
    frames = summary.get("frames", {})
    scores = summary.get("scores")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    if summary["mode"] == "live":
        lines.append(
            f"live: {frames.get('offered', 0)} frame sets played at rate {summary.get('rate')}, "
            f"{frames.get('received', 0)} answered, drop rate {100 * frames.get('drop_rate', 0):.1f}%"
        )
    else:
        rejected = sum(frames.get("rejected", {}).values())
        lines.append(
            f"offline: {frames.get('predicted', 0)} of {frames.get('sets', 0)} frame sets predicted"
            f"{f', {rejected} rejected' if rejected else ''}"
        )
    if scores:
        lines.append(
            f"IoU {fmt(scores['iou'])}  mIoU {fmt(scores['miou'])}  over {scores['num_frames']} frame(s) "
            f"with ground truth (camera-visible voxels)"
        )
    else:
        lines.append("no ground truth: nothing scored")
    for name, d in summary.get("latency_ms", {}).items():
        if d.get("count"):
            lines.append(f"latency {name}: p50 {d['p50']:.0f} ms, p99 {d['p99']:.0f} ms (n={d['count']})")
    for w in summary.get("warnings", [])[:5]:
        lines.append(f"warning: {w}")
    report = summary.get("report", "")
    lines.append(f"report: {report}/summary.json, frames.csv, latency.png")
    pictures = sorted({str(Path(f).parent) for f in summary.get("files", []) if "/" in f})
    if pictures:
        lines.append("pictures: " + ", ".join(f"{report}/{d}/" for d in pictures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = evaluate_bag(options_from_args(args))
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"gausstr-bag-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
