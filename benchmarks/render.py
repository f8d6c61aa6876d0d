"""Renderer latency and memory: gsplat (CUDA) against the PyTorch reference renderer, at paper scale.

Scene: 6 nuScenes-rig views of 504 x 896 and 1,800 Gaussians shaped like GaussTR's (300 per view,
lifted from random pixels at depths of 3-50 m; scales (1..16) x depth x 4.2 / fx, the talk2dino
scale head's range; camera-aligned rotations; opacities 0.3-0.9). Cases:

* ``depth``: inference, depth only (C = 0), forward;
* ``train-128``: the training render of one layer, 128 PCA channels + depth, forward and
  forward + backward (gradients of means, scales, rotations, opacities, features);
* ``full-768``: the full 768-d Talk2DINO features + depth, forward (channel chunking);
* ``loss``: ``GaussTRLoss`` for 3 decoder layers (PCA of the 6 x 36 x 64 target map to 128 dims,
  3 renders, cosine + SILog/L1), forward + backward, gsplat only.

The baseline is the reference renderer in the same run on the same device; the ratio is
reference / gsplat. CUDA time: events after warm-up, median of repeats. Peak memory: the largest
``max_memory_allocated`` increase over the memory at the start of a case. A case that runs out of
memory is reported as OOM.

    python benchmarks/render.py --output docs/benchmarks.md          # on the GPU machine
    python benchmarks/render.py --device cpu --height 56 --width 100 --per-view 50 --repeats 1 \\
        --warmup 0                                                   # CPU smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTION_START = "<!-- render:start -->"
SECTION_END = "<!-- render:end -->"


def gausstr_like_scene(
    views: int, size: tuple[int, int], per_view: int, channels: int, device, seed: int = 0
):
    """Gaussians (1, views * per_view) lifted from random pixels of each view, and the cameras."""
    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_core.gaussians import Gaussians
    from gausstr_core.geometry import matrix_to_quaternion, unproject

    g = torch.Generator().manual_seed(seed)
    h, w = size
    rig = nuscenes_rig(h, w)
    if not 1 <= views <= rig.num_views:
        raise ValueError(f"views must be 1..{rig.num_views}, got {views}")
    k, pose = rig.intrinsics()[:views], rig.cam_to_ego()[:views]
    pix = torch.rand(views, per_view, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    depth = 3.0 + 47.0 * torch.rand(views, per_view, generator=g)
    means = unproject(pix, depth, k, pose)  # (V, Q, 3)
    fx = k[:, 0, 0, None, None]
    scales = (1 + 15 * torch.rand(views, per_view, 3, generator=g)) * depth[..., None] * 4.2 / fx
    quats = matrix_to_quaternion(pose[:, :3, :3])[:, None].expand(views, per_view, 4)
    n = views * per_view
    gaussians = Gaussians(
        means=means.reshape(1, n, 3),
        scales=scales.reshape(1, n, 3),
        rotations=quats.reshape(1, n, 4),
        opacities=0.3 + 0.6 * torch.rand(1, n, generator=g),
        features=torch.randn(1, n, channels, generator=g),
    )
    return gaussians.to(device), k[None].to(device), pose[None].to(device)


class Timer:
    """Median time and peak extra memory of a callable (CUDA events on a GPU, wall clock on a CPU)."""

    def __init__(self, device: torch.device, repeats: int, warmup: int):
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def __call__(self, fn: Callable[[], object]) -> tuple[float, int] | None:
        cuda = self.device.type == "cuda"
        times, peak = [], 0
        try:
            for i in range(self.warmup + self.repeats):
                if cuda:
                    torch.cuda.synchronize()
                    start_mem = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    torch.cuda.synchronize()
                    ms = start.elapsed_time(end)
                    peak = max(peak, torch.cuda.max_memory_allocated() - start_mem)
                else:
                    t0 = time.perf_counter()
                    fn()
                    ms = (time.perf_counter() - t0) * 1e3
                if i >= self.warmup:
                    times.append(ms)
        except torch.OutOfMemoryError:
            if cuda:
                torch.cuda.empty_cache()
            return None
        return statistics.median(times), peak


def render_case(gaussians, k, pose, size, backend: str, backward: bool) -> Callable[[], None]:
    from gausstr_core.gaussians import Gaussians
    from gausstr_core.render import render_gaussians

    def run() -> None:
        if not backward:
            with torch.no_grad():
                render_gaussians(gaussians, k, pose, size, backend=backend)
            return
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
        out = render_gaussians(Gaussians(*params), k, pose, size, backend=backend)
        (out.features.square().sum() + out.depth.sum()).backward()

    return run


def loss_case(gaussians, k, pose, size, backend: str, layers: int = 3, patch: int = 14) -> Callable[[], None]:
    """GaussTRLoss over ``layers`` decoder layers of 768-d Gaussians, forward + backward."""
    from gausstr_core.batch import CameraBatch
    from gausstr_core.gaussians import Gaussians
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.losses.gausstr import GaussTRLoss
    from gausstr_core.model.gausstr import GaussTROutput

    h, w = size
    v = k.shape[1]
    g = torch.Generator(device=gaussians.means.device).manual_seed(2)
    device = gaussians.means.device
    batch = CameraBatch(
        images=torch.zeros(1, v, 3, h, w, device=device),
        intrinsics=k,
        cam_to_ego=pose,
        image_aug=torch.eye(3, device=device).expand(1, v, 3, 3),
        depth=3 + 47 * torch.rand(1, v, h, w, generator=g, device=device),
    )
    c = gaussians.features.shape[-1]
    targets = torch.randn(1, v, c, h // patch, w // patch, generator=g, device=device)
    loss_fn = GaussTRLoss(LossConfig(pca_dims=min(128, c), render_backend=backend))

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
        per_layer = [Gaussians(*params) for _ in range(layers)]
        output = GaussTROutput(per_layer, [], batch.depth, None, targets)
        loss_fn(output, batch).terms["loss"].backward()

    return run


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--height", type=int, default=504)
    p.add_argument("--width", type=int, default=896)
    p.add_argument("--per-view", type=int, default=300, help="Gaussians per view (300 x 6 = 1,800)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output", type=Path, help="markdown file whose render section is (re)written")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device; use --device cpu for a smoke run")
    from gausstr_core.render import gsplat_available

    fast = "gsplat" if device.type == "cuda" and gsplat_available() else None
    if device.type == "cuda" and fast is None:
        p.error("gsplat is not installed (pip install gsplat==1.5.3)")

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the reference too
    t0 = time.time()
    size = (args.height, args.width)
    timer = Timer(device, args.repeats, args.warmup)
    scenes = {c: gausstr_like_scene(args.views, size, args.per_view, c, device) for c in (0, 128, 768)}
    cases = [
        ("depth (C=0), forward", lambda b: render_case(*scenes[0], size, b, False)),
        ("train-128, forward", lambda b: render_case(*scenes[128], size, b, False)),
        ("train-128, forward + backward", lambda b: render_case(*scenes[128], size, b, True)),
        ("full-768, forward", lambda b: render_case(*scenes[768], size, b, False)),
        ("loss, 3 layers, forward + backward", lambda b: loss_case(*scenes[768], size, b)),
    ]
    rows = []
    for name, make in cases:
        result = {}
        backends = ["torch", fast] if fast else ["torch"]
        if name.startswith("loss") and fast:
            backends = [fast]  # the reference renderer's backward does not fit at this scale
        for backend in backends:
            print(f"{name}: {backend} ...", flush=True)
            result[backend] = timer(make(backend))
        rows.append((name, result))
    wall = time.time() - t0

    mib = 1024**2

    def cell(r, what: str) -> str:
        if r == "n/a":
            return "n/a"
        if r is None:
            return "OOM"
        if what == "ms":
            return f"{r[0]:.2f}"
        return f"{r[1] / mib:,.0f}" if device.type == "cuda" else "n/a"

    lines = [
        SECTION_START,
        "## Renderer (`benchmarks/render.py`)",
        "",
        '`render_gaussians` with the gsplat backend (CUDA `rasterization`, render mode "RGB+D", unpacked, '
        'classic 3DGS) against the PyTorch reference renderer (`backend="torch"`, the oracle of the GPU '
        "parity tests) in the same run on the same device, fp32. GaussTR-like Gaussians: lifted from random "
        "pixels of each view at 3-50 m, the talk2dino scale range, camera-aligned rotations. Cases: depth "
        "only (inference); one training render of 128 PCA channels + depth (forward; forward + backward); "
        "the full 768-d features (channel chunking); `GaussTRLoss` over 3 decoder layers (PCA, 3 renders, "
        "cosine + SILog/L1, forward + backward; gsplat only). Ratio = reference / gsplat; memory = peak "
        "allocated above the case's starting memory (CUDA only); OOM = the case ran out of memory.",
        "",
        f"Device: **{device_name(device)}**, torch {torch.__version__}. {args.views} views x {args.height} x "
        f"{args.width}, {args.views * args.per_view:,} Gaussians, median of {args.repeats} after "
        f"{args.warmup} warm-up ({'CUDA events' if device.type == 'cuda' else 'wall clock'}).",
        "",
        "| case | reference ms | gsplat ms | ratio | reference MiB | gsplat MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        ref, fast_r = r.get("torch", "n/a"), r.get(fast, "n/a")
        both = isinstance(ref, tuple) and isinstance(fast_r, tuple)
        ratio = f"{ref[0] / fast_r[0]:.1f}x" if both else "n/a"
        lines.append(
            f"| {name} | {cell(ref, 'ms')} | {cell(fast_r, 'ms')} | {ratio} | {cell(ref, 'mem')} | "
            f"{cell(fast_r, 'mem')} |"
        )
    lines += ["", f"Benchmark wall time {wall:.0f} s.", SECTION_END]
    table = "\n".join(lines)
    print(table)
    if args.output:
        write_section(args.output, table)
        print(f"wrote {args.output}")
    return 0


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of a markdown file (other sections are kept)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
