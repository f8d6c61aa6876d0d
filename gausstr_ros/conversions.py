"""ROS message <-> numpy conversions used by the occupancy node and the rosbag tools (no node logic).

Readers (``image_to_array``, ``image_to_rgb``, ``depth_image_to_metres``, ``camera_info_to_camera``,
``transform_to_matrix``) accept any object with the fields of the ROS message (rclpy messages,
rosbags-deserialised messages, ``types.SimpleNamespace``), so they work without rclpy. Builders
(``*_message``) import the ROS message classes lazily.

Conventions: quaternions inside gausstr_core are (w, x, y, z); ROS messages carry (x, y, z, w) and are
converted here. Images follow sensor_msgs/Image: ``data`` holds ``height`` rows of ``step`` bytes.
"""

from __future__ import annotations

import array
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gausstr_core.data.occ3d import NUM_OCCUPIED_CLASSES, OCC3D_CLASS_NAMES, OCC3D_COLORS
from gausstr_core.grid import VoxelGrid

# encoding -> (element dtype, channels). Only what the node consumes or produces.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEPTH_ENCODINGS = ("32FC1", "16UC1")

# sensor_msgs/PointField datatypes.
_POINTFIELD_UINT32 = 6
_POINTFIELD_FLOAT32 = 7

# visualization_msgs/Marker constants (kept here so the array preparation needs no ROS import).
_MARKER_SPHERE = 2
_MARKER_ADD = 0
_MARKER_DELETEALL = 3


class ConversionError(ValueError):
    """A message that cannot be converted: the text says what was expected and what came."""


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def _message_bytes(data) -> np.ndarray:
    """(n,) uint8 view of a message's ``data`` (array.array, bytes, bytearray, numpy, list)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.view(np.uint8).ravel()
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)  # a plain list: one copy, only in tests


def image_to_array(msg) -> np.ndarray:
    """View of a sensor_msgs/Image's pixels, shaped by its encoding, without copying when possible.

    Args:
        msg: an Image-like object (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
            ``data``).
    Returns:
        (H, W, 3) uint8 for rgb8/bgr8 (channel order as encoded), (H, W) uint8 for mono8,
        (H, W) float32 for 32FC1, (H, W) uint16 for 16UC1. A view of ``msg.data`` unless the byte
        order differs from this machine's (then a converted copy).
    Raises:
        ConversionError: unsupported encoding, non-positive size, ``step`` shorter than a row, or
            ``data`` not exactly ``step * height`` bytes.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(IMAGE_ENCODINGS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image size must be positive, got {width}x{height} ({encoding})")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is shorter than a row of {width} px x {channels} ch x "
            f"{dtype.itemsize} B = {row_bytes} B ({encoding})"
        )
    raw = _message_bytes(msg.data)
    if raw.size != step * height:
        raise ConversionError(
            f"image data has {raw.size} bytes, expected step * height = {step} * {height} "
            f"= {step * height} ({encoding}, {width}x{height})"
        )
    rows = raw.reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(wire)  # the last axis is contiguous, so this is a view even with row padding
    if wire != dtype.newbyteorder("="):
        pixels = pixels.astype(dtype)
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)


def image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB view of an rgb8, bgr8 or mono8 Image (no copy: bgr8 is a reversed-channel
    view, mono8 a broadcast).

    Raises:
        ConversionError: the encoding is not a colour encoding, or the data is malformed.
    """
    if str(msg.encoding) not in COLOR_ENCODINGS:
        raise ConversionError(
            f"colour image encoding {msg.encoding!r} is not supported; expected one of "
            f"{', '.join(COLOR_ENCODINGS)}"
        )
    pixels = image_to_array(msg)
    if msg.encoding == "bgr8":
        return pixels[..., ::-1]
    if msg.encoding == "mono8":
        return np.broadcast_to(pixels[..., None], (*pixels.shape, 3))
    return pixels


def depth_image_to_metres(msg) -> np.ndarray:
    """(H, W) float32 metric depth of a 32FC1 (metres: a view) or 16UC1 (millimetres: converted) Image.

    Non-finite and non-positive values are returned as they are; ``sanitize_depth`` marks them
    invalid (0).

    Raises:
        ConversionError: the encoding is not a depth encoding, or the data is malformed.
    """
    if str(msg.encoding) not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"depth image encoding {msg.encoding!r} is not supported; expected 32FC1 "
            f"(metres) or 16UC1 (millimetres)"
        )
    pixels = image_to_array(msg)
    if msg.encoding == "16UC1":
        return pixels.astype(np.float32) * np.float32(0.001)
    return pixels


def sanitize_depth(depth: np.ndarray) -> tuple[np.ndarray, float]:
    """Depth with non-finite and non-positive pixels set to 0 (invalid), and the valid fraction.

    Args:
        depth: (H, W) float32 metric depth.
    Returns:
        (H, W) float32 depth (a new array) and the fraction of valid pixels in [0, 1].
    """
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False), float(valid.mean())


def array_to_image_message(pixels: np.ndarray, encoding: str, header):
    """sensor_msgs/Image holding ``pixels`` (one copy into the message buffer).

    Args:
        pixels: (H, W) or (H, W, C) array matching ``encoding`` (e.g. float32 (H, W) for 32FC1).
        encoding: one of ``IMAGE_ENCODINGS``.
        header: std_msgs/Header (frame and stamp).
    """
    from sensor_msgs.msg import Image

    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(IMAGE_ENCODINGS)}"
        )
    dtype, channels = IMAGE_ENCODINGS[encoding]
    expected_dims = 2 if channels == 1 else 3
    if pixels.ndim != expected_dims or (channels > 1 and pixels.shape[2] != channels):
        raise ConversionError(
            f"{encoding} needs an array of shape (H, W{'' if channels == 1 else ', 3'}), got {pixels.shape}"
        )
    if pixels.dtype != dtype:
        raise ConversionError(f"{encoding} needs dtype {dtype}, got {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(np.little_endian is False)
    msg.step = int(pixels.shape[1] * channels * dtype.itemsize)
    msg.data = _array_of("B", pixels)
    return msg


def _array_of(typecode: str, values: np.ndarray) -> array.array:
    """array.array of a contiguous numpy array's bytes: rclpy stores it without per-element checks."""
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


# ---------------------------------------------------------------------------------------------
# Camera intrinsics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraModel:
    """Pinhole model of the images a camera publishes (rectified images are expected).

    Attributes:
        intrinsics: (3, 3) float64 pinhole matrix of the published image (binning and ROI applied).
        width, height: size [px] of the published image these intrinsics describe.
        distorted: the CameraInfo carries non-zero distortion coefficients.
        source: "P" (the rectified projection matrix) or "K" (P was empty).
    """

    intrinsics: np.ndarray
    width: int
    height: int
    distorted: bool
    source: str


def _field(msg, lower: str, upper: str):
    # ROS 2 and rosbags spell the matrices k, d, p; ROS 1 style objects K, D, P.
    return getattr(msg, lower) if hasattr(msg, lower) else getattr(msg, upper)


def camera_info_to_camera(info) -> CameraModel:
    """Pinhole model of a sensor_msgs/CameraInfo.

    The image the node receives is expected to be rectified (e.g. image_proc's ``image_rect``), so
    the intrinsics are the left 3x3 block of P (the projection matrix of the rectified image); K
    is used only when P is all zeros. Binning and a region of interest are applied like
    image_geometry's PinholeCameraModel does.

    Args:
        info: a CameraInfo-like object (``width``, ``height``, ``k``, ``d``, ``p``, optionally
            ``binning_x``, ``binning_y``, ``roi``).
    Raises:
        ConversionError: zero size, or neither P nor K is a valid pinhole matrix.
    """
    width, height = int(info.width), int(info.height)
    if width <= 0 or height <= 0:
        raise ConversionError(
            f"CameraInfo size must be positive, got {width}x{height} (uncalibrated camera?)"
        )
    p = np.asarray(_field(info, "p", "P"), dtype=np.float64).reshape(-1)
    k = np.asarray(_field(info, "k", "K"), dtype=np.float64).reshape(-1)
    if p.size == 12 and np.isfinite(p).all() and p[0] > 0 and p[5] > 0:
        intrinsics, source = p.reshape(3, 4)[:, :3].copy(), "P"
    elif k.size == 9 and np.isfinite(k).all() and k[0] > 0 and k[4] > 0:
        intrinsics, source = k.reshape(3, 3).copy(), "K"
    else:
        raise ConversionError(
            f"CameraInfo has no valid pinhole matrix: P = {p.tolist()}, K = {k.tolist()} "
            f"(focal lengths must be positive and finite)"
        )
    if not np.allclose(intrinsics[2], (0.0, 0.0, 1.0)):
        raise ConversionError(f"CameraInfo {source} last row must be (0, 0, 1), got {intrinsics[2].tolist()}")
    distortion = np.asarray(_field(info, "d", "D"), dtype=np.float64).reshape(-1)
    distorted = bool(distortion.size and np.any(distortion != 0))

    bx = max(int(getattr(info, "binning_x", 0) or 0), 1)
    by = max(int(getattr(info, "binning_y", 0) or 0), 1)
    roi = getattr(info, "roi", None)
    x0 = y0 = 0
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        x0, y0 = int(roi.x_offset), int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    if (bx, by, x0, y0) != (1, 1, 0, 0):
        # The published image is the ROI, downsampled by the binning factors.
        intrinsics[0, 2] -= x0
        intrinsics[1, 2] -= y0
        intrinsics[0] /= bx
        intrinsics[1] /= by
        width, height = width // bx, height // by
    return CameraModel(intrinsics, width, height, distorted, source)


def distortion_warning(info, image_topic: str) -> str | None:
    """A warning when a CameraInfo has non-zero distortion but its image topic does not look rectified.

    image_proc publishes rectified images on ``image_rect`` / ``image_rect_color`` together with the
    original CameraInfo (non-zero D, rectified P); those are fine. Anything else with non-zero D
    is probably a raw, distorted image that the pinhole model does not describe.
    """
    distortion = np.asarray(_field(info, "d", "D"), dtype=np.float64).reshape(-1)
    if not (distortion.size and np.any(distortion != 0)) or "rect" in image_topic:
        return None
    return (
        f"CameraInfo for {image_topic} has non-zero distortion ({info.distortion_model}: "
        f"{np.round(distortion, 4).tolist()}) but the topic does not look rectified; the node expects "
        f"rectified images (image_proc's image_rect) and uses P as a pinhole model"
    )


# ---------------------------------------------------------------------------------------------
# Rotations and transforms
# ---------------------------------------------------------------------------------------------


def quaternion_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices of (..., 4) quaternions (x, y, z, w), normalised here."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) -> (x, y, z, w)."""
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def transform_to_matrix(transform) -> np.ndarray:
    """(4, 4) float64 homogeneous matrix of a geometry_msgs/Transform or TransformStamped.

    Raises:
        ConversionError: non-finite values or a zero-norm quaternion.
    """
    t = transform.transform if hasattr(transform, "transform") else transform
    translation = np.array([t.translation.x, t.translation.y, t.translation.z], dtype=np.float64)
    q = np.array([t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w], dtype=np.float64)
    if not (np.isfinite(translation).all() and np.isfinite(q).all()):
        raise ConversionError(
            f"transform has non-finite values: translation {translation.tolist()}, rotation {q.tolist()}"
        )
    if np.linalg.norm(q) < 1e-9:
        raise ConversionError("transform rotation is a zero quaternion")
    out = np.eye(4)
    out[:3, :3] = quaternion_xyzw_to_matrix(q)
    out[:3, 3] = translation
    return out


def matrix_to_transform_message(matrix: np.ndarray, header, child_frame_id: str):
    """geometry_msgs/TransformStamped of a (4, 4) rigid transform (parent = header.frame_id)."""
    import torch
    from geometry_msgs.msg import TransformStamped

    from gausstr_core.geometry import matrix_to_quaternion

    matrix = np.asarray(matrix, dtype=np.float64)
    w, x, y, z = matrix_to_quaternion(torch.from_numpy(matrix[:3, :3].copy())).tolist()
    msg = TransformStamped()
    msg.header = header
    msg.child_frame_id = child_frame_id
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (
        float(v) for v in matrix[:3, 3]
    )
    msg.transform.rotation.x, msg.transform.rotation.y = x, y
    msg.transform.rotation.z, msg.transform.rotation.w = z, w
    return msg


# ---------------------------------------------------------------------------------------------
# Class colours
# ---------------------------------------------------------------------------------------------

# The Occ3D / SurroundOcc visualisation colours for the Occ3D names, so that a familiar vocabulary
# looks familiar in RViz ("others" is grey here: black vanishes on RViz's background).
_KNOWN_COLORS: dict[str, tuple[int, int, int]] = {
    **dict(zip(OCC3D_CLASS_NAMES[:NUM_OCCUPIED_CLASSES], OCC3D_COLORS[:NUM_OCCUPIED_CLASSES])),
    "others": (128, 128, 128),
}


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class, chosen by name so a class keeps its colour when the
    vocabulary changes: the Occ3D colours for the Occ3D names, a hue hashed from the name otherwise."""
    colors = np.empty((len(class_names), 3), dtype=np.uint8)
    for i, name in enumerate(class_names):
        key = name.strip().lower().replace(" ", "_")
        if key in _KNOWN_COLORS:
            colors[i] = _KNOWN_COLORS[key]
            continue
        hue = (zlib.crc32(key.encode()) % 360) / 60.0
        sat, val = 0.75, 0.95
        c = val * sat
        x = c * (1 - abs(hue % 2 - 1))
        rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
        colors[i] = [round(255 * (v + val - c)) for v in rgb]
    return colors


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(M,) float32 RViz "rgb" values of (M, 3) uint8 colours: 0x00RRGGBB reinterpreted as float32."""
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


# ---------------------------------------------------------------------------------------------
# Outputs: occupancy grid, point cloud, Gaussians, markers
# ---------------------------------------------------------------------------------------------


def _check_grid_array(name: str, values: np.ndarray, grid: VoxelGrid) -> None:
    if tuple(values.shape) != grid.shape:
        raise ConversionError(f"{name} must have the grid's shape {grid.shape}, got {tuple(values.shape)}")


def occupancy_message(
    labels: np.ndarray,
    grid: VoxelGrid,
    class_names: Sequence[str],
    free_label: int,
    header,
    confidence: np.ndarray | None = None,
):
    """gausstr_ros/SemanticOccupancy of a dense label grid.

    Args:
        labels: (X, Y, Z) uint8 class index per voxel, ``free_label`` = free.
        grid: the grid the labels live on (origin = its minimum corner, identity orientation).
        class_names: K names; ``free_label`` must be K.
        header: std_msgs/Header (target frame, input stamp).
        confidence: optional (X, Y, Z) float32 in [0, 1].
    """
    from gausstr_ros.msg import SemanticOccupancy

    _check_grid_array("labels", labels, grid)
    if free_label != len(class_names) or free_label > 255:
        raise ConversionError(
            f"free_label must be len(class_names) = {len(class_names)} <= 255, got {free_label}"
        )
    msg = SemanticOccupancy()
    msg.header = header
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = (float(v) for v in grid.lower)
    msg.origin.orientation.w = 1.0
    msg.resolution = float(grid.voxel_size)
    msg.size_x, msg.size_y, msg.size_z = grid.shape
    msg.labels = _array_of("B", labels.astype(np.uint8, copy=False))
    if confidence is not None:
        _check_grid_array("confidence", confidence, grid)
        msg.confidence = _array_of("f", confidence.astype(np.float32, copy=False))
    msg.free_label = int(free_label)
    msg.class_names = list(class_names)
    return msg


def occupied_voxels(labels: np.ndarray, grid: VoxelGrid, free_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and flat indices of the occupied voxels.

    Args:
        labels: (X, Y, Z) class index per voxel.
    Returns:
        centres (M, 3) float32 [m] in the grid's frame and flat C-order indices (M,) int64.
    """
    _check_grid_array("labels", labels, grid)
    flat = np.flatnonzero(labels.reshape(-1) != free_label)
    index = np.stack(np.unravel_index(flat, grid.shape), axis=-1)
    lower = np.asarray(grid.lower, dtype=np.float64)
    centres = ((index + 0.5) * grid.voxel_size + lower).astype(np.float32)
    return centres, flat


# Point layout of the occupancy cloud: RViz colours by "rgb" and can also colour by "label".
POINTCLOUD_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4"), ("confidence", "<f4")]
)


def occupancy_points(
    labels: np.ndarray,
    grid: VoxelGrid,
    class_names: Sequence[str],
    free_label: int,
    confidence: np.ndarray | None = None,
) -> np.ndarray:
    """(M,) structured array (POINTCLOUD_DTYPE) of the occupied voxel centres with label and colour."""
    centres, flat = occupied_voxels(labels, grid, free_label)
    points = np.empty(len(flat), dtype=POINTCLOUD_DTYPE)
    point_labels = labels.reshape(-1)[flat]
    if len(flat) and int(point_labels.max()) >= len(class_names):
        raise ConversionError(
            f"labels must be < {len(class_names)} classes or {free_label} (free), "
            f"got {int(point_labels.max())}"
        )
    points["x"], points["y"], points["z"] = centres.T
    points["rgb"] = pack_rgb(class_colors(class_names))[point_labels]
    points["label"] = point_labels
    points["confidence"] = confidence.reshape(-1)[flat] if confidence is not None else 1.0
    return points


def pointcloud_message(points: np.ndarray, header):
    """sensor_msgs/PointCloud2 (unorganised, little-endian) of a structured POINTCLOUD_DTYPE array."""
    from sensor_msgs.msg import PointCloud2, PointField

    if points.dtype != POINTCLOUD_DTYPE:
        raise ConversionError(f"points must have dtype {POINTCLOUD_DTYPE}, got {points.dtype}")
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, len(points)
    datatype = {"f": _POINTFIELD_FLOAT32, "u": _POINTFIELD_UINT32}
    msg.fields = [
        PointField(
            name=name,
            offset=POINTCLOUD_DTYPE.fields[name][1],
            datatype=datatype[POINTCLOUD_DTYPE.fields[name][0].kind],
            count=1,
        )
        for name in POINTCLOUD_DTYPE.names
    ]
    msg.is_bigendian = False
    msg.point_step = POINTCLOUD_DTYPE.itemsize
    msg.row_step = msg.point_step * len(points)
    msg.data = _array_of("B", points.view(np.uint8))
    msg.is_dense = True
    return msg


def pointcloud_to_points(msg) -> np.ndarray:
    """(M,) structured array of a PointCloud2 with x, y, z, rgb, label, confidence fields (any layout
    whose fields are all float32 / uint32), e.g. to read the node's output back."""
    if msg.is_bigendian:
        raise ConversionError("big-endian PointCloud2 is not supported")
    kinds = {_POINTFIELD_FLOAT32: "<f4", _POINTFIELD_UINT32: "<u4"}
    for f in msg.fields:
        if f.datatype not in kinds or f.count != 1:
            raise ConversionError(
                f"PointCloud2 field {f.name!r}: datatype {f.datatype} x {f.count} not supported"
            )
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [kinds[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    raw = _message_bytes(msg.data)
    count = int(msg.width) * int(msg.height)
    if raw.size != count * msg.point_step:
        raise ConversionError(f"PointCloud2 data has {raw.size} bytes, expected {count} x {msg.point_step}")
    return raw.view(dtype)


def gaussian_array_message(
    means: np.ndarray,
    scales: np.ndarray,
    rotations_wxyz: np.ndarray,
    opacities: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    class_names: Sequence[str],
    header,
):
    """gausstr_ros/GaussianArray of N Gaussians.

    Args:
        means: (N, 3) [m]; scales: (N, 3) standard deviations [m]; rotations_wxyz: (N, 4) unit
            quaternions (w, x, y, z) (written as x, y, z, w); opacities: (N,); labels: (N,) class
            index; confidence: (N,) probability of that class.
    """
    from gausstr_ros.msg import GaussianArray

    n = means.shape[0]
    shapes = {
        "means": (means, (n, 3)),
        "scales": (scales, (n, 3)),
        "rotations_wxyz": (rotations_wxyz, (n, 4)),
        "opacities": (opacities, (n,)),
        "labels": (labels, (n,)),
        "confidence": (confidence, (n,)),
    }
    for name, (values, shape) in shapes.items():
        if tuple(values.shape) != shape:
            raise ConversionError(f"{name} must be {shape}, got {tuple(values.shape)}")
    if n and int(labels.max()) >= len(class_names):
        raise ConversionError(f"Gaussian labels must be < {len(class_names)}, got {int(labels.max())}")
    msg = GaussianArray()
    msg.header = header
    msg.means = _array_of("f", means.astype(np.float32, copy=False))
    msg.scales = _array_of("f", scales.astype(np.float32, copy=False))
    msg.rotations = _array_of("f", wxyz_to_xyzw(rotations_wxyz).astype(np.float32, copy=False))
    msg.opacities = _array_of("f", opacities.astype(np.float32, copy=False))
    msg.labels = _array_of("B", labels.astype(np.uint8, copy=False))
    msg.confidence = _array_of("f", confidence.astype(np.float32, copy=False))
    msg.class_names = list(class_names)
    return msg


@dataclass
class MarkerData:
    """Per-marker arrays of Gaussian ellipsoids, ready to be written into SPHERE markers.

    Attributes:
        index: (M,) index of each marker's Gaussian in the input.
        positions: (M, 3) centres [m].
        orientations: (M, 4) quaternions (x, y, z, w) of the principal axes.
        diameters: (M, 3) ellipsoid diameters along the principal axes = 2 * k * sigma [m].
        colors: (M, 4) float32 RGBA in [0, 1]; alpha = opacity.
    """

    index: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    diameters: np.ndarray
    colors: np.ndarray


def gaussian_marker_data(
    means: np.ndarray,
    scales: np.ndarray,
    rotations_wxyz: np.ndarray,
    opacities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    max_markers: int,
    sigma_extent: float = 2.0,
    min_diameter: float = 0.01,
) -> MarkerData:
    """Ellipsoid marker arrays for the ``max_markers`` most opaque Gaussians.

    A Gaussian with covariance R diag(s)^2 R^T is drawn as the ellipsoid at ``sigma_extent``
    standard deviations: orientation R (its principal axes), diameters 2 * sigma_extent * s.

    Args:
        means: (N, 3); scales: (N, 3) standard deviations; rotations_wxyz: (N, 4); opacities: (N,);
            labels: (N,) class index into ``class_names``.
        max_markers: keep at most this many (highest opacity first).
        sigma_extent: k, the ellipsoid's radius in standard deviations.
        min_diameter: lower bound [m] so that degenerate Gaussians stay visible (RViz drops 0 scale).
    """
    if max_markers < 0:
        raise ConversionError(f"max_markers must be >= 0, got {max_markers}")
    n = means.shape[0]
    if max_markers == 0:
        index = np.empty(0, dtype=np.int64)
    elif n > max_markers:
        index = np.argpartition(-opacities, max_markers - 1)[:max_markers]
        index = index[np.argsort(-opacities[index], kind="stable")]
    else:
        index = np.argsort(-opacities, kind="stable")
    rgb = class_colors(class_names).astype(np.float32) / 255.0
    colors = np.empty((len(index), 4), dtype=np.float32)
    colors[:, :3] = rgb[labels[index]]
    colors[:, 3] = np.clip(opacities[index], 0.0, 1.0)
    q = rotations_wxyz[index].astype(np.float64)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return MarkerData(
        index=index,
        positions=means[index].astype(np.float64),
        orientations=wxyz_to_xyzw(q),
        diameters=np.maximum(2.0 * sigma_extent * scales[index].astype(np.float64), min_diameter),
        colors=colors,
    )


def gaussian_marker_array(data: MarkerData, header, namespace: str = "gaussians"):
    """visualization_msgs/MarkerArray: a DELETEALL marker, then one SPHERE per Gaussian of ``data``.

    DELETEALL first removes the previous frame's markers when fewer are published now.
    """
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker()
    clear.header = header
    clear.ns = namespace
    clear.action = _MARKER_DELETEALL
    markers = [clear]
    # Plain Python floats: the message setters are cheapest with them (see benchmarks/node_latency.py).
    positions, orientations = data.positions.tolist(), data.orientations.tolist()
    diameters, colors = data.diameters.tolist(), data.colors.tolist()
    for i in range(len(positions)):
        m = Marker(header=header, ns=namespace, id=i, type=_MARKER_SPHERE, action=_MARKER_ADD)
        p, q, d, c = positions[i], orientations[i], diameters[i], colors[i]
        m.pose = Pose(
            position=Point(x=p[0], y=p[1], z=p[2]), orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
        )
        m.scale = Vector3(x=d[0], y=d[1], z=d[2])
        m.color = ColorRGBA(r=c[0], g=c[1], b=c[2], a=c[3])
        markers.append(m)
    return MarkerArray(markers=markers)


# Fields of a SPHERE marker that change from one Gaussian to the next, with their CDR types.
_MARKER_VARYING_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "<i4"),
    ("pose.position.x", "<f8"),
    ("pose.position.y", "<f8"),
    ("pose.position.z", "<f8"),
    ("pose.orientation.x", "<f8"),
    ("pose.orientation.y", "<f8"),
    ("pose.orientation.z", "<f8"),
    ("pose.orientation.w", "<f8"),
    ("scale.x", "<f8"),
    ("scale.y", "<f8"),
    ("scale.z", "<f8"),
    ("color.r", "<f4"),
    ("color.g", "<f4"),
    ("color.b", "<f4"),
    ("color.a", "<f4"),
)
_marker_layouts: dict[tuple[str, str], tuple[int, dict[str, int]] | None] = {}


def _sphere_marker(header, namespace: str, values: dict[str, float] | None = None):
    from visualization_msgs.msg import Marker

    m = Marker(header=header, ns=namespace, id=0, type=_MARKER_SPHERE, action=_MARKER_ADD)
    for name, value in (values or {}).items():
        target = m
        *path, last = name.split(".")
        for p in path:
            target = getattr(target, p)
        setattr(target, last, value)
    return m


def _marker_cdr_layout(header, namespace: str) -> tuple[int, dict[str, int]] | None:
    """(record size, field -> byte offset in the record) of one SPHERE marker inside a serialised
    MarkerArray, found by serialising markers with sentinel values; None when the record size is
    not a multiple of 8 (records would differ in padding) or a sentinel is not unique."""
    from rclpy.serialization import serialize_message
    from visualization_msgs.msg import Marker, MarkerArray

    key = (header.frame_id, namespace)
    if key in _marker_layouts:
        return _marker_layouts[key]
    clear = Marker(header=header, ns=namespace, action=_MARKER_DELETEALL)
    plain = _sphere_marker(header, namespace)
    one = serialize_message(MarkerArray(markers=[clear, plain]))
    two = serialize_message(MarkerArray(markers=[clear, plain, plain]))
    size = len(two) - len(one)
    sentinels = {
        name: (
            0x1A2B3C4D
            if dtype == "<i4"
            else 1000.0 + 17.0 * k + 1.0 / 7.0
            if dtype == "<f8"
            else float(np.float32(0.1234567 + 0.0101 * k))
        )
        for k, (name, dtype) in enumerate(_MARKER_VARYING_FIELDS)
    }
    marked = serialize_message(MarkerArray(markers=[clear, _sphere_marker(header, namespace, sentinels)]))
    layout = None
    if size % 8 == 0 and len(marked) == len(one) and one[:2] == b"\x00\x01":  # CDR little-endian
        record = marked[-size:]
        offsets = {}
        for name, dtype in _MARKER_VARYING_FIELDS:
            pattern = np.array([sentinels[name]], dtype=dtype).tobytes()
            first = record.find(pattern)
            if first < 0 or record.find(pattern, first + 1) >= 0:
                break
            offsets[name] = first
        else:
            layout = (size, offsets)
    _marker_layouts[key] = layout
    return layout


def gaussian_marker_array_cdr(data: MarkerData, header, namespace: str = "gaussians") -> bytes:
    """The serialised (CDR) MarkerArray that ``gaussian_marker_array`` would give, byte for byte,
    built with numpy: ``Publisher.publish`` accepts it directly.

    Building and serialising thousands of Marker objects costs ~0.1 ms each in Python; here one
    marker record is serialised by rclpy and tiled, and the varying fields (id, pose, scale, colour)
    are written at their byte offsets. Every record has the same alignment because the record size
    is a multiple of 8 (checked; otherwise this falls back to rclpy's serialiser).
    """
    from rclpy.serialization import serialize_message
    from visualization_msgs.msg import Marker, MarkerArray

    layout = _marker_cdr_layout(header, namespace)
    if layout is None:
        return serialize_message(gaussian_marker_array(data, header, namespace))
    size, offsets = layout
    clear = Marker(header=header, ns=namespace, action=_MARKER_DELETEALL)
    one = serialize_message(MarkerArray(markers=[clear, _sphere_marker(header, namespace)]))
    n = len(data.index)
    prefix = bytearray(one[:-size])
    prefix[4:8] = np.array([n + 1], "<u4").tobytes()  # the sequence length after the encapsulation
    body = np.tile(np.frombuffer(one[-size:], np.uint8), (n, 1))
    columns = {"id": np.arange(n)}
    for axis, name in enumerate("xyz"):
        columns[f"pose.position.{name}"] = data.positions[:, axis]
        columns[f"scale.{name}"] = data.diameters[:, axis]
    for axis, name in enumerate("xyzw"):
        columns[f"pose.orientation.{name}"] = data.orientations[:, axis]
    for axis, name in enumerate("rgba"):
        columns[f"color.{name}"] = data.colors[:, axis]
    for name, dtype in _MARKER_VARYING_FIELDS:
        offset, width = offsets[name], np.dtype(dtype).itemsize
        body[:, offset : offset + width].view(dtype)[:, 0] = columns[name]
    return bytes(prefix) + body.tobytes()
