"""A per-pixel metric depth network that reads the RGB image itself (``model.depth_head.image_width``).

The neck-based ``DepthHead`` reads the tiny ViT's pyramid, whose features are trained for the
Gaussians' features and not for depth; on the tune worlds its AbsRel is 0.186, and that error is most
of the gap between the camera-only map and the measured-depth map (docs/results.md). This head is a
small U-Net over the image and two pixel-coordinate channels: the coordinates matter on a fixed rig,
where where a pixel sits in the image already says much about its depth (the ground plane), and the
full-resolution skips keep object edges where the image has them. It shares no weights with the rest
of the model, so it can be trained alone (``gausstr-train --train-only depth_head``) under a frozen
model, whose measured-depth path it leaves unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.model.config import DepthHeadConfig
from gausstr_core.model.heads import depth_from_logit

# ImageNet-like statistics of the inputs, enough to centre them; images arrive in [0, 1].
IMAGE_MEAN = 0.45
IMAGE_STD = 0.25
# channel multipliers of the six levels (strides 1, 2, 4, 8, 16, 32) over the base width
LEVEL_WIDTHS = (1, 2, 3, 4, 6, 8)


def _conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Two 3 x 3 conv + GroupNorm(8) + GELU; the first one strided or dilated."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(8, cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(8, cout),
        nn.GELU(),
    )


def pixel_coordinates(n: int, size: tuple[int, int], like: Tensor) -> Tensor:
    """(n, 2, H, W) row and column coordinates in [-1, 1] (row first)."""
    h, w = size
    ys = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype).view(1, 1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype).view(1, 1, 1, w)
    return torch.cat([ys.expand(n, 1, h, w), xs.expand(n, 1, h, w)], dim=1)


def jitter_colors(images: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> the same with each image's brightness, contrast and saturation
    scaled by its own factors drawn uniformly from [1 - amount, 1 + amount], in that order
    (torchvision's adjustments, which keep the values in [0, 1])."""
    from torchvision.transforms.v2 import functional as TF

    factors = 1.0 + amount * (2.0 * torch.rand(images.shape[0], 3, generator=generator) - 1.0)
    out = []
    for image, (brightness, contrast, saturation) in zip(images, factors.tolist()):
        image = TF.adjust_brightness(image, brightness)
        image = TF.adjust_contrast(image, contrast)
        out.append(TF.adjust_saturation(image, saturation))
    return torch.stack(out)


class ImageDepthNet(nn.Module):
    """U-Net image -> metric depth: six encoder levels (strides 1 to 32, widths ``LEVEL_WIDTHS`` x
    ``config.image_width``), a dilated context block at the coarsest, a decoder that upsamples
    bilinearly and fuses each skip, and a 1 x 1 conv to log-depth inside [min_depth, max_depth]
    (the same output as ``DepthHead``)."""

    def __init__(self, config: DepthHeadConfig) -> None:
        super().__init__()
        self.config = config
        widths = [m * config.image_width for m in LEVEL_WIDTHS]
        self.encoder = nn.ModuleList(
            [_conv_block(3 + 2, widths[0])]
            + [_conv_block(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))]
        )
        self.context = _conv_block(widths[-1], widths[-1], dilation=2)
        self.decoder = nn.ModuleList(
            _conv_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)
        )
        self.out = nn.Conv2d(widths[0], 1, 1)
        # Start near the middle of the log range (as DepthHead), with gradients reaching every layer.
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def neutral_init_prefixes(self) -> tuple[str, ...]:
        """No parameter starts as a no-op: a checkpoint without this head cannot initialise it."""
        return ()

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, H, W) depth [m]; in training, the images are colour
        jittered first when ``config.color_jitter`` > 0 (``jitter_colors``)."""
        n, _, h, w = images.shape
        if self.training and self.config.color_jitter > 0:
            images = jitter_colors(images, self.config.color_jitter)
        x = (images - IMAGE_MEAN) / IMAGE_STD
        x = torch.cat([x, pixel_coordinates(n, (h, w), x)], dim=1)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.context(x)
        for i in reversed(range(len(self.decoder))):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoder[i](torch.cat([x, skip], dim=1))
        return depth_from_logit(self.out(x)[:, 0], self.config)
