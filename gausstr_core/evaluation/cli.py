"""``gausstr-eval``: zero-shot occupancy scores of a checkpoint (or a trivial baseline) on data with
Occ3D ground truth.

    gausstr-eval --checkpoint runs/tiny/model.safetensors --data data/synth --out runs/tiny/eval
    gausstr-eval --baseline depth-unprojection --preset tiny --data data/synth --out eval/depth_unproj
    gausstr-eval --baseline all-free --data data/synth --out eval/all_free
    gausstr-eval --baseline init --preset featup --data data/synth --out eval/init

Writes ``metrics.json`` (IoU, mIoU over all classes and without "others"/"other flat", RayIoU,
per-class IoUs, in percent), ``per_class.md`` (the table), ``confusion.png`` and ``bev_*.png``
(prediction | ground truth | error, camera-visible voxels) into ``--out``. Scores use Occ3D's
camera mask. The vocabulary is the data's own (the synthetic world: Occ3D's classes as groups of
its names; nuScenes: Occ3D's categories) unless ``--categories`` names one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gausstr_core.cli_flags import add_dataclass_flags, dataclass_from_args

Baseline = Literal["all-free", "init", "depth-unprojection"]
BASELINES: tuple[str, ...] = typing.get_args(Baseline)
OCC3D_NUM_CLASSES = 17

# the config sections gausstr-eval --set can still change for a built checkpoint
CHECKPOINT_OVERRIDABLE = ("inference.", "grid.")


@dataclass
class EvalOptions:
    """What ``gausstr-eval`` scores, on which data, and where it writes (one flag per field).

    Attributes:
        data: directory in the nuScenes/Occ3D layout, or synthetic:scenes=N,seed=S
        out: output directory
        checkpoint: model checkpoint (.safetensors from gausstr-train or the converter)
        baseline: score a trivial baseline instead of a model: all-free, init (the preset's
            untrained Gaussians at the input depth, labelled by their target feature) or
            depth-unprojection
        preset: config (text encoder, grid, input size) for baselines: tiny, talk2dino, featup
            (default tiny)
        split: split of a data directory (default val)
        categories: vocabulary (Occ3D order for Occ3D ground truth), e.g. 'car|sedan'
        max_scenes: evaluate at most this many scenes (0 = all)
        bev: BEV pictures of the first N scenes
        rayiou: compute RayIoU (``--no-rayiou`` skips it)
        use_depth: give the model the data's metric depth (``--no-use-depth``: the model's own
            depth head predicts it, as the node does with its default ``use_depth: false`` on
            cameras without a depth source; checkpoints only, and they need a depth head)
        density_sweep: also score these density thresholds (model or init baseline; one
            prediction per scene) and write sweep.json: for choosing inference.density_threshold
            on tune data
        device: inference device: auto, cpu, cuda, cuda:N
        overrides: config override, e.g. inference.density_threshold=0.1 (repeatable)
        threads: torch CPU threads
    """

    data: str
    out: Path
    checkpoint: Path | None = None
    baseline: Baseline | None = None
    preset: str = "tiny"
    split: str = "val"
    categories: list[str] | None = None
    max_scenes: int = 0
    bev: int = 4
    rayiou: bool = True
    use_depth: bool = True
    density_sweep: list[float] | None = None
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)
    threads: int | None = None


_FLAG_OPTIONS = {
    "rayiou": {"help": "skip RayIoU"},
    "use_depth": {"help": "the model's depth head predicts depth (the node's camera-only default)"},
    "overrides": {"name": "--set", "action": "append", "metavar": "KEY=VALUE"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_flags(p, EvalOptions, options=_FLAG_OPTIONS)
    return p


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    return dataclass_from_args(EvalOptions, args)


def run(args: EvalOptions) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset

    from gausstr_core.config import GaussTRConfig, from_dict, to_dict
    from gausstr_core.device import resolve_device
    from gausstr_core.evaluation.runner import display_names, evaluate, model_predictor
    from gausstr_core.presets import preset
    from gausstr_core.text.encoder import TextEncoder
    from gausstr_core.train.config import apply_overrides
    from gausstr_core.train.data import build_dataset, categories_for, collate_evaluation

    if (args.checkpoint is None) == (args.baseline is None):
        raise ValueError("give exactly one of --checkpoint or --baseline")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    predictor = None
    if args.checkpoint is not None:
        from gausstr_core.inference.predictor import OccupancyPredictor
        from gausstr_core.io.checkpoint import read_full_config

        predictor = OccupancyPredictor.from_checkpoint(args.checkpoint, device=device)
        config = read_full_config(args.checkpoint)
    else:
        config = preset(args.preset)
    if predictor is not None:
        # The checkpoint's model and text encoder are built from its stored config before the
        # overrides are read: a model.* or text.* override would be dropped without a word and the
        # unchanged model scored under its name (a model.head.scale_multiplier sweep once was).
        ignored = [o for o in args.overrides if not o.strip().startswith(CHECKPOINT_OVERRIDABLE)]
        if ignored:
            raise ValueError(
                f"--set {ignored[0]!r}: with --checkpoint only the "
                f"{' and '.join(s + '*' for s in CHECKPOINT_OVERRIDABLE)} settings apply; the model "
                "and its text encoder come from the checkpoint's stored config"
            )
    if args.overrides:
        config = from_dict(GaussTRConfig, apply_overrides(to_dict(config), args.overrides, "config"))
        if predictor is not None:
            predictor.config, predictor.grid = config.inference, config.grid

    if not args.use_depth:
        if predictor is None:
            raise ValueError(
                "--no-use-depth scores a checkpoint's depth head; the baselines need the data's depth"
            )
        if getattr(predictor.model, "depth_head", None) is None:
            raise ValueError(
                f"--no-use-depth: {args.checkpoint} has no depth head (model.depth_head.enabled is "
                "off), so it needs metric depth for every camera"
            )

    dataset = build_dataset(args.data, args.split, config, training=False)
    categories = args.categories or categories_for(dataset)
    if len(categories) != OCC3D_NUM_CLASSES:
        raise ValueError(
            f"the ground truth uses Occ3D's labels, so --categories must name the "
            f"{OCC3D_NUM_CLASSES} Occ3D classes in label order (others, barrier, ..., "
            f"vegetation); got {len(categories)}"
        )
    names = display_names(categories)
    n = len(dataset) if not args.max_scenes else min(args.max_scenes, len(dataset))
    loader = DataLoader(
        Subset(dataset, list(range(n))), batch_size=1, shuffle=False, collate_fn=collate_evaluation
    )

    if args.baseline == "init":
        from gausstr_core.evaluation.baselines import InitialGaussians
        from gausstr_core.inference.predictor import OccupancyPredictor

        text = TextEncoder(dataclasses.replace(config.text, device=str(device)))
        # Every initial Gaussian has opacity 0.5: an opacity filter (talk2dino, tiny: 0.6) would drop
        # them all and measure nothing, so the baseline voxelizes every one (as featup does).
        inference = dataclasses.replace(config.inference, opacity_threshold=0.0)
        predictor = OccupancyPredictor(
            InitialGaussians(config.model), text, config.grid, inference, categories, device
        )
    if predictor is not None:
        predictor.set_categories(categories)
        predict = model_predictor(predictor)
        what = (
            f"checkpoint {args.checkpoint}"
            if args.checkpoint is not None
            else f"baseline: the {config.preset} preset's untrained Gaussians (init)"
        )
    elif args.baseline == "all-free":
        from gausstr_core.evaluation.baselines import all_free

        predict = lambda batch: all_free(config.grid, len(categories), batch.batch_size)
        what = "baseline: all free"
    else:
        from gausstr_core.evaluation.baselines import depth_unprojection_predictor

        predict = depth_unprojection_predictor(config, categories, device)
        what = "baseline: depth unprojection + nearest text prototype"
    on_scored = None
    if args.density_sweep:
        if predictor is None:
            raise ValueError("--density-sweep needs a model (--checkpoint) or --baseline init")
        predict, on_scored, sweep = _density_sweep(predictor, args.density_sweep, names)
    print(
        f"gausstr-eval: {what} on {n} scene(s) of {args.data} ({args.split}), {len(categories)} classes"
        + ("" if args.use_depth else "; depth from the model's depth head"),
        flush=True,
    )
    # Without depth the model's depth head lifts the Gaussians, exactly as in the node.
    items = loader if args.use_depth else ((dataclasses.replace(b, depth=None), gt) for b, gt in loader)
    with torch.inference_mode():
        result = evaluate(
            predict,
            items,
            names,
            config.grid,
            out_dir=args.out,
            rayiou=args.rayiou,
            bev_scenes=args.bev,
            total=len(loader),
            on_scored=on_scored,
        )
    result["evaluated"] = {
        "what": what,
        "data": args.data,
        "split": args.split,
        "categories": categories,
        "depth": "the data's metric depth" if args.use_depth else "the model's depth head",
    }
    (args.out / "metrics.json").write_text(json.dumps(result, indent=1))
    if args.density_sweep:
        rows = {f"{t:g}": m.compute().to_dict() for t, m in sweep.items()}
        for row in rows.values():
            row.pop("per_class_iou")
        (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
        print(
            "density threshold: " + "  ".join(f"{t} IoU {r['iou']} mIoU {r['miou']}" for t, r in rows.items())
        )
    return result


def _density_sweep(predictor, thresholds, names):
    """A predict function scoring the configured threshold, plus an on_scored hook scoring each of
    ``thresholds`` on the same prediction: labels are decided once with threshold 0 and cut at each
    threshold (prompt denoising does not depend on the threshold, so this equals separate runs)."""
    import torch

    from gausstr_core.evaluation.metrics import OccupancyMetric

    chosen = predictor.config.density_threshold
    predictor.config = dataclasses.replace(predictor.config, density_threshold=0.0)
    sweep = {float(t): OccupancyMetric(names) for t in thresholds}
    last = {}

    def cut(labels, density, threshold):
        return torch.where(density > threshold, labels, torch.full_like(labels, predictor.free_label))

    def predict(batch):
        prediction = predictor.predict(batch, render_depth=False)
        last["labels"], last["density"] = prediction.labels, prediction.density
        return cut(prediction.labels, prediction.density, chosen)

    def on_scored(_labels, gt):
        semantics = gt.semantics.cpu()
        mask = None if getattr(gt, "mask_camera", None) is None else gt.mask_camera.cpu().bool()
        for t, metric in sweep.items():
            metric.update(cut(last["labels"], last["density"], t).cpu(), semantics, mask)

    return predict, on_scored, sweep


def main(argv: list[str] | None = None) -> int:
    args = options_from_args(build_parser().parse_args(argv))
    try:
        result = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-eval: error: {exc}", file=sys.stderr)
        return 2
    s = result["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    print(
        f"IoU {fmt(s['iou'])}  mIoU {fmt(s['miou'])}  mIoU (zero-shot classes) {fmt(s['miou_zero_shot'])}  "
        f"RayIoU {fmt(s['rayiou'])}  ({s['scenes']} scenes) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
