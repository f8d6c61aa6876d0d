#!/usr/bin/env python3
"""What a depth head costs on the camera-only path: ``OccupancyPredictor.predict`` (the node's,
the bag evaluator's and gausstr-eval's inference) on one frame set without depth, for a baseline
checkpoint and others, timed in the same run; a table with the device and each one's ratio to the
baseline.

    python benchmarks/camera_only_predict.py --baseline runs/old.safetensors \\
        --checkpoint gausstr_ros/assets/tiny_synthetic.safetensors --data runs/data/tiny_tune \\
        --threads 2 --output docs/benchmarks.md

The frame set is the first scene of ``--data`` (the checkpoint's input size); the timing is the
median of ``--repeats`` predictions after warm-up (wall clock on the CPU, CUDA events on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import device_description, markdown_table, time_function, update_markdown_section  # noqa: E402


def depth_head_name(model) -> str:
    head = model.depth_head
    if head is None:
        return "none"
    width = head.config.image_width
    params = sum(p.numel() for p in head.parameters())
    kind = f"image U-Net, width {width}" if width else "neck head"
    return f"{kind} ({params / 1e6:.2f} M parameters)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="checkpoint the others are compared with")
    p.add_argument("--checkpoint", action="append", required=True, help="checkpoint to time (repeatable)")
    p.add_argument("--data", required=True, help="a dataset directory (its first scene is the input)")
    p.add_argument("--split", default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output", type=Path, help="markdown file whose camera_only_predict section is updated")
    args = p.parse_args(argv)

    from gausstr_core.inference.predictor import OccupancyPredictor
    from gausstr_core.io.checkpoint import read_full_config
    from gausstr_core.train.data import build_dataset, categories_for, collate_evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = read_full_config(args.baseline)
    dataset = build_dataset(args.data, args.split, config, training=False)
    batch, _ = collate_evaluation([dataset[0]])
    batch = dataclasses.replace(batch, depth=None).to(device)
    rows = []
    base_ms = None
    for path in [args.baseline, *args.checkpoint]:
        predictor = OccupancyPredictor.from_checkpoint(path, device=device)
        predictor.set_categories(categories_for(dataset))

        def predict(predictor=predictor):
            with torch.inference_mode():
                return predictor.predict(batch, render_depth=False).labels

        timing = time_function(predict, device, warmup=args.warmup, repeats=args.repeats)
        base_ms = base_ms or timing.median_ms
        rows.append(
            [
                Path(path).name + (" (baseline)" if path == args.baseline else ""),
                depth_head_name(predictor.model),
                f"{timing.median_ms:.0f}",
                f"{timing.min_ms:.0f}",
                f"{timing.median_ms / base_ms:.2f}",
            ]
        )
    v = batch.num_views
    h, w = batch.image_size
    text = (
        f"Device: {device_description(device)}. One frame set ({v} x {h} x {w}) without depth, "
        f"median of {args.repeats} after {args.warmup} warm-up.\n\n"
        + markdown_table(["checkpoint", "depth head", "predict p50 [ms]", "min [ms]", "x baseline"], rows)
    )
    print(text)
    if args.output:
        update_markdown_section(args.output, "camera_only_predict", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
