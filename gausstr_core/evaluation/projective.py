"""Projective consistency (GaussRender, Chambon et al., ICCV 2025): predicted and ground-truth label
grids rendered from the sensor, elevated and bird's-eye cameras and compared in 2D, as a metric."""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.batch import CameraBatch
from gausstr_core.grid import VoxelGrid
from gausstr_core.losses.config import GaussRenderConfig
from gausstr_core.losses.gaussrender import (
    coarse_grid,
    coarsen_labels,
    gaussrender_terms,
    ground_truth_occupancy,
    render_views,
)


class ProjectiveConsistency:
    """GaussRender's renders as a metric of any label prediction: accumulated over a dataset.

    ``update(labels, semantics, mask, cameras)`` renders the predicted and the ground-truth label
    grids (one-hot colours, opacity 1 where not free, camera-visible voxels only when a mask is
    given) from every sensor camera, ``elevated_views`` elevated cameras per scene (from a seeded
    generator, so every model sees the same cameras) and the BEV camera; ``compute()`` returns per
    view kind the mean semantic L1 (x K: the fraction of rendered class mass that differs, in
    [0, 2]) and the mean depth error [m] over pixels the ground truth covers. Lower is better; a
    prediction equal to the ground truth scores 0.
    """

    def __init__(
        self,
        num_classes: int,
        grid: VoxelGrid | None = None,
        config: GaussRenderConfig | None = None,
        seed: int = 0,
        render_backend: str = "auto",
    ):
        self.num_classes = num_classes
        self.grid = grid or VoxelGrid()
        self.config = config or GaussRenderConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.render_backend = render_backend
        self.sums: dict[str, float] = {}
        self.frames = 0

    @torch.no_grad()
    def update(
        self, labels: Tensor, semantics: Tensor, mask: Tensor | None, cameras: CameraBatch
    ) -> dict[str, float]:
        """Add B scenes: labels and semantics (B, X, Y, Z), mask (B, X, Y, Z) bool or None. Returns
        this batch's scores."""
        if labels.shape != semantics.shape:
            raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(semantics.shape)} differ")
        k = self.num_classes
        device = cameras.images.device
        labels, semantics = labels.to(device), semantics.to(device)
        factor = self.config.grid_factor
        grid = coarse_grid(self.grid, factor)
        labels, _ = coarsen_labels(labels, None, k, factor)
        semantics, mask = coarsen_labels(semantics, None if mask is None else mask.to(device), k, factor)
        pred_colors, pred_opacity, pred_ignored = ground_truth_occupancy(labels, k)
        gt_colors, gt_opacity, ignored = ground_truth_occupancy(semantics, k)
        considered = ~ignored & ~pred_ignored
        if mask is not None:
            considered &= mask.to(device).bool()
        views = render_views(cameras, grid, self.config, self.generator, all_sensors=True)
        terms = gaussrender_terms(
            pred_colors,
            pred_opacity,
            considered & (pred_opacity > 0),
            gt_colors,
            gt_opacity,
            considered & (gt_opacity > 0),
            views,
            grid,
            self.config,
            self.render_backend,
        )
        scores = {}
        for view in views:
            scores[f"{view.kind}/semantic_l1"] = float(terms[f"{view.kind}/semantic"]) * k
            scores[f"{view.kind}/depth_error_m"] = float(terms[f"{view.kind}/depth"]) * view.max_depth
        b = labels.shape[0]
        for name, value in scores.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * b
        self.frames += b
        return scores

    def compute(self) -> dict[str, float]:
        """Mean of every score over the scenes added (empty before the first update)."""
        return {name: value / max(self.frames, 1) for name, value in self.sums.items()}
