"""gausstr_ros.conversions: images by encoding (zero-copy where possible), CameraInfo, transforms and the
output message builders, against simple references."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gausstr_core.colors import class_colors
from gausstr_core.geometry import build_covariance
from gausstr_core.grid import VoxelGrid
from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.camera import camera_info_to_camera, distortion_warning
from gausstr_ros.conversions.gaussians import gaussian_marker_data
from gausstr_ros.conversions.images import depth_image_to_metres, image_to_array, image_to_rgb, sanitize_depth
from gausstr_ros.conversions.occupancy import POINTCLOUD_DTYPE, occupancy_points, occupied_voxels, pack_rgb
from gausstr_ros.conversions.transforms import quaternion_xyzw_to_matrix, transform_to_matrix, wxyz_to_xyzw
from gausstr_testing.ros_message_like import camera_info_like, image_like

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "encoding,dtype,channels",
    [
        ("rgb8", np.uint8, 3),
        ("bgr8", np.uint8, 3),
        ("mono8", np.uint8, 1),
        ("32FC1", np.float32, 1),
        ("16UC1", np.uint16, 1),
    ],
)
@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_to_array_round_trips_every_encoding(encoding, dtype, channels, pad, bigendian):
    shape = (7, 11, channels) if channels > 1 else (7, 11)
    if dtype == np.float32:
        pixels = RNG.normal(size=shape).astype(dtype)
    else:
        pixels = RNG.integers(0, np.iinfo(dtype).max, size=shape).astype(dtype)
    msg = image_like(pixels, encoding, pad=pad, bigendian=bigendian)
    out = image_to_array(msg)
    np.testing.assert_array_equal(out, pixels)
    assert out.dtype == np.dtype(dtype)
    if not bigendian or dtype == np.uint8:
        # a view of the message buffer, not a copy
        assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_color_views_are_zero_copy_and_correct():
    rgb = RNG.integers(0, 255, size=(4, 6, 3)).astype(np.uint8)
    bgr_msg = image_like(rgb[..., ::-1].copy(), "bgr8")
    out = image_to_rgb(bgr_msg)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(bgr_msg.data, np.uint8))
    mono = rgb[..., 0].copy()
    out = image_to_rgb(image_like(mono, "mono8"))
    assert out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, axis=2))


def test_image_errors_say_what_was_expected():
    good = image_like(np.zeros((4, 6, 3), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match="unsupported image encoding 'rgba16'"):
        image_to_array(SimpleNamespace(**{**vars(good), "encoding": "rgba16"}))
    with pytest.raises(ConversionError, match="step 10 is shorter than a row"):
        image_to_array(SimpleNamespace(**{**vars(good), "step": 10}))
    with pytest.raises(ConversionError, match="expected step \\* height"):
        image_to_array(SimpleNamespace(**{**vars(good), "height": 5}))
    with pytest.raises(ConversionError, match="size must be positive"):
        image_to_array(SimpleNamespace(**{**vars(good), "width": 0}))
    with pytest.raises(ConversionError, match="colour image encoding '32FC1'"):
        image_to_rgb(image_like(np.zeros((2, 2), np.float32), "32FC1"))
    with pytest.raises(ConversionError, match="depth image encoding 'rgb8'"):
        depth_image_to_metres(good)


def test_depth_encodings_and_invalid_pixels():
    mm = np.array([[0, 1500], [65535, 250]], np.uint16)
    np.testing.assert_allclose(depth_image_to_metres(image_like(mm, "16UC1")), mm.astype(np.float32) / 1000)
    metres = np.array([[1.5, np.nan], [np.inf, -2.0]], np.float32)
    msg = image_like(metres, "32FC1")
    raw = depth_image_to_metres(msg)
    assert np.shares_memory(raw, np.frombuffer(msg.data, np.uint8))
    clean, valid = sanitize_depth(raw)
    np.testing.assert_array_equal(clean, [[1.5, 0], [0, 0]])
    assert valid == 0.25
    assert np.isnan(raw[0, 1])  # the message is left untouched


def test_rosbags_messages_are_accepted():
    """The readers take rosbags-deserialised messages (the bag tools use them)."""
    pytest.importorskip("rosbags", reason="rosbags is not installed")
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (
        ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    pixels = RNG.integers(0, 255, size=(3, 5, 3)).astype(np.uint8)
    msg = Image(
        header=Header(stamp=Time(sec=1, nanosec=2), frame_id="cam"),
        height=3,
        width=5,
        encoding="bgr8",
        is_bigendian=0,
        step=15,
        data=pixels.reshape(-1).copy(),
    )
    np.testing.assert_array_equal(image_to_rgb(msg), pixels[..., ::-1])
    raw = ts.serialize_cdr(msg, "sensor_msgs/msg/Image")
    back = ts.deserialize_cdr(raw, "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_rgb(back), pixels[..., ::-1])


def test_camera_info_prefers_rectified_p_and_falls_back_to_k():
    k = (500.0, 0, 320, 0, 510.0, 240, 0, 0, 1)
    p = (450.0, 0, 300, 0, 0, 455.0, 230, 0, 0, 0, 1, 0)
    cam = camera_info_to_camera(camera_info_like(k=k, p=p))
    np.testing.assert_allclose(cam.intrinsics, [[450, 0, 300], [0, 455, 230], [0, 0, 1]])
    assert cam.source == "P" and (cam.width, cam.height) == (640, 480)
    cam = camera_info_to_camera(camera_info_like(k=k, p=(0.0,) * 12))
    np.testing.assert_allclose(cam.intrinsics, np.reshape(k, (3, 3)))
    assert cam.source == "K"


def test_camera_info_binning_and_roi_follow_image_geometry():
    cam = camera_info_to_camera(camera_info_like(binning=(2, 2), roi=(100, 40, 400, 300)))
    # cx' = (cx - x0) / bx, fx' = fx / bx, size = roi / binning
    np.testing.assert_allclose(cam.intrinsics, [[250, 0, 110], [0, 255, 100], [0, 0, 1]])
    assert (cam.width, cam.height) == (200, 150)


def test_camera_info_errors_and_distortion_warning():
    with pytest.raises(ConversionError, match="no valid pinhole matrix"):
        camera_info_to_camera(camera_info_like(k=(0.0,) * 9, p=(0.0,) * 12))
    with pytest.raises(ConversionError, match="size must be positive"):
        camera_info_to_camera(camera_info_like(width=0))
    distorted = camera_info_like(d=(0.1, -0.02, 0, 0, 0))
    assert camera_info_to_camera(distorted).distorted
    assert "rectified" in distortion_warning(distorted, "/cam/image_raw")
    assert distortion_warning(distorted, "/cam/image_rect") is None
    assert distortion_warning(camera_info_like(), "/cam/image_raw") is None


def random_quaternions(n: int) -> np.ndarray:
    q = RNG.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quaternions_match_transforms3d():
    from transforms3d.quaternions import quat2mat

    q = random_quaternions(50)  # x, y, z, w
    ours = quaternion_xyzw_to_matrix(q)
    ref = np.stack([quat2mat([w, x, y, z]) for x, y, z, w in q])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_array_equal(wxyz_to_xyzw(np.array([1.0, 2, 3, 4])), [2, 3, 4, 1])


@pytest.mark.ros
def test_transform_to_matrix_and_back():
    from std_msgs.msg import Header

    from gausstr_ros.conversions.transforms import matrix_to_transform_message

    for x, y, z, w in random_quaternions(10):
        t = SimpleNamespace(
            translation=SimpleNamespace(x=1.0, y=-2.0, z=0.5), rotation=SimpleNamespace(x=x, y=y, z=z, w=w)
        )
        m = transform_to_matrix(SimpleNamespace(transform=t))
        np.testing.assert_allclose(m[:3, 3], [1, -2, 0.5])
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
        back = transform_to_matrix(matrix_to_transform_message(m, Header(frame_id="a"), "b"))
        np.testing.assert_allclose(back, m, atol=1e-9)
    bad = SimpleNamespace(
        translation=SimpleNamespace(x=np.nan, y=0.0, z=0.0),
        rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0),
    )
    with pytest.raises(ConversionError, match="non-finite"):
        transform_to_matrix(bad)
    zero = SimpleNamespace(
        translation=SimpleNamespace(x=0.0, y=0.0, z=0.0), rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=0.0)
    )
    with pytest.raises(ConversionError, match="zero quaternion"):
        transform_to_matrix(zero)


@pytest.mark.parametrize(
    ("xyzw", "accepted"),
    [
        ((0.0, 0.0, 0.0, 1.0), True),
        ((0.0, 0.0, 0.0, 1.004), True),  # squared norm 1.008: within tf2's 0.01
        ((0.0, 0.0, 0.0, 0.996), True),
        ((0.0, 0.0, 0.0, 1.006), False),  # 1.012
        ((0.3, 0.1, 0.2, 3.0), False),  # the adversarial test's quaternion
        ((0.5, 0.5, 0.5, 0.5), True),
    ],
)
def test_quaternions_off_unit_length_are_refused_like_tf2(xyzw, accepted):
    x, y, z, w = xyzw
    t = SimpleNamespace(
        translation=SimpleNamespace(x=0.0, y=0.0, z=0.0), rotation=SimpleNamespace(x=x, y=y, z=z, w=w)
    )
    if accepted:
        m = transform_to_matrix(t)
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    else:
        with pytest.raises(ConversionError, match=r"not a unit quaternion.*TF_DENORMALIZED_QUATERNION"):
            transform_to_matrix(t)


def test_class_colors_follow_names_not_positions():
    a = class_colors(["car", "road", "my new thing"])
    b = class_colors(["my new thing", "car"])
    np.testing.assert_array_equal(a[0], [0, 150, 245])  # Occ3D car
    np.testing.assert_array_equal(a[2], b[0])
    np.testing.assert_array_equal(a[0], b[1])
    assert a.dtype == np.uint8


def test_pack_rgb_is_the_rviz_bit_layout():
    packed = pack_rgb(np.array([[255, 0, 0], [1, 2, 3]], np.uint8))
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed.view(np.uint32), [0xFF0000, 0x010203])


def test_occupied_voxels_match_a_loop_reference():
    grid = VoxelGrid((-2.0, -1.0, 0.0, 2.0, 1.0, 0.8), 0.4)
    labels = RNG.integers(0, 4, size=grid.shape).astype(np.uint8)  # 3 = free
    centres, flat = occupied_voxels(labels, grid, free_label=3)
    grid_centres = grid.centers(dtype=torch.float64).numpy()
    ref_centres, ref_flat = [], []
    for ix in range(grid.shape[0]):
        for iy in range(grid.shape[1]):
            for iz in range(grid.shape[2]):
                if labels[ix, iy, iz] != 3:
                    ref_centres.append(grid_centres[ix, iy, iz])
                    ref_flat.append((ix * grid.shape[1] + iy) * grid.shape[2] + iz)
    np.testing.assert_array_equal(flat, ref_flat)
    np.testing.assert_allclose(centres, np.array(ref_centres), atol=1e-6)


@pytest.mark.ros
def test_occupancy_message_layout_and_pointcloud_round_trip():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from gausstr_ros.conversions.occupancy import occupancy_message, pointcloud_message, pointcloud_to_points
    from gausstr_ros.msg import SemanticOccupancy

    grid = VoxelGrid((-2.0, -1.0, 0.0, 2.0, 1.0, 0.8), 0.4)
    names = ["car", "road", "tree"]
    labels = RNG.integers(0, 4, size=grid.shape).astype(np.uint8)
    confidence = RNG.random(grid.shape, dtype=np.float32)
    header = Header(frame_id="base_link")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    sent = occupancy_message(labels, grid, names, 3, header, confidence)
    msg = deserialize_message(serialize_message(sent), SemanticOccupancy)
    assert (msg.size_x, msg.size_y, msg.size_z) == grid.shape
    np.testing.assert_array_equal(np.asarray(msg.labels).reshape(grid.shape), labels)
    np.testing.assert_array_equal(np.asarray(msg.confidence).reshape(grid.shape), confidence)
    assert (msg.origin.position.x, msg.origin.position.y, msg.origin.position.z) == (-2.0, -1.0, 0.0)
    assert msg.free_label == 3 and list(msg.class_names) == names and msg.header.frame_id == "base_link"
    with pytest.raises(ConversionError, match="free_label"):
        occupancy_message(labels, grid, names, 4, header)

    points = occupancy_points(labels, grid, names, 3, confidence)
    cloud = deserialize_message(serialize_message(pointcloud_message(points, header)), PointCloud2)
    assert cloud.point_step == POINTCLOUD_DTYPE.itemsize and cloud.width == (labels != 3).sum()
    assert {f.name for f in cloud.fields} == {"x", "y", "z", "rgb", "label", "confidence"}
    back = pointcloud_to_points(cloud)
    np.testing.assert_array_equal(back["label"], labels[labels != 3])
    colors = class_colors(names)[labels[labels != 3]]
    np.testing.assert_array_equal(back["rgb"].view(np.uint32), pack_rgb(colors).view(np.uint32))
    np.testing.assert_array_equal(back["confidence"], confidence[labels != 3])


def gaussian_arrays(n: int):
    q = random_quaternions(n)[:, [3, 0, 1, 2]].astype(np.float32)  # w, x, y, z
    return (
        RNG.normal(size=(n, 3)).astype(np.float32),
        RNG.uniform(0.05, 1, (n, 3)).astype(np.float32),
        q,
        RNG.random(n, dtype=np.float32),
        RNG.integers(0, 3, n).astype(np.uint8),
    )


@pytest.mark.ros
def test_gaussian_array_message_reorders_quaternions():
    from std_msgs.msg import Header

    from gausstr_ros.conversions.gaussians import gaussian_array_message

    means, scales, rot, opacity, labels = gaussian_arrays(20)
    conf = RNG.random(20, dtype=np.float32)
    msg = gaussian_array_message(means, scales, rot, opacity, labels, conf, ["a", "b", "c"], Header())
    np.testing.assert_array_equal(np.asarray(msg.rotations).reshape(-1, 4), rot[:, [1, 2, 3, 0]])
    np.testing.assert_array_equal(np.asarray(msg.means).reshape(-1, 3), means)
    with pytest.raises(ConversionError, match="labels must be < 2"):
        gaussian_array_message(means, scales, rot, opacity, labels, conf, ["a", "b"], Header())


def test_markers_reproduce_the_covariance_and_keep_the_most_opaque():
    n, k = 200, 2.0
    means, scales, rot, opacity, labels = gaussian_arrays(n)
    data = gaussian_marker_data(
        means, scales, rot, opacity, labels, ["a", "b", "c"], max_markers=50, sigma_extent=k, min_diameter=0.0
    )
    assert len(data.index) == 50
    np.testing.assert_array_equal(np.sort(data.index), np.sort(np.argsort(-opacity)[:50]))
    assert np.all(np.diff(opacity[data.index]) <= 0)
    # Ellipsoid (orientation, diameters) -> covariance equals R S S^T R^T of the Gaussian.
    r = quaternion_xyzw_to_matrix(data.orientations)
    sigma = data.diameters / (2 * k)
    cov = r @ (sigma[:, :, None] ** 2 * np.transpose(r, (0, 2, 1)))
    ref = build_covariance(
        torch.from_numpy(scales[data.index]).double(), torch.from_numpy(rot[data.index]).double()
    ).numpy()
    np.testing.assert_allclose(cov, ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(data.colors[:, 3], opacity[data.index])
    np.testing.assert_allclose(data.positions, means[data.index])


@pytest.mark.ros
def test_marker_array_starts_with_deleteall():
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    from gausstr_ros.conversions.gaussians import gaussian_marker_array

    means, scales, rot, opacity, labels = gaussian_arrays(30)
    data = gaussian_marker_data(means, scales, rot, opacity, labels, ["a", "b", "c"], max_markers=1000)
    array_msg = gaussian_marker_array(data, Header(frame_id="base_link"))
    assert array_msg.markers[0].action == Marker.DELETEALL
    spheres = array_msg.markers[1:]
    assert len(spheres) == 30 and all(m.type == Marker.SPHERE and m.action == Marker.ADD for m in spheres)
    assert len({m.id for m in spheres}) == 30
    m = spheres[0]
    assert m.header.frame_id == "base_link"
    np.testing.assert_allclose([m.scale.x, m.scale.y, m.scale.z], data.diameters[0])
    np.testing.assert_allclose(
        [m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w],
        data.orientations[0],
    )
    assert gaussian_marker_data(means, scales, rot, opacity, labels, ["a", "b", "c"], 0).index.size == 0


@pytest.mark.ros
def test_array_to_image_message_round_trip():
    from std_msgs.msg import Header

    from gausstr_ros.conversions.images import array_to_image_message

    depth = RNG.random((5, 7), dtype=np.float32)
    msg = array_to_image_message(depth, "32FC1", Header(frame_id="cam"))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 28, "32FC1")
    np.testing.assert_array_equal(image_to_array(msg), depth)
    with pytest.raises(ConversionError, match="needs dtype float32"):
        array_to_image_message(depth.astype(np.float64), "32FC1", Header())


@pytest.mark.ros
@pytest.mark.parametrize("frame_id", ["b", "base_link", "a_much_longer_frame_name_1"])
@pytest.mark.parametrize("namespace", ["gaussians", "g"])
def test_numpy_serialised_markers_equal_the_message_path(frame_id, namespace):
    """The CDR bytes built with numpy deserialise to exactly the MarkerArray of the reference builder
    (padding bytes may differ: rclpy leaves them uninitialised)."""
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from gausstr_ros.conversions.gaussians import (
        _marker_cdr_layout,
        gaussian_marker_array,
        gaussian_marker_array_cdr,
    )

    header = Header(frame_id=frame_id)
    if (frame_id, namespace) == ("base_link", "gaussians"):
        assert _marker_cdr_layout(header, namespace) is not None  # the numpy path, not the fallback
    header.stamp.sec, header.stamp.nanosec = 1_700_000_123, 456
    for n in (0, 1, 37):
        means, scales, rot, opacity, labels = gaussian_arrays(n)
        data = gaussian_marker_data(means, scales, rot, opacity, labels, ["a", "b", "c"], max_markers=1000)
        fast = deserialize_message(gaussian_marker_array_cdr(data, header, namespace), MarkerArray)
        assert fast == gaussian_marker_array(data, header, namespace)
        assert len(fast.markers) == n + 1
