"""GaussianCross-style options (Yao et al., ACM MM 2025) for our feed-forward Gaussians:

* **Photometric loss** on an RGB head rendered in the same splatting pass as features and depth:
  per pixel 0.85 * (1 - SSIM) / 2 + 0.15 * |rendered - target| (the Monodepth2 weighting used by
  self-supervised depth and 3DGS-from-images work), SSIM over an 11 x 11 Gaussian window
  (sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, images in [0, 1], reflection padding at the borders),
  averaged over colour channels and the pixels a mask keeps.
* **Point-cloud initialisation** of the reference points: GaussianCross initialises its Gaussians
  from a point cloud normalised into a unit cuboid. Our model does not optimise Gaussians per scene;
  it places one Gaussian per decoder query, starting at a reference point of its view (uniformly
  random pixels, lifted with the depth map). ``point_cloud_reference_points`` draws those starting
  pixels from a depth-camera or LiDAR point cloud instead: the cloud is normalised into the unit
  cuboid (``normalize_to_unit_cuboid``), bucketed into ``cells`` cells along its longest side (a
  resolution that does not depend on the scene's size), one random point kept per occupied cell,
  and each view's queries start at the pixels of randomly chosen kept points it sees. Queries thus
  spread uniformly over occupied 3D space (not over pixels, which crowd the near ground and waste
  queries on the sky); the head still lifts them with the depth map.
* **Opacity-based pruning**: Gaussians with opacity at or below a threshold are dropped before
  rendering (``prune_by_opacity``) or voxelization (``valid`` masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import project, unproject

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@dataclass
class PhotometricConfig:
    """The photometric loss on the RGB head (a section of ``LossConfig``; off while ``weight`` is 0).

    Attributes:
        weight: weight of the photometric term of every decoder layer; 0 = off. Needs the model's
            RGB head (``model.head.rgb_head``).
        ssim_weight: alpha of alpha * (1 - SSIM) / 2 + (1 - alpha) * L1 (standard 0.85).
        window: SSIM window size (odd) and sigma: its Gaussian standard deviation [px].
        mask_by_depth: only pixels whose target depth is valid and within the loss' depth limit
            count: the model leaves the sky and the far field empty (its depth loss asks for that),
            so rendered colour there is black by design and must not be compared with the sky.
    """

    weight: float = 0.0
    ssim_weight: float = 0.85
    window: int = 11
    sigma: float = 1.5
    mask_by_depth: bool = True

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"loss.photometric.weight must be >= 0, got {self.weight}")
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"loss.photometric.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"loss.photometric.window must be odd and >= 1, got {self.window}")
        if not self.sigma > 0:
            raise ValueError(f"loss.photometric.sigma must be positive, got {self.sigma}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


# --- SSIM and the photometric loss ----------------------------------------------------------------


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """(size,) normalised 1D Gaussian weights (the 2D window is their outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filtering of (N, C, H, W) with reflection padding (same size out)."""
    r = window.numel() // 2
    c = x.shape[1]
    if r == 0:
        return x * window[0]
    pad_mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=pad_mode)
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(
    x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, c1: float = SSIM_C1, c2: float = SSIM_C2
) -> Tensor:
    """Per-pixel structural similarity (Wang et al. 2004) of images in [0, 1].

    Args:
        x, y: (..., C, H, W) images of the same shape.
        window, sigma: the Gaussian window.
        c1, c2: stabilisers (for a dynamic range of 1).
    Returns:
        (..., C, H, W) SSIM map
        (2 mu_x mu_y + c1)(2 s_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(s_x^2 + s_y^2 + c2))
        with local means, variances and covariance under the window; 1 where x == y.
    """
    if x.shape != y.shape or x.dim() < 3:
        raise ValueError(
            f"ssim needs two (..., C, H, W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    w1 = gaussian_window(window, sigma, x.dtype, x.device)
    x4, y4 = x.reshape(-1, c, h, w), y.reshape(-1, c, h, w)
    # One filtering pass over the five statistics (stacked along channels).
    stats = _blur(torch.cat([x4, y4, x4 * x4, y4 * y4, x4 * y4], dim=1), w1)
    mu_x, mu_y, xx, yy, xy = stats.split(c, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).reshape(*lead, c, h, w)


def photometric_loss(
    rendered: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    ssim_weight: float = 0.85,
    window: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Mean over kept pixels of ssim_weight * (1 - SSIM) / 2 + (1 - ssim_weight) * |rendered - target|.

    Args:
        rendered, target: (..., 3, H, W) colours in [0, 1] (any channel count works).
        mask: (..., H, W) bool, pixels that count (None = all). SSIM still sees the whole image.
    Returns:
        scalar; 0 when no pixel is kept. Both parts are averaged over channels.
    """
    dissimilarity = ((1 - ssim(rendered, target, window, sigma)) / 2).clamp(0, 1).mean(-3)
    l1 = (rendered - target).abs().mean(-3)
    per_pixel = ssim_weight * dissimilarity + (1 - ssim_weight) * l1
    if mask is None:
        return per_pixel.mean()
    if mask.shape != per_pixel.shape:
        raise ValueError(f"mask must be (..., H, W) = {tuple(per_pixel.shape)}, got {tuple(mask.shape)}")
    kept = mask.to(per_pixel.dtype)
    return (per_pixel * kept).sum() / kept.sum().clamp_min(1)


# --- point-cloud initialisation -------------------------------------------------------------------


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


# --- pruning --------------------------------------------------------------------------------------


def prune_by_opacity(gaussians: Gaussians, threshold: float) -> tuple[Gaussians, Tensor]:
    """Drop the Gaussians whose opacity is at or below ``threshold``.

    Args:
        gaussians: B scenes of N Gaussians.
        threshold: opacity threshold (0 keeps every Gaussian with a positive opacity).
    Returns:
        the kept Gaussians, N' = the largest kept count of a scene, each scene's kept ones first in
        their original order and the rest padded with opacity-0 Gaussians (which both renderers and
        the voxelizer's ``valid`` mask leave out), and keep (B, N) bool over the original Gaussians.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"opacity threshold must be in [0, 1), got {threshold}")
    keep = gaussians.opacities > threshold
    b = gaussians.batch_size
    counts = keep.sum(1)
    n = int(counts.max()) if b else 0
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :n]
    present = torch.arange(n, device=keep.device)[None] < counts[:, None]

    def take(t: Tensor) -> Tensor:
        index = order if t.dim() == 2 else order[..., None].expand(b, n, t.shape[-1])
        return torch.gather(t, 1, index)

    zero = torch.zeros((), dtype=gaussians.opacities.dtype, device=keep.device)
    opacities = torch.where(present, take(gaussians.opacities), zero)
    pruned = Gaussians(
        take(gaussians.means),
        take(gaussians.scales),
        take(gaussians.rotations),
        opacities,
        take(gaussians.features),
    )
    return pruned, keep
