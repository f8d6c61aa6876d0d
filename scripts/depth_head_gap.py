#!/usr/bin/env python3
"""Where the camera-only path loses: one checkpoint scored with four depths under its decoder.

    python scripts/depth_head_gap.py --checkpoint gausstr_ros/assets/tiny_synthetic.safetensors \\
        --data runs/data/tiny_tune --split all --density 0.16

The same model and inference (``OccupancyPredictor.predict``, as the node) lifts its Gaussians at
(1) the data's metric depth, (2) that depth averaged over k x k pixels and upsampled again, for each
``--pool`` k (what a depth map of the depth head's output stride could at best give), and (3) the
model's own depth head (the node's camera-only default, ``gausstr-eval --no-use-depth``). Prints
IoU / mIoU of each and the head's AbsRel against the data's depth (both clamped at the model's
depth limit), so the gap between (1) and (3) splits into resolution and accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pooled_depth(depth: torch.Tensor, k: int, limit: float) -> torch.Tensor:
    """(B, V, H, W) depth clamped at ``limit``, averaged over k x k pixels, upsampled bilinearly."""
    b, v, h, w = depth.shape
    x = F.avg_pool2d(depth.clamp(max=limit).flatten(0, 1)[:, None], k, ceil_mode=True)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0].reshape(b, v, h, w)


# Bins of the data's depth [m] for where the head errs; the last one is the depth limit and beyond
# (the sky and the far field, whose target is the limit).
DEPTH_BINS = (0.0, 5.0, 10.0, 20.0, 35.0)


def depth_error_sums(
    predicted: torch.Tensor, depth: torch.Tensor, limit: float, edges=DEPTH_BINS
) -> torch.Tensor:
    """(..., H, W) predicted and data depth -> (len(edges), 3) per bin of the data's depth: valid
    pixels, sum of |p - t| / t, sum of p - t [m]; both clamped at ``limit``, bins [edge_i, edge_i+1)
    with the last bin [edges[-1], inf). Sums, so that scenes add up pixel by pixel."""
    valid = depth > 0
    target = depth.clamp(max=limit)
    error = predicted.clamp(max=limit) - target
    bounds = [*edges, float("inf")]
    rows = []
    for lo, hi in itertools.pairwise(bounds):
        m = valid & (depth >= lo) & (depth < hi)
        rows.append([m.sum(), (error.abs() / target)[m].sum(), error[m].sum()])
    return torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)


def depth_head_gap(
    checkpoint: str, data: str, split: str = "all", density: float | None = None, pools=(4, 8), threads=None
) -> dict:
    """{variant name: {"iou", "miou"}} plus "abs_rel" (the depth head against the data's depth)."""
    from gausstr_core.evaluation.runner import checkpoint_on_dataset, display_names, evaluate, model_predictor

    if threads:
        torch.set_num_threads(threads)
    predictor, config, categories, loader = checkpoint_on_dataset(checkpoint, data, split, 0, density)
    if getattr(predictor.model, "depth_head", None) is None:
        raise SystemExit(f"{checkpoint} has no depth head")
    limit = config.model.head.depth_limit
    names = display_names(categories)

    variants = {"the data's depth": lambda b: b}
    for k in pools:
        variants[f"the data's depth averaged over {k} x {k} pixels"] = lambda b, k=k: dataclasses.replace(
            b, depth=pooled_depth(b.depth, k, limit)
        )
    variants["the depth head's prediction"] = lambda b: dataclasses.replace(b, depth=None)
    result: dict = {}
    for name, change in variants.items():
        items = ((change(b), gt) for b, gt in loader)
        with torch.inference_mode():
            scores = evaluate(
                model_predictor(predictor),
                items,
                names,
                config.grid,
                rayiou=False,
                progress=False,
            )["summary"]
        result[name] = {"iou": scores["iou"], "miou": scores["miou"]}
    errors = []
    sums = torch.zeros(len(DEPTH_BINS), 3, dtype=torch.float64)
    for batch, _ in loader:
        with torch.inference_mode():
            out = predictor.model(dataclasses.replace(batch, depth=None))  # in eval mode already
        scene = depth_error_sums(out.predicted_depth, batch.depth, limit)
        errors.append(float(scene[:, 1].sum() / scene[:, 0].sum()))  # the scene's mean over valid pixels
        sums += scene
    result["abs_rel"] = sum(errors) / len(errors)
    total = float(sums[:, 0].sum())
    bounds = [*DEPTH_BINS, float("inf")]
    result["abs_rel_by_depth"] = {
        f"{lo:g}-{hi:g} m": {
            "share": float(n) / total,
            "abs_rel": float(rel / n) if n else None,
            "mean_error_m": float(err / n) if n else None,
        }
        for (lo, hi), (n, rel, err) in zip(itertools.pairwise(bounds), sums)
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint with a depth head")
    p.add_argument("--data", required=True, help="data directory (tune worlds) or synthetic:scenes=N,seed=S")
    p.add_argument("--split", default="all")
    p.add_argument("--density", type=float, help="inference.density_threshold (default: the checkpoint's)")
    p.add_argument("--pool", type=int, nargs="*", default=[4, 8], help="pooling sizes of the data's depth")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    result = depth_head_gap(args.checkpoint, args.data, args.split, args.density, args.pool, args.threads)
    print("| depth the decoder lifts at | IoU | mIoU |\n| --- | ---: | ---: |")
    for name, row in result.items():
        if name not in ("abs_rel", "abs_rel_by_depth"):
            print(f"| {name} | {row['iou']:.2f} | {row['miou']:.2f} |")
    print(f"depth head AbsRel against the data's depth (clamped at the depth limit): {result['abs_rel']:.3f}")
    print("\n| the data's depth | share of pixels | head AbsRel | head mean error [m] |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in result["abs_rel_by_depth"].items():
        if row["abs_rel"] is not None:
            print(f"| {name} | {row['share']:.3f} | {row['abs_rel']:.3f} | {row['mean_error_m']:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
