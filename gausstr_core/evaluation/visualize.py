"""Pictures a person looks at: bird's-eye views of predicted vs ground-truth occupancy, confusion
matrices, and depth / feature images (rendered vs target) for TensorBoard.

Bird's-eye views are drawn with the ego x axis (forward) pointing up and y (left) pointing left,
one pixel per voxel column, coloured by the label of the highest non-free voxel of the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gausstr_core.colors import class_colors

FREE_COLOR = (255, 255, 255)
# Columns with no voxel inside the camera mask: a light checkerboard, so that they cannot be taken
# for a class colour (Occ3D's palette has greys and near-whites).
UNSEEN_COLOR = (205, 205, 205)
UNSEEN_COLOR_2 = (235, 235, 235)
# Error panel: correct class, wrong class, predicted occupied where free, missed (predicted free).
ERROR_COLORS = {
    "correct": (40, 160, 40),
    "wrong class": (220, 30, 30),
    "false occupied": (255, 165, 0),
    "missed": (30, 90, 220),
}


def _labels_tensor(x, name: str) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    if t.dim() != 3:
        raise ValueError(f"{name} must be an (X, Y, Z) label volume, got shape {tuple(t.shape)}")
    return t.long().cpu()


def bev_labels(labels, free_label: int, mask=None) -> tuple[Tensor, Tensor]:
    """Top-down label map: the label of the highest non-free voxel of every column.

    Args:
        labels: (X, Y, Z) integer labels (free = ``free_label``).
        free_label: the free label.
        mask: optional (X, Y, Z) bool; voxels where it is false are ignored (Occ3D ``mask_camera``).
    Returns:
        top (X, Y) long (free where a column has no non-free voxel) and visible (X, Y) bool
        (columns with at least one voxel inside the mask; all true without a mask).
    """
    lab = _labels_tensor(labels, "labels")
    if mask is not None:
        m = _labels_tensor(mask, "mask").bool()
        if m.shape != lab.shape:
            raise ValueError(f"mask must have the labels' shape {tuple(lab.shape)}, got {tuple(m.shape)}")
        lab = torch.where(m, lab, torch.full_like(lab, free_label))
        visible = m.any(-1)
    else:
        visible = torch.ones(lab.shape[:2], dtype=torch.bool)
    occupied = lab != free_label
    z = torch.arange(lab.shape[2])
    top_z = torch.where(occupied, z, -1).amax(-1)
    top = lab.gather(2, top_z.clamp_min(0)[..., None])[..., 0]
    top = torch.where(top_z >= 0, top, torch.full_like(top, free_label))
    return top, visible


def _to_image(grid_xy: Tensor) -> Tensor:
    """(X, Y, ...) -> image rows/columns: x forward up, y left on the left."""
    return grid_xy.flip(0).flip(1)


def bev_rgb(top: Tensor, colors: np.ndarray, free_label: int, visible: Tensor | None = None) -> np.ndarray:
    """(X, Y, 3) uint8 picture of a top-down label map (see :func:`bev_labels`)."""
    palette = np.concatenate([colors, np.asarray([FREE_COLOR], dtype=np.uint8)], 0)
    idx = top.clamp(0, free_label).numpy()
    idx = np.where(idx == free_label, len(palette) - 1, idx)
    rgb = palette[idx]
    if visible is not None:
        _paint_unseen(rgb, visible)
    return _to_image(torch.from_numpy(rgb)).numpy()


def bev_error_rgb(
    pred_top: Tensor, gt_top: Tensor, free_label: int, visible: Tensor | None = None
) -> np.ndarray:
    """(X, Y, 3) uint8 error map of two top-down label maps (colours: ``ERROR_COLORS``)."""
    rgb = np.full((*pred_top.shape, 3), FREE_COLOR, dtype=np.uint8)
    p_occ, g_occ = pred_top != free_label, gt_top != free_label
    cases = {
        "correct": p_occ & g_occ & (pred_top == gt_top),
        "wrong class": p_occ & g_occ & (pred_top != gt_top),
        "false occupied": p_occ & ~g_occ,
        "missed": ~p_occ & g_occ,
    }
    for name, where in cases.items():
        rgb[where.numpy()] = ERROR_COLORS[name]
    if visible is not None:
        _paint_unseen(rgb, visible)
    return _to_image(torch.from_numpy(rgb)).numpy()


def _paint_unseen(rgb: np.ndarray, visible: Tensor) -> None:
    """Checkerboard (4-voxel squares) where ``visible`` (X, Y) is false; ``rgb`` is (X, Y, 3)."""
    x, y = np.meshgrid(np.arange(rgb.shape[0]), np.arange(rgb.shape[1]), indexing="ij")
    checker = (x // 4 + y // 4) % 2 == 0
    hidden = ~visible.numpy()
    rgb[hidden & checker] = UNSEEN_COLOR
    rgb[hidden & ~checker] = UNSEEN_COLOR_2


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_bev_comparison(
    path: str | Path, pred, gt, class_names: Sequence[str], mask=None, title: str | None = None
) -> Path:
    """PNG with prediction | ground truth | error side by side, and a legend.

    Args:
        path: output PNG path.
        pred: (X, Y, Z) predicted labels (free = len(class_names)).
        gt: (X, Y, Z) ground-truth labels.
        class_names: the K class names.
        mask: optional (X, Y, Z) camera mask applied to both (hidden voxels drawn as unseen).
        title: figure title.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    free = len(class_names)
    colors = class_colors(class_names)
    p_top, vis = bev_labels(pred, free, mask)
    g_top, _ = bev_labels(gt, free, mask)
    panels = [
        ("prediction", bev_rgb(p_top, colors, free, vis)),
        ("ground truth", bev_rgb(g_top, colors, free, vis)),
        ("error", bev_error_rgb(p_top, g_top, free, vis)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.8), dpi=100)
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(p_top.unique().tolist()) | set(g_top.unique().tolist()))
    handles = [Patch(color=colors[k] / 255.0, label=class_names[k]) for k in present if k < free]
    handles += [Patch(color=np.asarray(c) / 255.0, label=n) for n, c in ERROR_COLORS.items()]
    handles.append(Patch(color=np.asarray(UNSEEN_COLOR) / 255.0, label="not seen by cameras"))
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "bird's-eye view (x forward = up, y left = left)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_confusion_matrix(path: str | Path, confusion, class_names: Sequence[str]) -> Path:
    """PNG of a (K+1, K+1) confusion matrix (rows = ground truth), row-normalised, free last."""
    plt = _pyplot()
    conf = np.asarray(confusion, dtype=np.float64)
    names = [*class_names, "free"]
    if conf.shape != (len(names), len(names)):
        raise ValueError(f"confusion must be {(len(names), len(names))}, got {conf.shape}")
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.5 * n, 1.5 + 0.5 * n), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), [f"{nm} ({int(r)})" for nm, r in zip(names, rows[:, 0])], fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth (voxels)")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{100 * norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of the ground-truth row")
    ax.set_title("confusion matrix (camera-visible voxels, row-normalised, %)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def depth_to_rgb(depth: Tensor, max_depth: float | None = None) -> Tensor:
    """(H, W) metric depth -> (3, H, W) float RGB in [0, 1] (turbo colour map; invalid (<= 0) black).

    Args:
        depth: (H, W) depth [m].
        max_depth: depth mapped to the top of the colour map; the 99th percentile of valid depths
            when None.
    """
    from matplotlib import colormaps

    d = depth.detach().float().cpu()
    if d.dim() != 2:
        raise ValueError(f"depth must be (H, W), got {tuple(d.shape)}")
    valid = torch.isfinite(d) & (d > 0)
    if max_depth is None:
        max_depth = float(torch.quantile(d[valid], 0.99)) if valid.any() else 1.0
    x = (d / max(max_depth, 1e-6)).clamp(0, 1).numpy()
    rgb = torch.from_numpy(colormaps["turbo"](x)[..., :3]).float()
    rgb[~valid] = 0
    return rgb.permute(2, 0, 1).contiguous()


def pca_rgb(features: Sequence[Tensor], reference: int = 0) -> list[Tensor]:
    """Colour feature maps by their first three principal components, all in one basis.

    The basis and the colour range come from ``features[reference]`` (the target), so a rendered
    map that matches its target gets the same colours.

    Args:
        features: feature maps, each (C, h, w) (sizes may differ, C must agree).
        reference: index of the map that defines the basis and range.
    Returns:
        (3, h, w) float RGB in [0, 1] for each input.
    """
    maps = [f.detach().float().cpu() for f in features]
    c = maps[reference].shape[0]
    if any(m.dim() != 3 or m.shape[0] != c for m in maps):
        raise ValueError(f"features must all be (C, h, w) with C = {c}, got {[tuple(m.shape) for m in maps]}")
    ref = maps[reference].reshape(c, -1).T  # (P, C)
    mean = ref.mean(0, keepdim=True)
    # Principal axes from the SVD of the centred reference pixels.
    _, _, vt = torch.linalg.svd(ref - mean, full_matrices=False)
    basis = vt[: min(3, c)].T  # (C, <=3)
    proj_ref = (ref - mean) @ basis
    lo = torch.quantile(proj_ref, 0.01, dim=0)
    hi = torch.quantile(proj_ref, 0.99, dim=0)
    out = []
    for m in maps:
        p = (m.reshape(c, -1).T - mean) @ basis
        p = ((p - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
        if p.shape[1] < 3:
            p = torch.cat([p, p[:, :1].expand(-1, 3 - p.shape[1])], 1)
        out.append(p.T.reshape(3, *m.shape[1:]))
    return out


def hstack_images(images: Sequence[Tensor], gap: int = 4) -> Tensor:
    """Place (3, H_i, W_i) images side by side (resized to the first one's height), white gaps."""
    import torch.nn.functional as F

    h = images[0].shape[1]
    parts = []
    for i, img in enumerate(images):
        if img.shape[1] != h:
            w = max(1, round(img.shape[2] * h / img.shape[1]))
            img = F.interpolate(img[None], size=(h, w), mode="nearest")[0]
        parts.append(img)
        if i + 1 < len(images):
            parts.append(torch.ones(3, h, gap))
    return torch.cat(parts, dim=2)
