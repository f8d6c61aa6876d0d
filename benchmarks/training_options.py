#!/usr/bin/env python3
"""The GaussRender and GaussianCross training options measured on the synthetic world: the tiny
preset trained with and without each option (same data, steps, seed and recipe), every model scored
on the held-out scenes (IoU, mIoU, RayIoU, GaussRender's projective consistency, rendered-depth error),
plus an opacity-pruning sweep at inference. Writes one section of docs/results.md.

    python benchmarks/training_options.py --data runs/data/synth112 --out runs/options \\
        --steps 400 --jobs 2 --output docs/results.md          # CPU, about an hour on 2 cores

Variants (``--variants``; the overrides are ``gausstr-train --set`` changes of the tiny preset):

* baseline: the tiny recipe as is (label-free: features + depth).
* gaussrender: + GaussRender (lambda 10, sensor + elevated + BEV views, 2x coarser grid on the CPU);
  this one trains with the ground-truth occupancy of the training scenes.
* photometric: + RGB head and the 0.85 SSIM + 0.15 L1 photometric loss (weight 1).
* point_cloud_init: reference points from the depth map's point cloud (unit cuboid, 64 cells).
* prune_training: Gaussians with opacity <= 0.3 left out of the training renders.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import markdown_table, update_markdown_section  # noqa: E402

SECTION = "training-options"
VARIANTS = {
    "baseline": ("tiny recipe (features + depth, no labels)", []),
    "gaussrender": ("+ GaussRender, lambda 10 (uses ground truth)", ["loss.gaussrender.weight=10"]),
    "photometric": (
        "+ RGB head, photometric loss (weight 1)",
        ["model.head.rgb_head=true", "loss.photometric.weight=1"],
    ),
    "point_cloud_init": (
        "reference points from the depth point cloud",
        ["model.decoder.reference_init=point_cloud"],
    ),
    "prune_training": ("opacity <= 0.3 pruned from training renders", ["loss.prune_opacity=0.3"]),
}
PRUNE_SWEEP = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
UNFILTERED = 0.0  # the second table: every Gaussian voxelized


def train(name: str, args: argparse.Namespace) -> subprocess.Popen:
    """Start one training run (a subprocess writing <out>/<name>/train.log)."""
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "gausstr_core.train.cli",
        "--preset",
        "tiny",
        "--data",
        args.data,
        "--out",
        str(out),
        "--max-steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--no-eval",
        "--image-every",
        "0",
        "--checkpoint-every",
        str(args.steps),
    ]
    for item in VARIANTS[name][1]:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    log = open(out / "train.log", "w")  # noqa: SIM115 (closed when the process is reaped)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log  # type: ignore[attr-defined]
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def train_minutes(run: Path) -> float | None:
    """Wall time of a finished run from its tqdm log ("400/400 [18:05<00:00, ...]"), in minutes."""
    import re

    log = run / "train.log"
    if not log.is_file():
        return None
    found = re.findall(r"(\d+)/\1 \[(?:(\d+):)?(\d+):(\d+)<", log.read_text(errors="replace"))
    if not found:
        return None
    _, hours, minutes, seconds = found[-1]
    return int(hours or 0) * 60 + int(minutes) + int(seconds) / 60


def step_seconds(name: str, args: argparse.Namespace, steps: int = 6, warmup: int = 2) -> float:
    """Median wall time of one training step (forward, losses, backward, optimizer) of a variant,
    measured in this process with ``args.threads`` threads, variants back to back (comparable,
    unlike the step times of runs that shared the CPU with different neighbours)."""
    import tempfile

    import torch

    from gausstr_core.presets import build_model_config, recipe
    from gausstr_core.train.distributed import DistributedContext
    from gausstr_core.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(
            recipe("tiny"),
            data=args.data,
            out=tmp,
            overrides=list(VARIANTS[name][1]),
            threads=args.threads,
            device="cpu",
            eval_at_end=False,
            eval_every=0,
            image_every=0,
            seed=args.seed,
        )
        trainer = Trainer(cfg, DistributedContext(), build_model_config(cfg))
        times = []
        for batch in trainer._loader(list(range(steps + warmup))):
            start = time.perf_counter()
            trainer.train_step(batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def evaluate(
    checkpoint: Path,
    args: argparse.Namespace,
    opacity_threshold: float | None = None,
    consistency: bool = True,
) -> dict:
    """Scores of a checkpoint on the held-out scenes: Occ3D IoU / mIoU (camera mask), RayIoU,
    GaussRender projective consistency (all sensor cameras, one elevated camera per scene, BEV) and
    the rendered-depth error against the depth targets. Cached next to the checkpoint (the cache
    is keyed by the settings and the checkpoint's modification time)."""
    key = f"{opacity_threshold}-{consistency}-{args.scenes}-{args.data}-{checkpoint.stat().st_mtime_ns}"
    cache_path = checkpoint.with_name("options_eval.json")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if key not in cache:
        cache[key] = _evaluate(checkpoint, args, opacity_threshold, consistency)
        cache_path.write_text(json.dumps(cache, indent=1))
    return dict(cache[key])


def _evaluate(
    checkpoint: Path, args: argparse.Namespace, opacity_threshold: float | None, consistency: bool
) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from gausstr_core.evaluation.metrics import OccupancyMetric
    from gausstr_core.evaluation.projective import ProjectiveConsistency
    from gausstr_core.evaluation.rayiou import RayIoUMetric
    from gausstr_core.evaluation.runner import display_names
    from gausstr_core.inference.predictor import OccupancyPredictor
    from gausstr_core.io.checkpoint import read_full_config
    from gausstr_core.losses.config import GaussRenderConfig
    from gausstr_core.losses.pruning import prune_by_opacity
    from gausstr_core.render import render_gaussians
    from gausstr_core.train.data import build_dataset, categories_for, collate_evaluation

    torch.set_num_threads(args.threads)
    config = read_full_config(checkpoint)
    predictor = OccupancyPredictor.from_checkpoint(checkpoint, device="cpu")
    if opacity_threshold is not None:
        predictor.config = dataclasses.replace(predictor.config, opacity_threshold=opacity_threshold)
    dataset = build_dataset(args.data, "val", config, training=False)
    categories = categories_for(dataset)
    predictor.set_categories(categories)
    names = display_names(categories)
    n = len(dataset) if not args.scenes else min(args.scenes, len(dataset))
    loader = DataLoader(Subset(dataset, list(range(n))), batch_size=1, collate_fn=collate_evaluation)
    occupancy = OccupancyMetric(names)
    rays = RayIoUMetric(names, config.grid)
    pc = ProjectiveConsistency(len(names), config.grid, GaussRenderConfig(render_scale=0.5), seed=0)
    depth_err, depth_px, kept, total, seconds = 0.0, 0, 0, 0, 0.0
    with torch.inference_mode():
        for batch, gt in tqdm(loader, desc=f"evaluate {checkpoint.parent.name}", leave=False):
            t0 = time.perf_counter()
            pred = predictor.predict(batch, render_depth=True)
            seconds += time.perf_counter() - t0
            labels = pred.labels.cpu()
            occupancy.update(labels, gt.semantics, gt.mask_camera.bool())
            for i in range(labels.shape[0]):
                rays.update(labels[i], gt.semantics[i])
            if consistency:
                pc.update(labels, gt.semantics, gt.mask_camera.bool(), batch)
            target, rendered = batch.depth, pred.rendered_depth
            if opacity_threshold is not None:
                # The sweep renders only the Gaussians the threshold keeps (pruned before rendering).
                g = prune_by_opacity(pred.gaussians, opacity_threshold)[0]
                rendered = render_gaussians(
                    g.with_features(g.features[..., :0]),
                    batch.input_intrinsics(),
                    batch.cam_to_ego,
                    batch.image_size,
                ).expected_depth(0.05)
            valid = (target > 0) & (target < 51.2) & (rendered > 0)
            depth_err += float((rendered - target).abs()[valid].sum())
            depth_px += int(valid.sum())
            kept += int((pred.gaussians.opacities > predictor.config.opacity_threshold).sum())
            total += pred.gaussians.opacities.numel()
    scores = occupancy.compute()
    ray = rays.compute()
    out = {
        "iou": 100 * scores.iou,
        "miou": 100 * scores.miou,
        "rayiou": 100 * ray["rayiou"],
        "depth_mae": depth_err / depth_px if depth_px else None,  # None: nothing rendered
        "kept": kept / max(total, 1),
        "predict_s": seconds / max(n, 1),
        "scenes": n,
    }
    if consistency:
        out.update(pc.compute())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/data/synth112", help="gausstr-synth directory (train/val splits)")
    p.add_argument("--out", type=Path, default=Path("runs/options"))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--steps", type=int, default=400, help="optimizer steps of every run (the same budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once")
    p.add_argument("--scenes", type=int, default=0, help="evaluate on at most this many val scenes (0 = all)")
    p.add_argument("--skip-training", action="store_true", help="evaluate existing runs only")
    p.add_argument("--output", type=Path, help="markdown file whose training-options section is written")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    started = time.perf_counter()

    wall: dict[str, float] = {}
    if not args.skip_training:
        pending, running = list(names), []
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                print(f"train {name}: {' '.join(VARIANTS[name][1]) or '(preset)'}", flush=True)
                running.append((name, train(name, args)))
            time.sleep(5)
            for name, proc in list(running):
                if proc.poll() is None:
                    continue
                proc.log.close()
                running.remove((name, proc))
                wall[name] = time.perf_counter() - proc.started
                if proc.returncode != 0:
                    log = args.out / name / "train.log"
                    print(f"train {name} failed (exit {proc.returncode}); see {log}")
                    return 1
                print(f"train {name}: done in {wall[name] / 60:.1f} min", flush=True)
        (args.out / "wall.json").write_text(json.dumps(wall))

    results, unfiltered = {}, {}
    for name in names:
        checkpoint = args.out / name / "model.safetensors"
        if not checkpoint.is_file():
            print(f"missing {checkpoint}", file=sys.stderr)
            return 1
        results[name] = evaluate(checkpoint, args)
        results[name]["s_per_step"] = step_seconds(name, args)
        results[name]["train_min"] = train_minutes(args.out / name)
        unfiltered[name] = evaluate(checkpoint, args, opacity_threshold=UNFILTERED)
        unfiltered[name]["s_per_step"] = results[name]["s_per_step"]
        for tag, r in (("", results[name]), (" (no opacity filter)", unfiltered[name])):
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
            print(name + tag, json.dumps(shown), flush=True)
    sweep = {}
    if "baseline" in names:
        for t in PRUNE_SWEEP:
            sweep[t] = evaluate(
                args.out / "baseline" / "model.safetensors", args, opacity_threshold=t, consistency=False
            )
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in sweep[t].items()}
            print(f"prune {t}", json.dumps(shown), flush=True)
    (args.out / "results.json").write_text(
        json.dumps({"variants": results, "unfiltered": unfiltered, "prune_sweep": sweep}, indent=1)
    )

    body = report(results, unfiltered, sweep, args, load, time.perf_counter() - started)
    print(body)
    if args.output:
        update_markdown_section(args.output, SECTION, body, header="# Results\n\n")
        print(f"wrote the {SECTION} section of {args.output}")
    return 0


def variant_table(results: dict) -> str:
    f2 = lambda v: "n/a" if v is None else f"{v:.2f}"
    rows = []
    base = results.get("baseline")
    for name, r in results.items():

        def delta(k: str, r=r, name=name) -> str:
            return "" if base is None or name == "baseline" else f" ({r[k] - base[k]:+.2f})"

        rows.append(
            [
                name,
                VARIANTS[name][0],
                f2(r["iou"]) + delta("iou"),
                f2(r["miou"]) + delta("miou"),
                f2(r["rayiou"]) + delta("rayiou"),
                f2(r.get("sensor/depth_error_m")),
                f2(r.get("bev/semantic_l1")),
                f2(r["depth_mae"]),
                f"{100 * r['kept']:.0f}%",
                f2(r.get("s_per_step")),
            ]
        )
    return markdown_table(
        [
            "variant",
            "what changes",
            "IoU",
            "mIoU",
            "RayIoU",
            "proj. depth err [m]",
            "BEV sem. L1",
            "rendered depth MAE [m]",
            "voxelized",
            "s / step",
        ],
        rows,
    )


def report(results: dict, unfiltered: dict, sweep: dict, args, load: str, seconds: float) -> str:
    f2 = lambda v: "n/a" if v is None else f"{v:.2f}"
    table, table_unfiltered = variant_table(results), variant_table(unfiltered)
    minutes = ", ".join(f"{name} {r['train_min']:.0f}" for name, r in results.items() if r.get("train_min"))
    sweep_rows = [
        [
            f"{t:.1f}",
            f"{100 * r['kept']:.0f}%",
            f2(r["iou"]),
            f2(r["miou"]),
            f2(r["rayiou"]),
            f2(r["depth_mae"]),
            f"{r['predict_s']:.2f}",
        ]
        for t, r in sweep.items()
    ]
    sweep_table = markdown_table(
        [
            "opacity threshold",
            "Gaussians kept",
            "IoU",
            "mIoU",
            "RayIoU",
            "rendered depth MAE [m]",
            "predict [s/scene]",
        ],
        sweep_rows,
    )
    date = datetime.date.today().isoformat()
    n = next(iter(results.values()))["scenes"] if results else 0
    return f"""## Training options: GaussRender and GaussianCross (`benchmarks/training_options.py`)

Run {date} on {os.cpu_count()} CPU cores shared with other engineers' jobs (load average 3-6 during
the runs, {load} at the scoring), {args.jobs} training runs at a time with {args.threads} torch thread(s)
each; training wall times [min]: {minutes}; scoring and step timing {seconds / 60:.0f} min.
Every variant: the tiny preset and recipe, `{args.data}` (80 training scenes), {args.steps} optimizer
steps, seed {args.seed}; scored on the {n} held-out scenes. IoU / mIoU: Occ3D camera mask, in
percent; RayIoU: SparseOcc, one origin. "proj. depth err" and "BEV sem. L1": GaussRender's
projective consistency of the predicted labels against the ground truth (`ProjectiveConsistency`:
all six sensor cameras at half the input size, one elevated camera per scene, the orthographic BEV;
mean depth error over pixels the ground truth covers, and BEV class-mass L1 in [0, 2]); lower is
better. "rendered depth MAE": expected depth of the Gaussians against the depth targets (< 51.2 m).
"s / step": median time of one training step (forward, losses, backward, update; 1 thread), all
variants measured back to back after the runs. Differences in
brackets are against the baseline of the same run; with one seed and 20 scenes, differences of
about a point are within run-to-run noise.

At the tiny preset's inference settings (Gaussians with opacity <= 0.6 are not voxelized, the
official filter; "voxelized" = the share of Gaussians that pass it):

{table}

The same models with every Gaussian voxelized (`inference.opacity_threshold=0`), which separates what
an option does to the geometry from what it does to the opacities around the 0.6 cut:

{table_unfiltered}

Opacity pruning at inference (the baseline model): Gaussians at or below the threshold are left out of
the voxelization (`inference.opacity_threshold`, official 0.6) and of the depth render:

{sweep_table}
"""


if __name__ == "__main__":
    raise SystemExit(main())
