#!/usr/bin/env python3
"""Cost of the GaussRender loss and metric: gsplat (CUDA) against the PyTorch reference renderer in
the same run, and against GaussTR's own loss step.

Scene: the ground truth of one synthetic-world scene (Occ3D grid, camera-visible voxels), the
nuScenes rig at 504 x 896, and 1,800 talk2dino-like Gaussians (300 per view, 768-d features, class
probabilities from 26 random unit prototypes: 25 prompts of 17 classes and one free prompt). Cases,
each forward + backward:

* ``gaussrender``: the loss (voxelization with gradients into the grid, 1 sensor + 1 elevated camera
  at half the input size, the 100 x 100 orthographic BEV; prediction and ground truth), for
  ``grid_factor`` 1 (Occ3D itself) and 2;
* ``gausstr-loss``: GaussTRLoss over 3 layers at the input size (the step GaussRender is added to,
  gsplat only), for scale;
* ``metric``: ``ProjectiveConsistency.update`` of hard labels (all six cameras, elevated, BEV), no
  gradients.

Baseline: the reference renderer (tiled, ``tile_size`` 16 on the GPU) in the same run; ratio =
reference / gsplat. CUDA events after warm-up, median of repeats.

    python benchmarks/gaussrender.py --output docs/benchmarks.md       # GPU machine (~2 min)
    python benchmarks/gaussrender.py --device cpu --quick              # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import device_description, markdown_table, update_markdown_section  # noqa: E402
from benchmarks.render import Timer, gausstr_like_scene, loss_case  # noqa: E402
from gausstr_core.device import resolve_device  # noqa: E402

SECTION = "gaussrender"


def scene(device: torch.device, size: tuple[int, int], per_view: int):
    """Ground truth of a synthetic scene, the rig's cameras at ``size`` and GaussTR-like Gaussians."""
    from types import SimpleNamespace

    from gausstr_core.batch import CameraBatch
    from gausstr_core.data.synthetic.samples import SyntheticConfig, generate_sample
    from gausstr_core.losses.gaussrender import ClassPrototypes

    sample = generate_sample(0, 3, 0, SyntheticConfig(image_size=(90, 160)), None)
    gt = SimpleNamespace(
        semantics=torch.as_tensor(sample.labels.semantics)[None].to(device),
        mask_camera=torch.as_tensor(sample.labels.mask_camera)[None].bool().to(device),
    )
    gaussians, k, pose = gausstr_like_scene(6, size, per_view, 768, device)
    h, w = size
    cameras = CameraBatch(
        torch.zeros(1, 6, 3, h, w, device=device),
        k,
        pose,
        torch.eye(3, device=device).expand(1, 6, 3, 3).clone(),
    )
    g = torch.Generator().manual_seed(1)
    protos = torch.nn.functional.normalize(torch.randn(26, 768, generator=g), dim=-1).to(device)
    groups = torch.cat([torch.arange(17), torch.randint(0, 17, (8,), generator=g)]).to(device)
    return gt, cameras, gaussians, k, pose, ClassPrototypes(protos, groups, 17, logit_scale=50.0)


def gaussrender_case(gaussians, prototypes, gt, cameras, backend: str, factor: int):
    from gausstr_core.gaussians import Gaussians
    from gausstr_core.grid import VoxelGrid
    from gausstr_core.losses.config import GaussRenderConfig
    from gausstr_core.losses.gaussrender import gaussrender_loss

    tile = 16 if gaussians.means.is_cuda else 8
    config = GaussRenderConfig(weight=10.0, grid_factor=factor, tile_size=tile)

    def run() -> None:
        params = [
            t.detach().requires_grad_(True)
            for t in (
                gaussians.means,
                gaussians.scales,
                gaussians.rotations,
                gaussians.opacities,
                gaussians.features,
            )
        ]
        torch.manual_seed(0)
        terms = gaussrender_loss(
            Gaussians(*params), prototypes, gt, cameras, VoxelGrid(), config, render_backend=backend
        )
        terms["loss"].backward()

    return run


def metric_case(gt, cameras, backend: str):
    from gausstr_core.evaluation.projective import ProjectiveConsistency
    from gausstr_core.losses.config import GaussRenderConfig

    labels = gt.semantics.clone()
    labels[:, :, :, 4:] = gt.semantics[:, :, :, 3:-1]  # everything above the ground one voxel up
    tile = 16 if cameras.images.is_cuda else 8
    metric = ProjectiveConsistency(17, config=GaussRenderConfig(tile_size=tile), render_backend=backend)
    return lambda: metric.update(labels, gt.semantics, gt.mask_camera, cameras)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small images, 1 repeat (smoke run)")
    p.add_argument("--output", type=Path, help="markdown file whose gaussrender section is (re)written")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    size, per_view = ((504, 896), 300) if not args.quick else ((112, 200), 40)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    timer = Timer(device, repeats, warmup)
    gt, cameras, gaussians, k, pose, prototypes = scene(device, size, per_view)
    backends = ["gsplat", "torch"] if device.type == "cuda" else ["torch"]

    rows, baseline = [], None
    if device.type == "cuda":
        result = timer(loss_case(gaussians, k, pose, size, "gsplat"))
        baseline = result[0] if result else None
        rows.append(["gausstr-loss (3 layers)", "gsplat", *fmt(result), "-", "1.00"])
    for name, make in [
        ("gaussrender, grid_factor 1", lambda b: gaussrender_case(gaussians, prototypes, gt, cameras, b, 1)),
        ("gaussrender, grid_factor 2", lambda b: gaussrender_case(gaussians, prototypes, gt, cameras, b, 2)),
        ("metric (no gradients)", lambda b: metric_case(gt, cameras, b)),
    ]:
        results = {b: timer(make(b)) for b in backends}
        for b in backends:
            r = results[b]
            ratio = "-"
            if b == "gsplat" and r and results.get("torch"):
                ratio = f"{results['torch'][0] / r[0]:.1f}x"
            share = f"{r[0] / baseline:.2f}" if r and baseline else "-"
            rows.append([name, b, *fmt(r), ratio, share])
            print(rows[-1], flush=True)
    table = markdown_table(
        ["case", "backend", "time [ms]", "peak extra [MiB]", "reference / gsplat", "vs GaussTR loss step"],
        rows,
    )
    body = (
        f"## GaussRender (`benchmarks/gaussrender.py`)\n\nDevice: {device_description(device)}. Run "
        f"{datetime.date.today().isoformat()} with `python benchmarks/gaussrender.py"
        f"{' --quick' if args.quick else ''}`.\n\n"
        f"Scene: one synthetic-world ground truth (Occ3D grid, camera-visible voxels), 6 cameras of "
        f"{size[0]} x {size[1]}, {6 * per_view} GaussTR-like Gaussians with 768-d features; forward + "
        f"backward of the GaussRender loss (lambda 10; 1 sensor + 1 elevated camera at half size, "
        f"100 x 100 BEV), and the label metric without gradients. Median of {repeats} after "
        f"{warmup} warm-up (CUDA events on a GPU). The reference renderer runs tiled (16 x 16 on a "
        f"GPU, 8 x 8 on a CPU). Last column: time relative to GaussTRLoss over 3 layers at the "
        f"input size (gsplat), the step GaussRender is added to.\n\n{table}\n"
    )
    print(body)
    if args.output:
        update_markdown_section(args.output, SECTION, body)
    return 0


def fmt(result) -> list[str]:
    if result is None:
        return ["OOM", "-"]
    ms, peak = result
    return [f"{ms:,.1f}", f"{peak / 2**20:,.0f}" if peak else "-"]


if __name__ == "__main__":
    raise SystemExit(main())
