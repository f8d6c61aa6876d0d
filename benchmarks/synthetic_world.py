"""Synthetic world generation speed on the CPU: per-stage cost of one key frame, the tiled ray
caster against brute force, and the end-to-end writer (what ``gausstr-synth`` costs per scene).

    python3 benchmarks/synthetic_world.py                          # print the tables
    python3 benchmarks/synthetic_world.py --output docs/benchmarks.md

Stages (one thread, median over key frames of different worlds): world generation, ray casting +
shading of 6 cameras, Occ3D semantics (2^3 sub-samples per voxel), mask_camera (voxel traversal of
the visibility rays), mask_lidar, feature + depth targets. Baseline in the same run: the same
camera rays intersected with every solid without screen-tile culling (the ratio is brute / tiled,
same hits). Writer: ``write_dataset`` of a few scenes with the given workers, extrapolated to 100.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description, markdown_table, update_markdown_section

from gausstr_core.data.synthetic import SyntheticConfig, name_strings, random_embeddings
from gausstr_core.data.synthetic import occupancy as occ
from gausstr_core.data.synthetic.primitives import ray_hit
from gausstr_core.data.synthetic.raycast import camera_rays, cast_rays, render_views
from gausstr_core.data.synthetic.samples import make_world
from gausstr_core.data.synthetic.targets import depth_targets, feature_targets
from gausstr_core.data.synthetic.writer import write_dataset


def brute_force_cast(scene, rig) -> torch.Tensor:
    """Nearest hit of every pixel ray against every solid and the ground, no culling (chunked)."""
    origins, dirs = camera_rays(rig)
    prims = scene.primitives
    best = torch.full(dirs.shape[:-1], float("inf"))
    for v in range(dirs.shape[0]):
        flat = dirs[v].reshape(-1, 1, 3)
        for start in range(0, flat.shape[0], 4096):
            d = flat[start : start + 4096]
            t = ray_hit(origins[v], d, prims.kind, prims.center, prims.half_size, prims.yaw, near=0.05)
            best[v].view(-1)[start : start + 4096] = t.min(-1).values
    return best


class Stopwatch:
    """Accumulates named wall times [ms] of ``with stopwatch("name"):`` blocks."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def __call__(self, name: str) -> Stopwatch:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.times.setdefault(self.name, []).append((time.perf_counter() - self.start) * 1e3)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])


def stage_table(resolutions: list[tuple[int, int]], frames: int) -> str:
    emb = random_embeddings(len(name_strings()), 64)
    stages = ("world", "render", "semantics", "mask_camera", "mask_lidar", "targets")
    rows = []
    for h, w in resolutions:
        config = SyntheticConfig(image_size=(h, w))
        rig = config.rig()
        clock = Stopwatch()
        for f in range(frames):
            with clock("world"):
                scene = make_world(1, f, config).sample(0)
            with clock("render"):
                views = render_views(scene, rig)
            with clock("semantics"):
                sem = occ.semantic_occupancy(scene)
            with clock("mask_camera"):
                occ.camera_visibility(sem, rig)
            with clock("mask_lidar"):
                occ.lidar_visibility(sem)
            with clock("targets"):
                feature_targets(views.name_id, emb)
                depth_targets(views.depth)
        medians = [clock.median(s) for s in stages]
        rows.append([f"6 x {h}x{w}", *(f"{m:.0f}" for m in medians), f"{sum(medians):.0f}"])
    return markdown_table(["images", *stages, "total"], rows)


def raycast_table(resolutions: list[tuple[int, int]]) -> str:
    rows = []
    for h, w in resolutions:
        config = SyntheticConfig(image_size=(h, w))
        rig = config.rig()
        scene = make_world(1, 0, config).sample(0)
        clock = Stopwatch()
        with clock("tiled"):
            t_tiled, hit, _, _ = cast_rays(scene, rig)
        with clock("brute"):
            brute = brute_force_cast(scene, rig)
        tiled_ms, brute_ms = clock.median("tiled"), clock.median("brute")
        solid = (hit >= 0) & (hit < len(scene.primitives))
        agree = torch.isclose(t_tiled[solid], brute[solid], rtol=1e-5, atol=1e-4).float().mean()
        rays = 6 * h * w
        rows.append(
            [
                f"6 x {h}x{w}",
                len(scene.primitives),
                f"{rays / tiled_ms / 1e3:.2f}",
                f"{tiled_ms:.0f}",
                f"{brute_ms:.0f}",
                f"{brute_ms / tiled_ms:.1f}x",
                f"{100 * float(agree):.2f}%",
            ]
        )
    headers = [
        "images",
        "solids",
        "Mrays/s tiled",
        "tiled [ms]",
        "brute force [ms]",
        "speed-up",
        "same depth",
    ]
    return markdown_table(headers, rows)


def writer_line(scenes: int, workers: int, resolution: tuple[int, int]) -> str:
    config = SyntheticConfig(image_size=resolution)
    emb = random_embeddings(len(name_strings()), 64)
    clock = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp, clock("write"):
        write_dataset(tmp, scenes, seed=2, config=config, embeddings=emb, workers=workers, progress=False)
    seconds = clock.median("write") / 1e3
    per_scene = seconds / scenes
    return (
        f"`write_dataset` of {scenes} scenes at 6 x {resolution[0]}x{resolution[1]} with {workers} "
        f"worker(s): {seconds:.1f} s, {per_scene:.2f} s per scene -> 100 scenes in about "
        f"{100 * per_scene / 60:.1f} min."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=3, help="key frames per resolution (median)")
    parser.add_argument("--writer-scenes", type=int, default=6, help="scenes for the writer timing")
    parser.add_argument("--workers", type=int, default=2, help="writer processes")
    parser.add_argument(
        "--output", type=Path, help="update the synthetic_world section of this markdown file"
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    device = device_description(torch.device("cpu"))
    resolutions = [(112, 200), (225, 400), (450, 800)]
    stages = stage_table(resolutions, args.frames)
    raycast = raycast_table(resolutions[:2])
    writer = writer_line(args.writer_scenes, args.workers, (225, 400))
    body = (
        "## Synthetic world generation (`benchmarks/synthetic_world.py`)\n\n"
        "What it measures: the CPU cost of one synthetic key frame by stage (one torch thread, median over "
        f"{args.frames} worlds, milliseconds), the screen-tiled ray caster against brute-force intersection "
        "of every ray with every solid (same run, same rays), and the end-to-end writer. Wall-clock times: "
        "on a shared machine repeated runs differ by up to ~2x.\n\n"
        f"Device: {device}\n\n{stages}\n\n{raycast}\n\n{writer}\n"
    )
    print(body)
    if args.output:
        update_markdown_section(args.output, "synthetic_world", body)


if __name__ == "__main__":
    main()
