"""Random Gaussian sets shaped like a driving scene, for tests and benchmarks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gausstr_core.geometry import build_covariance
from gausstr_core.grid import VoxelGrid


def random_gaussians(
    batch: int,
    count: int,
    channels: int,
    grid: VoxelGrid,
    scale_range: tuple[float, float] = (0.1, 2.0),
    margin: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gaussians with means uniform over the grid range (grown by ``margin`` metres on every side),
    log-uniform per-axis scales in ``scale_range``, uniformly random rotations, opacities uniform
    in [0, 1] and standard-normal features.

    Returns:
        means (B, N, 3), covariances (B, N, 3, 3), opacities (B, N), features (B, N, C).
    """

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    lower = torch.tensor(grid.range[:3], dtype=torch.float64) - margin
    upper = torch.tensor(grid.range[3:], dtype=torch.float64) + margin
    means = lower + (upper - lower) * rand(batch, count, 3)
    log_lo, log_hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(log_lo + (log_hi - log_lo) * rand(batch, count, 3))
    rotations = torch.randn(batch, count, 4, generator=generator, dtype=torch.float64)
    covariances = build_covariance(scales, rotations)
    covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
    opacities = rand(batch, count)
    geometry = tuple(t.to(device=device, dtype=dtype) for t in (means, covariances, opacities))
    features = torch.randn(batch, count, channels, generator=generator, dtype=dtype).to(device)
    return (*geometry, features)
