"""Image-side transforms shared by the data loaders and the ROS node: resizing camera views to the
network input size while keeping the pinhole model exact through ``image_aug``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_matrix(in_size: tuple[int, int], out_size: tuple[int, int], dtype=torch.float32) -> Tensor:
    """(3, 3) affine map from pixels of an image of size ``in_size`` to pixels of its resize.

    Pixel centres sit at integer coordinates (OpenCV/CameraInfo convention), and the resize maps
    the image's outer edges onto each other (``align_corners=False`` semantics), so
    u' = (u + 0.5) * W'/W - 0.5, and likewise for v.

    Args:
        in_size: (H, W) of the original image.
        out_size: (H', W') of the resized image.
    """
    sy, sx = out_size[0] / in_size[0], out_size[1] / in_size[1]
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=dtype)


def resize_nearest(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (..., H, W) maps (labels, depth) to (..., H', W') by nearest neighbour ("nearest-exact":
    each output pixel takes the input pixel under its centre), so that no value is ever blended into
    one that exists nowhere. Integer maps come back in their dtype."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    out = F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]).float(), size=tuple(size), mode="nearest-exact")
    return out.reshape(*lead, *size).to(maps.dtype)


def resize_views(
    images: Tensor, out_size: tuple[int, int], depth: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Resize V camera views to the network input size.

    Args:
        images: (V, 3, H, W) RGB, uint8 in [0, 255] or float in [0, 1].
        out_size: (H', W') network input size.
        depth: optional (V, H, W) metric depth [m], 0 = invalid. Resized by nearest neighbour so that
            depths across object boundaries are never blended into values that exist nowhere.
    Returns:
        images (V, 3, H', W') float32 in [0, 1], depth (V, H', W') or None, and image_aug (V, 3, 3),
        the original-pixel -> input-pixel maps (effective intrinsics = image_aug @ K).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (V, 3, H, W), got {tuple(images.shape)}")
    v, _, h, w = images.shape
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if (h, w) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    if depth is not None:
        if tuple(depth.shape) != (v, h, w):
            raise ValueError(f"depth must be (V, H, W) = {(v, h, w)}, got {tuple(depth.shape)}")
        depth = depth.float()
        depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
        depth = resize_nearest(depth, tuple(out_size))
    aug = _device_resize_matrix((h, w), tuple(out_size), x.device).expand(v, 3, 3).clone()
    return x, depth, aug


_RESIZE_MATRICES: dict[tuple, Tensor] = {}


def _device_resize_matrix(
    in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device
) -> Tensor:
    """``resize_matrix`` kept on the device per (sizes, device): a new host tensor copied to a GPU per
    frame would be a synchronous copy (it waits for all queued GPU work)."""
    key = (tuple(in_size), tuple(out_size), str(device))
    matrix = _RESIZE_MATRICES.get(key)
    if matrix is None:
        with torch.inference_mode(False):
            matrix = resize_matrix(in_size, out_size).to(device)
        if len(_RESIZE_MATRICES) >= 64:
            _RESIZE_MATRICES.clear()
        _RESIZE_MATRICES[key] = matrix
    return matrix
