"""Rotations and transforms: quaternions (x, y, z, w) of ROS messages, geometry_msgs/Transform(Stamped)
<-> 4 x 4 matrices."""

from __future__ import annotations

import numpy as np

from gausstr_ros.conversions import ConversionError


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


# tf2's tolerance on a transform's quaternion (ros2/geometry2 jazzy, tf2/src/buffer_core.cpp:
# QUATERNION_NORMALIZATION_TOLERANCE = 10e-3): BufferCore::setTransform ignores a transform with
# |x^2 + y^2 + z^2 + w^2 - 1| >= 0.01 ("TF_DENORMALIZED_QUATERNION").
QUATERNION_NORMALIZATION_TOLERANCE = 10e-3


def transform_to_matrix(transform) -> np.ndarray:
    """(4, 4) float64 homogeneous matrix of a geometry_msgs/Transform or TransformStamped.

    Like tf2, a quaternion whose squared norm is off 1 by ``QUATERNION_NORMALIZATION_TOLERANCE`` or more
    is refused (normalising it silently would move the camera); a smaller error is normalised away.

    Raises:
        ConversionError: non-finite values, a zero-norm quaternion, or one that is not unit length.
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
    norm2 = float(q @ q)
    if not abs(norm2 - 1.0) < QUATERNION_NORMALIZATION_TOLERANCE:
        raise ConversionError(
            f"transform rotation (x, y, z, w) = {q.tolist()} is not a unit quaternion (squared norm "
            f"{norm2:.6g}; tf2 ignores transforms off by {QUATERNION_NORMALIZATION_TOLERANCE:g} or more: "
            f"TF_DENORMALIZED_QUATERNION)"
        )
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
