"""TF without tf2_ros: the TransformBuffer against direct matrix algebra, and the /tf + /tf_static
listener over real rclpy."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from gausstr_ros.node.tf import TransformBuffer, TransformExtrapolation, TransformNotFound

S = 1_000_000_000
RNG = np.random.default_rng(0)


def random_rigid() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.random(random_state=RNG.integers(1 << 31)).as_matrix()
    m[:3, 3] = RNG.normal(size=3)
    return m


def test_composes_a_tree_through_the_common_ancestor():
    # map -> odom -> base_link -> {cam_front, lidar}; base_link -> mast -> cam_top
    buf = TransformBuffer()
    edges = {
        "odom": ("map", random_rigid()),
        "base_link": ("odom", random_rigid()),
        "cam_front": ("base_link", random_rigid()),
        "mast": ("base_link", random_rigid()),
        "cam_top": ("mast", random_rigid()),
    }
    for child, (parent, m) in edges.items():
        buf.set_transform(parent, child, 0, m, static=True)

    def to_root(frame):
        m = np.eye(4)
        while frame in edges:
            parent, e = edges[frame]
            m = e @ m
            frame = parent
        return m

    for target, source in [
        ("base_link", "cam_front"),
        ("cam_front", "cam_top"),
        ("map", "cam_top"),
        ("cam_top", "map"),
        ("mast", "cam_front"),
    ]:
        expected = np.linalg.inv(to_root(target)) @ to_root(source)
        np.testing.assert_allclose(buf.lookup(target, source, 5 * S), expected, atol=1e-12)
    np.testing.assert_array_equal(buf.lookup("cam_top", "cam_top"), np.eye(4))
    assert "cam_top" in buf.frames()


def test_interpolates_dynamic_edges_like_slerp_and_lerp():
    buf = TransformBuffer()
    a, b = random_rigid(), random_rigid()
    buf.set_transform("odom", "base_link", 10 * S, a, static=False)
    buf.set_transform("odom", "base_link", 11 * S, b, static=False)
    buf.set_transform("base_link", "cam", 0, np.eye(4), static=True)
    for alpha in (0.0, 0.25, 0.5, 0.9, 1.0):
        t = 10 * S + int(alpha * S)
        got = buf.lookup("odom", "cam", t)
        rot = Slerp([0, 1], Rotation.from_matrix([a[:3, :3], b[:3, :3]]))([alpha]).as_matrix()[0]
        np.testing.assert_allclose(got[:3, :3], rot, atol=1e-9)
        np.testing.assert_allclose(got[:3, 3], (1 - alpha) * a[:3, 3] + alpha * b[:3, 3], atol=1e-9)
    # time 0 = latest common time
    np.testing.assert_allclose(buf.lookup("odom", "cam", 0), b, atol=1e-12)


def test_never_extrapolates_and_names_the_problem():
    buf = TransformBuffer()
    buf.set_transform("odom", "base_link", 10 * S, np.eye(4), static=False)
    buf.set_transform("odom", "base_link", 11 * S, np.eye(4), static=False)
    with pytest.raises(TransformExtrapolation, match="into the future"):
        buf.lookup("odom", "base_link", 12 * S)
    with pytest.raises(TransformExtrapolation, match="into the past"):
        buf.lookup("odom", "base_link", 9 * S)
    with pytest.raises(TransformNotFound, match="'cam' does not exist"):
        buf.lookup("odom", "cam", 10 * S)
    buf.set_transform("world", "cam", 0, np.eye(4), static=True)
    with pytest.raises(TransformNotFound, match="not connected"):
        buf.lookup("odom", "cam", 10 * S)


def test_cache_reparenting_and_clear():
    buf = TransformBuffer(cache_time_s=2.0)
    for k in range(10):
        buf.set_transform("odom", "base_link", k * S, np.eye(4), static=False)
    with pytest.raises(TransformExtrapolation):
        buf.lookup("odom", "base_link", 6 * S)  # older than newest - 2 s: forgotten
    buf.lookup("odom", "base_link", 7 * S)
    buf.set_transform("base_link", "cam", 0, random_rigid(), static=True)
    buf.set_transform("map", "base_link", 20 * S, np.eye(4), static=False)  # re-parented
    with pytest.raises(TransformNotFound):
        buf.lookup("odom", "base_link", 20 * S)
    buf.clear()
    buf.lookup("base_link", "cam", 123)  # static edges survive clear()
    with pytest.raises(TransformNotFound):
        buf.lookup("map", "base_link", 20 * S)
    with pytest.raises(ValueError, match="non-empty frame ids"):
        buf.set_transform("", "x", 0, np.eye(4), static=True)
    with pytest.raises(ValueError, match="finite"):
        buf.set_transform("a", "b", 0, np.full((4, 4), np.nan), static=True)


def test_wait_for_returns_when_the_transform_arrives():
    buf = TransformBuffer()
    buf.set_transform("odom", "base_link", 1 * S, np.eye(4), static=False)
    late = random_rigid()

    def publish_later():
        time.sleep(0.1)
        buf.set_transform("odom", "base_link", 3 * S, late, static=False)

    thread = threading.Thread(target=publish_later)
    thread.start()
    start = time.monotonic()
    got = buf.wait_for("odom", "base_link", 3 * S, timeout_s=5.0)
    thread.join()
    assert time.monotonic() - start < 2.0
    np.testing.assert_allclose(got, late)
    with pytest.raises(TransformExtrapolation):
        buf.wait_for("odom", "base_link", 4 * S, timeout_s=0.05)


def test_rosbags_tf_messages_are_wire_compatible():
    """A TFMessage serialised by rosbags (the real tf2_msgs definition) reads back through rclpy's
    tf2_msgs (the real one on ROS machines, the package's minimal copy in the venv)."""
    tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_msgs.sh)")
    pytest.importorskip("rosbags", reason="rosbags is not installed")
    from rclpy.serialization import deserialize_message
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    T = ts.types
    transform = T["geometry_msgs/msg/TransformStamped"](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=7, nanosec=5), frame_id="base_link"
        ),
        child_frame_id="cam",
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=1.0, y=2.0, z=3.0),
            rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
    )
    raw = ts.serialize_cdr(T["tf2_msgs/msg/TFMessage"](transforms=[transform]), "tf2_msgs/msg/TFMessage")
    msg = deserialize_message(bytes(raw), tf2_msgs.TFMessage)
    assert msg.transforms[0].child_frame_id == "cam" and msg.transforms[0].header.stamp.sec == 7
    buf = TransformBuffer()
    buf.set_transform_message(msg.transforms[0], static=True)
    np.testing.assert_allclose(buf.lookup("base_link", "cam")[:3, 3], [1, 2, 3])


@pytest.mark.ros
def test_fallback_listener_over_rclpy(ros_context):
    """A publisher latches /tf_static before the listener exists and streams /tf; lookups then work
    through TfLookup's fallback (tf2_ros is not importable here, or is bypassed)."""
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from gausstr_ros.node.tf import TfLookup

    def stamped(parent, child, sec, x):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.header.stamp.sec = sec
        t.transform.translation.x = x
        t.transform.rotation.w = 1.0
        return t

    pub_node = rclpy.create_node("tf_test_publisher", context=ros_context)
    static_qos = QoSProfile(
        depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
    )
    static_pub = pub_node.create_publisher(TFMessage, "/tf_static", static_qos)
    dynamic_pub = pub_node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
    static_pub.publish(TFMessage(transforms=[stamped("base_link", "cam", 0, 1.5)]))

    node = rclpy.create_node("tf_test_listener", context=ros_context)
    lookup = TfLookup(node, prefer_tf2=False)
    assert lookup.backend == "fallback"
    executor = MultiThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(pub_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        m = lookup.lookup("base_link", "cam", 0, timeout_s=10.0)  # latched static arrives late-joining
        np.testing.assert_allclose(m[:3, 3], [1.5, 0, 0])
        deadline = time.monotonic() + 10.0
        got = None
        while got is None and time.monotonic() < deadline:
            dynamic_pub.publish(
                TFMessage(
                    transforms=[
                        stamped("odom", "base_link", 100, 0.0),
                        stamped("odom", "base_link", 102, 2.0),
                    ]
                )
            )
            try:
                got = lookup.lookup("odom", "cam", 101 * S, timeout_s=0.2)
            except TransformExtrapolation:
                continue
            except TransformNotFound:
                continue
        assert got is not None, "the /tf transforms never arrived"
        np.testing.assert_allclose(got[:3, 3], [1.0 + 1.5, 0, 0])
        with pytest.raises(TransformExtrapolation):
            lookup.lookup("odom", "cam", 200 * S, timeout_s=0.05)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        pub_node.destroy_node()
