#!/usr/bin/env python3
"""Host cost of the occupancy node's outputs for one frame set: each message built with the node's
own conversions and published through real rclpy to a subscriber in the same process (raw bytes, so
the subscriber does not deserialize), at the talk2dino size (200 x 200 x 16 grid, 1,800 Gaussians,
6 rendered depth images of 504 x 896). All of it runs in the node's publishing thread under the
interpreter lock; the table compares each output with the 33.3 ms frame period of 30 Hz cameras.

    python benchmarks/output_messages.py                   # print the table
    python benchmarks/output_messages.py --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
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
    args = p.parse_args(argv)
    text = report(measure(args), args)
    print(text)
    if args.output:
        update_markdown_section(
            args.output, "output_messages", "## Output messages (the node's publishing stage)\n\n" + text
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
