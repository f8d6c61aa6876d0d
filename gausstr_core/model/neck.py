"""ViTDet simple feature pyramid: one stride-p ViT map -> 4 levels (strides p/4, p/2, p, 2p).

Each level: rescale (2 transposed convs / 1 transposed conv / identity / max-pool), then a 1x1 conv
and a 3x3 conv to ``out_channels``, each followed by a channel LayerNorm (no activations, no conv
biases), as in ViTDet and the official GaussTR neck.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W) maps."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return F.layer_norm(
            x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps
        ).permute(0, 3, 1, 2)


class ConvNorm(nn.Module):
    """Conv (no bias) followed by LayerNorm2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = LayerNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


def _rescale(scale: int, channels: int) -> nn.Module:
    """The level's resampling of the ViT map: scale -2 = x4 up, -1 = x2 up, 0 = same, 1 = x2 down."""
    if scale == -2:
        return nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, 2, 2),
            LayerNorm2d(channels // 2),
            nn.GELU(),
            nn.ConvTranspose2d(channels // 2, channels // 4, 2, 2),
        )
    if scale == -1:
        return nn.ConvTranspose2d(channels, channels // 2, 2, 2)
    if scale == 0:
        return nn.Identity()
    if scale == 1:
        return nn.MaxPool2d(kernel_size=2, stride=2)
    raise ValueError(f"pyramid scale must be in -2..1, got {scale}")


class SimpleFeaturePyramid(nn.Module):
    """ViTDet neck.

    Submodules: ``rescale[i]``, ``lateral[i]`` (1x1 ConvNorm), ``output[i]`` (3x3 ConvNorm).
    """

    scales = (-2, -1, 0, 1)

    def __init__(self, in_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        self.rescale = nn.ModuleList(_rescale(s, in_channels) for s in self.scales)
        level_channels = [in_channels // 2 ** max(-s, 0) for s in self.scales]
        self.lateral = nn.ModuleList(ConvNorm(c, out_channels, 1) for c in level_channels)
        self.output = nn.ModuleList(ConvNorm(out_channels, out_channels, 3) for _ in self.scales)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, h, w) -> 4 maps (B, out, 4h, 4w), (B, out, 2h, 2w), (B, out, h, w), (B, out, h//2, w//2)."""
        return [out(lat(rs(x))) for rs, lat, out in zip(self.rescale, self.lateral, self.output)]
