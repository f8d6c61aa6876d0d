"""Dense, obviously-correct voxelizer for tests: every voxel centre against every Gaussian.

float64 throughout, written straight from the definition (no index arithmetic, no chunking), so
it only suits tiny grids: memory is B x N x X*Y*Z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid


def voxelize_dense(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """density(x) = sum_g [x in 3-sigma box of g] o_g exp(-0.5 (x - mu_g)^T Sigma_g^-1 (x - mu_g)),
    features(x) = sum_g w_g(x) f_g / max(density(x), eps).

    Args/returns as `voxelize_gaussians`; outputs are float64.
    """
    b = means.shape[0]
    c = features.shape[-1]
    centres = grid.centers(device=means.device, dtype=torch.float64).reshape(-1, 3)  # (V, 3)
    mu = means.double()
    cov = covariances.double()
    diff = centres[None, None] - mu[:, :, None]  # (B, N, V, 3)
    solved = torch.linalg.solve(cov[:, :, None], diff.unsqueeze(-1)).squeeze(-1)
    maha = (diff * solved).sum(-1)
    radius = 3.0 * torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()  # (B, N, 3)
    inside = (diff.abs() <= radius[:, :, None]).all(-1)
    if valid is not None:
        inside &= valid[:, :, None]
    weight = torch.where(inside, opacities.double()[:, :, None] * torch.exp(-0.5 * maha), 0.0)
    density = weight.sum(1)  # (B, V)
    feature_sum = torch.einsum("bnv,bnc->bvc", weight, features.double())
    voxel_features = feature_sum / density.clamp_min(eps)[..., None]
    shape = grid.shape
    return density.view(b, *shape), voxel_features.view(b, *shape, c)
