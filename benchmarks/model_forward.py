"""Forward latency and peak memory of GaussTR by stage, fp32 vs bf16 autocast, at paper scale.

Stages: backbone (frozen DINOv2 ViT-B/14 with registers) -> neck (ViTDet pyramid) -> decoder (3 layers,
deformable cross-attention in PyTorch) -> heads (Gaussian parameters of every layer) -> render (the
final layer's 1,800 Gaussians, 128 feature channels (the PCA width) + depth, into every view) ->
voxelize (the final layer's class probabilities, 17 classes, onto the 200x200x16 Occ3D grid, all
Gaussians, no filter) -> total (the same pipeline end to end, timed as one region).

Weights are random (the talk2dino preset with ``random_init``: latency does not depend on their
values; the flag is explicit because real runs must never use random weights). Inputs are 6 views of
504 x 896 with the nuScenes rig and smooth metric depth. CUDA time is measured with events after
warm-up, median over repeats; fp32 is the baseline and bf16 is reported as a speed-up ratio.
Peak memory is ``max_memory_allocated`` during the stage (weights and live tensors included).

    python benchmarks/model_forward.py --random-init --output docs/benchmarks.md
    # CPU smoke run (tiny sizes, wall-clock timing):
    python benchmarks/model_forward.py --random-init --device cpu --height 56 --width 98 --views 2 \\
        --queries 20 --repeats 1 --warmup 0 --dtypes fp32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("backbone", "neck", "decoder", "heads", "render", "voxelize", "total")
SECTION_START = "<!-- model_forward:start -->"
SECTION_END = "<!-- model_forward:end -->"


def synthetic_batch(views: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """One scene: random images, the nuScenes rig resized to ``size``, smooth depth in [3, 50] m."""
    import torch.nn.functional as F

    from gausstr_core.batch import CameraBatch
    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_core.data.transforms import resize_matrix

    g = torch.Generator().manual_seed(seed)
    rig = nuscenes_rig()
    if not 1 <= views <= rig.num_views:
        raise ValueError(f"views must be 1..{rig.num_views}, got {views}")
    h, w = size
    coarse = 3.0 + 47.0 * torch.rand(views, 1, max(h // 28, 2), max(w // 28, 2), generator=g)
    depth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return CameraBatch(
        images=torch.rand(1, views, 3, h, w, generator=g),
        intrinsics=rig.intrinsics()[:views][None],
        cam_to_ego=rig.cam_to_ego()[:views][None],
        image_aug=resize_matrix(rig.image_size, (h, w)).expand(1, views, 3, 3).clone(),
        depth=depth[None],
    ).to(device)


class StageTimer:
    """Times named regions: CUDA events on a GPU (no sync inside the region), wall clock on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.records: list[tuple[str, object, object, int, int]] = []

    @contextlib.contextmanager
    def region(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            start_mem = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            torch.cuda.synchronize()
            self.records.append((name, start, end, start_mem, torch.cuda.max_memory_allocated()))
        else:
            t0 = time.perf_counter()
            yield
            self.records.append((name, t0, time.perf_counter(), 0, 0))

    def results(self) -> dict[str, tuple[float, int, int]]:
        """name -> (ms, memory at start, peak memory) of the last record of each name."""
        out = {}
        for name, a, b, m0, peak in self.records:
            ms = a.elapsed_time(b) if self.cuda else (b - a) * 1e3
            out[name] = (ms, m0, peak)
        return out


def run_pipeline(
    model,
    batch,
    grid,
    projection: torch.Tensor,
    prototypes: torch.Tensor,
    timer: StageTimer,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> None:
    """One forward pass, every stage in its own timed region."""
    from gausstr_core.render import render_gaussians
    from gausstr_core.voxelize import voxelize_gaussians

    h, w = batch.image_size
    with torch.no_grad():
        with timer.region("backbone"), autocast():
            feats = model.extract_features(batch)
        with timer.region("neck"), autocast():
            levels = model.neck(feats)
        with timer.region("decoder"), autocast():
            decoded = model.decode(batch, levels)
        with timer.region("heads"), autocast():
            gaussians, _ = model.gaussians(batch, decoded)
        final = gaussians[-1]
        with timer.region("render"):
            render_gaussians(
                final.with_features(final.features @ projection),
                batch.input_intrinsics(),
                batch.cam_to_ego,
                (h, w),
            )
        with timer.region("voxelize"):
            probs = (final.features @ prototypes).softmax(-1)
            voxelize_gaussians(final.means, final.covariances(), final.opacities, probs, grid)


def run_total(model, batch, grid, projection, prototypes, timer, autocast) -> None:
    """The same pipeline timed as one region (no per-stage synchronisation)."""
    from gausstr_core.render import render_gaussians
    from gausstr_core.voxelize import voxelize_gaussians

    with torch.no_grad(), timer.region("total"):
        with autocast():
            final = model(batch).final
        render_gaussians(
            final.with_features(final.features @ projection),
            batch.input_intrinsics(),
            batch.cam_to_ego,
            batch.image_size,
        )
        probs = (final.features @ prototypes).softmax(-1)
        voxelize_gaussians(final.means, final.covariances(), final.opacities, probs, grid)


def measure(model, batch, grid, dtype: str, repeats: int, warmup: int, device: torch.device) -> dict:
    """Median ms and max peak memory per stage for one precision."""
    g = torch.Generator().manual_seed(1)
    feat_dim = model.config.head.feature_dim
    projection = torch.linalg.qr(torch.randn(feat_dim, 128, generator=g))[0].to(device)
    prototypes = torch.nn.functional.normalize(torch.randn(feat_dim, 17, generator=g), dim=0).to(device) * 10

    def autocast():
        if dtype == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    times: dict[str, list[float]] = {s: [] for s in STAGES}
    peaks: dict[str, int] = dict.fromkeys(STAGES, 0)
    extra: dict[str, int] = dict.fromkeys(STAGES, 0)
    for i in range(warmup + repeats):
        timer = StageTimer(device)
        run_pipeline(model, batch, grid, projection, prototypes, timer, autocast)
        run_total(model, batch, grid, projection, prototypes, timer, autocast)
        if i < warmup:
            continue
        for name, (ms, m0, peak) in timer.results().items():
            times[name].append(ms)
            peaks[name] = max(peaks[name], peak)
            extra[name] = max(extra[name], peak - m0)
    return {s: {"ms": statistics.median(times[s]), "peak": peaks[s], "extra": extra[s]} for s in STAGES}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_table(results: dict[str, dict], args, device: torch.device, wall: float) -> str:
    mib = 1024**2
    dtypes = list(results)
    base = "fp32" if "fp32" in results else dtypes[0]
    lines = [
        SECTION_START,
        "## Model forward by stage (`benchmarks/model_forward.py`)",
        "",
        f"Device: **{device_name(device)}**, torch {torch.__version__}. talk2dino preset (random init), "
        f"{args.views} x {args.height} x {args.width}, {args.views * args.queries:,} Gaussians, batch 1, "
        f"median of {args.repeats} after {args.warmup} warm-up; "
        f"{'CUDA events' if device.type == 'cuda' else 'wall clock'}. bf16 = autocast on backbone, neck, "
        f"decoder and heads (Gaussians, render and voxelize in fp32). Render: final layer, 128 channels + "
        f"depth, every view. Voxelize: final layer, 17 class probabilities, all Gaussians (no filter), "
        f"200x200x16 grid. Peak = max allocated during the stage (weights and live tensors included); "
        f"+stage = peak minus allocated at stage start.",
        "",
    ]
    header = "| stage | " + " | ".join(f"{d} ms" for d in dtypes)
    if len(dtypes) > 1:
        header += " | " + " | ".join(f"{base}/{d}" for d in dtypes if d != base)
    if device.type == "cuda":
        header += " | " + " | ".join(f"{d} peak MiB (+stage)" for d in dtypes)
    lines.append(header + " |")
    lines.append("|" + "---|" * (header.count("|")))
    for s in STAGES:
        row = f"| {s} | " + " | ".join(f"{results[d][s]['ms']:.2f}" for d in dtypes)
        if len(dtypes) > 1:
            row += " | " + " | ".join(
                f"{results[base][s]['ms'] / results[d][s]['ms']:.2f}x" for d in dtypes if d != base
            )
        if device.type == "cuda":
            row += " | " + " | ".join(
                f"{results[d][s]['peak'] / mib:,.0f} (+{results[d][s]['extra'] / mib:,.0f})" for d in dtypes
            )
        lines.append(row + " |")
    stage_sum = {d: sum(results[d][s]["ms"] for s in STAGES[:-1]) for d in dtypes}
    lines += [
        "",
        "Sum of stages: "
        + ", ".join(f"{d} {stage_sum[d]:.1f} ms" for d in dtypes)
        + f". Benchmark wall time {wall:.0f} s.",
        SECTION_END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of a markdown file (other sections are kept)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--random-init",
        action="store_true",
        help="required: build the backbone with random weights (no weight files are used here)",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--height", type=int, default=504)
    p.add_argument("--width", type=int, default=896)
    p.add_argument("--queries", type=int, default=300, help="queries per view (300 x 6 = 1,800 Gaussians)")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--output", type=Path, help="markdown file whose model_forward section is (re)written")
    args = p.parse_args(argv)
    if not args.random_init:
        p.error("pass --random-init: the benchmark builds the talk2dino model with random weights")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device; use --device cpu for a smoke run")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not set(dtypes) <= {"fp32", "bf16"}:
        p.error(f"--dtypes takes fp32 and/or bf16, got {args.dtypes}")

    from gausstr_core.grid import VoxelGrid
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset_model

    t0 = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the baseline
    torch.backends.cudnn.allow_tf32 = False
    cfg = preset_model("talk2dino")
    cfg.backbone.random_init = True
    cfg.image_size = (args.height, args.width)
    cfg.decoder.queries_per_view = args.queries
    torch.manual_seed(0)
    model = GaussTR(cfg).to(device).eval()
    batch = synthetic_batch(args.views, (args.height, args.width), device)
    grid = VoxelGrid()
    results = {}
    for d in dtypes:
        print(f"measuring {d} on {device_name(device)} ...", flush=True)
        results[d] = measure(model, batch, grid, d, args.repeats, args.warmup, device)
    table = format_table(results, args, device, time.time() - t0)
    print(table)
    if args.output:
        write_section(args.output, table)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
