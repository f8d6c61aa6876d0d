"""Camera and rotation geometry shared by the model, renderer, voxelizer and data code.

Conventions used everywhere in gausstr_core:

* Camera frame: OpenCV / ROS optical frame (x right, y down, z forward), metres.
* Ego frame (the node's target frame): x forward, y left, z up (REP-103 ``base_link``, nuScenes ego).
* ``cam_to_ego``: (..., 4, 4) homogeneous transform taking camera-frame points to the ego frame.
* ``intrinsics``: (..., 3, 3) pinhole matrix of the *original* image, OpenCV/ROS CameraInfo
  convention: pixel (u, v, 1) ~ K @ (x/z, y/z, 1), the centre of the top-left pixel at (0, 0).
* ``image_aug``: (..., 3, 3) homogeneous 2D affine map from original image pixels to network-input
  pixels (resize, crop, flip). The network's effective intrinsics are ``image_aug @ intrinsics``.
* Quaternions: (..., 4) in (w, x, y, z) order (gsplat's order); ROS messages use (x, y, z, w) and
  are converted at the ROS boundary only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quaternion_to_matrix(quaternions: Tensor) -> Tensor:
    """Rotation matrices of unit quaternions.

    Args:
        quaternions: (..., 4) quaternions (w, x, y, z); normalised here, need not be unit.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    q = quaternions / quaternions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    two = 2.0
    m = torch.stack(
        [
            1 - two * (y * y + z * z),
            two * (x * y - w * z),
            two * (x * z + w * y),
            two * (x * y + w * z),
            1 - two * (x * x + z * z),
            two * (y * z - w * x),
            two * (x * z - w * y),
            two * (y * z + w * x),
            1 - two * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(matrices: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) with w >= 0 of rotation matrices (vectorised, branch-free).

    Args:
        matrices: (..., 3, 3) rotation matrices (orthonormal, det +1).
    Returns:
        (..., 4) unit quaternions (w, x, y, z).
    """
    m = matrices
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Magnitudes from the diagonal, signs from the off-diagonal differences: stable everywhere
    # because the largest component is never computed from a small difference.
    w = 0.5 * (1 + m00 + m11 + m22).clamp_min(0).sqrt()
    x = 0.5 * (1 + m00 - m11 - m22).clamp_min(0).sqrt()
    y = 0.5 * (1 - m00 + m11 - m22).clamp_min(0).sqrt()
    z = 0.5 * (1 - m00 - m11 + m22).clamp_min(0).sqrt()
    x = torch.copysign(x, m[..., 2, 1] - m[..., 1, 2])
    y = torch.copysign(y, m[..., 0, 2] - m[..., 2, 0])
    z = torch.copysign(z, m[..., 1, 0] - m[..., 0, 1])
    q = torch.stack([w, x, y, z], dim=-1)
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def build_covariance(scales: Tensor, rotations: Tensor) -> Tensor:
    """Covariance Sigma = R S S^T R^T of Gaussians.

    Args:
        scales: (..., 3) standard deviations along the principal axes (positive).
        rotations: (..., 4) quaternions (w, x, y, z) or (..., 3, 3) rotation matrices.
    Returns:
        (..., 3, 3) symmetric positive-definite covariances.
    """
    rot = rotations if rotations.shape[-2:] == (3, 3) else quaternion_to_matrix(rotations)
    rs = rot * scales.unsqueeze(-2)  # R @ diag(s): scales the columns
    return rs @ rs.transpose(-1, -2)


def effective_intrinsics(intrinsics: Tensor, image_aug: Tensor | None) -> Tensor:
    """Intrinsics of the network-input image: ``image_aug @ intrinsics`` (or intrinsics)."""
    if image_aug is None:
        return intrinsics
    return image_aug @ intrinsics


def unproject(pixels: Tensor, depth: Tensor, intrinsics: Tensor, cam_to_ego: Tensor) -> Tensor:
    """Lift pixels with metric depth (z along the optical axis) to ego-frame points.

    Args:
        pixels: (..., N, 2) pixel coordinates (u, v) in the image the intrinsics describe.
        depth: (..., N) depth along the camera z axis [m].
        intrinsics: (..., 3, 3) pinhole intrinsics.
        cam_to_ego: (..., 4, 4) camera-to-ego transforms.
    Returns:
        (..., N, 3) points in the ego frame.
    """
    fx, fy = intrinsics[..., 0, 0, None], intrinsics[..., 1, 1, None]
    cx, cy = intrinsics[..., 0, 2, None], intrinsics[..., 1, 2, None]
    skew = intrinsics[..., 0, 1, None]
    y = (pixels[..., 1] - cy) / fy
    x = (pixels[..., 0] - cx - skew * y) / fx
    cam = torch.stack([x * depth, y * depth, depth], dim=-1)
    rot, trans = cam_to_ego[..., None, :3, :3], cam_to_ego[..., None, :3, 3]
    return (rot @ cam.unsqueeze(-1)).squeeze(-1) + trans


def project(points: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, eps: float = 1e-6):
    """Project ego-frame points into a camera.

    Args:
        points: (..., N, 3) ego-frame points.
        intrinsics: (..., 3, 3) pinhole intrinsics.
        cam_to_ego: (..., 4, 4) camera-to-ego transforms.
        eps: smallest depth divided by (points behind the camera get garbage pixels; use depth).
    Returns:
        pixels (..., N, 2) and depth (..., N) along the camera z axis [m].
    """
    rot, trans = cam_to_ego[..., None, :3, :3], cam_to_ego[..., None, :3, 3]
    cam = (rot.transpose(-1, -2) @ (points - trans).unsqueeze(-1)).squeeze(-1)
    depth = cam[..., 2]
    uvw = (intrinsics[..., None, :, :] @ cam.unsqueeze(-1)).squeeze(-1)
    pixels = uvw[..., :2] / depth.unsqueeze(-1).clamp_min(eps)
    return pixels, depth


def invert_rigid(transform: Tensor) -> Tensor:
    """Inverse of rigid (..., 4, 4) transforms without a general matrix inverse."""
    rot_t = transform[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(transform)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ transform[..., :3, 3:4]).squeeze(-1)
    out[..., 3, 3] = 1
    return out
