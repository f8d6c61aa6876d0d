"""Point-cloud initialisation of the decoder's reference points (the option of GaussianCross, Yao et
al., ACM MM 2025, for our feed-forward Gaussians; ``decoder.reference_init: point_cloud``).

GaussianCross initialises its Gaussians from a point cloud normalised into a unit cuboid. Our model
does not optimise Gaussians per scene; it places one Gaussian per decoder query, starting at a
reference point of its view (uniformly random pixels, lifted with the depth map).
``point_cloud_reference_points`` draws those starting pixels from a depth-camera or LiDAR point cloud
instead: the cloud is normalised into the unit cuboid (``normalize_to_unit_cuboid``), bucketed into
``cells`` cells along its longest side (a resolution that does not depend on the scene's size), one
random point kept per occupied cell, and each view's queries start at the pixels of randomly chosen
kept points it sees. Queries thus spread uniformly over occupied 3D space (not over pixels, which
crowd the near ground and waste queries on the sky); the head still lifts them with the depth map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.geometry import project, unproject


def normalize_to_unit_cuboid(points: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Scale-normalise point clouds into the unit cuboid (aspect kept, longest side 1).

    Args:
        points: (B, P, 3).
        valid: (B, P) bool (None = finite points); invalid points are ignored and come back as 0.
    Returns:
        normalized (B, P, 3) = (points - lower) / extent, in [0, 1] on every axis with the longest
        axis spanning [0, 1]; lower (B, 3) the bounding-box minimum corner; extent (B,) its longest
        side [m] (1 for a cloud of fewer than two distinct points).
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, P, 3), got {tuple(points.shape)}")
    if valid is None:
        valid = torch.isfinite(points).all(-1)
    inf = torch.tensor(float("inf"), dtype=points.dtype, device=points.device)
    safe = torch.where(valid[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device))
    lower = torch.where(valid[..., None], safe, inf).amin(1)
    upper = torch.where(valid[..., None], safe, -inf).amax(1)
    empty = ~valid.any(1)
    lower = torch.where(empty[:, None], torch.zeros_like(lower), lower)
    upper = torch.where(empty[:, None], torch.zeros_like(upper), upper)
    extent = (upper - lower).amax(-1)
    extent = torch.where(extent > 0, extent, torch.ones_like(extent))
    normalized = (safe - lower[:, None]) / extent[:, None, None]
    return torch.where(valid[..., None], normalized, torch.zeros_like(normalized)), lower, extent


def depth_point_cloud(
    depth: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, stride: int = 4, max_depth: float | None = None
) -> tuple[Tensor, Tensor]:
    """The ego-frame point cloud of depth images (a depth camera's cloud), every ``stride``-th pixel.

    Args:
        depth: (B, V, H, W) metric z-depth [m], 0 / non-finite = invalid.
        intrinsics: (B, V, 3, 3) of the H x W images; cam_to_ego: (B, V, 4, 4).
        stride: pixel step along both axes (pixel centres (i * stride + (stride - 1) / 2)).
        max_depth: depths at or beyond this are invalid too (None = no limit).
    Returns:
        points (B, V * h * w, 3) and valid (B, V * h * w) bool.
    """
    b, v = depth.shape[:2]
    pooled = depth[..., (stride - 1) // 2 :: stride, (stride - 1) // 2 :: stride]
    hs, ws = pooled.shape[-2:]
    rows = torch.arange(hs, device=depth.device, dtype=torch.float32) * stride + (stride - 1) // 2
    cols = torch.arange(ws, device=depth.device, dtype=torch.float32) * stride + (stride - 1) // 2
    grid_v, grid_u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([grid_u, grid_v], -1).reshape(1, 1, -1, 2).expand(b, v, -1, 2)
    z = pooled.reshape(b, v, -1).float()
    valid = torch.isfinite(z) & (z > 0)
    if max_depth is not None:
        valid &= z < max_depth
    z = torch.where(valid, z, torch.zeros_like(z))
    points = unproject(pixels, z, intrinsics.float(), cam_to_ego.float())
    return points.reshape(b, -1, 3), valid.reshape(b, -1)


def cell_representatives(
    points: Tensor, valid: Tensor, cells: int, generator: torch.Generator | None = None
) -> Tensor:
    """One random point per occupied cell of the unit-cuboid-normalised cloud.

    Args:
        points: (B, P, 3); valid: (B, P) bool.
        cells: cells along the cuboid's longest side (the same count for any scene size).
    Returns:
        (B, P) bool: the kept points.
    """
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    b, p = valid.shape
    normalized, _, _ = normalize_to_unit_cuboid(points, valid)
    index = (normalized * cells).long().clamp(0, cells - 1)
    key = (index[..., 0] * cells + index[..., 1]) * cells + index[..., 2]
    keep = torch.zeros(b, p, dtype=torch.bool, device=points.device)
    for i in range(b):
        ids = valid[i].nonzero().squeeze(1)
        if ids.numel() == 0:
            continue
        ids = ids[torch.randperm(ids.numel(), generator=generator).to(ids.device)]
        _, inverse = torch.unique(key[i, ids], return_inverse=True)
        # The first point of every cell in this random order is that cell's representative.
        first = torch.full((int(inverse.max()) + 1,), ids.numel(), dtype=torch.long, device=ids.device)
        first = first.scatter_reduce(0, inverse, torch.arange(ids.numel(), device=ids.device), reduce="amin")
        keep[i, ids[first]] = True
    return keep


def point_cloud_reference_points(
    points: Tensor,
    valid: Tensor,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    queries: int,
    cells: int = 64,
    near: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Initial reference points of every view's queries, drawn from a point cloud.

    Args:
        points: (B, P, 3) ego-frame points (depth camera, LiDAR); valid (B, P) bool.
        intrinsics: (B, V, 3, 3) of the H x W network input; cam_to_ego: (B, V, 4, 4).
        image_size: (H, W).
        queries: Q per view.
        cells: cuboid resolution of ``cell_representatives``.
        near: points closer than this along a camera's axis are not that view's.
        generator: randomness (None = torch's global generator).
    Returns:
        (B, V, Q, 2) normalised (x, y) in [0, 1]: pixels of randomly chosen cell representatives
        the view sees; a view that sees fewer than Q of them fills up with uniformly random points.
    """
    b, v = intrinsics.shape[:2]
    h, w = image_size
    dev = intrinsics.device
    keep = cell_representatives(points, valid, cells, generator)
    pixels, depth = project(
        points[:, None].expand(b, v, *points.shape[1:]).float(), intrinsics.float(), cam_to_ego.float()
    )
    seen = keep[:, None] & (depth > near) & (pixels[..., 0] > -0.5) & (pixels[..., 0] < w - 0.5)
    seen &= (pixels[..., 1] > -0.5) & (pixels[..., 1] < h - 0.5)
    out = torch.rand(b, v, queries, 2, generator=generator).to(dev)
    scale = torch.tensor([w, h], dtype=torch.float32, device=dev)
    for i in range(b):
        for j in range(v):
            ids = seen[i, j].nonzero().squeeze(1)
            if ids.numel() == 0:
                continue
            pick = ids[torch.randperm(ids.numel(), generator=generator)[:queries].to(dev)]
            out[i, j, : pick.numel()] = (pixels[i, j, pick] + 0.5) / scale
    return out
