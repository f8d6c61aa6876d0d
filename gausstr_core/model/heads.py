"""Heads on the decoder queries: Gaussian parameters per query, and the optional per-pixel depth head.

A query with (refined) reference point r in [0, 1]^2 of its view becomes one Gaussian:

* position: r' = sigmoid(logit(r) + d_xy), depth z = D(r') * (1 + d_z) with D the metric depth map
  (clamped at ``depth_limit``) sampled bilinearly at r'; mean = unproject(pixel(r'), z) with the
  input intrinsics ``image_aug @ K`` and ``cam_to_ego``;
* opacity: sigmoid; scale: (lo + (hi - lo) sigmoid(.)) * D(r') * multiplier / fx (a size in pixels
  of the input image, turned into metres at the sampled depth);
* rotation: the camera's rotation (axes aligned with the camera), covariance R S S^T R^T;
* feature: a linear readout in the target feature space.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.geometry import matrix_to_quaternion, unproject
from gausstr_core.model.config import DepthHeadConfig, HeadConfig


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps] (Deformable DETR's inverse_sigmoid)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers[i]``); hidden width 4x input by default."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, num_layers: int = 2) -> None:
        super().__init__()
        hidden = hidden_dim or 4 * in_dim
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def reference_pixels(reference_points: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Pixel coordinates (centres at integers) of normalised points: (..., 2) -> (..., 2)."""
    h, w = image_size
    # Python scalars, not a new tensor: no host-to-device copy (same arithmetic, same bits).
    x, y = reference_points.unbind(-1)
    return torch.stack((x * w, y * h), dim=-1) - 0.5


def sample_depth(depth: Tensor, reference_points: Tensor) -> Tensor:
    """Bilinear samples of depth maps at normalised points (zero outside the image).

    Args:
        depth: (B, H, W) metric depth.
        reference_points: (B, Q, 2) normalised (x, y).
    Returns:
        (B, Q) sampled depth.
    """
    grid = (2 * reference_points - 1).unsqueeze(1).to(depth.dtype)  # (B, 1, Q, 2)
    return F.grid_sample(
        depth.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0, 0]


def lift_means(
    reference_points: Tensor,
    depth: Tensor,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
) -> Tensor:
    """Ego-frame points of normalised image points at metric depth (fp32 whatever the autocast).

    Args:
        reference_points: (B, Q, 2) normalised (x, y); depth: (B, Q) z-depth [m];
        intrinsics: (B, 3, 3) of the network input; cam_to_ego: (B, 4, 4).
    Returns:
        (B, Q, 3) means [m].
    """
    with torch.autocast(reference_points.device.type, enabled=False):
        pixels = reference_pixels(reference_points.float(), image_size)
        return unproject(pixels, depth.float(), intrinsics.float(), cam_to_ego.float())


def gaussian_scales(size: Tensor, depth: Tensor, intrinsics: Tensor, multiplier: float) -> Tensor:
    """Standard deviations [m] of Gaussians whose extent is ``size`` units of ``depth * multiplier /
    fx`` (the official unit: an angle of ``multiplier`` pixels, times the depth).

    Args:
        size: (BV, Q, 3) (or broadcastable) size in units.
        depth: (BV, Q) depth the Gaussians were lifted at [m].
        intrinsics: (BV, 3, 3) network-input intrinsics (fx = [0, 0]).
        multiplier: the head's ``scale_multiplier``.
    Returns:
        (BV, Q, 3) float32.
    """
    focal = intrinsics[:, 0, 0].float().view(-1, 1, 1)
    return size * (depth.unsqueeze(-1) * multiplier / focal).clamp(min=1e-6)


def camera_rotations(cam_to_ego: Tensor, queries: int) -> Tensor:
    """(BV, Q, 4) wxyz: every Gaussian of a view takes its camera's rotation (official)."""
    return matrix_to_quaternion(cam_to_ego[:, :3, :3].float())[:, None].expand(
        cam_to_ego.shape[0], queries, 4
    )


class GaussianHead(nn.Module):
    """One decoder layer's Gaussian parameter heads.

    Submodules (all MLPs 2 layers, hidden 4x): ``offset`` (-> dx, dy logits, depth multiplier delta),
    ``opacity`` (-> 1), ``scale`` (-> 3), ``feature`` (-> feature_dim), optional ``segment``
    (segment_input_dim -> segment_classes, applied to rendered features by the loss), optional
    ``rgb`` (-> 3, sigmoid: the Gaussian's colour for the photometric loss).
    """

    def __init__(self, embed_dim: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.offset = MLP(embed_dim, 3)
        self.opacity = MLP(embed_dim, 1)
        self.scale = MLP(embed_dim, 3)
        self.feature = MLP(embed_dim, config.feature_dim)
        self.segment = (
            MLP(config.segment_input_dim, config.segment_classes) if config.segment_classes > 0 else None
        )
        # Created only when asked for, so that models without it keep their exact state dict.
        self.rgb = MLP(embed_dim, 3) if config.rgb_head else None

    def refine(self, query: Tensor, reference_points: Tensor) -> Tensor:
        """Reference points moved by the offset branch, sigmoid(logit(r) + dxy).

        (B, Q, C) queries, (B, Q, 2) points -> (B, Q, 2).
        """
        return (self.offset(query)[..., :2] + inverse_sigmoid(reference_points)).sigmoid()

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        depth: Tensor,
        intrinsics: Tensor,
        cam_to_ego: Tensor,
    ) -> dict[str, Tensor]:
        """Gaussian parameters of B*V views' queries (each batch entry is one camera).

        Args:
            query: (BV, Q, C) decoder output (after the decoder's final norm).
            reference_points: (BV, Q, 2) the decoder's refined reference points (detached).
            depth: (BV, H, W) metric depth of the input image [m], 0 = invalid.
            intrinsics: (BV, 3, 3) network-input intrinsics (image_aug @ K).
            cam_to_ego: (BV, 4, 4).
        Returns:
            dict with means (BV, Q, 3), scales (BV, Q, 3), rotations (BV, Q, 4) wxyz,
            opacities (BV, Q), features (BV, Q, F) float32, reference_points (BV, Q, 2), and with the
            RGB head colors (BV, Q, 3) float32 in [0, 1].
        """
        cfg = self.config
        q = query.shape[1]
        deltas = self.offset(query)
        ref = (deltas[..., :2] + inverse_sigmoid(reference_points)).sigmoid()
        depth = depth.clamp(max=cfg.depth_limit)
        sampled = sample_depth(depth.float(), ref.float())  # (BV, Q)
        z = sampled * (1 + deltas[..., 2].float())
        means = lift_means(ref, z, intrinsics, cam_to_ego, depth.shape[-2:])

        lo, hi = cfg.scale_range
        size = lo + (hi - lo) * self.scale(query).float().sigmoid()
        scales = gaussian_scales(size, sampled, intrinsics, cfg.scale_multiplier)
        rotations = camera_rotations(cam_to_ego, q)
        out = {
            "means": means,
            "scales": scales,
            "rotations": rotations,
            "opacities": self.opacity(query).float().sigmoid().squeeze(-1),
            "features": self.feature(query).float(),
            "reference_points": ref,
        }
        if self.rgb is not None:
            out["colors"] = self.rgb(query).float().sigmoid()
        return out


def camera_ray_channels(
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    size: tuple[int, int],
    image_size: tuple[int, int],
    depth_range: tuple[float, float],
) -> Tensor:
    """Per-cell viewing rays of an h x w grid laid over the H x W input image.

    Args:
        intrinsics: (N, 3, 3) intrinsics of the H x W input image.
        cam_to_ego: (N, 4, 4) camera-to-ego transforms.
        size: (h, w) of the grid; each cell's ray goes through its centre.
        image_size: (H, W) of the input image.
        depth_range: (min_depth, max_depth) [m] of the ground-plane channel.
    Returns:
        (N, 4, h, w): the unit ray direction in the ego frame (3 channels), and the camera-z depth at
        which the ray meets the ego frame's z = 0 plane as a fraction of the log depth range (0 at
        min_depth, 1 at max_depth and for rays at or above the horizon).
    """
    h, w = size
    big_h, big_w = image_size
    dev = intrinsics.device
    # the cells' centres as normalised points, in pixels by the project's one convention (pixel
    # centres at integers, as lift_means and the renderer use)
    y = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
    x = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
    centres = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1).reshape(1, h * w, 2)
    pixels = reference_pixels(centres, (big_h, big_w))
    ones = torch.ones(intrinsics.shape[0], h * w, device=dev)
    # the point at camera-z depth 1 minus the camera centre: the ray per unit of depth
    origin = cam_to_ego[:, None, :3, 3].float()
    ray = (
        unproject(pixels.expand(intrinsics.shape[0], -1, -1), ones, intrinsics.float(), cam_to_ego.float())
        - origin
    )
    lo, hi = math.log(depth_range[0]), math.log(depth_range[1])
    down = -ray[..., 2]
    ground = origin[..., 2] / down.clamp(min=1e-6)  # camera-z depth of the z = 0 plane
    ground = torch.where(
        (down > 1e-6) & (origin[..., 2] > 0), ground, torch.full_like(ground, depth_range[1])
    )
    prior = ((ground.clamp(*depth_range).log() - lo) / (hi - lo)).unsqueeze(-1)
    out = torch.cat([F.normalize(ray, dim=-1), prior], dim=-1)  # (N, h*w, 4)
    return out.transpose(1, 2).reshape(-1, 4, h, w)


def depth_from_logit(logit: Tensor, config: DepthHeadConfig) -> Tensor:
    """(...) logits -> (...) float32 depth [m], log-uniform inside [min_depth, max_depth] (sigmoid):
    the output of every depth head."""
    lo, hi = math.log(config.min_depth), math.log(config.max_depth)
    return torch.exp(lo + (hi - lo) * logit.float().sigmoid())


class ContextBlock(nn.Module):
    """x + conv1x1(GELU(conv3x3_dilated(x))): (N, C, h, w) -> (N, C, h, w); the 1x1 starts at zero, so
    a new block is the identity until it trains."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.out(F.gelu(self.conv(x)))


class DepthHead(nn.Module):
    """Per-pixel metric depth from the neck pyramid (for cameras without a depth source).

    The four levels are resampled to the second one (stride patch/2; 4x cheaper than the finest
    level, and depth is smooth) and summed, then two 3x3 conv + GELU blocks and a 1x1 conv give
    log-depth inside [min_depth, max_depth], upsampled bilinearly to the input size. With
    ``camera_rays`` the cells' viewing rays (``camera_ray_channels``) are added to the first block
    through a zero-initialised 1x1 convolution; ``context_blocks`` dilated residual blocks
    (``ContextBlock``) follow the second.
    """

    def __init__(self, channels: int, config: DepthHeadConfig) -> None:
        super().__init__()
        self.config = config
        hidden = max(channels // 2, 16)
        self.blocks = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
        )
        # Start near the middle of the log range, not at an edge of the sigmoid (small, not zero,
        # weights so that the earlier convs get gradients from the first step).
        nn.init.normal_(self.blocks[-1].weight, std=1e-3)
        nn.init.zeros_(self.blocks[-1].bias)
        self.ray_proj = None
        if config.camera_rays:
            self.ray_proj = nn.Conv2d(4, hidden, 1)
            nn.init.zeros_(self.ray_proj.weight)
            nn.init.zeros_(self.ray_proj.bias)

        self.context = nn.ModuleList(ContextBlock(hidden, 2 ** (i + 1)) for i in range(config.context_blocks))

    def neutral_init_prefixes(self) -> tuple[str, ...]:
        """Parameters that start as a no-op: a checkpoint without them may initialise this head."""
        prefixes = []
        if self.ray_proj is not None:
            prefixes.append("ray_proj.")
        if len(self.context):
            prefixes.append("context.")
        return tuple(prefixes)

    def forward(
        self,
        levels: list[Tensor],
        image_size: tuple[int, int],
        intrinsics: Tensor | None = None,
        cam_to_ego: Tensor | None = None,
    ) -> Tensor:
        """4 maps (BV, C, h_l, w_l), finest first -> (BV, H, W) depth [m]. ``intrinsics`` (BV, 3, 3)
        of the H x W input and ``cam_to_ego`` (BV, 4, 4) are needed with ``camera_rays``."""
        size = levels[1].shape[-2:]
        x = levels[1] + F.adaptive_avg_pool2d(levels[0], size)
        for level in levels[2:]:
            x = x + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        x = self.blocks[0](x)
        if self.ray_proj is not None:
            if intrinsics is None or cam_to_ego is None:
                raise ValueError("depth_head.camera_rays needs the input intrinsics and cam_to_ego")
            rays = camera_ray_channels(
                intrinsics,
                cam_to_ego,
                tuple(size),
                image_size,
                (self.config.min_depth, self.config.max_depth),
            )
            x = x + self.ray_proj(rays.to(x.dtype))
        x = self.blocks[1:4](x)
        for block in self.context:
            x = block(x)
        logit = F.interpolate(self.blocks[4](x), size=image_size, mode="bilinear", align_corners=False)[:, 0]
        return depth_from_logit(logit, self.config)
