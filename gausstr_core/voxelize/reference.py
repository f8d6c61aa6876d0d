"""Vectorised, chunked PyTorch voxelizer: the reference the CUDA kernel is tested against.

Works on any device and dtype, is differentiable by autograd, and never materialises
Gaussians x all-voxels: each Gaussian's (clipped) 3-sigma box is enumerated exactly, voxel by
voxel, and the (Gaussian, voxel) pairs are processed in chunks of bounded size, then
scatter-added (`index_add_`) into the flat grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid
from gausstr_core.voxelize.boxes import box_volumes, gaussian_boxes, mahalanobis_sq, precision_entries

# Elements (pairs x (channels + bookkeeping)) one chunk may hold: ~256 MB of float32 temporaries.
DEFAULT_CHUNK_ELEMENTS = 1 << 26


def voxelize_reference(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    eps: float = 1e-6,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Splat Gaussians into a voxel grid (semantics: `gausstr_core.voxelize.voxelize_gaussians`).

    Args:
        means: (B, N, 3) centres [m].
        covariances: (B, N, 3, 3) covariances [m^2].
        opacities: (B, N).
        features: (B, N, C).
        grid: the voxel grid (X, Y, Z).
        valid: optional (B, N) bool, Gaussians to include.
        eps: floor of the density in the feature normalisation.
        chunk_elements: bound on pairs x (C + 16) per chunk (memory).
    Returns:
        density (B, X, Y, Z) and features (B, X, Y, Z, C), in the inputs' dtype.
    """
    b = means.shape[0]
    c = features.shape[-1]
    nx, ny, nz = grid.shape
    dtype, device = means.dtype, means.device
    density = torch.zeros(b * grid.num_voxels, dtype=dtype, device=device)
    feature_sum = torch.zeros(b * grid.num_voxels, c, dtype=dtype, device=device)

    boxes = gaussian_boxes(means, covariances, grid)
    volumes = box_volumes(boxes)
    active = volumes > 0
    if valid is not None:
        active &= valid
    scene, index = active.nonzero(as_tuple=True)
    if scene.numel() > 0:
        first = boxes[scene, index, :3]
        extent = boxes[scene, index, 3:] - first + 1
        volumes = volumes[scene, index]
        prec = precision_entries(covariances[scene, index])
        mu = means[scene, index]
        opacity = opacities[scene, index]
        feats = features[scene, index]
        lower = torch.tensor(grid.lower, dtype=dtype, device=device)
        ends = volumes.cumsum(0)
        starts = ends - volumes
        budget = max(1, chunk_elements // (c + 16))
        for lo, hi in _chunks(ends.cpu(), budget):
            count = int(ends[hi - 1] - starts[lo])
            gid = torch.repeat_interleave(
                torch.arange(lo, hi, device=device), volumes[lo:hi], output_size=count
            )
            # Position of each pair inside its Gaussian's box, decoded x-major, z fastest.
            local = torch.arange(count, device=device) + starts[lo] - starts[gid]
            ext = extent[gid]
            iz = local % ext[:, 2]
            rest = local // ext[:, 2]
            iy = rest % ext[:, 1]
            ix = rest // ext[:, 1]
            voxel = torch.stack([ix, iy, iz], dim=-1) + first[gid]
            centre = (voxel.to(dtype) + 0.5) * grid.voxel_size + lower
            weight = opacity[gid] * torch.exp(-0.5 * mahalanobis_sq(centre - mu[gid], prec[gid]))
            flat = ((scene[gid] * nx + voxel[:, 0]) * ny + voxel[:, 1]) * nz + voxel[:, 2]
            density.index_add_(0, flat, weight)
            if c > 0:
                feature_sum.index_add_(0, flat, weight[:, None] * feats[gid])
    voxel_features = feature_sum / density.clamp_min(eps)[:, None]
    return density.view(b, nx, ny, nz), voxel_features.view(b, nx, ny, nz, c)


def _chunks(ends: Tensor, budget: int) -> list[tuple[int, int]]:
    """Split Gaussians [0, A) into consecutive ranges whose pair counts (cumulative `ends`) fit
    `budget`; a Gaussian larger than the budget gets a range of its own."""
    spans = []
    lo, total = 0, len(ends)
    while lo < total:
        before = int(ends[lo - 1]) if lo > 0 else 0
        hi = int(torch.searchsorted(ends, before + budget, right=True))
        hi = max(hi, lo + 1)
        spans.append((lo, hi))
        lo = hi
    return spans
