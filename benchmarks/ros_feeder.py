"""The camera side of ``benchmarks/node_latency.py --mode ros``: publishes synthetic 6-camera frame
sets (images, optional 32FC1 depth, camera_info, tf_static) to the occupancy node and subscribes to
every output like RViz and a planner would, timing each set.

On a robot the camera drivers and RViz are other processes, so by default the feeder runs in its own
process (``run_feeder_process``; the node's process then holds only the node, as deployed). In the
node's process (``--feeder thread``) both sides share one Python interpreter lock: that variant
measures the two together, the way the first version of this benchmark did.

The two sides talk over a ``multiprocessing`` connection (a pipe in both variants):
  feeder -> node side  {"event": "subscribed"}       publishers matched, camera_info going out
  node side -> feeder  "ready"                        the node has every camera_info
  feeder -> node side  {"event": "closed_loop_done"}  the latency sets are done
  node side -> feeder  "go"                           (the node side took its statistics)
  feeder -> node side  {"event": "result", ...}       times of the open loop, the outputs seen
Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the host).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

S = 1_000_000_000


@dataclass
class FeederSpec:
    """What the feeder publishes and for how long (picklable: it crosses to the feeder process).

    Attributes:
        namespace: the node's namespace; topics below are relative to it.
        height, width: camera image size (the nuScenes rig scaled to it).
        image_topics, camera_info_topics, depth_topics: per camera, in rig order (depth empty: none).
        warmup, frames: closed-loop sets (the first ``warmup`` are not timed).
        rate, duration: open loop: sets per second and seconds.
        info_every_set: also publish every camera's CameraInfo with each set, as camera drivers do
            (image_transport's CameraPublisher); otherwise only until the node is ready.
    """

    namespace: str
    height: int
    width: int
    image_topics: list[str]
    camera_info_topics: list[str]
    depth_topics: list[str] = field(default_factory=list)
    warmup: int = 4
    frames: int = 20
    rate: float = 30.0
    duration: float = 6.0
    info_every_set: bool = False


def synthetic_rgb(views: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``views`` random uint8 (height, width, 3) images (the content does not change the latency)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(views)]


def synthetic_depth(views: int, height: int, width: int, seed: int = 1) -> list[np.ndarray]:
    """Depth images [m] of a ground plane seen from 1.5 m (rows below the horizon) plus noise."""
    rng = np.random.default_rng(seed)
    rows = np.arange(height, dtype=np.float32)[:, None] - height / 2 + 0.5
    ground = np.where(rows > 0, 1.5 * width / np.maximum(rows, 1e-3), 60.0).clip(1.0, 60.0)
    noise = [1 + 0.05 * rng.standard_normal((height, width)) for _ in range(views)]
    return [(ground * n).astype(np.float32) for n in noise]


def camera_topics(names) -> dict[str, list[str]]:
    """The node's default camera topics of the rig's cameras, relative to its namespace:
    ``{"image": [...], "camera_info": [...], "depth": [...]}`` in rig order."""
    lower = [n.lower() for n in names]
    return {
        "image": [f"{n}/image_rect" for n in lower],
        "camera_info": [f"{n}/camera_info" for n in lower],
        "depth": [f"{n}/depth" for n in lower],
    }


class SyntheticCameras:
    """The synthetic rig's camera side on a node: one reliable publisher (depth 10) per image, depth
    and camera_info topic, the rig's tf_static published once (latched), and whole frame sets (depth
    before image per camera, as the node's benchmarks have always sent them).

    Args:
        node: the rclpy node to publish from.
        height, width: image size (the nuScenes rig scaled to it).
        image_topics, camera_info_topics: per camera, in rig order.
        depth_topics: per camera, or empty for no depth.
    """

    def __init__(self, node, height: int, width: int, image_topics, camera_info_topics, depth_topics=()):
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from gausstr_core.data.synthetic.rig import nuscenes_rig
        from gausstr_ros.rig_messages import RigMessages

        self.rig = nuscenes_rig(height, width)
        self.msgs = RigMessages(self.rig)
        self.images = synthetic_rgb(self.rig.num_views, height, width)
        self.depths = synthetic_depth(self.rig.num_views, height, width) if depth_topics else None
        self.qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.image_pubs = [node.create_publisher(Image, t, self.qos) for t in image_topics]
        self.depth_pubs = [node.create_publisher(Image, t, self.qos) for t in depth_topics]
        self.info_pubs = [node.create_publisher(CameraInfo, t, self.qos) for t in camera_info_topics]
        latched = QoSProfile(
            depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_publisher(TFMessage, "/tf_static", latched).publish(self.msgs.static_transforms())

    def matched(self) -> bool:
        """Whether every camera topic has a subscriber."""
        return all(p.get_subscription_count() for p in self.image_pubs + self.info_pubs + self.depth_pubs)

    def publish_infos(self, stamp: int | None = None) -> None:
        """Every camera's CameraInfo (stamped ``stamp`` [ns] when given)."""
        for k, p in enumerate(self.info_pubs):
            p.publish(self.msgs.camera_info(k, stamp or 0))

    def publish_set(self, stamp: int) -> None:
        """Every camera's depth (if any) and image stamped ``stamp`` [ns]."""
        for k in range(self.rig.num_views):
            if self.depths is not None:
                self.depth_pubs[k].publish(self.msgs.depth(k, self.depths[k], stamp))
            self.image_pubs[k].publish(self.msgs.image(k, self.images[k], stamp))


def subscribe_outputs(node, camera_names, qos, on_occupancy, count) -> list[str]:
    """Subscribe ``node`` to every output of the occupancy node, as RViz and a planner would:
    ``on_occupancy(stamp_ns, receipt_time)`` for each SemanticOccupancy (deserialized, as a Python
    planner would take it), ``count(topic)`` for each message of the others, taken as serialized bytes
    (a C++ RViz does not pay Python's message construction, and neither should this benchmark). Every
    output is subscribed because the node builds only what someone wants. Returns the resolved
    output topic names."""
    from sensor_msgs.msg import Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from gausstr_ros.msg import GaussianArray, SemanticOccupancy

    def occupancy(msg):
        now = time.monotonic()
        on_occupancy(msg.header.stamp.sec * S + msg.header.stamp.nanosec, now)

    node.create_subscription(SemanticOccupancy, "occupancy", occupancy, qos)
    outputs = [("occupancy_cloud", PointCloud2), ("gaussians", GaussianArray)]
    outputs += [("gaussian_markers", MarkerArray)] + [(f"rendered_depth/{n}", Image) for n in camera_names]
    for topic, msg_type in outputs:
        node.create_subscription(msg_type, topic, lambda _msg, t=topic: count(t), qos, raw=True)
    return [node.resolve_topic_name(t) for t in ["occupancy", *(t for t, _ in outputs)]]


def run_feeder(conn, spec: FeederSpec, context=None, receiver=None) -> None:
    """Publish, time and report (the protocol in the module docstring) over ``conn``. ``context``:
    an rclpy Context already initialised (thread variant), else one is made here (process variant).
    ``receiver``: a connection to ``run_receiver`` in a process of its own that subscribes to the
    outputs instead of this feeder (``--subscribers process``); its receipts come over it."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tqdm import tqdm

    from gausstr_ros.node.executor import spin

    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    node = rclpy.create_node("bench_feeder", namespace=spec.namespace, context=context)
    cameras = SyntheticCameras(
        node, spec.height, spec.width, spec.image_topics, spec.camera_info_topics, spec.depth_topics
    )
    rig, qos = cameras.rig, cameras.qos
    received: dict[int, float] = {}
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def on_occupancy(stamp: int, now: float) -> None:
        with lock:
            received[stamp] = now

    def count(topic: str) -> None:
        counts[topic] = counts.get(topic, 0) + 1

    counted = threading.Event()  # the receiver's final counts are in (--subscribers process)
    if receiver is None:
        output_topics = subscribe_outputs(node, rig.names, qos, on_occupancy, count)
    else:
        if not receiver.poll(60):
            raise RuntimeError("the receiver process did not subscribe to the outputs in 60 s")
        output_topics = receiver.recv()["topics"]  # subscribed there

        def drain() -> None:  # the receiver's receipts, as they come
            while True:
                try:
                    event = receiver.recv()
                except (EOFError, OSError):
                    return
                if event[0] == "occupancy":
                    on_occupancy(event[1], event[2])
                elif event[0] == "counts":
                    counts.update(event[1])
                    counted.set()
                    return

        threading.Thread(target=drain, name="receiver_drain", daemon=True).start()

    def outputs_matched() -> bool:
        return all(node.count_publishers(t) > 0 for t in output_topics)

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    published_first: dict[int, float] = {}
    published_last: dict[int, float] = {}

    def publish_set(stamp: int) -> None:
        published_first[stamp] = time.monotonic()  # before the first image of the set
        cameras.publish_set(stamp)
        # After the last image's publish returns. With the feeder as a thread of the node's process
        # this clock read can come after the node already has the set (the feeder waits for the
        # interpreter lock on its way back), so dds_in may then be slightly negative.
        published_last[stamp] = time.monotonic()
        if spec.info_every_set:
            cameras.publish_infos(stamp)

    try:
        deadline = time.monotonic() + 30
        subscribed = False
        while time.monotonic() < deadline:
            cameras.publish_infos()
            # every camera topic subscribed by the node, and every output topic published to this
            # feeder (the node's output process, when on, matches later than the node itself; a set
            # answered before its publisher matched would be lost, volatile)
            if not subscribed and cameras.matched() and outputs_matched():
                conn.send({"event": "subscribed"})
                subscribed = True
            if subscribed and conn.poll(0.1):
                conn.recv()  # "ready"
                break
            if not subscribed:
                time.sleep(0.1)
        else:
            raise RuntimeError(
                "the node did not subscribe to every camera topic, publish every output or get ready in 30 s"
            )
        stamp = 1_700_000_000 * S
        closed: list[int] = []
        for i in tqdm(range(spec.warmup + spec.frames), desc="ros closed loop", unit="set"):
            stamp += S // 10
            publish_set(stamp)
            wait_until = time.monotonic() + 120
            while stamp not in received and time.monotonic() < wait_until:
                time.sleep(0.001)
            if stamp not in received:
                raise RuntimeError(f"no occupancy for closed-loop set {i} within 120 s")
            if i >= spec.warmup:
                closed.append(stamp)
        conn.send({"event": "closed_loop_done"})
        conn.recv()  # "go"
        before = len(received)
        first_open = stamp + S // 10
        start = time.monotonic()
        period = 1.0 / spec.rate
        sent = 0
        lag_ms = []  # how late each set went out against its schedule (this process keeping up?)
        while time.monotonic() - start < spec.duration:
            stamp += S // 10
            lag_ms.append(1e3 * (time.monotonic() - (start + sent * period)))
            publish_set(stamp)
            sent += 1
            time.sleep(max(0.0, start + sent * period - time.monotonic()))
        send_window = time.monotonic() - start
        time.sleep(1.0)  # the last sets' results
        if receiver is not None:  # the receiver's output counts, then it ends
            receiver.send("report")
            counted.wait(10)
        with lock:
            open_times = [t for s, t in received.items() if s >= first_open]
            result = {
                "event": "result",
                "closed": closed,
                "published_first": {s: published_first[s] for s in closed},
                "published_last": {s: published_last[s] for s in closed},
                "received": {s: received[s] for s in closed},
                "sent": sent,
                "outputs": len(received) - before,
                # the output rate while sets were sent (the tail second after it holds no input)
                "outputs_in_window": sum(1 for t in open_times if t <= start + send_window),
                "send_window": send_window,
                "send_lag_ms": lag_ms,
                "outputs_seen": dict(counts),
                # the open-loop sets' two ends (stamp -> time): their latency under load, which goals
                # 2 and 3 bound, and the per-set timeline (node_latency.py); dropped sets have no receipt
                "open_published_last": {s: t for s, t in published_last.items() if s >= first_open},
                "open_received": {s: t for s, t in received.items() if s >= first_open},
            }
        conn.send(result)
    except Exception as exc:  # the node side must not wait forever for a feeder that died
        conn.send({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        if own_context:
            rclpy.shutdown(context=context)


def run_feeder_process(conn, spec: FeederSpec, receiver=None) -> None:
    """Entry point of the feeder process (``multiprocessing`` spawn context)."""
    run_feeder(conn, spec, receiver=receiver)


def run_receiver(conn, spec: FeederSpec) -> None:
    """The output subscribers in a process of their own (``--subscribers process``): the cameras'
    process then publishes images only, so its receipt times cannot wait behind its own publishing.
    Over ``conn`` (to the feeder): first ``{"topics": [...]}`` once subscribed, then
    ``("occupancy", stamp_ns, receipt_time)`` per occupancy; on "report", ``("counts", {topic: n})``
    and the end."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_ros.node.executor import spin

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_receiver", namespace=spec.namespace, context=context)
    counts: dict[str, int] = {}
    send_lock = threading.Lock()

    def on_occupancy(stamp: int, now: float) -> None:
        with send_lock:
            conn.send(("occupancy", stamp, now))

    def count(topic: str) -> None:
        counts[topic] = counts.get(topic, 0) + 1

    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    names = nuscenes_rig(spec.height, spec.width).names
    topics = subscribe_outputs(node, names, qos, on_occupancy, count)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=spin, args=(executor,), daemon=True).start()
    try:
        conn.send({"topics": topics})
        conn.recv()  # "report"
        with send_lock:
            conn.send(("counts", dict(counts)))
    except (EOFError, OSError):
        pass  # the feeder is gone: nothing to report to
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.shutdown(context=context)


__all__ = [
    "FeederSpec",
    "SyntheticCameras",
    "camera_topics",
    "run_feeder",
    "run_feeder_process",
    "run_receiver",
    "subscribe_outputs",
    "synthetic_depth",
    "synthetic_rgb",
]
