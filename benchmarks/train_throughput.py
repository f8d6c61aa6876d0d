"""Training throughput: scenes per second per GPU at paper scale, and DDP scaling.

One training step = forward (frozen DINOv2 ViT-B/14 backbone, neck, 3-layer decoder, heads) + the
training losses (rendering every layer's 1,800 Gaussians into 6 views, PCA-cosine feature loss,
SILog + L1 depth loss) + backward + gradient clipping + AdamW, in bf16 autocast, on random-init
weights (the talk2dino preset with ``random_init``) and synthetic batches generated on the GPU
(images, nuScenes-like cameras resized to 504 x 896, smooth metric depth). Times are CUDA events
around whole steps after warm-up; the median step gives scenes/s.

    # one GPU, then torchrun with 1 and 2 processes (DDP scaling), one table:
    python benchmarks/train_throughput.py --ddp 2
    # only the single-process measurement:
    python benchmarks/train_throughput.py
    # (internal) one torchrun worker:
    torchrun --nproc-per-node 2 benchmarks/train_throughput.py --worker --json out.json

The table compares with the paper's rate (about 1.6 scenes/s per A800 GPU) and, for DDP, with the
one-process torchrun of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER_SCENES_PER_S_PER_GPU = 1.6  # GaussTR paper, A800


def synthetic_batch(batch_size: int, views: int, size: tuple[int, int], device: torch.device, seed: int = 0):
    """A CameraBatch of random images with nuScenes-like cameras and smooth depth (on ``device``)."""
    import torch.nn.functional as F

    from gausstr_core.batch import CameraBatch
    from gausstr_core.data.synthetic.rig import nuscenes_rig
    from gausstr_core.data.transforms import resize_matrix

    g = torch.Generator(device=device).manual_seed(seed)
    rig = nuscenes_rig()
    rig = type(rig)(rig.cameras[:views]) if views <= rig.num_views else None
    if rig is None:
        raise ValueError(f"at most 6 views, got {views}")
    h, w = size
    images = torch.rand(batch_size, views, 3, h, w, generator=g, device=device)
    coarse = 3.0 + 47.0 * torch.rand(batch_size * views, 1, h // 28, w // 28, generator=g, device=device)
    depth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    depth = depth.reshape(batch_size, views, h, w)
    intr = rig.intrinsics().to(device).expand(batch_size, -1, -1, -1).clone()
    c2e = rig.cam_to_ego().to(device).expand(batch_size, -1, -1, -1).clone()
    aug = resize_matrix(rig.image_size, (h, w)).to(device).expand(batch_size, views, 3, 3).clone()
    return CameraBatch(images=images, intrinsics=intr, cam_to_ego=c2e, image_aug=aug, depth=depth)


def measure(
    ctx,
    preset_name: str,
    batch_size: int,
    steps: int,
    warmup: int,
    views: int,
    size: tuple[int, int],
    queries: int,
    amp: str,
    ddp: bool,
    channel_chunk: int | None = None,
    profile: Path | None = None,
    render_scale: float | None = None,
) -> dict:
    """Median training-step time of a preset (random init) on this process's device.
    ``channel_chunk``: gsplat channels per rasterization pass (None = the preset's). ``render_scale``:
    the loss's rendered resolution relative to the input (None = the preset's). ``profile``: after
    the timed steps, two more under ``torch.profiler``; the operators by total device time go there."""
    from gausstr_core.losses.gausstr import GaussTRLoss
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset
    from gausstr_core.train.trainer import _loss_terms, autocast_dtype

    device = ctx.device
    cuda = device.type == "cuda"
    cfg = preset(preset_name)
    cfg.model.backbone.random_init = True
    cfg.model.image_size = size
    cfg.model.decoder.queries_per_view = queries
    if channel_chunk is not None:
        cfg.loss.channel_chunk = channel_chunk
    if render_scale is not None:
        cfg.loss.render_scale = render_scale
    torch.manual_seed(0)
    model = GaussTR(cfg.model).to(device)
    loss_fn = GaussTRLoss(cfg.loss)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=5e-3)
    net = model
    if ddp and ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    dtype = autocast_dtype(amp, device)
    batch = synthetic_batch(batch_size, views, size, device, seed=ctx.rank)
    if cfg.model.backbone.kind in ("precomputed", "vit"):
        g = torch.Generator(device=device).manual_seed(ctx.rank)
        p = cfg.model.backbone.patch_size
        shape = (batch_size, views, cfg.model.head.feature_dim, size[0] // p, size[1] // p)
        batch.features = torch.randn(*shape, generator=g, device=device)
        if cfg.model.backbone.kind == "precomputed":
            batch.features = batch.features[:, :, : cfg.model.backbone.channels]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(batch)
            loss = _loss_terms(loss_fn(out, batch))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 35.0)
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    times = []
    for _ in range(steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    if profile is not None:
        write_profile(step, profile, cuda, f"{preset_name}, batch {batch_size}, 2 steps")
    result = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "batch_size": batch_size,
        "median_step_s": median,
        "scenes_per_s_per_gpu": batch_size / median,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
        "gpu": torch.cuda.get_device_name(device) if cuda else "CPU",
        "gaussians": views * queries,
        "views": views,
        "size": list(size),
        "amp": amp,
        "preset": preset_name,
        "channel_chunk": cfg.loss.channel_chunk,
        "render_scale": cfg.loss.render_scale,
    }
    if ctx.distributed:
        gathered = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, result)
        # the slowest rank sets the pace of synchronous DDP
        result = max(gathered, key=lambda r: r["median_step_s"])
        result["scenes_per_s_per_gpu"] = batch_size / result["median_step_s"]
    return result


def write_profile(step, path: Path, cuda: bool, title: str, steps: int = 2) -> None:
    """Run ``step`` ``steps`` times under torch.profiler and write its operator table (by total
    device time on CUDA, CPU time otherwise) to ``path``: where a training step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{title}\n\n{table}\n")


def _run_torchrun(nproc: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            __file__,
            "--worker",
            "--json",
            str(out),
            "--batch-sizes",
            *map(str, args.batch_sizes),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--views",
            str(args.views),
            "--size",
            str(args.size[0]),
            str(args.size[1]),
            "--queries",
            str(args.queries),
            "--amp",
            args.amp,
            "--preset",
            args.preset,
            "--device",
            args.device,
        ]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4], help="scenes per GPU per step")
    p.add_argument("--steps", type=int, default=15, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--size", type=int, nargs=2, default=[504, 896], metavar=("H", "W"))
    p.add_argument("--queries", type=int, default=300, help="Gaussian queries per view (300 x 6 = 1,800)")
    p.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    p.add_argument("--preset", default="talk2dino", help="model preset (random init); default talk2dino")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of this script)")
    p.add_argument("--ddp", type=int, default=0, help="also run torchrun with 1 and this many processes")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="write the results as JSON")
    p.add_argument(
        "--output",
        type=Path,
        help="write the table as the training section of this markdown file (docs/benchmarks.md)",
    )
    p.add_argument(
        "--channel-chunks",
        type=int,
        nargs="+",
        default=None,
        help="single-process runs only: also time these gsplat channels-per-pass values (the loss renders "
        "128 PCA channels + depth; the preset's value first is the baseline of the same run)",
    )
    p.add_argument(
        "--render-scales",
        type=float,
        nargs="+",
        default=None,
        help="single-process runs only: also time the loss rendered at these fractions of the input "
        "resolution (loss.render_scale; the preset's value first is the baseline of the same run)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="write torch.profiler's operator table of two steps (the largest batch, no DDP) here",
    )
    p.add_argument(
        "--section",
        default="train_throughput",
        help="key of the markdown section --output replaces (another key keeps the existing one)",
    )
    args = p.parse_args(argv)
    from gausstr_core.train.distributed import cleanup, init_distributed

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "train_throughput: needs a CUDA GPU (none visible); --device cpu runs a smoke test",
            file=sys.stderr,
        )
        return 2
    if args.device == "cuda":
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "{}.{}".format(*torch.cuda.get_device_capability()))

    def run(ctx, b: int, ddp: bool, **variant) -> dict:
        """``measure`` with this command line's sizes; ``variant``: channel_chunk, render_scale, profile."""
        result = measure(
            ctx,
            args.preset,
            b,
            args.steps,
            args.warmup,
            args.views,
            tuple(args.size),
            args.queries,
            args.amp,
            ddp,
            **variant,
        )
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        return result

    ctx = init_distributed(args.device)
    if args.worker:
        results = [run(ctx, b, True) for b in args.batch_sizes]
        if ctx.is_main and args.json:
            args.json.write_text(json.dumps(results))
        cleanup(ctx)
        return 0

    t0 = time.time()
    rows = []
    # the profile (if asked) of the largest batch: the one the goal's number comes from
    single = [
        run(ctx, b, False, profile=args.profile if b == max(args.batch_sizes) else None)
        for b in args.batch_sizes
    ]
    rows += [("1 process (no DDP)", r) for r in single]

    def variants(key: str, values) -> list[dict]:
        """Every batch size again with ``key`` set to each of ``values`` but the preset's own."""
        return [
            run(ctx, b, False, **{key: value})
            for value in values or []
            if value != single[0][key]
            for b in args.batch_sizes
        ]

    chunked = variants("channel_chunk", args.channel_chunks)
    scaled = variants("render_scale", args.render_scales)
    rows += [(f"1 process, channel_chunk {r['channel_chunk']}", r) for r in chunked]
    rows += [(f"1 process, render_scale {r['render_scale']:g}", r) for r in scaled]
    ddp1 = ddp_n = None
    if args.ddp >= 2:
        ddp1 = _run_torchrun(1, args)
        ddp_n = _run_torchrun(args.ddp, args)
        rows += [("torchrun 1 GPU", r) for r in ddp1] + [(f"torchrun {args.ddp} GPUs", r) for r in ddp_n]
    gpu = single[0]["gpu"]
    lines = [
        f"Training throughput on {gpu} ({torch.cuda.device_count()} visible), "
        f"torch {torch.__version__}, "
        f"{args.views} x {args.size[0]} x {args.size[1]}, {args.views * args.queries} Gaussians, "
        f"{args.amp}, {args.preset} preset (random init), median of {args.steps} steps after "
        f"{args.warmup} warm-up:",
        "",
        "| run | scenes/GPU/step | step (ms) | scenes/s per GPU | scenes/s total | vs paper (1.6/GPU) "
        "| peak mem (GiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        per_gpu = r["scenes_per_s_per_gpu"]
        lines.append(
            f"| {name} | {r['batch_size']} | {1000 * r['median_step_s']:.1f} | {per_gpu:.2f} | "
            f"{per_gpu * r['world_size']:.2f} | {per_gpu / PAPER_SCENES_PER_S_PER_GPU:.2f}x | "
            f"{r['peak_memory_gib']:.1f} |"
        )
    if ddp1 and ddp_n:
        lines += [
            "",
            f"DDP scaling ({args.ddp} GPUs vs 1, same batch per GPU, total scenes/s ratio; ideal "
            f"{args.ddp:.1f}x):",
            "",
        ]
        for a, b in zip(ddp1, ddp_n):
            ratio = b["scenes_per_s_per_gpu"] * b["world_size"] / a["scenes_per_s_per_gpu"]
            eff = 100 * ratio / args.ddp
            lines.append(f"* batch {a['batch_size']}/GPU: {ratio:.2f}x ({eff:.0f}% efficiency)")
    base = {r["batch_size"]: r for r in single}

    def against_preset(runs: list[dict], key: str, heading: str, note: str = "") -> list[str]:
        """One line per variant run: its step against the preset's of the same batch, same run."""
        first = single[0][key]
        out = ["", heading.format(first=first), ""]
        for r in runs:
            ratio = base[r["batch_size"]]["median_step_s"] / r["median_step_s"]
            out.append(
                f"* {key} {r[key]:g}, batch {r['batch_size']}: step {1000 * r['median_step_s']:.1f} ms = "
                f"{ratio:.2f}x the speed of {key} {first:g} in the same run{note.format(r=r)}"
            )
        return out

    if chunked:
        lines += against_preset(
            chunked, "channel_chunk", "gsplat channels per pass (the preset renders {first} at a time):"
        )
    if scaled:
        lines += against_preset(
            scaled,
            "render_scale",
            "Rendered resolution of the loss (the preset renders at {first:g} x the input):",
            ", {r[scenes_per_s_per_gpu]:.2f} scenes/s (a recipe change: its effect on the model is not "
            "measured here)",
        )
    lines += ["", f"(benchmark wall time {time.time() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    if args.output:
        from benchmarks.common import update_markdown_section

        cmd = "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
        title = (
            "Training throughput"
            if args.section == "train_throughput"
            else f"Training throughput ({args.section})"
        )
        body = (
            f"## {title} (`benchmarks/train_throughput.py`)\n\n{time.strftime('%Y-%m-%d')}, "
            f"`{cmd.strip()}`\n\n{text}\n"
        )
        update_markdown_section(args.output, args.section, body)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"single": single, "chunked": chunked, "scaled": scaled, "ddp1": ddp1, "ddp": ddp_n}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
