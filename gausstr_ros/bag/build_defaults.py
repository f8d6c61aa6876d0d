"""Rebuild the built-in default assets in ``gausstr_ros/assets/`` from a trained checkpoint.

    python -m gausstr_ros.bag.build_defaults --checkpoint runs/tiny/model.safetensors

1. copies the checkpoint to ``tiny_synthetic.safetensors`` (it must be a ``tiny`` preset checkpoint with
   a stored vocabulary), with the training command and any ``--set`` inference settings (chosen on
   the tune worlds, docs/results.md) written into its metadata and stored config;
2. writes the demo bag with ``gausstr-make-bag`` settings ``DEMO_BAG`` (a held-out world: seed 1, not
   one of the training worlds of seed 0) and ships its single ``.mcap`` file as ``synthetic_demo.mcap``;
3. evaluates the bag offline with the checkpoint (``gausstr-bag-eval``) and records the scores, the
   commands and the files' SHA-256 in ``synthetic_demo.metrics.json``, which
   ``test/test_bag_builtin.py`` reproduces.

Everything is written to temporary files first and moved into place at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from gausstr_ros.assets import DATA_DIR, DEFAULT_BAG, DEFAULT_BAG_METRICS, DEFAULT_CHECKPOINT, DEMO_USE_DEPTH
from gausstr_ros.bag.make_bag import SyntheticBagConfig, write_synthetic_bag
from gausstr_ros.bag.writer import storage_file

DEMO_BAG = {"frames": 20, "seed": 1, "scene": 0, "image_size": (112, 200), "rate_hz": 10.0}
MAKE_BAG_COMMAND = (
    "gausstr-make-bag --out <dir> --frames 20 --seed 1 --scene 0 --image-size 112 200 --rate-hz 10"
)
EVAL_COMMAND = (
    "gausstr-bag-eval --use-depth --out <report>   # the built-in bag and model, offline "
    "(scores_depth_head: --no-use-depth)"
)
SIZE_LIMIT_BYTES = 30_000_000
# Scores of a re-evaluation must match the recorded ones within this many IoU points (percent): the
# same code on another CPU or BLAS may flip a few voxels by float rounding.
TOLERANCE_POINTS = 0.1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(
    checkpoint: Path, training_command: str, overrides: list[str] | None = None, progress: bool = True
) -> dict:
    """Rebuild the assets; returns the recorded metrics.

    Args:
        checkpoint: a tiny-preset deployment checkpoint from gausstr-train.
        training_command: the exact command that trained it (into the metadata and the metrics).
        overrides: ``key=value`` changes of its stored config (e.g. ``inference.density_threshold=0.16``).
    """
    import torch

    from gausstr_core.config import GaussTRConfig, from_dict, to_dict
    from gausstr_core.io.checkpoint import read_checkpoint_header, rewrite_checkpoint
    from gausstr_core.train.config import apply_overrides
    from gausstr_ros.bag.evaluate import evaluate_bag
    from gausstr_ros.bag.options import BagEvalOptions

    header = read_checkpoint_header(checkpoint)
    metadata = json.loads(header.get("metadata", "{}"))
    if metadata.get("preset") != "tiny" or not metadata.get("vocabulary"):
        raise ValueError(
            f"{checkpoint}: expected a tiny-preset checkpoint from gausstr-train with a stored "
            f"vocabulary, got preset {metadata.get('preset')!r}"
        )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA_DIR.parent, prefix=".build_defaults-") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / DEFAULT_CHECKPOINT.name
        config = from_dict(GaussTRConfig, json.loads(header["config"]))
        if overrides:
            config = from_dict(
                GaussTRConfig, apply_overrides(to_dict(config), overrides, "checkpoint config")
            )
        training = {**metadata.get("training", {}), "command": training_command}
        rewrite_checkpoint(
            checkpoint, ckpt, config, {"training": training, "config_overrides": list(overrides or [])}
        )
        metadata = json.loads(read_checkpoint_header(ckpt)["metadata"])
        bag_dir = write_synthetic_bag(tmp / "bag", SyntheticBagConfig(**DEMO_BAG), progress=progress)
        bag = tmp / DEFAULT_BAG.name
        shutil.copyfile(storage_file(bag_dir), bag)
        total = ckpt.stat().st_size + bag.stat().st_size
        if total > SIZE_LIMIT_BYTES:
            raise ValueError(
                f"the built-in checkpoint and bag are {total / 1e6:.1f} MB together, over the "
                f"{SIZE_LIMIT_BYTES / 1e6:.0f} MB limit"
            )
        summary, depth_head = (
            evaluate_bag(
                BagEvalOptions(
                    bag=bag,
                    checkpoint=ckpt,
                    out=tmp / f"report_{use_depth}",
                    pictures=0,
                    progress=progress,
                    use_depth=use_depth,
                )
            )
            for use_depth in (DEMO_USE_DEPTH, not DEMO_USE_DEPTH)
        )
        metrics = {
            "scores": summary["scores"],
            "use_depth": DEMO_USE_DEPTH,
            "scores_depth_head": depth_head["scores"],
            "frames": summary["frames"],
            "categories": summary["categories"],
            "tolerance_points": TOLERANCE_POINTS,
            "checkpoint_sha256": sha256(ckpt),
            "bag_sha256": sha256(bag),
            "checkpoint_metadata": metadata,
            "training_command": training_command,
            "config_overrides": list(overrides or []),
            "make_bag_command": MAKE_BAG_COMMAND,
            "eval_command": EVAL_COMMAND,
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
        }
        metrics_file = tmp / DEFAULT_BAG_METRICS.name
        metrics_file.write_text(json.dumps(metrics, indent=1) + "\n")
        for f in (ckpt, bag, metrics_file):
            f.replace(DATA_DIR / f.name)
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gausstr_ros.bag.build_defaults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="trained tiny checkpoint (gausstr-train)")
    p.add_argument("--training-command", required=True, help="the exact command that trained it (recorded)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the stored config, e.g. inference.density_threshold=0.16 (repeatable)",
    )
    args = p.parse_args(argv)
    try:
        metrics = build(args.checkpoint, args.training_command, args.overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"build_defaults: error: {exc}", file=sys.stderr)
        return 2
    s = metrics["scores"]
    print(
        f"wrote {DEFAULT_CHECKPOINT}, {DEFAULT_BAG}, {DEFAULT_BAG_METRICS}: "
        f"IoU {s['iou']:.2f} mIoU {s['miou']:.2f} over {s['num_frames']} frames"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
