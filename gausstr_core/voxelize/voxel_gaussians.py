"""The reverse of voxelization: voxels of a grid as Gaussians (one isotropic Gaussian per voxel at its
centre), so that occupancy grids can be rendered like any Gaussians (GaussRender's loss and metric).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid


def voxel_gaussians(
    colors: Tensor, opacities: Tensor, include: Tensor, grid: VoxelGrid, scale: float = 0.675
) -> Gaussians:
    """The included voxels of B grids as isotropic Gaussians at the voxel centres.

    Args:
        colors: (B, X, Y, Z, K) per-voxel colours (class probabilities).
        opacities: (B, X, Y, Z) in [0, 1].
        include: (B, X, Y, Z) bool, the voxels to turn into Gaussians.
        grid: the voxel grid (centres, voxel size).
        scale: standard deviation as a fraction of the voxel size.
    Returns:
        Gaussians with N = the largest count of included voxels of a scene: means (B, N, 3) at the
        voxel centres (C order [ix, iy, iz]), scales all ``scale * voxel_size``, rotations identity,
        opacities and colours of the voxels; scenes with fewer voxels are padded with Gaussians of
        opacity 0 and colour 0 (the renderer culls them).
    """
    if colors.dim() != 5 or colors.shape[1:4] != grid.shape:
        raise ValueError(
            f"colors must be (B, X, Y, Z, K) with (X, Y, Z) = {grid.shape}, got {tuple(colors.shape)}"
        )
    b, k = colors.shape[0], colors.shape[-1]
    if tuple(opacities.shape) != (b, *grid.shape) or tuple(include.shape) != (b, *grid.shape):
        raise ValueError(
            f"opacities and include must be (B, X, Y, Z) = {(b, *grid.shape)}, got "
            f"{tuple(opacities.shape)} and {tuple(include.shape)}"
        )
    if include.dtype != torch.bool:
        raise ValueError(f"include must be a bool mask, got {include.dtype}")
    dev, dtype = colors.device, colors.dtype
    centers = grid.centers(dev, dtype).reshape(-1, 3)
    flat = include.reshape(b, -1)
    counts = flat.sum(1)
    n = int(counts.max()) if b else 0
    # Each scene's included voxels first (in grid order), then padding: a stable sort of "excluded".
    order = torch.sort((~flat).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # (B, N)
    present = torch.arange(n, device=dev)[None] < counts[:, None]
    means = centers[order]
    take = lambda t: torch.gather(
        t.reshape(b, -1, *t.shape[4:]), 1, order if t.dim() == 4 else order[..., None].expand(b, n, k)
    )
    gathered_colors = torch.where(present[..., None], take(colors), torch.zeros((), device=dev, dtype=dtype))
    gathered_opacity = torch.where(present, take(opacities), torch.zeros((), device=dev, dtype=dtype))
    rotations = torch.zeros(b, n, 4, device=dev, dtype=dtype)
    rotations[..., 0] = 1
    scales = torch.full((b, n, 3), scale * grid.voxel_size, device=dev, dtype=dtype)
    return Gaussians(means, scales, rotations, gathered_opacity, gathered_colors)
