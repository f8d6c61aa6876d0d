#!/usr/bin/env python3
"""Gaussian-to-voxel voxelizer: the official-style per-Gaussian loop vs the vectorised PyTorch
reference vs the CUDA kernel, in one run, on the Occ3D grid (200 x 200 x 16 at 0.4 m).

    python3 benchmarks/voxelize.py --output docs/benchmarks.md   # GPU: full table (< 4 min)
    python benchmarks/voxelize.py --quick                          # CPU smoke test

Where a baseline would take minutes it is timed on the first n Gaussians (a random subset of the
same distribution; the cost is linear in N) and extrapolated linearly; such rows are marked "~".
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))  # the test helpers (gausstr_testing): the loop baseline, random scenes

from benchmarks.common import (  # noqa: E402
    copy_bandwidth,
    device_description,
    markdown_table,
    peak_memory_bytes,
    synchronize,
    time_function,
    update_markdown_section,
)
from gausstr_core.device import resolve_device  # noqa: E402
from gausstr_core.grid import VoxelGrid  # noqa: E402
from gausstr_core.voxelize import voxelize_gaussians  # noqa: E402
from gausstr_testing.random_scene import random_gaussians  # noqa: E402
from gausstr_testing.voxelize_loop import voxelize_loop  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # the GPU image may lack it; progress then goes to plain lines
    tqdm = None

SECTION = "voxelize"


@dataclass
class Measurement:
    ms: float  # for all N Gaussians (extrapolated when measured_n < N)
    measured_n: int
    total_n: int
    peak_bytes: int | None
    repeats: int

    @property
    def extrapolated(self) -> bool:
        return self.measured_n < self.total_n


def measure(
    run_on: Callable[[int], object],
    total: int,
    device: torch.device,
    budget_s: float,
    start: int,
    max_repeats: int = 20,
) -> Measurement:
    """Time ``run_on(n)`` for n = total if that fits the budget, else for the largest n in
    start * 10^k that does, and scale linearly to ``total``."""
    run_on(min(total, 16))  # warm-up of one-time costs (kernel loading, allocator)
    synchronize(device)
    n = min(total, start)
    seconds = time_function(lambda: run_on(n), device, warmup=0, repeats=1).median_ms * 1e-3
    while n < total:
        bigger = min(total, n * 10)
        if seconds * bigger / n > budget_s / 3:
            break
        n = bigger
        seconds = time_function(lambda k=n: run_on(k), device, warmup=0, repeats=1).median_ms * 1e-3
    peak = peak_memory_bytes(lambda: run_on(n), device)  # also the warm-up at this size
    repeats = int(max(1, min(max_repeats, budget_s / max(seconds, 1e-6))))
    timing = time_function(lambda: run_on(n), device, warmup=0, repeats=repeats)
    return Measurement(timing.median_ms * total / n, n, total, peak, repeats)


def minimal_bytes(n: int, channels: int, grid: VoxelGrid) -> int:
    """Read every input once, write every output once (float32)."""
    return 4 * (n * (3 + 9 + 1 + channels) + grid.num_voxels * (1 + channels))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1800, 18000, 180000])
    parser.add_argument("--channels", type=int, nargs="+", default=[18, 128, 768])
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes, short budget (CPU smoke test)")
    parser.add_argument("--no-backward", action="store_true", help="skip the forward+backward table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="update the voxelizer section of this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.counts, args.channels, args.budget = [180, 1800], [18], 0.5

    device = resolve_device(args.device)
    grid = VoxelGrid()
    gen = torch.Generator().manual_seed(args.seed)
    described = device_description(device)
    bandwidth = copy_bandwidth(device, nbytes=(1 << 30) if device.type == "cuda" else (1 << 26))
    print(f"device: {described}\ncopy bandwidth: {bandwidth / 1e9:.0f} GB/s", flush=True)

    methods: dict[str, tuple[Callable, int]] = {
        "loop": (lambda *a: voxelize_loop(*a, grid), 180),
        "reference": (lambda *a: voxelize_gaussians(*a, grid, backend="torch"), 1800),
    }
    cuda_note = None
    if device.type == "cuda":
        from gausstr_core.voxelize import cuda as vcuda

        cuda_note = vcuda.unavailable_reason()
        if cuda_note is None:
            methods["cuda"] = (lambda *a: voxelize_gaussians(*a, grid, backend="cuda"), 10**9)
    else:
        cuda_note = "no CUDA device"

    jobs = [(n, c, m) for n in args.counts for c in args.channels for m in methods]
    progress = tqdm(jobs, desc="voxelize benchmark", file=sys.stderr) if tqdm else jobs
    results: dict[tuple[int, int, str], Measurement] = {}
    inputs_cache: dict[tuple[int, int], tuple] = {}
    for n, c, method in progress:
        if (n, c) not in inputs_cache:
            inputs_cache.clear()
            torch.cuda.empty_cache() if device.type == "cuda" else None
            inputs_cache[(n, c)] = random_gaussians(
                1, n, c, grid, scale_range=(0.1, 2.0), device=device, generator=gen
            )
        inputs = inputs_cache[(n, c)]
        fn, start = methods[method]

        def run_on(k, fn=fn, inputs=inputs):
            with torch.no_grad():
                return fn(*(t[:, :k] for t in inputs))

        results[(n, c, method)] = measure(run_on, n, device, args.budget, start)
        if tqdm is None:
            r = results[(n, c, method)]
            print(f"  {n} x {c} {method}: {r.ms:.3f} ms (measured on {r.measured_n})", flush=True)
    inputs_cache.clear()

    rows = []
    for n in args.counts:
        for c in args.channels:
            loop, ref = results[(n, c, "loop")], results[(n, c, "reference")]
            for method in methods:
                r = results[(n, c, method)]
                achieved = minimal_bytes(n, c, grid) / (r.ms * 1e-3)
                mark = "~" if r.extrapolated else ""
                rows.append(
                    [
                        f"{n:,}",
                        c,
                        method,
                        f"{mark}{r.ms:.3f}" if r.ms < 100 else f"{mark}{r.ms:,.0f}",
                        f"{loop.ms / r.ms:,.1f}x",
                        f"{ref.ms / r.ms:,.1f}x",
                        "-" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:,.0f}",
                        f"{achieved / 1e9:,.1f}",
                        f"{100 * achieved / bandwidth:.1f}%",
                        f"extrapolated from {r.measured_n:,}" if r.extrapolated else f"median of {r.repeats}",
                    ]
                )
    headers = [
        "Gaussians",
        "C",
        "method",
        "time [ms]",
        "vs loop",
        "vs reference",
        "peak extra [MiB]",
        "GB/s",
        "of copy BW",
        "note",
    ]
    table = markdown_table(headers, rows)

    lines = []
    if "cuda" in methods and (1800, 18, "cuda") in results:
        r = results[(1800, 18, "cuda")]
        loop_x = results[(1800, 18, "loop")].ms / r.ms
        ref_x = results[(1800, 18, "reference")].ms / r.ms
        met = {True: "met", False: "MISSED"}
        lines.append(
            f"Targets at 1,800 x 18: CUDA {r.ms:.3f} ms (< 2 ms: {met[r.ms < 2]}), "
            f"{loop_x:,.0f}x the loop (>= 100x: {met[loop_x >= 100]}), "
            f"{ref_x:,.1f}x the reference (>= 10x: {met[ref_x >= 10]})."
        )
    if "cuda" in methods and max(args.counts) >= 180000:
        lines.append(
            f"{max(args.counts):,} Gaussians x {max(args.channels)} channels ran on the GPU "
            f"(CUDA {results[(max(args.counts), max(args.channels), 'cuda')].ms:,.1f} ms)."
        )
    if cuda_note:
        lines.append(f"CUDA kernel not measured: {cuda_note}")

    backward_table = ""
    if not args.no_backward and "cuda" in methods:
        backward_table = backward_benchmark(args, grid, device, gen)

    command = "python3 benchmarks/voxelize.py " + " ".join(sys.argv[1:])
    body = "\n\n".join(
        part
        for part in [
            "## Voxelizer (`benchmarks/voxelize.py`)",
            f"Device: {described}. Device-to-device copy bandwidth (read + write): "
            f"{bandwidth / 1e9:,.0f} GB/s. "
            f"Run {datetime.date.today().isoformat()} with `{command.strip()}`.",
            "Scene: one Occ3D grid (200 x 200 x 16 voxels of 0.4 m); Gaussians with means uniform over the "
            "range, log-uniform per-axis scales in 0.1-2 m, random rotations, opacities uniform in [0, 1], "
            "normal features; float32, no autograd. Time: median of CUDA-event timings after warm-up "
            "(perf_counter on a CPU). `~`: timed on the first n Gaussians and scaled linearly to N. GB/s: "
            "minimal traffic (each input read once, each output written once) per second; peak extra: "
            "device memory allocated beyond the inputs.",
            table,
            "\n".join(lines),
            backward_table,
        ]
        if part
    )
    print("\n" + body)
    if args.output:
        update_markdown_section(args.output, SECTION, body)
        print(f"\nwrote the '{SECTION}' section of {args.output}")


def backward_benchmark(args, grid: VoxelGrid, device: torch.device, gen: torch.Generator) -> str:
    """Forward + backward (all four input gradients), CUDA vs the reference's autograd, C = 18."""
    rows = []
    for n in args.counts:
        inputs = random_gaussians(1, n, 18, grid, scale_range=(0.1, 2.0), device=device, generator=gen)
        grads = (torch.randn(1, *grid.shape, device=device), torch.randn(1, *grid.shape, 18, device=device))
        timed = {}
        for backend, start in (("torch", 1800), ("cuda", 10**9)):

            def run_on(k, backend=backend, inputs=inputs, grads=grads):
                leaves = [t[:, :k].detach().requires_grad_() for t in inputs]
                outputs = voxelize_gaussians(*leaves, grid, backend=backend)
                torch.autograd.backward(list(outputs), list(grads))
                return [t.grad for t in leaves]

            timed[backend] = measure(run_on, n, device, args.budget, start)
        for backend, label in (("torch", "reference (autograd)"), ("cuda", "cuda")):
            r = timed[backend]
            mark = "~" if r.extrapolated else ""
            note = f"extrapolated from {r.measured_n:,}" if r.extrapolated else f"median of {r.repeats}"
            rows.append(
                [
                    f"{n:,}",
                    18,
                    label,
                    f"{mark}{r.ms:,.3f}",
                    f"{timed['torch'].ms / r.ms:,.1f}x",
                    "-" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:,.0f}",
                    note,
                ]
            )
    headers = [
        "Gaussians",
        "C",
        "method",
        "forward + backward [ms]",
        "vs reference",
        "peak extra [MiB]",
        "note",
    ]
    return "Forward + backward (gradients for means, covariances, opacities, features):\n\n" + markdown_table(
        headers, rows
    )


if __name__ == "__main__":
    main()
