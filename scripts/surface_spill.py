#!/usr/bin/env python3
"""Flat-class voxels above the ground: which classes the false voxels of a height layer carry,
where a model's flat-class density lies by height, and what thinning flat-class runs would do.

    python scripts/surface_spill.py --checkpoint C --data runs/data/featup_tune --split all \
        --density 0.12 --layer 3

A probe for docs/results.md (twentieth sitting), on tune worlds only. It scores the prediction
``OccupancyPredictor.predict`` makes at ``--density`` and, for each ``--keep`` fraction a, the same
labels after a per-column rule: in a vertical run of adjacent flat-class voxels (Occ3D's road, other
flat, sidewalk, terrain, any mix), a voxel stays only if its density is at least a x the run's
largest (a = 1: only the densest; a = 0: unchanged). Why it was measured: the layer above the ground
holds many of a trained model's false voxels, and the synthetic ground truth never stacks two
flat-class voxels in a column. The rule is not part of the inference: the featup model's flat-class
density lies under the ground layer, so every a > 0 lost IoU there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLAT_LABELS = (11, 12, 13, 14)  # Occ3D: driveable surface, other flat, sidewalk, terrain
KEEP_FRACTIONS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def run_peak(labels: torch.Tensor, density: torch.Tensor, surface: torch.Tensor) -> torch.Tensor:
    """The largest density of each voxel's vertical run of surface-labelled voxels.

    Args:
        labels: (B, X, Y, Z) integer labels; Z is the vertical axis.
        density: (B, X, Y, Z) float density.
        surface: (K + 1,) bool by label, True for the surface classes.
    Returns:
        (B, X, Y, Z) float: the run's peak density at surface voxels, -inf elsewhere.
    """
    z = labels.shape[-1]
    is_surface = surface[labels.long()]
    starts = is_surface.clone()
    starts[..., 1:] &= ~is_surface[..., :-1]
    column = torch.arange(is_surface[..., 0].numel()).reshape(is_surface.shape[:-1])
    # run id: column * (Z + 1) + the run's number in its column (>= 1); non-surface voxels share 0
    run = torch.where(is_surface, column[..., None] * (z + 1) + starts.long().cumsum(-1), 0).reshape(-1)
    peak = torch.full((column.numel() * (z + 1),), -torch.inf).scatter_reduce(
        0, run, density.reshape(-1).float(), "amax"
    )
    return torch.where(is_surface, peak[run].reshape(labels.shape), -torch.inf)


def thin_runs(labels, density, surface, keep: float, free_label: int) -> torch.Tensor:
    """Labels with every surface voxel below ``keep`` x its run's peak density made free."""
    weak = surface[labels.long()] & (density < keep * run_peak(labels, density, surface))
    return torch.where(weak, torch.full_like(labels, free_label), labels)


def main(argv: list[str] | None = None) -> int:
    from gausstr_core.evaluation.runner import add_checkpoint_on_dataset_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_on_dataset_flags(parser, split="all")
    parser.add_argument("--density", type=float, required=True, help="inference.density_threshold")
    parser.add_argument("--layer", type=int, default=3, help="height layer whose false voxels are counted")
    parser.add_argument("--keep", type=float, nargs="+", default=list(KEEP_FRACTIONS))
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from gausstr_core.evaluation.metrics import OccupancyMetric
    from gausstr_core.evaluation.runner import checkpoint_on_dataset, display_names

    if args.threads:
        torch.set_num_threads(args.threads)
    # decide at threshold 0, cut here: the rule runs after the threshold, as it would in inference
    predictor, config, categories, loader = checkpoint_on_dataset(
        args.checkpoint, args.data, args.split, args.max_scenes, 0.0
    )
    names = display_names(categories)
    free = len(categories)
    surface = torch.zeros(free + 1, dtype=torch.bool)
    surface[list(FLAT_LABELS)] = True
    metrics = {a: OccupancyMetric(names) for a in args.keep}
    false_by_class = torch.zeros(free + 1, dtype=torch.long)
    flat_density_by_layer = torch.zeros(config.grid.shape[2], dtype=torch.float64)
    with torch.inference_mode():
        for batch, gt in tqdm(loader, desc="scenes", total=len(loader)):
            p = predictor.predict(batch, render_depth=False)
            density = p.density.cpu()
            labels = torch.where(density > args.density, p.labels.cpu(), free)
            semantics, mask = gt.semantics.cpu(), gt.mask_camera.cpu().bool()
            false = (labels != free) & (semantics == free) & mask
            layer = args.layer
            false_by_class += torch.bincount(labels[..., layer][false[..., layer]].long(), minlength=free + 1)
            flat_density_by_layer += (density * surface[labels.long()]).sum((0, 1, 2)).double()
            for a, metric in metrics.items():
                metric.update(thin_runs(labels, density, surface, a, free), semantics, mask)
    scores = {f"{a:g}": metrics[a].compute().to_dict() for a in args.keep}
    result = {
        "layer": args.layer,
        "false_voxels_by_predicted_class": dict(zip(names, false_by_class[:free].tolist())),
        "false_voxels": int(false_by_class.sum()),
        "false_voxels_flat": int(false_by_class[list(FLAT_LABELS)].sum()),
        "flat_density_by_layer": [round(v, 1) for v in flat_density_by_layer.tolist()],
        "keep_fraction": {a: {"iou": s["iou"], "miou": s["miou"]} for a, s in scores.items()},
    }
    print(
        f"layer {args.layer}: {result['false_voxels_flat']} of {result['false_voxels']} false voxels "
        "carry a flat-class label"
    )
    print("flat-class density by layer (bottom up):", result["flat_density_by_layer"])
    for a, s in result["keep_fraction"].items():
        print(f"keep >= {a} x run peak: IoU {s['iou']:.2f} mIoU {s['miou']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
