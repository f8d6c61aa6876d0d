#!/usr/bin/env python3
"""What a checkpoint's Gaussians look like: opacity, size and distance, over a dataset's scenes.

    python scripts/gaussian_stats.py --checkpoint C --data runs/data/featup_tune --split all

Runs the inference the node runs (``OccupancyPredictor.predict``) and prints, over every Gaussian of
the last decoder layer in the scenes read: opacity quantiles, the fraction visible (opacity above
``OPAQUE_OPACITY``, the trainer's ``metric/opaque_fraction``), the largest axis of the scale, the
distance of the mean from the ego origin (all Gaussians and the visible ones), and the fraction a
free-space prompt wins. A trained healthy model keeps most of its Gaussians visible and spread over
the scene; a partly collapsed one (docs/results.md, 2026-12-07) has most transparent near the cameras,
which its IoU alone does not explain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUANTILES = (0.1, 0.5, 0.9)


def gaussian_statistics(
    opacities: torch.Tensor, scales: torch.Tensor, means: torch.Tensor, free: torch.Tensor
):
    """(N,) opacities, (N, 3) scales, (N, 3) ego-frame means [m], (N,) bool free-prompt wins -> dict."""
    from gausstr_core.losses.gausstr import OPAQUE_OPACITY

    q = torch.tensor(QUANTILES)
    visible = opacities > OPAQUE_OPACITY
    distance = means.norm(dim=-1)
    stats = {
        "gaussians": int(opacities.numel()),
        "opacity_quantiles": opacities.quantile(q).tolist(),
        "visible_fraction": float(visible.float().mean()),
        "scale_max_axis_quantiles": scales.max(-1).values.quantile(q).tolist(),
        "distance_quantiles": distance.quantile(q).tolist(),
        "visible_distance_quantiles": distance[visible].quantile(q).tolist() if visible.any() else None,
        "free_prompt_fraction": float(free.float().mean()),
    }
    return stats


def main(argv: list[str] | None = None) -> int:
    from gausstr_core.evaluation.runner import add_checkpoint_on_dataset_flags

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_on_dataset_flags(parser)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from gausstr_core.evaluation.runner import checkpoint_on_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor, _, _, loader = checkpoint_on_dataset(args.checkpoint, args.data, args.split, args.max_scenes)
    n = len(loader)
    parts: dict[str, list[torch.Tensor]] = {"opacities": [], "scales": [], "means": [], "free": []}
    with torch.inference_mode():
        for batch in tqdm(loader, desc="scenes", total=n):
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = predictor.predict(batch, render_depth=False)
            g = out.gaussians
            parts["opacities"].append(g.opacities.flatten().float())
            parts["scales"].append(g.scales.reshape(-1, 3).float())
            parts["means"].append(g.means.reshape(-1, 3).float())
            parts["free"].append(out.gaussian_labels.flatten() == out.free_label)
    stats = gaussian_statistics(*(torch.cat(parts[k]) for k in ("opacities", "scales", "means", "free")))
    stats.update(checkpoint=args.checkpoint, data=args.data, split=args.split, scenes=n)
    fmt = lambda xs: "n/a" if xs is None else " / ".join(f"{x:.3g}" for x in xs)
    print(f"{args.checkpoint} on {n} scene(s) of {args.data} ({args.split}): {stats['gaussians']} Gaussians")
    print("| quantity | value |\n| --- | --- |")
    print(f"| opacity q10 / q50 / q90 | {fmt(stats['opacity_quantiles'])} |")
    print(f"| visible (opacity > 0.05) | {stats['visible_fraction']:.1%} |")
    print(f"| largest scale axis q10 / q50 / q90 [m] | {fmt(stats['scale_max_axis_quantiles'])} |")
    print(f"| distance from the ego origin q10 / q50 / q90 [m] | {fmt(stats['distance_quantiles'])} |")
    print(f"| the same, visible Gaussians [m] | {fmt(stats['visible_distance_quantiles'])} |")
    print(f"| a free-space prompt wins | {stats['free_prompt_fraction']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
