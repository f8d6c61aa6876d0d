"""Parity with the ROS 2 Jazzy libraries the package re-implements for speed or to run without them:
cv_bridge (image conversions), sensor_msgs_py (PointCloud2), tf2_ros (transform lookups) and
message_filters (the synchronizer; its parity test is test_sync.py's
test_message_filters_adapter_agrees_with_builtin). On a machine without them (the PyPI wheels have
none) each test skips with the reason; on a ROS 2 Jazzy install they run (declared as test_depend).

Where the package keeps its own path, it is faster (docs/node.md, "Own fast paths"): image views
without copies instead of cv_bridge's converted copies, numpy PointCloud2 building instead of
per-point packing; tf2_ros itself is used when importable.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gausstr_ros.conversions.images import array_to_image_message, depth_image_to_metres, image_to_rgb

pytestmark = pytest.mark.ros

RNG = np.random.default_rng(0)


def _rgb(h: int = 48, w: int = 80) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- cv_bridge ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bridge():
    cv_bridge = pytest.importorskip(
        "cv_bridge", reason="cv_bridge is not installed (ROS 2 Jazzy's ros-jazzy-cv-bridge; not on PyPI)"
    )
    return cv_bridge.CvBridge()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_conversions_match_cv_bridge(bridge, encoding):
    rgb = _rgb()
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1),
        "mono8": rgb[..., 0],
    }[encoding]
    msg = bridge.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=encoding)
    np.testing.assert_array_equal(image_to_rgb(msg), bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


@pytest.mark.parametrize(
    ("encoding", "dtype"), [("32FC1", np.float32), ("16UC1", np.uint16), ("mono16", np.uint16)]
)
def test_depth_conversions_match_cv_bridge(bridge, encoding, dtype):
    values = (RNG.uniform(0, 60, (48, 80)) * (1000 if dtype == np.uint16 else 1)).astype(dtype)
    msg = bridge.cv2_to_imgmsg(values, encoding=encoding)
    theirs = bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough").astype(np.float32)
    if dtype == np.uint16:
        theirs *= np.float32(0.001)
    np.testing.assert_allclose(depth_image_to_metres(msg), theirs, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_images_match_cv_bridge(bridge, fmt):
    from gausstr_ros.conversions.compressed import compressed_to_rgb

    msg = bridge.cv2_to_compressed_imgmsg(np.ascontiguousarray(_rgb()[..., ::-1]), dst_format=fmt)
    np.testing.assert_array_equal(compressed_to_rgb(msg), bridge.compressed_imgmsg_to_cv2(msg, "rgb8"))


@pytest.mark.parametrize("encoding", ["rgb8", "32FC1", "16UC1"])
def test_image_messages_match_cv_bridge(bridge, encoding):
    from std_msgs.msg import Header

    pixels = {
        "rgb8": _rgb(),
        "32FC1": RNG.uniform(0, 50, (48, 80)).astype(np.float32),
        "16UC1": RNG.integers(0, 65535, (48, 80)).astype(np.uint16),
    }[encoding]
    ours = array_to_image_message(pixels, encoding, Header(frame_id="cam"))
    theirs = bridge.cv2_to_imgmsg(pixels, encoding=encoding, header=Header(frame_id="cam"))
    for field in ("height", "width", "encoding", "is_bigendian", "step"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert bytes(ours.data) == bytes(theirs.data)


# -- sensor_msgs_py ----------------------------------------------------------------------------------


def test_pointclouds_match_sensor_msgs_py():
    point_cloud2 = pytest.importorskip(
        "sensor_msgs_py.point_cloud2", reason="sensor_msgs_py is not installed (ROS 2 Jazzy; not on PyPI)"
    )
    from std_msgs.msg import Header

    from gausstr_core.grid import VoxelGrid
    from gausstr_ros.conversions.occupancy import occupancy_points, pointcloud_message

    grid = VoxelGrid((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), 0.4)
    labels = RNG.integers(0, 4, grid.shape).astype(np.uint8)
    points = occupancy_points(
        labels, grid, ["a", "b", "c"], 3, RNG.uniform(0, 1, grid.shape).astype(np.float32)
    )
    ours = pointcloud_message(points, Header(frame_id="base_link"))
    read = point_cloud2.read_points(ours, field_names=list(points.dtype.names))
    for name in points.dtype.names:
        np.testing.assert_array_equal(np.asarray(read[name]), points[name])
    theirs = point_cloud2.create_cloud(Header(frame_id="base_link"), ours.fields, points.tolist())
    assert (theirs.point_step, theirs.width, theirs.height) == (ours.point_step, ours.width, ours.height)
    assert bytes(theirs.data) == bytes(ours.data)


# -- tf2_ros -----------------------------------------------------------------------------------------


def test_transform_lookups_match_tf2():
    tf2_ros = pytest.importorskip(
        "tf2_ros", reason="tf2_ros is not installed (ROS 2 Jazzy's tf2_ros_py; not on PyPI)"
    )
    from rclpy.time import Time
    from std_msgs.msg import Header

    from gausstr_ros.conversions import ConversionError
    from gausstr_ros.conversions.transforms import matrix_to_transform_message, transform_to_matrix
    from gausstr_ros.node.tf import TransformBuffer

    def random_pose() -> np.ndarray:
        q = RNG.normal(size=4)
        x, y, z, w = q / np.linalg.norm(q)
        m = np.eye(4)
        m[:3, :3] = transform_to_matrix(
            SimpleNamespace(
                translation=SimpleNamespace(x=0.0, y=0.0, z=0.0), rotation=SimpleNamespace(x=x, y=y, z=z, w=w)
            )
        )[:3, :3]
        m[:3, 3] = RNG.normal(size=3)
        return m

    def header(frame: str, stamp_ns: int) -> Header:
        h = Header(frame_id=frame)
        h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        return h

    t0 = 1_700_000_000 * 1_000_000_000
    theirs = tf2_ros.Buffer()
    ours = TransformBuffer()
    edges = [("map", "odom", False), ("odom", "base_link", False), ("base_link", "cam_optical", True)]
    for parent, child, static in edges:
        for k in range(1 if static else 4):
            msg = matrix_to_transform_message(random_pose(), header(parent, t0 + k * 100_000_000), child)
            ours.set_transform_message(msg, static)
            if static:
                theirs.set_transform_static(msg, "test")
            else:
                theirs.set_transform(msg, "test")
    for stamp in (t0 + 50_000_000, t0 + 123_456_789, t0 + 300_000_000):
        for target, source in (("map", "cam_optical"), ("cam_optical", "odom"), ("base_link", "map")):
            got = ours.lookup(target, source, stamp)
            want = transform_to_matrix(theirs.lookup_transform(target, source, Time(nanoseconds=stamp)))
            np.testing.assert_allclose(got, want, atol=1e-9)

    bad = matrix_to_transform_message(np.eye(4), header("map", t0), "bad_frame")
    bad.transform.rotation.x, bad.transform.rotation.w = 0.3, 3.0
    theirs.set_transform_static(bad, "test")  # tf2 logs TF_DENORMALIZED_QUATERNION and ignores it
    assert not theirs.can_transform("map", "bad_frame", Time())
    with pytest.raises(ConversionError, match="TF_DENORMALIZED_QUATERNION"):
        ours.set_transform_message(bad, True)
