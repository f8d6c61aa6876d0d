"""A picture of one synthetic key frame: camera images, their labels and targets, and the Occ3D
ground truth seen from above."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gausstr_core.data.occ3d import FREE_LABEL, OCC3D_COLORS, Occ3DLabels
from gausstr_core.data.synthetic.samples import SyntheticSample
from gausstr_core.data.synthetic.vocabulary import SKY_CLASS

# Surround layout of the six nuScenes cameras: front-left, front, front-right over
# back-left, back, back-right (indices into CAMERA_CHANNELS order).
_LAYOUT = ((2, 0, 1), (4, 3, 5))


def label_colors(labels: Tensor) -> np.ndarray:
    """(..., 3) uint8 Occ3D colours of labels (sky, 255, is light blue)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(OCC3D_COLORS)] = OCC3D_COLORS
    palette[SKY_CLASS] = (170, 210, 255)
    return palette[labels.cpu().numpy().astype(np.int64)]


def depth_colors(depth: Tensor, max_depth: float = 60.0) -> np.ndarray:
    """(..., 3) uint8 inverse-depth colouring (near bright); invalid (0) pixels black."""
    from matplotlib import colormaps

    d = depth.cpu().float().numpy()
    inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-3), 0.0)
    scale = np.clip(inv / (1.0 / 2.0), 0, 1) ** 0.5
    rgb = (colormaps["magma"](scale)[..., :3] * 255).astype(np.uint8)
    rgb[d <= 0] = 0
    return rgb


def feature_colors(features: Tensor) -> np.ndarray:
    """(V, h, w, 3) uint8 colours of (V, C, h, w) features: their first 3 principal components,
    shared across views."""
    v, c, h, w = features.shape
    x = features.float().permute(0, 2, 3, 1).reshape(-1, c)
    x = x - x.mean(0)
    _, _, basis = torch.pca_lowrank(x, q=min(3, c), center=False)
    y = x @ basis
    lo, hi = y.quantile(0.01, dim=0), y.quantile(0.99, dim=0)
    y = ((y - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if y.shape[1] < 3:
        y = torch.cat([y, y.new_zeros(y.shape[0], 3 - y.shape[1])], 1)
    return (y.reshape(v, h, w, 3).numpy() * 255).astype(np.uint8)


def bev_colors(labels: Occ3DLabels, masked: bool = True) -> np.ndarray:
    """(Y, X, 3) uint8 top view of the grid: the highest occupied voxel's class per column, forward
    (+x) up and left (+y) left; with ``masked`` only camera-visible voxels count (the rest is grey)."""
    sem = labels.semantics.long()
    occupied = sem != FREE_LABEL
    if masked:
        occupied &= labels.mask_camera
    z = torch.arange(sem.shape[2])
    top = torch.where(occupied, z, torch.full_like(sem, -1)).argmax(-1)
    label = sem.gather(2, top[..., None])[..., 0]
    rgb = np.array(OCC3D_COLORS, dtype=np.uint8)[label.numpy()]
    empty = ~occupied.any(-1).numpy()
    rgb[empty] = (
        (255, 255, 255) if not masked else np.where(labels.mask_camera.any(-1).numpy()[empty, None], 255, 200)
    )
    # [ix, iy] -> image row = X-1-ix (forward up), column = Y-1-iy (the ego's left on the left).
    return np.ascontiguousarray(rgb[::-1, ::-1])


def _grid(views: np.ndarray) -> np.ndarray:
    rows = [np.concatenate([views[i] for i in row], axis=1) for row in _LAYOUT]
    return np.concatenate(rows, axis=0)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.NEAREST))


def sample_preview(sample: SyntheticSample) -> np.ndarray:
    """(H, W, 3) uint8 picture: camera images, per-pixel classes, target depth and features (each
    as the 2 x 3 surround layout), and the camera-masked ground truth from above."""
    if sample.rig.num_views != 6:
        raise ValueError(f"the preview lays out the 6-camera surround rig, got {sample.rig.num_views} views")
    h, w = sample.views.rgb.shape[-2:]
    panels = [
        _grid(sample.views.rgb.permute(0, 2, 3, 1).numpy()),
        _grid(label_colors(sample.views.occ_class)),
        _grid(depth_colors(sample.depth_target)),
    ]
    if sample.features is not None:
        feats = feature_colors(sample.features)
        panels.append(_grid(np.stack([_resize(f, (h, w)) for f in feats])))
    top = np.concatenate(panels[:2], axis=1)
    bottom = np.concatenate(panels[2:] + ([np.zeros_like(panels[0])] if len(panels) == 3 else []), axis=1)
    cameras = np.concatenate([top, bottom], axis=0)
    if sample.labels is None:
        return cameras
    bev = bev_colors(sample.labels)
    side = cameras.shape[0]
    bev = _resize(bev, (side, side))
    return np.concatenate([cameras, bev], axis=1)
