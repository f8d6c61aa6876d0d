"""Offline evaluation: Occ3D IoU/mIoU with the camera mask, RayIoU, trivial baselines, pictures,
and the ``gausstr-eval`` command."""

from gausstr_core.evaluation.metrics import (
    OCC3D_CLASS_NAMES,
    OCC3D_ZERO_SHOT_EXCLUDED,
    OccupancyMetric,
    OccupancyScores,
    confusion_matrix,
    geometry_iou,
    per_class_iou,
)

__all__ = [
    "OCC3D_CLASS_NAMES",
    "OCC3D_ZERO_SHOT_EXCLUDED",
    "OccupancyMetric",
    "OccupancyScores",
    "confusion_matrix",
    "geometry_iou",
    "per_class_iou",
]
