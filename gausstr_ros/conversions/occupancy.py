"""Occupancy outputs: gausstr_ros/SemanticOccupancy of a label grid, and the sensor_msgs/PointCloud2 of
its occupied voxels (coloured by class for RViz)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gausstr_core.colors import class_colors
from gausstr_core.grid import VoxelGrid
from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.buffers import array_of, message_bytes

# sensor_msgs/PointField datatypes.
_POINTFIELD_UINT32 = 6


_POINTFIELD_FLOAT32 = 7


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(M,) float32 RViz "rgb" values of (M, 3) uint8 colours: 0x00RRGGBB reinterpreted as float32."""
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


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
    msg.labels = array_of("B", labels.astype(np.uint8, copy=False))
    if confidence is not None:
        _check_grid_array("confidence", confidence, grid)
        msg.confidence = array_of("f", confidence.astype(np.float32, copy=False))
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
    msg.data = array_of("B", points.view(np.uint8))
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
    raw = message_bytes(msg.data)
    count = int(msg.width) * int(msg.height)
    if raw.size != count * msg.point_step:
        raise ConversionError(f"PointCloud2 data has {raw.size} bytes, expected {count} x {msg.point_step}")
    return raw.view(dtype)
