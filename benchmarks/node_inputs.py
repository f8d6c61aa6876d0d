"""How many frame sets the occupancy node's input side completes at camera rates, without inference.

A camera process publishes 6 rgb8 images and 6 32FC1 depth images per set (reliable, the nuScenes
rig scaled to ``--height`` x ``--width``) at each ``--rates`` Hz for ``--duration`` s, open loop. This
process runs the node's own input stage (``gausstr_ros.node.inputs.CameraInputs``: subscriptions,
stamp rules, approximate-time synchronizer) on an executor and counts the sets it completes and the
sets that never complete (an image of the set missing: the per-topic queues overflowed). Optionally a
thread holds the interpreter lock for ``--gil-load-ms`` of every 33 ms, standing in for the node's
two inference threads (conversion, output messages), which share the lock with the executor.

Executors compared in the same run: ``single`` (``gausstr_ros.node.executor.make_executor``, what the
node spins on) against ``multi`` (rclpy's MultiThreadedExecutor with 4 threads, the node's executor
until 2026-12-06) as the baseline: the ratio is completed sets single / multi.

    python benchmarks/node_inputs.py                       # 5, 10, 30 Hz; both executors; no load
    python benchmarks/node_inputs.py --gil-load-ms 0 15 --output docs/benchmarks.md

Needs rclpy and the package's messages (the ROS 2 wheels or a ROS install). Both processes use
config/fastdds_large_images.xml (the setting docs/node.md gives for same-host cameras).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import update_markdown_section  # noqa: E402
from benchmarks.ros_feeder import SyntheticCameras, camera_topics  # noqa: E402

S = 1_000_000_000
PROFILE = ROOT / "config" / "fastdds_large_images.xml"
EXECUTORS = ("multi", "single")


@dataclass
class Case:
    """One measurement: input rate [Hz], executor kind, interpreter-lock load [ms per 33 ms]."""

    rate: float
    executor: str
    gil_load_ms: float


def publish_sets(conn, namespace: str, height: int, width: int, rate: float, duration: float) -> None:
    """The camera process: publish camera_info until told to start, then ``rate`` sets per second for
    ``duration`` s; report how many were sent and over how long."""
    import rclpy

    from gausstr_core.data.synthetic.rig import nuscenes_rig

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("cameras", namespace=namespace, context=context)
    topics = camera_topics(nuscenes_rig(height, width).names)
    cameras = SyntheticCameras(node, height, width, topics["image"], topics["camera_info"], topics["depth"])
    try:
        while not conn.poll(0.05):  # "start": the input side has every camera_info
            cameras.publish_infos()
        conn.recv()
        stamp, sent, start = 1_700_000_000 * S, 0, time.monotonic()
        while time.monotonic() - start < duration:
            stamp += S // 10
            cameras.publish_set(stamp)
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        conn.send({"sent": sent, "elapsed": time.monotonic() - start})
        conn.recv()  # "done": keep the publishers until the input side has drained
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def _executor(kind: str, context):
    from rclpy.executors import MultiThreadedExecutor

    from gausstr_ros.node.executor import make_executor

    if kind == "single":
        return make_executor(context)
    return MultiThreadedExecutor(num_threads=4, context=context)


def measure(case: Case, height: int, width: int, duration: float) -> dict:
    """Run one case: the camera process and this process's input stage; the counts."""
    import rclpy

    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_ros.node.executor import spin
    from gausstr_ros.node.inputs import CameraInputs
    from gausstr_ros.node.params import NodeConfig

    namespace = f"/inputs{os.getpid()}_{int(time.monotonic() * 1e3) % 100000}"
    names = nuscenes_rig(height, width).names
    topics = camera_topics(names)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("inputs", namespace=namespace, context=context)
    config = NodeConfig.defaults()
    config.camera_names = list(names)
    config.image_topics, config.camera_info_topics = topics["image"], topics["camera_info"]
    config.depth_topics = topics["depth"]
    config.use_depth, config.image_qos = True, "reliable"
    complete: list[int] = []
    rejected: dict[str, int] = {}

    def on_reject(kind: str, _reason: str) -> None:
        rejected[kind] = rejected.get(kind, 0) + 1

    inputs = CameraInputs(node, config, lambda s: complete.append(s.stamp_ns), on_reject, lambda _r: None)
    executor = _executor(case.executor, context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    stop = threading.Event()

    def hold_the_lock() -> None:  # pure-Python work, as the inference threads' per-set host work
        while not stop.is_set():
            start = time.perf_counter()
            while time.perf_counter() - start < case.gil_load_ms / 1e3:
                pass
            time.sleep(max(0.0, 1 / 30 - case.gil_load_ms / 1e3))

    if case.gil_load_ms > 0:
        threading.Thread(target=hold_the_lock, daemon=True).start()
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    cameras = mp.Process(
        target=publish_sets, args=(theirs, namespace, height, width, case.rate, duration), daemon=True
    )
    cameras.start()
    try:
        deadline = time.monotonic() + 60
        while inputs.missing_camera_info():
            if time.monotonic() > deadline:
                raise RuntimeError("no camera_info from the camera process within 60 s")
            time.sleep(0.05)
        ours.send("start")
        if not ours.poll(duration + 60):
            raise RuntimeError("the camera process stopped answering")
        fed = ours.recv()
        time.sleep(1.5)  # the last sets in transit
        ours.send("done")
    finally:
        stop.set()
        cameras.join(timeout=10)
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
    return {
        "rate": case.rate,
        "executor": case.executor,
        "gil_load_ms": case.gil_load_ms,
        "sent": fed["sent"],
        "sent_hz": fed["sent"] / fed["elapsed"],
        "complete": len(complete),
        "rejected": rejected,
        "images_lost": inputs.images_lost,
    }


def table(results: list[dict], device: str, command: str, height: int, width: int) -> str:
    lines = [
        f"Input side of the node on {device}, {time.strftime('%Y-%m-%d')}: 6 rgb8 + 6 32FC1 images of "
        f"{height} x {width} per set from another process (reliable, fastdds_large_images.xml), "
        f"CameraInputs only (no inference). Command: `{command}`",
        "",
        "| input [Hz] | lock load [ms / 33 ms] | executor | sets sent | sets complete | never complete | "
        "complete single / multi |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        same = [b for b in results if (b["rate"], b["gil_load_ms"]) == (r["rate"], r["gil_load_ms"])]
        base = next((b for b in same if b["executor"] == "multi"), None)
        ratio = "-"
        if r["executor"] == "single" and base is not None:
            ratio = f"{r['complete'] / base['complete']:.1f}x" if base["complete"] else "inf"
        lines.append(
            f"| {r['rate']:g} | {r['gil_load_ms']:g} | {r['executor']} | {r['sent']} | {r['complete']} | "
            f"{r['rejected'].get('incomplete', 0)} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    p.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS))
    p.add_argument("--gil-load-ms", type=float, nargs="+", default=[0.0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--height", type=int, default=504)
    p.add_argument("--width", type=int, default=896)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--output", type=Path, help="update this markdown file's node_inputs section")
    args = p.parse_args(argv)
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE))  # inherited by the cameras
    device = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    cases = [Case(r, e, g) for g in args.gil_load_ms for r in args.rates for e in args.executors]
    results = []
    t0 = time.perf_counter()
    for i, case in enumerate(cases):
        r = measure(case, args.height, args.width, args.duration)
        print(f"[{i + 1}/{len(cases)}] {json.dumps(r)}", flush=True)
        results.append(r)
    command = "python benchmarks/node_inputs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(results, device, command.strip(), args.height, args.width)
    text += f"\n\nBenchmark wall time {time.perf_counter() - t0:.0f} s."
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": results}, indent=1))
    if args.output:
        heading = "## Node input side (`benchmarks/node_inputs.py`)\n\n"
        update_markdown_section(args.output, "node_inputs", heading + text)
        print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
