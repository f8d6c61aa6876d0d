#!/usr/bin/env python3
"""Where a model's occupancy errors lie: geometry by distance and height, and by class.

    python scripts/occupancy_errors.py --checkpoint C --data runs/data/featup --split val \
        --density 0.12 --logit-scale 50

Scores the prediction the node makes (``OccupancyPredictor.predict``) and, in the same scenes, the
depth-unprojection baseline, over camera-visible voxels only (as ``gausstr-eval``): occupied against
free, counted by the voxel centre's horizontal distance from the ego origin and by the grid's height
layer. Why: the overall IoU says how much is wrong, not where; on the synthetic featup world the
model's false occupancy concentrates in the layer above the ground (docs/results.md, nineteenth
sitting), which points at the Gaussians' smallest size rather than at the class decision. The class
table says, for each ground-truth class, which share of its visible voxels came out with its own
label, free, or another class's label (and of the voxels predicted as that class, which share is
free in the ground truth): a class lost to "free" needs geometry, one lost to "other" needs the class
decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DISTANCE_EDGES = (0.0, 10.0, 20.0, 30.0, 40.0, float("inf"))


def occupancy_error_counts(
    labels: torch.Tensor,
    semantics: torch.Tensor,
    mask: torch.Tensor | None,
    free_label: int,
    voxel_distance: torch.Tensor,
    distance_edges=DISTANCE_EDGES,
) -> dict[str, torch.Tensor]:
    """Occupied-vs-free true positives, false positives and false negatives, by distance and height.

    Args:
        labels: (X, Y, Z) predicted labels, free = ``free_label``.
        semantics: (X, Y, Z) ground-truth labels, free = ``free_label``.
        mask: (X, Y, Z) bool voxels that count (camera-visible), None = all.
        voxel_distance: (X, Y) horizontal distance of each column's centre from the ego origin [m].
        distance_edges: bin edges [m], increasing; a voxel in [e_i, e_i+1) counts in bin i.
    Returns:
        ``by_distance`` (len(edges) - 1, 3) and ``by_height`` (Z, 3) int64 counts of (TP, FP, FN).
    """
    if labels.shape != semantics.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(semantics.shape)} differ")
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    predicted = (labels != free_label) & mask
    occupied = (semantics != free_label) & mask
    kinds = torch.stack([predicted & occupied, predicted & ~occupied, ~predicted & occupied], -1)  # X,Y,Z,3
    edges = torch.tensor(distance_edges, dtype=voxel_distance.dtype)
    bin_of_column = torch.bucketize(voxel_distance, edges, right=True) - 1  # (X, Y)
    per_column = kinds.sum(2)  # (X, Y, 3)
    by_distance = torch.zeros(len(distance_edges) - 1, 3, dtype=torch.int64)
    inside = (bin_of_column >= 0) & (bin_of_column < len(distance_edges) - 1)
    by_distance.index_add_(0, bin_of_column[inside], per_column[inside].long())
    return {"by_distance": by_distance, "by_height": kinds.sum((0, 1)).long()}


def percent(a: int, b: int, digits: int) -> float | None:
    """100 a / b rounded to ``digits``; None where b is 0 (undefined)."""
    return round(100.0 * a / b, digits) if b else None


def class_confusion(
    labels: torch.Tensor, semantics: torch.Tensor, mask: torch.Tensor | None, num_labels: int
) -> torch.Tensor:
    """(num_labels, num_labels) int64 counts of visible voxels, row = ground truth, column = predicted.

    Args:
        labels, semantics: (X, Y, Z) predicted and ground-truth labels in [0, num_labels).
        mask: (X, Y, Z) bool voxels that count (camera-visible), None = all.
    """
    if labels.shape != semantics.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(semantics.shape)} differ")
    keep = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    pairs = semantics[keep].long() * num_labels + labels[keep].long()
    return torch.bincount(pairs, minlength=num_labels * num_labels).view(num_labels, num_labels)


def class_outcomes(confusion: torch.Tensor, free_label: int) -> list[dict]:
    """Per class (not free) of a (L, L) confusion: ground-truth voxels and the shares that came out as
    the class, free, or another class (the most frequent other named by index), and predicted voxels
    with the share that is free in the ground truth. Shares in percent, None where undefined."""
    pct = lambda a, b: percent(a, b, 1)
    rows = []
    for c in range(confusion.shape[0]):
        if c == free_label:
            continue
        row = confusion[c].clone()
        n, same, free = int(row.sum()), int(row[c]), int(row[free_label])
        row[c] = row[free_label] = 0
        predicted = int(confusion[:, c].sum())
        rows.append(
            {
                "class": c,
                "voxels": n,
                "same": pct(same, n),
                "free": pct(free, n),
                "other": pct(n - same - free, n),
                "top_other": int(row.argmax()) if int(row.sum()) else None,
                "predicted": predicted,
                "predicted_on_free": pct(int(confusion[free_label, c]), predicted),
            }
        )
    return rows


def _class_table(names: list[str], outcomes: dict[str, list[dict]]) -> str:
    cols = " | ".join(
        f"{k}: as itself | {k}: free | {k}: other (most) | {k}: predicted on free" for k in outcomes
    )
    lines = [f"| class | voxels | {cols} |", "| --- | ---: |" + " ---: |" * (4 * len(outcomes))]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    first = next(iter(outcomes.values()))
    for i, base in enumerate(first):
        if base["voxels"] == 0:
            continue
        cells = []
        for rows in outcomes.values():
            r = rows[i]
            other = fmt(r["other"]) + (f" ({names[r['top_other']]})" if r["top_other"] is not None else "")
            cells += [fmt(r["same"]), fmt(r["free"]), other, fmt(r["predicted_on_free"])]
        lines.append(f"| {names[base['class']]} | {base['voxels']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _named(row: dict, names: list[str]) -> dict:
    top = row["top_other"]
    return {**row, "class": names[row["class"]], "top_other": None if top is None else names[top]}


def rates(counts: torch.Tensor) -> list[dict]:
    """(R, 3) TP/FP/FN counts -> per row IoU, precision, recall in percent (None where undefined)."""
    pct = lambda a, b: percent(a, b, 2)
    rows = []
    for tp, fp, fn in counts.tolist():
        rows.append(
            {
                "iou": pct(tp, tp + fp + fn),
                "precision": pct(tp, tp + fp),
                "recall": pct(tp, tp + fn),
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        )
    return rows


def _table(title: str, names: list[str], results: dict[str, list[dict]]) -> str:
    head = (
        "| " + title + " | " + " | ".join(f"{k} IoU | {k} precision | {k} recall | {k} FP" for k in results)
    )
    lines = [head + " |", "| --- |" + " ---: |" * (4 * len(results))]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    for i, name in enumerate(names):
        cells = []
        for rows in results.values():
            r = rows[i]
            cells += [fmt(r["iou"]), fmt(r["precision"]), fmt(r["recall"]), str(r["fp"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gausstr_core.evaluation.runner import add_checkpoint_on_dataset_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_on_dataset_flags(parser)
    parser.add_argument(
        "--density", type=float, help="inference.density_threshold (default: the checkpoint's)"
    )
    parser.add_argument("--logit-scale", type=float, help="inference.logit_scale (default: the checkpoint's)")
    parser.add_argument("--json", help="also write the counts and rates here")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from gausstr_core.evaluation.baselines import depth_unprojection_predictor
    from gausstr_core.evaluation.runner import checkpoint_on_dataset, display_names, model_predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor, config, categories, loader = checkpoint_on_dataset(
        args.checkpoint, args.data, args.split, args.max_scenes, args.density
    )
    if args.logit_scale is not None:
        predictor.config = dataclasses.replace(predictor.config, logit_scale=args.logit_scale)
    predictors = {
        "model": model_predictor(predictor),
        "unprojection": depth_unprojection_predictor(config, categories),
    }
    grid = config.grid
    voxel_distance = grid.centers(dtype=torch.float64)[:, :, 0, :2].norm(dim=-1)  # (X, Y)
    n = len(loader)
    totals = {k: None for k in predictors}
    num_labels = len(categories) + 1
    confusion = {k: torch.zeros(num_labels, num_labels, dtype=torch.int64) for k in predictors}
    with torch.inference_mode():
        for batch, gt in tqdm(loader, desc="scenes", total=n):
            mask = None if gt.mask_camera is None else gt.mask_camera[0]
            semantics = gt.semantics[0].cpu()
            for name, predict in predictors.items():
                labels = predict(batch)[0].cpu()
                counts = occupancy_error_counts(labels, semantics, mask, len(categories), voxel_distance)
                confusion[name] += class_confusion(labels, semantics, mask, num_labels)
                totals[name] = (
                    counts if totals[name] is None else {k: totals[name][k] + v for k, v in counts.items()}
                )
    bins = [
        f"{a:g}-{b:g} m" if b != float("inf") else f"{a:g} m +" for a, b in itertools.pairwise(DISTANCE_EDGES)
    ]
    layers = [f"{grid.range[2] + z * grid.voxel_size:+.1f} m" for z in range(grid.shape[2])]
    by_distance = {k: rates(v["by_distance"]) for k, v in totals.items()}
    by_height = {k: rates(v["by_height"]) for k, v in totals.items()}
    by_class = {k: class_outcomes(v, len(categories)) for k, v in confusion.items()}
    names = [*display_names(categories), "free"]
    print(
        f"{args.checkpoint} on {n} scene(s) of {args.data} ({args.split}); occupied vs free, "
        "camera-visible voxels\n"
    )
    print(_table("distance", bins, by_distance) + "\n")
    print(_table("layer (bottom)", layers, by_height) + "\n")
    print(_class_table(names, by_class))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "by_distance": dict(zip(bins, zip(*by_distance.values()))),
                    "by_height": dict(zip(layers, zip(*by_height.values()))),
                    "by_class": {
                        names[r["class"]]: [_named(rows[i], names) for rows in by_class.values()]
                        for i, r in enumerate(next(iter(by_class.values())))
                    },
                    "columns": list(totals),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
