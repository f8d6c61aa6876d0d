"""``gausstr-demo`` (``make demo``): the built-in model and bag, end to end, with real ROS 2.

Starts the occupancy node (its own process, real rclpy), replays the built-in synthetic drive into it
(``gausstr-bag-eval --live``), records what it publishes, scores it against the bag's ground truth and
writes the report and pictures, then prints where they are. By default the replay is in lockstep
(each frame set is sent when the node has answered the previous one: on a CPU the tiny model needs
about a second per frame set, slower than the bag's 10 Hz); ``--rate 1`` replays in real time and
reports how many frame sets the node had to drop.

The demo's topics stay on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless set) and
under the ``/gausstr_demo`` namespace (TF on the global /tf and /tf_static, as tf2 expects).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEMO_NAMESPACE = "/gausstr_demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="report directory (default runs/demo; replaced on every run)",
    )
    p.add_argument(
        "--rate", type=float, default=0.0, help="replay speed: 0 = lockstep (default), 1 = real time"
    )
    p.add_argument("--pictures", type=int, default=4, help="frames drawn as pictures (default 4)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads of the node (default 1: on a 2-core machine shared with other "
        "work, OpenMP threads contend and 2 threads were slower)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gausstr_ros.assets import DEFAULT_BAG, DEFAULT_CHECKPOINT, DEMO_USE_DEPTH, recorded_metrics
    from gausstr_ros.bag.evaluate import evaluate_bag, format_summary
    from gausstr_ros.bag.live import ros_available
    from gausstr_ros.bag.options import BagEvalOptions

    reason = ros_available()
    if reason:
        print(f"gausstr-demo: error: {reason}", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    started = time.perf_counter()
    print(
        f"gausstr-demo: the occupancy node with the built-in model ({DEFAULT_CHECKPOINT.name}) on the "
        f"built-in bag ({DEFAULT_BAG.name}), replayed "
        f"{'in lockstep' if args.rate <= 0 else f'at {args.rate:g}x'}",
        flush=True,
    )
    try:
        summary = evaluate_bag(
            BagEvalOptions(
                out=args.out,
                overwrite=True,
                live=True,
                rate=args.rate,
                namespace=DEMO_NAMESPACE,
                pictures=args.pictures,
                threads=args.threads,
                progress=not args.no_progress,
                use_depth=DEMO_USE_DEPTH,
            )
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"gausstr-demo: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    scores = summary.get("scores")
    try:
        recorded = recorded_metrics()["scores"]
    except (OSError, ValueError, KeyError):
        recorded = None
    if scores and recorded:
        print(
            f"recorded offline on all {recorded['num_frames']} frames: IoU {recorded['iou']:.2f} "
            f"mIoU {recorded['miou']:.2f} (gausstr_ros/assets/synthetic_demo.metrics.json)"
        )
    report = Path(summary["report"])
    first = sorted((report / "bev").glob("*.png"))
    print(
        f"done in {time.perf_counter() - started:.0f} s. Pictures: {report}/bev/ (prediction | ground truth "
        f"| error, from above), {report}/depth/, {report}/gaussians/, {report}/latency.png"
        + (f"; start with {first[0]}" if first else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
