"""What both rendering backends share: the output type, input checks, and gsplat's constants.

The constants are those of gsplat 1.5.3's "classic" 3DGS rasterizer (cuda/include/Common.h,
RasterizeToPixels3DGSFwd.cu, ProjectionEWA3DGSPacked.cu); the PyTorch reference renderer uses the
very same numbers so that it is an exact oracle for the CUDA path.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import Tensor

from gausstr_core.gaussians import Gaussians

EPS2D = 0.3  # added to the 2D covariance diagonal: a low-pass filter of ~1 pixel
ALPHA_THRESHOLD = 1.0 / 255.0  # contributions below this alpha are skipped
MAX_ALPHA = 0.999  # alpha is clamped so that transmittance never reaches exactly 0
MIN_TRANSMITTANCE = 1e-4  # a pixel stops compositing before its transmittance drops to this
FOV_CLIP_MARGIN = 0.3  # the projection Jacobian is evaluated at most 30% of the FOV outside the image
# "pinhole": u = fx x / z + cx. "ortho": u = fx x + cx (fx in pixels per metre; gsplat's ortho_proj),
# e.g. a bird's-eye view; depth is still the camera z in both.
CAMERA_MODELS = ("pinhole", "ortho")


@dataclass
class RenderOutput:
    """Features, depth and alpha rendered into V cameras of B scenes.

    Attributes:
        features: (B, V, C, H, W) alpha-composited Gaussian features, sum_i w_i f_i.
        depth: (B, V, H, W) accumulated camera z-depth of the Gaussian centres, sum_i w_i z_i [m]
            (not divided by alpha, as gsplat's "RGB+D": pixels no Gaussian covers are 0).
        alpha: (B, V, H, W) accumulated opacity 1 - prod_i (1 - alpha_i), in [0, 1).
    """

    features: Tensor
    depth: Tensor
    alpha: Tensor

    def expected_depth(self, min_alpha: float = 1e-3) -> Tensor:
        """(B, V, H, W) depth / alpha where alpha >= min_alpha, else 0 (the "invalid" depth value)."""
        covered = self.alpha >= min_alpha
        depth = self.depth / self.alpha.clamp_min(min_alpha)
        return torch.where(covered, depth, torch.zeros_like(depth))


def check_render_inputs(
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float,
    far: float,
    camera_model: str = "pinhole",
) -> tuple[int, int, int, int]:
    """Validate the renderer's inputs; returns (B, V, H, W)."""
    if camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"gaussians must be a Gaussians instance, got {type(gaussians).__name__}")
    b = gaussians.batch_size
    if intrinsics.dim() != 4 or intrinsics.shape[0] != b or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be (B, V, 3, 3) with B = {b}, got {tuple(intrinsics.shape)}")
    v = intrinsics.shape[1]
    if tuple(cam_to_ego.shape) != (b, v, 4, 4):
        raise ValueError(f"cam_to_ego must be (B, V, 4, 4) = {(b, v, 4, 4)}, got {tuple(cam_to_ego.shape)}")
    try:
        h, w = (operator.index(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W) of two ints, got {image_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    skew = intrinsics[..., 0, 1].abs() > 1e-6 * intrinsics[..., 0, 0].abs()
    if bool(skew.any()):
        raise ValueError(
            "the renderer supports pinhole intrinsics without skew (K[0, 1] = 0) as gsplat "
            f"does; got K[0, 1] = {intrinsics[..., 0, 1][skew].flatten()[:4].tolist()}"
        )
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    return b, v, h, w


def gsplat_intrinsics(intrinsics: Tensor) -> Tensor:
    """(..., 3, 3) intrinsics in gsplat's pixel convention.

    gsplat samples pixel (row i, column j) at (j + 0.5, i + 0.5); our intrinsics follow OpenCV, where
    that pixel's centre is at (j, i). Shifting the principal point by half a pixel makes the two agree,
    so a point that projects onto a pixel centre here renders at that pixel's centre in gsplat.
    """
    k = intrinsics.clone()
    k[..., 0, 2] = k[..., 0, 2] + 0.5
    k[..., 1, 2] = k[..., 1, 2] + 0.5
    return k
