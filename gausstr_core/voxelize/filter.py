"""Which Gaussians to voxelize: the official GaussTR pre-splatting filter."""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid


def filter_gaussians(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    grid: VoxelGrid,
    opacity_threshold: float = 0.0,
    min_extent: float = 0.0,
) -> Tensor:
    """Mask of the Gaussians worth splatting, as the official voxelizer filters them.

    A Gaussian is kept when
      * its opacity > ``opacity_threshold``,
      * its mean lies inside the grid range (bounds inclusive, x_min <= mu_x <= x_max, ...), and
      * when ``min_extent`` > 0: 6 * min_i Sigma_ii > ``min_extent``. This is the official
        ``covariance_thresh`` test verbatim; note that it compares a variance (m^2), not a length,
        so it drops flat/needle Gaussians whose thinnest axis variance is below min_extent / 6.
        (The official talk2dino config uses opacity 0.6 and covariance 1.5e-2.)

    Args:
        means: (B, N, 3) centres [m].
        covariances: (B, N, 3, 3) covariances [m^2].
        opacities: (B, N).
        grid: the voxel grid whose range the means must lie in.
        opacity_threshold: strict lower bound on the opacity.
        min_extent: official covariance threshold (see above); 0 disables the test.
    Returns:
        (B, N) bool.
    """
    if means.dim() != 3 or means.shape[-1] != 3:
        raise ValueError(f"means must be (B, N, 3), got {tuple(means.shape)}")
    if covariances.shape != (*means.shape, 3):
        raise ValueError(
            f"covariances must be (B, N, 3, 3) = {(*means.shape, 3)}, got {tuple(covariances.shape)}"
        )
    if opacities.shape != means.shape[:2]:
        raise ValueError(f"opacities must be (B, N) = {tuple(means.shape[:2])}, got {tuple(opacities.shape)}")
    keep = opacities > opacity_threshold
    # Per-axis comparisons with Python scalars (no host-to-device copy of the bounds per call).
    for axis in range(3):
        coordinate = means[..., axis]
        keep &= (coordinate >= grid.range[axis]) & (coordinate <= grid.range[axis + 3])
    if min_extent > 0:
        variances = torch.diagonal(covariances, dim1=-2, dim2=-1)
        keep &= variances.min(-1).values * 6.0 > min_extent
    return keep
