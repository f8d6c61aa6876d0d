"""Occ3D occupancy metrics: per-class IoU, mIoU and geometry IoU from a dataset-wide confusion matrix.

Definitions (those of the Occ3D benchmark and of hustvl/GaussTR's ``OccMetric``):

* One confusion matrix ``hist[gt, pred]`` over labels 0..K (K = free) is accumulated over every
  evaluated voxel of every frame (only voxels where ``mask_camera`` is true when a mask is given).
* Per-class IoU of class c = hist[c, c] / (hist[c, :].sum() + hist[:, c].sum() - hist[c, c]); it is
  NaN when the class is in neither the ground truth nor the prediction (union 0). Dataset-level
  sums, not a mean of per-frame IoUs.
* mIoU = NaN-mean of the per-class IoUs of the K semantic classes (free excluded). Occ3D's number
  averages all 17 classes ("others" included); the zero-shot GaussTR protocol never predicts
  "others" and "other_flat", so ``miou_zero_shot`` also reports the mean without them.
* Geometry IoU = occupied-vs-free IoU: voxels that are non-free in both / voxels non-free in either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gausstr_core.data.occ3d import OCC3D_CLASS_NAMES as _OCC3D_LABELS

# Occ3D-nuScenes semantic classes 0..16 in label order (17 = free is not a class here).
OCC3D_CLASS_NAMES = tuple(n for n in _OCC3D_LABELS if n != "free")
# Classes the zero-shot GaussTR protocol cannot name with text and skips.
OCC3D_ZERO_SHOT_EXCLUDED = ("others", "other_flat")


def _as_long_tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.dtype.is_complex:
        raise ValueError(f"{name} must hold integer labels, got dtype {x.dtype}")
    return x.long()


def confusion_matrix(pred, gt, num_labels: int, mask=None) -> Tensor:
    """Confusion matrix of label volumes.

    Args:
        pred: (...) integer predicted labels in [0, num_labels) (tensor or numpy array).
        gt: (...) integer ground-truth labels, same shape as ``pred``.
        num_labels: number of labels including free (Occ3D: 18).
        mask: optional (...) bool, same shape: only voxels where it is true are counted
            (Occ3D's ``mask_camera``).
    Returns:
        (num_labels, num_labels) int64 counts, rows = ground truth, columns = prediction.
    """
    pred = _as_long_tensor(pred, "pred")
    gt = _as_long_tensor(gt, "gt").to(pred.device)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2 (classes + free), got {num_labels}")
    if mask is not None:
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        if tuple(mask.shape) != tuple(gt.shape):
            raise ValueError(f"mask must have the labels' shape {tuple(gt.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(pred.device).bool()
        pred, gt = pred[mask], gt[mask]
    pred, gt = pred.reshape(-1), gt.reshape(-1)
    for name, t in (("pred", pred), ("gt", gt)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_labels):
            raise ValueError(
                f"{name} labels must lie in [0, {num_labels - 1}] (free = {num_labels - 1}), "
                f"got values in [{int(t.min())}, {int(t.max())}]"
            )
    counts = torch.bincount(gt * num_labels + pred, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).cpu()


def per_class_iou(hist: Tensor) -> Tensor:
    """(L,) float64 IoU of every label of a (L, L) confusion matrix; NaN where the union is 0."""
    hist = torch.as_tensor(hist).double()
    tp = hist.diagonal()
    union = hist.sum(0) + hist.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def geometry_iou(hist: Tensor, free_label: int) -> float:
    """Occupied-vs-free IoU of a (L, L) confusion matrix (NaN if nothing is occupied anywhere)."""
    hist = torch.as_tensor(hist).double()
    occupied = torch.ones(hist.shape[0], dtype=torch.bool)
    occupied[free_label] = False
    both = hist[occupied][:, occupied].sum()
    union = hist.sum() - hist[free_label, free_label]
    return float(both / union) if union > 0 else math.nan


def _normalise(name: str) -> str:
    return " ".join(name.split("|")[0].replace("_", " ").split()).casefold()


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


@dataclass
class OccupancyScores:
    """Dataset-level occupancy scores (IoUs are fractions in [0, 1], NaN = class never present).

    Attributes:
        class_names: the K semantic class names (label k = class_names[k], free = K).
        per_class_iou: (K,) IoU of each class.
        miou: NaN-mean over all K classes (Occ3D / official GaussTR convention).
        miou_zero_shot: NaN-mean without the classes in ``excluded`` (zero-shot GaussTR protocol).
        excluded: the class names left out of ``miou_zero_shot`` (those of
            OCC3D_ZERO_SHOT_EXCLUDED that are in the vocabulary).
        iou: geometry (occupied vs free) IoU.
        precision, recall: of occupied voxels.
        confusion: (K+1, K+1) int64 counts, rows = ground truth, columns = prediction.
        num_frames: frames accumulated.
    """

    class_names: list[str]
    per_class_iou: list[float]
    miou: float
    miou_zero_shot: float
    excluded: list[str]
    iou: float
    precision: float
    recall: float
    confusion: np.ndarray = field(repr=False)
    num_frames: int = 0

    def to_dict(self) -> dict:
        """JSON-safe summary (NaN -> None), IoUs as percentages like the papers' tables."""
        pct = lambda v: None if math.isnan(v) else round(100.0 * v, 4)
        return {
            "miou": pct(self.miou),
            "miou_zero_shot": pct(self.miou_zero_shot),
            "iou": pct(self.iou),
            "precision": pct(self.precision),
            "recall": pct(self.recall),
            "excluded_from_miou_zero_shot": list(self.excluded),
            "per_class_iou": {n: pct(v) for n, v in zip(self.class_names, self.per_class_iou)},
            "num_frames": self.num_frames,
            "units": "percent",
        }

    def markdown_table(self) -> str:
        """Per-class table (markdown), one row per class plus the summary rows, in percent."""
        fmt = lambda v: "n/a" if math.isnan(v) else f"{100.0 * v:.2f}"
        total = self.confusion.sum(1)
        lines = ["| class | IoU | GT voxels |", "| --- | ---: | ---: |"]
        for k, (name, v) in enumerate(zip(self.class_names, self.per_class_iou)):
            mark = " (excluded from zero-shot mIoU)" if name in self.excluded else ""
            lines.append(f"| {name}{mark} | {fmt(v)} | {int(total[k])} |")
        lines.append(f"| **mIoU** (all {len(self.class_names)} classes) | **{fmt(self.miou)}** | |")
        if self.excluded:
            lines.append(
                f"| **mIoU** (zero-shot, without {', '.join(self.excluded)}) | "
                f"**{fmt(self.miou_zero_shot)}** | |"
            )
        lines.append(f"| **IoU** (geometry) | **{fmt(self.iou)}** | |")
        return "\n".join(lines)


class OccupancyMetric:
    """Accumulates the confusion matrix of label volumes over a dataset.

    Args:
        class_names: the K semantic class names; labels are 0..K-1 and K is free.
        exclude_zero_shot: names left out of ``miou_zero_shot`` when present in ``class_names``.
    """

    def __init__(
        self, class_names: Sequence[str], exclude_zero_shot: Sequence[str] = OCC3D_ZERO_SHOT_EXCLUDED
    ):
        if len(class_names) < 1:
            raise ValueError("class_names must name at least one class")
        self.class_names = [str(n) for n in class_names]
        self.free_label = len(self.class_names)
        # "other_flat" (Occ3D) and "other flat" (text vocabularies) name the same class.
        drop = {_normalise(n) for n in exclude_zero_shot}
        self.excluded = [n for n in self.class_names if _normalise(n) in drop]
        self.hist = torch.zeros(self.free_label + 1, self.free_label + 1, dtype=torch.int64)
        self.num_frames = 0

    def reset(self) -> None:
        self.hist.zero_()
        self.num_frames = 0

    def update(self, pred, gt, mask=None) -> None:
        """Add frames.

        Args:
            pred: (X, Y, Z) or (B, X, Y, Z) predicted labels, free = K.
            gt: ground-truth labels of the same shape.
            mask: optional bool of the same shape (Occ3D ``mask_camera``); None counts every voxel.
        """
        shape = tuple(pred.shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"pred must be (X, Y, Z) or (B, X, Y, Z), got {shape}")
        self.hist += confusion_matrix(pred, gt, self.free_label + 1, mask)
        self.num_frames += 1 if len(shape) == 3 else shape[0]

    def merge(self, other: OccupancyMetric) -> None:
        """Add another accumulator's counts (e.g. gathered from another process)."""
        if other.class_names != self.class_names:
            raise ValueError("cannot merge metrics over different class names")
        self.hist += other.hist
        self.num_frames += other.num_frames

    def compute(self) -> OccupancyScores:
        iou = per_class_iou(self.hist)[: self.free_label]
        keep = torch.tensor([n not in self.excluded for n in self.class_names])
        hist = self.hist.double()
        occ = torch.ones(self.free_label + 1, dtype=torch.bool)
        occ[self.free_label] = False
        both = hist[occ][:, occ].sum()
        pred_occ, gt_occ = hist[:, occ].sum(), hist[occ].sum()
        return OccupancyScores(
            class_names=list(self.class_names),
            per_class_iou=[float(v) for v in iou],
            miou=_nanmean(iou),
            miou_zero_shot=_nanmean(iou[keep]),
            excluded=list(self.excluded),
            iou=geometry_iou(self.hist, self.free_label),
            precision=float(both / pred_occ) if pred_occ > 0 else math.nan,
            recall=float(both / gt_occ) if gt_occ > 0 else math.nan,
            confusion=self.hist.numpy().copy(),
            num_frames=self.num_frames,
        )
