"""Collects per-frame results of a bag evaluation (offline or live) into scores, tables and pictures.

Scores are Occ3D's (``gausstr_core.evaluation.metrics.OccupancyMetric``: one confusion matrix over the
camera-visible voxels of every frame, per-class IoU, mIoU, geometry IoU), computed over the frames that
have ground truth; per-frame IoU / mIoU go into ``frames.csv``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gausstr_core.grid import VoxelGrid
from gausstr_ros.bag.report import (
    ReportDir,
    distribution,
    save_depth_comparison,
    save_gaussians_top_view,
    save_latency_histogram,
    save_prediction_bev,
    write_csv,
    write_json,
)


@dataclass
class FrameViews:
    """The input images of a frame set for pictures: V (H, W, 3) uint8 RGB and V depth maps (or None)."""

    images: list[np.ndarray]
    input_depth: list[np.ndarray | None] | None


@dataclass
class FrameGaussians:
    """A frame's Gaussians on the host: means, scales (N, 3), rotations (N, 4) wxyz, opacities and
    labels (N,)."""

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    opacities: np.ndarray
    labels: np.ndarray


class ResultCollector:
    """Scores, rows and pictures of the frames of one evaluation.

    Args:
        report: the report directory being written.
        class_names: the K names of the predicted labels (free = K).
        grid: the prediction grid.
        camera_names: V camera names (pictures).
        ground_truth: a ``groundtruth`` source (``lookup(stamp) -> GroundTruthFrame | None``) or None.
    """

    def __init__(
        self,
        report: ReportDir,
        class_names: Sequence[str],
        grid: VoxelGrid,
        camera_names: Sequence[str],
        ground_truth: Any | None,
    ):
        from gausstr_core.evaluation.runner import display_names

        self.report = report
        self.class_names = display_names(list(class_names))
        self.grid = grid
        self.camera_names = list(camera_names)
        self.ground_truth = ground_truth
        self.metric = None
        self.rows: list[dict[str, Any]] = []
        self.status = Counter()
        self.reasons: dict[str, str] = {}
        self.files: list[str] = []
        self.frames_with_gt = 0
        self.frames_missing_gt = 0

    # -- per frame -------------------------------------------------------------------------------

    def _check_ground_truth(self, gt) -> None:
        if len(gt.class_names) != len(self.class_names):
            raise ValueError(
                f"the vocabulary has {len(self.class_names)} categories ({self.class_names}) but the "
                f"ground truth ({gt.source}) has {len(gt.class_names)} classes ({gt.class_names}); "
                f"scoring compares labels by index, so give --categories (or the params file's "
                f"categories) one entry per ground-truth class, in its order"
            )
        if gt.grid.shape != self.grid.shape or not np.allclose(gt.grid.range, self.grid.range, atol=1e-3):
            raise ValueError(
                f"the prediction grid {self.grid.range} at {self.grid.voxel_size} m {self.grid.shape} "
                f"differs from the ground truth's {gt.grid.range} at {gt.grid.voxel_size} m "
                f"{gt.grid.shape}; set grid_range and voxel_size to the ground truth's"
            )

    def add_frame(
        self,
        index: int,
        stamp_ns: int,
        status: str,
        reason: str = "",
        labels: np.ndarray | None = None,
        gaussians: FrameGaussians | None = None,
        rendered_depth: Sequence[np.ndarray] | None = None,
        views: FrameViews | None = None,
        picture: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one frame set.

        Args:
            index: position of the set in the bag.
            status: "ok" (a prediction), "rejected:<kind>", "dropped", ...
            labels: (X, Y, Z) predicted labels when status is "ok".
            rendered_depth: V (h, w) depth rendered from the Gaussians, or None.
            picture: draw this frame (BEV, depth, Gaussians).
            extra: more columns for frames.csv (timings, latency, ...).
        Returns:
            The frames.csv row.
        """
        from gausstr_core.evaluation.metrics import OccupancyMetric

        row: dict[str, Any] = {
            "frame": index,
            "stamp_s": f"{stamp_ns / 1e9:.6f}",
            "status": status,
            "reason": reason,
        }
        self.status[status] += 1
        if status.startswith("rejected"):
            self.reasons.setdefault(status, reason)
        gt = None
        if labels is not None:
            row["occupied_voxels"] = int((labels != len(self.class_names)).sum())
            if gaussians is not None:
                row["gaussians_occupied"] = int((gaussians.labels < len(self.class_names)).sum())
            if self.ground_truth is not None:
                gt = self.ground_truth.lookup(stamp_ns)
                if gt is None:
                    self.frames_missing_gt += 1
                    row["ground_truth"] = "missing"
                else:
                    if self.metric is None:
                        self._check_ground_truth(gt)
                        self.metric = OccupancyMetric(gt.class_names)
                    self.frames_with_gt += 1
                    pred, truth = torch.from_numpy(labels), torch.from_numpy(gt.semantics)
                    mask = None if gt.mask_camera is None else torch.from_numpy(gt.mask_camera)
                    self.metric.update(pred, truth, mask)
                    frame_metric = OccupancyMetric(gt.class_names)
                    frame_metric.update(pred, truth, mask)
                    s = frame_metric.compute()
                    row["ground_truth"] = f"{(gt.stamp_ns - stamp_ns) / 1e6:+.1f} ms"
                    row["iou"] = 100 * s.iou
                    row["miou"] = 100 * s.miou
        row.update(extra or {})
        self.rows.append(row)
        if picture and labels is not None:
            self._pictures(index, stamp_ns, labels, gt, gaussians, rendered_depth, views)
        return row

    def _pictures(self, index, stamp_ns, labels, gt, gaussians, rendered_depth, views) -> None:
        from gausstr_core.colors import class_colors
        from gausstr_core.evaluation.visualize import bev_labels, bev_rgb, save_bev_comparison

        when = f"frame {index} ({stamp_ns / 1e9:.3f} s)"
        name = f"frame_{index:04d}"
        if gt is not None:
            mask = None if gt.mask_camera is None else gt.mask_camera
            path = save_bev_comparison(
                self.report.file(f"bev/{name}.png"),
                labels,
                gt.semantics,
                self.class_names,
                mask=mask,
                title=f"{when}: prediction | ground truth | error (camera-visible voxels)",
            )
        else:
            path = save_prediction_bev(
                self.report.file(f"bev/{name}.png"),
                labels,
                self.class_names,
                f"{when}: prediction (no ground truth)",
            )
        self.files.append(str(path.relative_to(self.report.path)))
        if views is not None or rendered_depth is not None:
            images = (
                views.images
                if views is not None
                else [np.zeros((8, 8, 3), np.uint8)] * len(self.camera_names)
            )
            path = save_depth_comparison(
                self.report.file(f"depth/{name}.png"),
                self.camera_names,
                images,
                views.input_depth if views is not None else None,
                rendered_depth,
                when,
            )
            self.files.append(str(path.relative_to(self.report.path)))
        if gaussians is not None:
            background = None
            if gt is not None:
                free = len(self.class_names)
                top, visible = bev_labels(gt.semantics, free, gt.mask_camera)
                background = bev_rgb(top, class_colors(self.class_names), free, visible)
            path = save_gaussians_top_view(
                self.report.file(f"gaussians/{name}.png"),
                gaussians.means,
                gaussians.scales,
                gaussians.rotations,
                gaussians.opacities,
                gaussians.labels,
                self.class_names,
                self.grid,
                when,
                background,
            )
            self.files.append(str(path.relative_to(self.report.path)))

    # -- end -------------------------------------------------------------------------------------

    def scores(self) -> dict[str, Any] | None:
        return self.metric.compute().to_dict() if self.metric is not None else None

    def finish(
        self,
        summary: dict[str, Any],
        latency_series: dict[str, list[float]],
        latency_title: str,
        ground_truth_description: str | None,
        more_latency: dict[str, list[float]] | None = None,
    ) -> dict[str, Any]:
        """Write frames.csv, the latency histogram, scores (per_class.md, confusion.png) and summary.json.

        Args:
            latency_series: name -> latencies [ms], drawn in latency.png and summarised.
            more_latency: further series summarised in summary.json only (e.g. pipeline stages).
        Returns:
            The summary (also written to summary.json).
        """
        from gausstr_core.evaluation.visualize import save_confusion_matrix

        write_csv(self.report.file("frames.csv"), self.rows)
        save_latency_histogram(self.report.file("latency.png"), latency_series, latency_title)
        summary["latency_ms"] = {
            name: distribution(v) for name, v in {**latency_series, **(more_latency or {})}.items()
        }
        summary["ground_truth"] = {
            "source": ground_truth_description,
            "frames_scored": self.frames_with_gt,
            "frames_without_match": self.frames_missing_gt,
        }
        scores = None
        if self.metric is not None:
            computed = self.metric.compute()
            scores = computed.to_dict()
            (self.report.file("per_class.md")).write_text(computed.markdown_table() + "\n")
            save_confusion_matrix(self.report.file("confusion.png"), computed.confusion, computed.class_names)
            self.files += ["per_class.md", "confusion.png"]
        summary["scores"] = scores
        summary["files"] = ["summary.json", "frames.csv", "latency.png", *self.files]
        write_json(self.report.file("summary.json"), summary)
        return summary
