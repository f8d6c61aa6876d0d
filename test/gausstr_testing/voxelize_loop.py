"""The per-Gaussian Python loop, in the style of the official GaussTR voxelizer.

Only a benchmark baseline: for each Gaussian it computes the box on the device, brings it to
the host (one synchronisation per Gaussian), slices the grid of voxel centres, inverts the
covariance and adds the weights. Same semantics as `voxelize_gaussians`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid


def voxelize_loop(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Args/returns as `voxelize_gaussians` (no autograd guarantees, no chunking)."""
    b, n = means.shape[:2]
    c = features.shape[-1]
    device, dtype = means.device, means.dtype
    centres = grid.centers(device=device, dtype=dtype)  # (X, Y, Z, 3)
    lower = torch.tensor(grid.lower, device=device, dtype=dtype)
    upper_index = torch.tensor(grid.shape, device=device) - 1
    density = torch.zeros(b, *grid.shape, dtype=dtype, device=device)
    feature_sum = torch.zeros(b, *grid.shape, c, dtype=dtype, device=device)
    for s in range(b):
        for g in range(n):
            if valid is not None and not bool(valid[s, g]):
                continue
            mu, cov = means[s, g], covariances[s, g]
            radius = 3.0 * torch.diagonal(cov).sqrt()
            first = torch.ceil((mu - radius - lower) / grid.voxel_size - 0.5).long().clamp_min(0)
            last = torch.minimum(
                torch.floor((mu + radius - lower) / grid.voxel_size - 0.5).long(), upper_index
            )
            (x0, y0, z0), (x1, y1, z1) = first.tolist(), last.tolist()
            if x0 > x1 or y0 > y1 or z0 > z1:
                continue
            box = (slice(x0, x1 + 1), slice(y0, y1 + 1), slice(z0, z1 + 1))
            diff = centres[box] - mu
            maha = (diff.unsqueeze(-2) @ torch.linalg.inv(cov) @ diff.unsqueeze(-1))[..., 0, 0]
            weight = opacities[s, g] * torch.exp(-0.5 * maha)
            density[(s, *box)] += weight
            feature_sum[(s, *box)] += weight[..., None] * features[s, g]
    return density, feature_sum / density.clamp_min(eps)[..., None]
