"""Evaluate any label predictor over a dataset with ground truth: Occ3D metrics (camera mask),
RayIoU, per-class table, confusion matrix and bird's-eye-view pictures.

The predictor is a function ``CameraBatch -> (B, X, Y, Z) labels``: the trained model through
``OccupancyPredictor`` (the same inference the ROS node runs) or one of the trivial baselines, so
all of them are scored by exactly the same code.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gausstr_core.batch import CameraBatch
from gausstr_core.evaluation.metrics import OccupancyMetric
from gausstr_core.evaluation.rayiou import RayIoUMetric
from gausstr_core.grid import VoxelGrid

Predictor = Callable[[CameraBatch], Tensor]


def display_names(categories: Sequence[str]) -> list[str]:
    """Class names for tables: Occ3D's names when the vocabulary has Occ3D's 17 classes (labels are
    then Occ3D ids, whatever prompts name them), else each category's name."""
    from gausstr_core.data.occ3d import OCC3D_CLASS_NAMES

    if len(categories) == len(OCC3D_CLASS_NAMES) - 1:
        return list(OCC3D_CLASS_NAMES[:-1])
    return [c.split("|")[0].strip() for c in categories]


def evaluate(
    predict: Predictor,
    items: Iterable[tuple[CameraBatch, Any]],
    class_names: Sequence[str],
    grid: VoxelGrid | None = None,
    out_dir: str | Path | None = None,
    rayiou: bool = True,
    bev_scenes: int = 4,
    ray_origins: Sequence[Sequence[float]] | None = None,
    progress: bool = True,
    total: int | None = None,
    metric: OccupancyMetric | None = None,
    reduce: Callable[[OccupancyMetric, RayIoUMetric | None], None] | None = None,
    on_scored: Callable[[Tensor, Any], None] | None = None,
) -> dict[str, Any]:
    """Score a predictor.

    Args:
        predict: CameraBatch -> (B, X, Y, Z) integer labels, free = len(class_names).
        items: (CameraBatch, ground truth) pairs; the ground truth has ``semantics`` (B, X, Y, Z)
            and ``mask_camera`` (B, X, Y, Z) bool (None = every voxel counts).
        class_names: the K class names of the labels.
        grid: the voxel grid (RayIoU distances).
        out_dir: where to write metrics.json, per_class.md, confusion.png and bev_*.png (None = no
            files).
        rayiou: also compute RayIoU (SparseOcc definition, one origin per scene; see rayiou.py).
        bev_scenes: BEV pictures of the first this many scenes.
        ray_origins: RayIoU ray origins [m] in the ego frame (default the nuScenes LiDAR position).
        progress: show a tqdm bar.
        total: number of batches (for the bar).
        metric: an accumulator to continue (default a fresh one).
        reduce: called with the accumulators before the scores are computed (e.g. a DDP all-reduce).
        on_scored: called with (labels, ground truth) after each batch is scored (e.g. a sweep that
            scores variants of the same prediction).
    Returns:
        {"summary": {...}, "occupancy": OccupancyScores.to_dict(), "rayiou": {...} or None,
         "seconds_per_scene": float, "files": [...]}.
    """
    from tqdm import tqdm

    from gausstr_core.evaluation.visualize import save_bev_comparison, save_confusion_matrix

    grid = grid or VoxelGrid()
    metric = metric or OccupancyMetric(class_names)
    rays = RayIoUMetric(class_names, grid) if rayiou else None
    out = Path(out_dir) if out_dir is not None else None
    files: list[str] = []
    pictures: list[tuple[Tensor, Tensor, Tensor | None]] = []
    scenes, seconds = 0, 0.0
    for batch, gt in tqdm(
        items, total=total, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True
    ):
        t0 = time.perf_counter()
        labels = predict(batch).cpu()
        seconds += time.perf_counter() - t0
        semantics = gt.semantics.cpu()
        mask = None if getattr(gt, "mask_camera", None) is None else gt.mask_camera.cpu().bool()
        if labels.shape != semantics.shape:
            raise ValueError(
                f"the predictor returned labels of shape {tuple(labels.shape)}, the ground "
                f"truth is {tuple(semantics.shape)}"
            )
        metric.update(labels, semantics, mask)
        if on_scored is not None:
            on_scored(labels, gt)
        for i in range(labels.shape[0]):
            if rays is not None:
                rays.update(labels[i], semantics[i], ray_origins)
            if out is not None and scenes < bev_scenes:
                # drawn after the scores are written: an evaluation stopped while it draws (a
                # deadline, Ctrl-C) still leaves its numbers
                pictures.append((labels[i], semantics[i], None if mask is None else mask[i]))
            scenes += 1
    if reduce is not None:
        reduce(metric, rays)
    scores = metric.compute()
    ray_scores = rays.compute() if rays is not None else None
    pct = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else round(100.0 * v, 4)
    summary = {
        "iou": pct(scores.iou),
        "miou": pct(scores.miou),
        "miou_zero_shot": pct(scores.miou_zero_shot),
        "rayiou": pct(ray_scores["rayiou"]) if ray_scores else None,
        "scenes": scores.num_frames,
    }
    result = {
        "summary": summary,
        "occupancy": scores.to_dict(),
        "rayiou": _percent_tree(ray_scores) if ray_scores else None,
        "seconds_per_scene": seconds / max(scenes, 1),
        "files": files,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table = scores.markdown_table()
        if ray_scores:
            table += (
                f"\n\nRayIoU (SparseOcc, one origin per scene): {summary['rayiou']:.2f} "
                f"(@1 m {100 * ray_scores['rayiou@1']:.2f}, @2 m {100 * ray_scores['rayiou@2']:.2f}, "
                f"@4 m {100 * ray_scores['rayiou@4']:.2f})"
            )
        (out / "per_class.md").write_text(table + "\n")
        files.append(str(out / "per_class.md"))
        (out / "metrics.json").write_text(json.dumps(result, indent=1))
        files.append(str(save_confusion_matrix(out / "confusion.png", scores.confusion, class_names)))
        for k, (labels_k, semantics_k, mask_k) in enumerate(pictures):
            path = save_bev_comparison(
                out / f"bev_{k:03d}.png",
                labels_k,
                semantics_k,
                class_names,
                mask=mask_k,
                title=f"scene {k}: prediction | ground truth | error (camera-visible voxels)",
            )
            files.append(str(path))
        (out / "metrics.json").write_text(json.dumps(result, indent=1))  # now with every file
    return result


def _percent_tree(value):
    if isinstance(value, dict):
        return {k: (v if k == "num_frames" else _percent_tree(v)) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(100.0 * value, 4)
    return value


def model_predictor(predictor) -> Predictor:
    """The labels of ``OccupancyPredictor.predict`` (no depth rendering: not needed for scores)."""
    return lambda batch: predictor.predict(batch, render_depth=False).labels


def evaluate_model(
    model,
    model_config,
    dataset,
    categories: Sequence[str],
    ctx=None,
    out_dir: Path | None = None,
    max_scenes: int | None = None,
    amp: str = "auto",
    rayiou: bool = True,
    batch_size: int = 1,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Zero-shot evaluation of a (training) model through OccupancyPredictor, sharded over DDP ranks.

    Every rank scores every ``world_size``-th scene; the confusion matrices and RayIoU counts are
    summed over ranks, so the result is the same as one process scoring all scenes. The model is
    left in eval mode (the trainer switches it back).
    """
    import dataclasses

    from torch.utils.data import DataLoader, Subset

    from gausstr_core.inference.predictor import OccupancyPredictor
    from gausstr_core.text.encoder import TextEncoder
    from gausstr_core.train.data import collate_evaluation
    from gausstr_core.train.distributed import DistributedContext, all_reduce_sum

    ctx = ctx or DistributedContext()
    device = next(model.parameters()).device
    text = TextEncoder(dataclasses.replace(model_config.text, device=str(device)))
    # The model is the trainer's: its parameters stay the optimizer's float32 tensors.
    inference = dataclasses.replace(model_config.inference, cast_weights_once=False)
    if amp == "off":
        inference = dataclasses.replace(inference, autocast_dtype=None)
    predictor = OccupancyPredictor(model, text, model_config.grid, inference, categories, device)
    n = len(dataset) if not max_scenes else min(max_scenes, len(dataset))
    shard = Subset(dataset, list(range(ctx.rank, n, ctx.world_size)))
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_evaluation
    )
    names = display_names(categories)

    def reduce(metric: OccupancyMetric, rays: RayIoUMetric | None) -> None:
        if not ctx.distributed:
            return
        dev = device if ctx.backend == "nccl" else torch.device("cpu")
        metric.hist.copy_(all_reduce_sum(ctx, metric.hist.to(dev)).cpu())
        metric.num_frames = int(all_reduce_sum(ctx, torch.tensor([metric.num_frames], device=dev)).item())
        if rays is not None:
            for name in ("gt_count", "pred_count", "tp_count"):
                setattr(rays, name, all_reduce_sum(ctx, getattr(rays, name).to(dev)).cpu())
            rays.num_frames = int(all_reduce_sum(ctx, torch.tensor([rays.num_frames], device=dev)).item())

    return evaluate(
        model_predictor(predictor),
        loader,
        names,
        model_config.grid,
        out_dir=out_dir if ctx.is_main else None,
        rayiou=rayiou,
        progress=ctx.is_main,
        total=len(loader),
        reduce=reduce,
    )


def add_checkpoint_on_dataset_flags(parser, split: str = "val") -> None:
    """The flags of ``checkpoint_on_dataset`` for a model-inspection script's argparse parser:
    ``--checkpoint``, ``--data``, ``--split`` (default ``split``), ``--max-scenes`` and ``--threads``."""
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default=split)
    parser.add_argument("--max-scenes", type=int, default=0, help="0 = every scene of the split")
    parser.add_argument("--threads", type=int, default=0)


def checkpoint_on_dataset(
    checkpoint: str | Path, data: str | Path, split: str, max_scenes: int = 0, density: float | None = None
):
    """A checkpoint's predictor (the inference the node runs, on the CPU) with the dataset's
    categories set, and an evaluation loader over the split's first ``max_scenes`` scenes (0 = all).

    The scripts that look inside a model (``scripts/gaussian_stats.py``, ``occupancy_errors.py``,
    ``depth_head_gap.py``) start here, so they all see the scenes and settings ``gausstr-eval`` does.

    Returns:
        (predictor, config, categories, loader): the GaussTRConfig stored in the checkpoint; the loader
        yields (CameraBatch, ground truth) one scene at a time, in order.
    """
    import dataclasses

    from torch.utils.data import DataLoader, Subset

    from gausstr_core.inference.predictor import OccupancyPredictor
    from gausstr_core.io.checkpoint import read_full_config
    from gausstr_core.train.data import build_dataset, categories_for, collate_evaluation

    config = read_full_config(checkpoint)
    predictor = OccupancyPredictor.from_checkpoint(checkpoint, device=torch.device("cpu"))
    if density is not None:
        predictor.config = dataclasses.replace(predictor.config, density_threshold=density)
    dataset = build_dataset(str(data), split, config, training=False)
    categories = categories_for(dataset)
    predictor.set_categories(categories)
    n = len(dataset) if not max_scenes else min(max_scenes, len(dataset))
    loader = DataLoader(
        Subset(dataset, list(range(n))), batch_size=1, shuffle=False, collate_fn=collate_evaluation
    )
    return predictor, config, categories, loader
