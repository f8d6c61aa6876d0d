"""The photometric loss of GaussianCross (Yao et al., ACM MM 2025) on the model's RGB head, rendered in
the same splatting pass as features and depth: per pixel 0.85 * (1 - SSIM) / 2 + 0.15 *
|rendered - target| (the Monodepth2 weighting used by self-supervised depth and 3DGS-from-images
work), SSIM over an 11 x 11 Gaussian window (sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, images in [0, 1],
reflection padding at the borders), averaged over colour channels and the pixels a mask keeps.

GaussianCross' other two options are ``gausstr_core.model.point_cloud_init`` (reference points from a
point cloud) and ``gausstr_core.losses.pruning`` (opacity pruning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


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
