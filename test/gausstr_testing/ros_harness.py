"""A test-side ROS node that feeds the occupancy node synthetic camera frames and records its outputs.

Everything lives under one namespace per test (inputs and outputs), so tests in one process never
see each other's topics; /tf_static is global, and every harness publishes the same rig on it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable

from gausstr_testing.ros_frames import TARGET_FRAME, SyntheticCameras, topics
from gausstr_testing.ros_predictor import TEST_GRID_RANGE, TEST_VOXEL_SIZE

OUTPUT_TOPICS = ("occupancy", "occupancy_cloud", "gaussians", "gaussian_markers", "status")


def node_parameters(cams: SyntheticCameras, **overrides) -> dict:
    """Parameter values wiring the occupancy node to a harness's topics (relative names)."""
    values = {
        "camera_names": list(cams.names),
        "image_topics": [topics(n)["image"] for n in cams.names],
        "camera_info_topics": [topics(n)["info"] for n in cams.names],
        "depth_topics": [topics(n)["depth"] for n in cams.names],
        "image_qos": "reliable",
        "target_frame": TARGET_FRAME,
        "status_period_s": 0.2,
        "sync_timeout_s": 0.5,
        "tf_timeout_s": 0.2,
        "grid_range": TEST_GRID_RANGE,
        "voxel_size": TEST_VOXEL_SIZE,
    }
    values.update(overrides)
    return values


def stamp_of(msg) -> int | None:
    """Header stamp [ns] of a message (a MarkerArray: of its first marker)."""
    header = msg.markers[0].header if hasattr(msg, "markers") else msg.header
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def as_parameters(values: dict):
    from rclpy.parameter import Parameter

    return [Parameter(name, value=value) for name, value in values.items()]


class Harness:
    """Publishes camera frames, tf_static, and records every output of the node under test.

    Args:
        context: rclpy context.
        cams: the synthetic rig.
        namespace: the namespace of the node under test ("/test_xyz").
        use_depth: publish depth images too.
        image_transport, depth_transport: "raw" or image_transport's compressed topics (CompressedImage
            on ``<topic>/compressed`` in ``image_format`` jpeg/png, ``<topic>/compressedDepth``).
    """

    def __init__(
        self,
        context,
        cams: SyntheticCameras,
        namespace: str,
        use_depth: bool = False,
        image_transport: str = "raw",
        depth_transport: str = "raw",
        image_format: str = "png",
    ):
        import rclpy
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from gausstr_ros.msg import GaussianArray, InferenceStatus, SemanticOccupancy

        self.cams = cams
        self.namespace = namespace
        self.use_depth = use_depth
        self.node = rclpy.create_node(f"harness_{uuid.uuid4().hex[:8]}", namespace=namespace, context=context)
        qos = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        self.image_transport, self.depth_transport, self.image_format = (
            image_transport,
            depth_transport,
            image_format,
        )
        image_type, image_suffix = (
            (Image, "") if image_transport == "raw" else (CompressedImage, "/compressed")
        )
        depth_type, depth_suffix = (
            (Image, "") if depth_transport == "raw" else (CompressedImage, f"/{depth_transport}")
        )
        self.image_pubs = [
            self.node.create_publisher(image_type, topics(n)["image"] + image_suffix, qos) for n in cams.names
        ]
        self.info_pubs = [self.node.create_publisher(CameraInfo, topics(n)["info"], qos) for n in cams.names]
        self.depth_pubs = [
            self.node.create_publisher(depth_type, topics(n)["depth"] + depth_suffix, qos) for n in cams.names
        ]
        static_qos = QoSProfile(
            depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
        )
        self.tf_static_pub = self.node.create_publisher(TFMessage, "/tf_static", static_qos)
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.tf_static_pub.publish(cams.static_transforms())

        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        types = {
            "occupancy": SemanticOccupancy,
            "occupancy_cloud": PointCloud2,
            "gaussians": GaussianArray,
            "gaussian_markers": MarkerArray,
            "status": InferenceStatus,
        }
        out_qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        for topic, msg_type in types.items():
            self.node.create_subscription(msg_type, topic, self._recorder(topic), out_qos)
        for name in cams.names:
            topic = f"rendered_depth/{name}"
            self.node.create_subscription(Image, topic, self._recorder(topic), out_qos)

    def _recorder(self, topic: str) -> Callable:
        def record(msg):
            with self._lock:
                self.received[topic].append(msg)

        return record

    # -- inputs ---------------------------------------------------------------------------------------

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Until the node under test subscribes to every input and publishes every output."""
        pubs = self.image_pubs + self.info_pubs + (self.depth_pubs if self.use_depth else [])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inputs_ok = all(p.get_subscription_count() > 0 for p in pubs)
            prefix = self.namespace.rstrip("/")
            outputs_ok = all(self.node.count_publishers(f"{prefix}/{t}") > 0 for t in OUTPUT_TOPICS)
            if inputs_ok and outputs_ok:
                return
            time.sleep(0.05)
        raise TimeoutError("the occupancy node did not connect to the harness topics")

    def publish_infos(self, skip: Iterable[int] = (), **kwargs) -> None:
        for k, pub in enumerate(self.info_pubs):
            if k not in skip:
                pub.publish(self.cams.info_msg(k, **kwargs))

    def publish_infos_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,
        what: str = "CameraInfo at the node",
        **kwargs,
    ) -> None:
        """``publish_infos`` every 0.2 s until ``predicate()``, as camera drivers repeat CameraInfo:
        a subscriber in another process (the node's input process) can miss the first message sent
        right after DDS matched it (a volatile topic)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            self.publish_infos(**kwargs)
            time.sleep(0.2)

    def publish_frame(
        self,
        frame: int,
        stamp_ns: int,
        skip: Iterable[int] = (),
        encoding: str = "rgb8",
        image_overrides: dict | None = None,
        depth_overrides: dict | None = None,
        depth_encoding: str = "32FC1",
    ) -> None:
        """One frame set: an image (and depth) per camera, all stamped ``stamp_ns``.

        Args:
            skip: camera indices that publish nothing this frame.
            image_overrides / depth_overrides: camera index -> message to publish instead.
        """
        image_overrides = image_overrides or {}
        depth_overrides = depth_overrides or {}
        for k in range(len(self.cams.names)):
            if k in skip:
                continue
            if self.use_depth:
                msg = depth_overrides.get(k)
                if msg is None and self.depth_transport != "raw":
                    msg = self.cams.messages.compressed_depth(k, self.cams.depth(k), stamp_ns)
                msg = msg or self.cams.depth_msg(k, stamp_ns, depth_encoding)
                self.depth_pubs[k].publish(msg)
            image = image_overrides.get(k)
            if image is None and self.image_transport != "raw":
                image = self.cams.messages.compressed_image(
                    k, self.cams.rgb(k, frame), stamp_ns, self.image_format
                )
            image = image or self.cams.image_msg(k, frame, stamp_ns, encoding)
            self.image_pubs[k].publish(image)

    # -- outputs ------------------------------------------------------------------------------------

    def messages(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def by_stamp(self, topic: str, stamp_ns: int) -> list:
        return [m for m in self.messages(topic) if stamp_of(m) == stamp_ns]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise TimeoutError(
            f"timed out after {timeout} s waiting for {what}; received so far: "
            f"{ {k: len(v) for k, v in self.received.items()} }"
        )

    def wait_for_stamp(self, topic: str, stamp_ns: int, timeout: float = 30.0):
        self.wait_for(lambda: bool(self.by_stamp(topic, stamp_ns)), timeout, f"{topic} at {stamp_ns}")
        return self.by_stamp(topic, stamp_ns)[0]

    def latest_status(self):
        msgs = self.messages("status")
        return msgs[-1] if msgs else None

    def wait_for_status(self, predicate: Callable, timeout: float = 20.0, what: str = "status"):
        def check():
            s = self.latest_status()
            return s is not None and predicate(s)

        self.wait_for(check, timeout, what)
        return self.latest_status()

    def destroy(self) -> None:
        self.node.destroy_node()
