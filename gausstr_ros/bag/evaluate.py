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

from gausstr_core.cli_flags import add_dataclass_flags, dataclass_from_args
from gausstr_ros.bag.common import (
    TF_TOPICS,
    check_inputs,
    frame_views,
    open_ground_truth,
    picture_depth_topics,
    setup_summary,
)
from gausstr_ros.bag.options import DEFAULT_GROUND_TRUTH_TOPIC, BagEvalOptions, ResolvedSetup, resolve_setup
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.report import ReportDir, picture_indices
from gausstr_ros.bag.results import FrameGaussians, ResultCollector
from gausstr_ros.bag.typestore import SEMANTIC_OCCUPANCY

PREDICTION_TOPIC = "/occupancy"


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
    from gausstr_ros.node.tf import TransformBuffer
    from gausstr_ros.pipeline import DistortionWarnings, FramePipeline, FrameRejected, camera_frames_of
    from gausstr_ros.predictor import ready_predictor

    config = setup.config
    started = time.perf_counter()
    warnings: list[str] = []
    with ExitStack() as stack:
        source = stack.enter_context(BagSource(setup.bag))
        tf_topics = check_inputs(source, config)
        ground_truth = open_ground_truth(source, options, stack)
        if ground_truth is None:
            warnings.append(
                f"no ground truth ({DEFAULT_GROUND_TRUTH_TOPIC} is not in the bag and no --occ3d): "
                f"nothing is scored"
            )
        depth_topics = list(config.depth_topics) if config.use_depth else picture_depth_topics(source, config)
        depth_cache = DepthCache(depth_topics) if depth_topics and not config.use_depth else None

        predictor = ready_predictor(config)
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
        distortion = DistortionWarnings(config.image_topics)
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
            warnings.extend(distortion.new(frame.infos))
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
            # the host's wall-clock stages, one after another; "render" (a late depth render) lies
            # inside "to_host" and "device" (GPU time, CUDA) overlaps them: neither is added again
            stages = ("prepare", "predict", "to_host")
            total = sum(result.timings_ms[stage] for stage in stages)
            timings["total"].append(total)
            for stage in stages:
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


# Flag spellings that differ from BagEvalOptions' field names (the rest are generated from the fields).
_FLAG_OPTIONS = {
    "bag": {"name": "bag", "nargs": "?"},
    "camera_names": {"name": "--cameras"},
    "node_timeout_s": {"name": "--node-timeout"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-bag-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_flags(p, BagEvalOptions, exclude=("extra_node_parameters",), options=_FLAG_OPTIONS)
    return p


def options_from_args(args: argparse.Namespace) -> BagEvalOptions:
    return dataclass_from_args(BagEvalOptions, args)


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
