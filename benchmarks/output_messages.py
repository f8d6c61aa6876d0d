#!/usr/bin/env python3
"""Host cost of the occupancy node's outputs for one frame set: each message built with the node's
own conversions and published through real rclpy to a subscriber in the same process (raw bytes, so
the subscriber does not deserialize), at the talk2dino size (200 x 200 x 16 grid, 1,800 Gaussians,
6 rendered depth images of 504 x 896). All of it runs in the node's publishing thread under the
interpreter lock; the table compares each output with the 33.3 ms frame period of 30 Hz cameras.

    python benchmarks/output_messages.py                   # print the table
    python benchmarks/output_messages.py --output docs/benchmarks.md

A second table compares where that work runs, in the same run: the node's publishing thread calling
``OutputPublishers.publish`` (in the node's interpreter, the baseline) against ``OutputProcess.publish``
(node parameter ``output_process``: the arrays are copied into shared memory and a child process
builds and publishes). Sets are handed over at 30 Hz while another Python thread of the same process
counts; its progress against counting alone is what the outputs leave of the interpreter to the
node's executor and inference threads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, update_markdown_section

FRAME_PERIOD_MS = 1e3 / 30


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def frame_outputs(seed: int, occupied: float, gaussians: int, views: int, size: tuple[int, int]) -> dict:
    """Random arrays with the shapes and dtypes of one ``FrameResult``."""
    from gausstr_core.grid import VoxelGrid

    rng = np.random.default_rng(seed)
    grid = VoxelGrid()
    names = [f"class_{i}" for i in range(17)]
    free = len(names)
    labels = np.full(grid.shape, free, np.uint8)
    mask = rng.random(grid.shape) < occupied
    labels[mask] = rng.integers(0, free, int(mask.sum()))
    rotations = rng.normal(size=(gaussians, 4)).astype(np.float32)
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    return {
        "grid": grid,
        "names": names,
        "free": free,
        "labels": labels,
        "confidence": rng.random(grid.shape, dtype=np.float32),
        "means": (10 * rng.normal(size=(gaussians, 3))).astype(np.float32),
        "scales": rng.random((gaussians, 3), dtype=np.float32),
        "rotations": rotations,
        "opacities": rng.random(gaussians, dtype=np.float32),
        "gaussian_labels": rng.integers(0, free, gaussians).astype(np.uint8),
        "gaussian_confidence": rng.random(gaussians, dtype=np.float32),
        "depth": (50 * rng.random((views, *size), dtype=np.float32)),
    }


def measure(args) -> list[tuple[str, float, float]]:
    """(output, build ms, publish ms) per output."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from gausstr_ros.conversions.gaussians import (
        gaussian_array_message,
        gaussian_marker_array_cdr,
        gaussian_marker_data,
    )
    from gausstr_ros.conversions.images import array_to_image_message
    from gausstr_ros.conversions.occupancy import occupancy_message, occupancy_points, pointcloud_message
    from gausstr_ros.msg import GaussianArray, SemanticOccupancy

    o = frame_outputs(args.seed, args.occupied, args.gaussians, args.views, tuple(args.size))
    header = Header(frame_id="base_link")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("output_messages_benchmark", context=context)
    try:
        pubs = {}
        for topic, kind in (
            ("occupancy", SemanticOccupancy),
            ("cloud", PointCloud2),
            ("gaussians", GaussianArray),
            ("markers", MarkerArray),
            ("depth", Image),
        ):
            pubs[topic] = node.create_publisher(kind, topic, 10)
            node.create_subscription(kind, topic, lambda _: None, 10, raw=True)
        g = (o["means"], o["scales"], o["rotations"], o["opacities"], o["gaussian_labels"])
        builders = {
            "occupancy (SemanticOccupancy)": (
                "occupancy",
                lambda: [
                    occupancy_message(o["labels"], o["grid"], o["names"], o["free"], header, o["confidence"])
                ],
            ),
            "occupancy_cloud (PointCloud2)": (
                "cloud",
                lambda: [
                    pointcloud_message(
                        occupancy_points(o["labels"], o["grid"], o["names"], o["free"], o["confidence"]),
                        header,
                    )
                ],
            ),
            "gaussians (GaussianArray)": (
                "gaussians",
                lambda: [gaussian_array_message(*g, o["gaussian_confidence"], o["names"], header)],
            ),
            "gaussian_markers (MarkerArray, CDR)": (
                "markers",
                lambda: [gaussian_marker_array_cdr(gaussian_marker_data(*g, o["names"], 2000, 2.0), header)],
            ),
            f"rendered_depth x {args.views} (32FC1 Image)": (
                "depth",
                lambda: [array_to_image_message(d, "32FC1", header) for d in o["depth"]],
            ),
        }
        rows = []
        for name, (topic, build) in builders.items():
            messages = build()

            def publish(topic=topic, messages=messages):
                for message in messages:
                    pubs[topic].publish(message)

            rows.append((name, median_ms(build, args.repeats), median_ms(publish, args.repeats)))
        return rows
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def frame_result(o: dict, stamp_ns: int):
    """``frame_outputs``' arrays as the ``FrameResult`` the node's publishers take."""
    from gausstr_ros.pipeline import FrameResult

    return FrameResult(
        stamp_ns=stamp_ns,
        labels=o["labels"],
        confidence=o["confidence"],
        means=o["means"],
        scales=o["scales"],
        rotations=o["rotations"],
        opacities=o["opacities"],
        gaussian_labels=o["gaussian_labels"],
        gaussian_confidence=o["gaussian_confidence"],
        rendered_depth=o["depth"],
        class_names=o["names"],
        free_label=o["free"],
        grid=o["grid"],
    )


def counting_rate(seconds: float, during=None) -> float:
    """How fast a Python thread counts (per second) over ``seconds``, while ``during()`` runs in
    this thread if given: what the interpreter leaves to another thread."""
    import threading

    stop, progress = threading.Event(), [0]

    def count() -> None:
        n = 0
        while not stop.is_set():
            for _ in range(1000):
                n += 1
            progress[0] = n

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    if during is not None:
        during()
    time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    return progress[0] / elapsed


def measure_handover(args) -> list[dict]:
    """Per mode ("in-process", "output process"): the calling thread's wall and CPU time per set
    (p50), handed over -> occupancy published (p50), and another thread's counting rate relative
    to counting alone (both measured in this run)."""
    import rclpy

    o = frame_outputs(args.seed, args.occupied, args.gaussians, args.views, tuple(args.size))
    context = rclpy.Context()
    rclpy.init(context=context)
    sys.setswitchinterval(args.switch_interval_ms / 1e3)  # as the node sets it
    try:
        alone = counting_rate(2.0)
        return [_handover(mode, context, o, alone, args) for mode in ("in-process", "output process")]
    finally:
        rclpy.shutdown(context=context)


def _handover(mode: str, context, o: dict, alone: float, args) -> dict:
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from gausstr_ros.msg import GaussianArray, SemanticOccupancy
    from gausstr_ros.node.output_process import OutputProcess
    from gausstr_ros.node.outputs import (
        TOPIC_CLOUD,
        TOPIC_GAUSSIANS,
        TOPIC_MARKERS,
        TOPIC_OCCUPANCY,
        OutputPublishers,
        PublishSwitches,
        depth_topic,
    )

    cameras = [f"cam{v}" for v in range(args.views)]
    switches = PublishSwitches()
    ns = "/inproc" if mode == "in-process" else "/outproc"
    node = rclpy.create_node("output_handover_benchmark", namespace=ns, context=context)
    subscriber = rclpy.create_node("output_handover_subscriber", namespace=ns, context=context)
    topics = [(TOPIC_OCCUPANCY, SemanticOccupancy), (TOPIC_CLOUD, PointCloud2)]
    topics += [(TOPIC_GAUSSIANS, GaussianArray), (TOPIC_MARKERS, MarkerArray)]
    topics += [(depth_topic(c), Image) for c in cameras]
    received: dict[str, int] = {}

    def count(topic):
        return lambda _msg: received.__setitem__(topic, received.get(topic, 0) + 1)

    for topic, kind in topics:  # every output subscribed, taken as bytes (no Python message)
        subscriber.create_subscription(kind, topic, count(topic), 10, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(subscriber)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    if mode == "in-process":
        outputs = OutputPublishers(node, cameras, "base_link", 10)
    else:
        outputs = OutputProcess(node, cameras, "base_link", 10)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not outputs.wants_rendered_depth(switches):
            time.sleep(0.05)
        time.sleep(0.5)  # the other subscriptions match too
        result = frame_result(o, 1)
        wall, cpu, out = [], [], []

        def run(n: int) -> None:
            for _ in range(n):
                t_due = time.perf_counter() + 1 / 30
                t0, c0, m0 = time.perf_counter(), time.thread_time(), time.monotonic()
                outputs.publish(result, cameras, switches, lambda t, m0=m0: out.append(1e3 * (t - m0)))
                wall.append(1e3 * (time.perf_counter() - t0))
                cpu.append(1e3 * (time.thread_time() - c0))
                time.sleep(max(0.0, t_due - time.perf_counter()))

        run(3)  # warm-up (the child maps its slots)
        time.sleep(0.5)
        wall.clear(), cpu.clear(), out.clear()
        busy = counting_rate(args.repeats / 30, during=lambda: run(args.repeats))
        time.sleep(0.5)  # the last sets' acknowledgements
        return {
            "mode": mode,
            "wall_ms": float(np.median(wall)),
            "cpu_ms": float(np.median(cpu)),
            "occupancy_out_ms": float(np.median(out)) if out else float("nan"),
            "other_thread": busy / alone,
            "received": min(received.values()) if received else 0,
        }
    finally:
        if isinstance(outputs, OutputProcess):
            outputs.close()
        executor.shutdown()
        spinner.join(timeout=5)
        subscriber.destroy_node()
        node.destroy_node()


def report_handover(rows: list[dict], args) -> str:
    base = rows[0]
    table = [
        (
            r["mode"],
            f"{r['wall_ms']:.2f}",
            f"{r['cpu_ms']:.2f}",
            f"{r['occupancy_out_ms']:.2f}",
            f"{100 * r['other_thread']:.0f} %",
            f"{r['cpu_ms'] / base['cpu_ms']:.2f}x",
        )
        for r in rows
    ]
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            f"Where the outputs are built, same sizes, {args.repeats} sets handed over at 30 Hz, every "
            f"output subscribed in the calling process (raw); CPU {cpu}, {os.cpu_count()} cores, "
            f"{datetime.date.today()}. Calling thread = the node's publishing thread; other thread = "
            f"a Python thread counting meanwhile, against counting alone in the same run.",
            "",
            markdown_table(
                [
                    "where",
                    "calling thread wall p50 [ms]",
                    "calling thread CPU p50 [ms]",
                    "handed over -> occupancy out p50 [ms]",
                    "other thread's progress",
                    "CPU vs in-process",
                ],
                table,
            ),
        ]
    )


def report(rows, args) -> str:
    total = sum(b + p for _, b, p in rows)
    table = [
        (name, f"{b:.2f}", f"{p:.2f}", f"{b + p:.2f}", f"{100 * (b + p) / FRAME_PERIOD_MS:.1f}%")
        for name, b, p in rows
    ]
    table.append(("all outputs", "", "", f"{total:.2f}", f"{100 * total / FRAME_PERIOD_MS:.1f}%"))
    cpu = platform.processor() or platform.machine()
    h, w = args.size
    return "\n".join(
        [
            f"Output messages of one frame set on CPU {cpu}, Python {platform.python_version()}, "
            f"{datetime.date.today()}: 200 x 200 x 16 grid with {100 * args.occupied:g} % occupied, "
            f"{args.gaussians} Gaussians, {args.views} depth images of {h} x {w}; median of {args.repeats}. "
            f"Command: `python benchmarks/output_messages.py`",
            "",
            markdown_table(
                ["output", "build [ms]", "publish [ms]", "total [ms]", "of a 30 Hz frame period"], table
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--occupied", type=float, default=0.06, help="fraction of occupied voxels")
    p.add_argument("--gaussians", type=int, default=1800)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--size", type=int, nargs=2, default=[504, 896], metavar=("H", "W"))
    p.add_argument("--output", help="markdown file to update (section 'output_messages')")
    p.add_argument(
        "--switch-interval-ms", type=float, default=0.5, help="the node's python_switch_interval_ms default"
    )
    p.add_argument("--no-handover", action="store_true", help="skip the in-process vs output process table")
    args = p.parse_args(argv)
    text = report(measure(args), args)
    if not args.no_handover:
        text += "\n\n" + report_handover(measure_handover(args), args)
    print(text)
    if args.output:
        update_markdown_section(
            args.output, "output_messages", "## Output messages (the node's publishing stage)\n\n" + text
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
