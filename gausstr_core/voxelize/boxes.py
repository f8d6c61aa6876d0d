"""Which voxels a Gaussian touches, and the precision entries every backend evaluates.

Shared by the PyTorch reference and the CUDA kernel so that both backends agree exactly on the
set of (Gaussian, voxel) pairs: a voxel belongs to a Gaussian when its CENTRE lies inside the
Gaussian's axis-aligned 3-sigma box, |c_i - mu_i| <= 3 sqrt(Sigma_ii) on every axis i.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid

BOX_SIGMAS = 3.0


def gaussian_boxes(means: Tensor, covariances: Tensor, grid: VoxelGrid) -> Tensor:
    """Inclusive voxel-index ranges of the grid voxels whose centres lie in each 3-sigma box.

    The centre of voxel i on an axis is lo + (i + 0.5) * voxel_size, so the centre is inside
    [mu - r, mu + r] exactly when ceil((mu - r - lo) / vs - 0.5) <= i <= floor((mu + r - lo) / vs - 0.5).
    Evaluated in float64 whatever the input dtype, then clipped to the grid.

    Args:
        means: (..., 3) centres [m].
        covariances: (..., 3, 3) covariances [m^2] (only the diagonal is used here).
        grid: the voxel grid.
    Returns:
        (..., 6) int64 (lo_x, lo_y, lo_z, hi_x, hi_y, hi_z), inclusive; the box is empty (the
        Gaussian touches no voxel centre of the grid) when lo > hi on any axis (see `box_volumes`).
    """
    mu = means.detach().double()
    var = torch.diagonal(covariances.detach(), dim1=-2, dim2=-1).double()
    radius = BOX_SIGMAS * var.clamp_min(0).sqrt()
    lower = torch.tensor(grid.lower, dtype=torch.float64, device=means.device)
    shape = torch.tensor(grid.shape, dtype=torch.float64, device=means.device)
    first = torch.ceil((mu - radius - lower) / grid.voxel_size - 0.5)
    last = torch.floor((mu + radius - lower) / grid.voxel_size - 0.5)
    # Clip in float first so that huge or infinite boxes cannot overflow the integer conversion.
    first = first.clamp_min(0.0).minimum(shape)
    last = last.minimum(shape - 1).clamp_min(-1.0)
    return torch.cat([first, last], dim=-1).long()


def box_volumes(boxes: Tensor) -> Tensor:
    """(...,) int64 number of voxels in each box of `gaussian_boxes` (0 for empty boxes)."""
    extent = (boxes[..., 3:] - boxes[..., :3] + 1).clamp_min(0)
    return extent.prod(-1)


def precision_entries(covariances: Tensor) -> Tensor:
    """The 6 distinct entries of the symmetrised inverse covariance, differentiable.

    The inverse is taken in float64 (3x3 inverses of thin Gaussians lose digits in float32) and
    returned in the input dtype; only the symmetric part matters for a quadratic form.

    Args:
        covariances: (..., 3, 3) covariances.
    Returns:
        (..., 6) (P_xx, P_yy, P_zz, P_xy, P_xz, P_yz) of P = sym(Sigma^-1).
    """
    inv = torch.linalg.inv(covariances.double())
    prec = torch.stack(
        [
            inv[..., 0, 0],
            inv[..., 1, 1],
            inv[..., 2, 2],
            0.5 * (inv[..., 0, 1] + inv[..., 1, 0]),
            0.5 * (inv[..., 0, 2] + inv[..., 2, 0]),
            0.5 * (inv[..., 1, 2] + inv[..., 2, 1]),
        ],
        dim=-1,
    )
    return prec.to(covariances.dtype)


def mahalanobis_sq(diff: Tensor, prec: Tensor) -> Tensor:
    """d^T P d from offsets (..., 3) and `precision_entries` (..., 6), in the CUDA kernel's op order."""
    dx, dy, dz = diff.unbind(-1)
    pxx, pyy, pzz, pxy, pxz, pyz = prec.unbind(-1)
    cross = pxy * dx * dy + pxz * dx * dz + pyz * dy * dz
    return pxx * dx * dx + pyy * dy * dy + pzz * dz * dz + 2.0 * cross
