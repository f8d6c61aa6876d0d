"""What moving full-size surround-camera sets between two processes of one machine costs, per transport
configuration (ROS 2 Jazzy rclpy, Fast DDS 2.14, real DDS; needs the project venv's ROS 2 wheels).

A publisher process plays six camera drivers in one participant (like ``ros2 bag play``): each set is
six images of one stamp (default 1600 x 900 rgb8, 4.3 MB each, 26 MB a set) at ``--rate`` Hz. A
subscriber process subscribes like the occupancy node (KEEP_LAST 5) and records when each image
arrives. Configurations (publisher QoS / subscription QoS / Fast DDS transports):

* ``raw reliable``      reliable / reliable (what image_qos auto picks for reliable drivers), default
                        transports: the BASELINE every ratio is relative to (measured in the same run);
* ``raw best effort``   reliable / best effort (the node's old default ``sensor_data``), default
                        transports (shared memory with Fast DDS's 512 KiB segment + UDPv4);
* ``raw BE + profile``  best effort / best effort, both processes with config/fastdds_large_images.xml
                        (64 MiB shared-memory segment);
* ``raw reliable + profile``  reliable / reliable with the profile;
* ``jpeg reliable``     sensor_msgs/CompressedImage JPEG quality 95 (compressed_image_transport's
                        default), reliable, default transports; encode time at the publisher (a
                        driver's cost), decode time measured on the received bytes with OpenCV (the
                        node's cost, in its inference thread);
* ``jpeg best effort``  the same JPEG images, reliable / best effort, default transports.

Per configuration: sets complete (all six images received) of those sent, images received, set
latency (the last image of a set received minus its stamp, taken just before publishing; one clock),
publish time per set, encode / decode time per set (JPEG), bytes per set.

    python benchmarks/dds_transport.py                     # 20 sets at 10 Hz per configuration
    python benchmarks/dds_transport.py --sets 40 --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_large_images.xml"
CAMERAS = 6
# name: (format, publisher reliability, subscription reliability, profile)
CONFIGS = {
    "raw reliable": ("raw", "reliable", "reliable", False),
    "raw best effort": ("raw", "reliable", "best_effort", False),
    "raw BE + profile": ("raw", "best_effort", "best_effort", True),
    "raw reliable + profile": ("raw", "reliable", "reliable", True),
    "jpeg reliable": ("jpeg", "reliable", "reliable", False),
    "jpeg best effort": ("jpeg", "reliable", "best_effort", False),
}
BASELINE = "raw reliable"


def camera_images(height: int, width: int) -> list[np.ndarray]:
    """Six smooth colour images with pixel noise (like a camera's; JPEG compresses them ~15x)."""
    v = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    u = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    rng = np.random.default_rng(0)
    out = []
    for k in range(CAMERAS):
        rgb = np.stack(
            np.broadcast_arrays(
                0.5 + 0.5 * np.sin(6 * u + k),
                0.5 + 0.5 * np.cos(4 * v + 0.7 * k),
                0.5 + 0.5 * np.sin(3 * (u + v)),
            ),
            axis=-1,
        )
        noise = rng.normal(0, 0.03, rgb.shape).astype(np.float32)
        out.append((np.clip(rgb + noise, 0, 1) * 255).astype(np.uint8))
    return out


def qos(reliability: str, depth: int):
    """KEEP_LAST ``depth``: 5 for the subscriptions (the node's queue_depth), 10 for the publishers."""
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    policy = QoSReliabilityPolicy.RELIABLE if reliability == "reliable" else QoSReliabilityPolicy.BEST_EFFORT
    return QoSProfile(depth=depth, reliability=policy)


def topic(k: int, fmt: str) -> str:
    return f"/bench_cam{k}/image" + ("/compressed" if fmt == "jpeg" else "")


# ------------------------------------------------------------------------------------------------
# Subprocess roles
# ------------------------------------------------------------------------------------------------


def run_subscriber(args) -> None:
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node("bench_subscriber")
    arrivals: dict[int, list[int]] = {}
    samples: list = []
    lost = [0]

    def on_lost(info):
        lost[0] += int(info.total_count_change)

    def on_image(msg):
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        arrivals.setdefault(stamp, []).append(now)
        if args.format == "jpeg" and len(samples) < CAMERAS:
            samples.append(bytes(msg.data))

    msg_type = CompressedImage if args.format == "jpeg" else Image
    for k in range(CAMERAS):
        node.create_subscription(
            msg_type,
            topic(k, args.format),
            on_image,
            qos(args.sub_reliability, 5),
            event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost),
        )
    print("READY", flush=True)
    deadline = time.monotonic() + args.timeout
    done_at = None
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.01)
        if Path(args.done_file).exists() and done_at is None:
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > args.drain:
            break
    decode_ms = None
    if samples:
        import cv2

        t0 = time.perf_counter()
        for data in samples:
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        decode_ms = 1e3 * (time.perf_counter() - t0) * CAMERAS / len(samples)
    print(
        json.dumps(
            {"arrivals": {str(k): v for k, v in arrivals.items()}, "lost": lost[0], "decode_ms": decode_ms}
        )
    )
    node.destroy_node()
    rclpy.shutdown()


def run_publisher(args) -> None:
    import rclpy
    from rclpy.duration import Duration
    from sensor_msgs.msg import CompressedImage, Image

    images = camera_images(args.height, args.width)
    rclpy.init()
    node = rclpy.create_node("bench_publisher")
    msg_type = CompressedImage if args.format == "jpeg" else Image
    pubs = [
        node.create_publisher(msg_type, topic(k, args.format), qos(args.pub_reliability, 10))
        for k in range(CAMERAS)
    ]
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    import cv2

    messages = []
    for k in range(CAMERAS):
        if args.format == "raw":
            msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
            msg.data = images[k].tobytes()
        else:
            msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
        messages.append(msg)
    publish_ms, encode_ms, set_bytes, stamps = [], [], [], []
    period = 1.0 / args.rate
    start = time.monotonic()
    for s in range(args.sets):
        if args.format == "jpeg":
            t0 = time.perf_counter()
            for k in range(CAMERAS):  # what a driver does per frame
                _, buf = cv2.imencode(".jpg", images[k][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
                messages[k].data = buf.tobytes()
            encode_ms.append(1e3 * (time.perf_counter() - t0))
        stamp = time.time_ns()
        t0 = time.perf_counter()
        for msg, pub in zip(messages, pubs):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(msg)
        publish_ms.append(1e3 * (time.perf_counter() - t0))
        set_bytes.append(sum(len(m.data) for m in messages))
        stamps.append(stamp)
        wait = start + (s + 1) * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    if args.pub_reliability == "reliable":
        for pub in pubs:
            pub.wait_for_all_acked(Duration(seconds=5))
    Path(args.done_file).touch()
    print(
        json.dumps({"stamps": stamps, "publish_ms": publish_ms, "encode_ms": encode_ms, "bytes": set_bytes})
    )
    time.sleep(args.drain)
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import rclpy
    from rclpy.utilities import get_rmw_implementation_identifier

    rclpy.init()
    rmw = get_rmw_implementation_identifier()
    rclpy.shutdown()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores (load average {load} at start), {platform.system()}, {rmw}"


def measure(name: str, args) -> dict:
    fmt, pub_rel, sub_rel, profile = CONFIGS[name]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    done = Path(f"/tmp/dds_transport_{os.getpid()}_{name.replace(' ', '_')}.done")
    done.unlink(missing_ok=True)
    common = [
        "--format",
        fmt,
        "--done-file",
        str(done),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
    ]
    me = [sys.executable, str(Path(__file__).resolve())]
    sub = subprocess.Popen(
        [*me, "--role", "sub", "--sub-reliability", sub_rel, "--timeout", "120", "--drain", "2", *common],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout.readline().strip() == "READY"
    pub = subprocess.run(
        [*me, "--role", "pub", "--pub-reliability", pub_rel, "--sets", str(args.sets),
         "--rate", str(args.rate), "--drain", "3", *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    out, _ = sub.communicate(timeout=180)
    done.unlink(missing_ok=True)
    p = json.loads(pub.stdout.strip().splitlines()[-1])
    s = json.loads(out.strip().splitlines()[-1])
    arrivals = {int(k): v for k, v in s["arrivals"].items()}
    sent = p["stamps"]
    complete = [t for t in sent if len(arrivals.get(t, [])) == CAMERAS]
    latency = [(max(arrivals[t]) - t) / 1e6 for t in complete]
    return {
        "name": name,
        "sent": len(sent),
        "complete": len(complete),
        "images": sum(len(arrivals.get(t, [])) for t in sent),
        "lost_events": s["lost"],
        "latency_p50": statistics.median(latency) if latency else None,
        "latency_max": max(latency) if latency else None,
        "publish_ms": statistics.median(p["publish_ms"]),
        "encode_ms": statistics.median(p["encode_ms"]) if p["encode_ms"] else None,
        "decode_ms": s["decode_ms"],
        "mb": statistics.median(p["bytes"]) / 1e6,
    }


def table(rows: list[dict]) -> str:
    base = next(r for r in rows if r["name"] == BASELINE)

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    def ratio(v, b):
        return "-" if v is None or not b else f"{v / b:.2f}"

    lines = [
        "| configuration | MB / set | sets complete | images | lost events | set latency p50 / max [ms] | "
        "vs baseline (p50) | publish [ms/set] | encode / decode [ms/set] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        name = r["name"] + (" (baseline)" if r is base else "")
        lines.append(
            f"| {name} | {r['mb']:.2f} | {r['complete']} / {r['sent']} | "
            f"{r['images']} / {r['sent'] * CAMERAS} | "
            f"{r['lost_events']} | {ms(r['latency_p50'])} / {ms(r['latency_max'])} | "
            f"{ratio(r['latency_p50'], base['latency_p50'])} | {ms(r['publish_ms'])} | "
            f"{ms(r['encode_ms'])} / {ms(r['decode_ms'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("main", "pub", "sub"), default="main")
    p.add_argument("--sets", type=int, default=20)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--repeat", type=int, default=1, help="measure every configuration this many times")
    p.add_argument(
        "--output", type=Path, help="write the tables into this markdown file's dds_transport section"
    )
    # subprocess roles
    p.add_argument("--format", default="raw")
    p.add_argument("--pub-reliability", default="reliable")
    p.add_argument("--sub-reliability", default="reliable")
    p.add_argument("--done-file", default="")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--drain", type=float, default=2)
    args = p.parse_args(argv)
    if args.role == "sub":
        run_subscriber(args)
        return 0
    if args.role == "pub":
        run_publisher(args)
        return 0
    configs = list(dict.fromkeys([BASELINE, *args.configs]))
    where = machine()
    when = time.strftime("%Y-%m-%d %H:%M")
    title = f"{CAMERAS} x {args.width} x {args.height} rgb8 camera sets, {args.sets} sets at {args.rate:g} Hz"
    print(f"# DDS transport of {title} per configuration\n# machine: {where}\n# {when}", flush=True)
    tables = []
    for _ in range(args.repeat):
        rows = []
        for name in configs:
            rows.append(measure(name, args))
            print(f"  {name}: {rows[-1]}", flush=True)
        tables.append(table(rows))
        print(tables[-1], flush=True)
    if args.output:
        sys.path.insert(0, str(ROOT))
        from benchmarks.common import update_markdown_section

        command = "python benchmarks/dds_transport.py " + " ".join(argv if argv is not None else sys.argv[1:])
        runs = "\n\n".join(f"Run {k + 1} of {len(tables)}:\n\n{text}" for k, text in enumerate(tables))
        body = (
            "## Camera transport between processes (`benchmarks/dds_transport.py`)\n\n"
            "What moving full-size surround-camera sets costs between two processes of one machine: "
            f"{title}, "
            "a publisher process with six camera publishers (like `ros2 bag play` or six drivers in one "
            "container) and a subscriber process subscribed like the node (KEEP_LAST 5). Set latency = "
            "the last image of a set received minus its stamp (taken just before publishing; one clock). "
            "Baseline in the same run: raw images, reliable, Fast DDS default transports (what "
            '`image_qos: auto` subscribes for reliable drivers). "profile" = both processes with '
            "`config/fastdds_large_images.xml`. JPEG: quality 95 (compressed_image_transport's default) of "
            "noisy synthetic images, 0.6 MB each (camera photos are ~0.4 MB at this size); encode = the "
            "driver's cost, decode = the node's (OpenCV, in its inference thread).\n\n"
            f"Machine: {where}; {when}. Command: `{command.strip()}`.\n\n{runs}\n"
        )
        update_markdown_section(args.output, "dds_transport", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
