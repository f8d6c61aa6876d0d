#!/usr/bin/env python3
"""How much of the feature loss's range separates classes, for one dataset's feature targets
(``gausstr_core.losses.target_geometry``): batches of ``--scenes`` training scenes, projected onto the
PCA basis the loss would compute for them, prototypes from the synthetic data's text embeddings.

    python scripts/feature_target_geometry.py --data runs/data/fu112 --preset featup
    python scripts/feature_target_geometry.py --data runs/data/synth112 --preset tiny

Prints one table: the cosine a render of the batch's mean feature already gets (raw and projected
targets), and the pairwise cosines of the classes present (raw, projected, centred), as the mean over
``--batches`` batches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gausstr_core.data.datasets import OccupancyDataset  # noqa: E402
from gausstr_core.data.synthetic.writer import EMBEDDINGS_FILE  # noqa: E402
from gausstr_core.losses.target_geometry import target_geometry  # noqa: E402
from gausstr_core.presets import get_preset  # noqa: E402
from gausstr_core.train.data import dataroot  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a data directory (gausstr-synth --out) or dataroot")
    p.add_argument("--preset", default="featup", help="the preset whose loss.pca_dims is used")
    p.add_argument("--pca-dims", type=int, help="override the preset's loss.pca_dims (0: none)")
    p.add_argument("--split", default="train")
    p.add_argument("--scenes", type=int, default=2, help="scenes per batch (the recipes' batch size)")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="the PCA's random start")
    args = p.parse_args(argv)

    root = dataroot(args.data)
    loss = get_preset(args.preset).loss()
    dims = loss.pca_dims if args.pca_dims is None else (args.pca_dims or None)
    data = OccupancyDataset(root, split=args.split, load_depth=False, load_features=True)
    embeddings = root / EMBEDDINGS_FILE
    prototypes_all = load_file(str(embeddings))["embeddings"].float() if embeddings.is_file() else None
    rows = []
    for b in range(args.batches):
        items = [data[(b * args.scenes + i) % len(data)] for i in range(args.scenes)]
        if items[0].features is None:
            raise SystemExit(f"{root}: no feature targets")
        samples = torch.cat(
            [it.features.permute(0, 2, 3, 1).reshape(-1, it.features.shape[1]) for it in items]
        )
        prototypes = None
        if prototypes_all is not None:
            # the classes present: each target patch's nearest embedding
            unit = torch.nn.functional.normalize
            nearest = (unit(samples, dim=1) @ unit(prototypes_all, dim=1).T).argmax(1).unique()
            prototypes = prototypes_all[nearest] if len(nearest) > 1 else None
        torch.manual_seed(args.seed + b)
        rows.append(target_geometry(samples, dims, prototypes, loss.pca_niter))

    def avg(values: list[float | None]) -> str:
        return "-" if any(v is None for v in values) else f"{sum(values) / len(values):.3f}"

    def spread(name: str) -> str:
        per_batch = [getattr(r, name) for r in rows]
        return " | ".join(
            avg([None if s is None else getattr(s, k) for s in per_batch]) for k in ("mean", "min", "max")
        )

    print(f"{root}: {args.batches} batches of {args.scenes} scenes ({args.split}), PCA to {dims} dims")
    print("| space | cos(target, batch mean) | class pairs: mean | min | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| raw targets | {avg([r.mean_score_raw for r in rows])} | {spread('classes_raw')} |")
    projected = avg([r.mean_score_projected for r in rows])
    print(f"| projected (official term) | {projected} | {spread('classes_projected')} |")
    print(f"| centred (centred term) | - | {spread('classes_centred')} |")
    common, residual = avg([r.common_norm for r in rows]), avg([r.residual_norm for r in rows])
    print(f"norm of the mean projected target {common}, mean norm of the residuals {residual}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
