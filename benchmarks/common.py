"""Shared helpers for the benchmark scripts: device naming, timing, peak memory, copy bandwidth and
markdown output. Timing on CUDA uses events after warm-up and reports the median of repeats."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


def device_description(device: torch.device) -> str:
    """A one-line name of the device and software stack, for tables and reports."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (
            f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs), torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"CPU {cpu} ({os.cpu_count()} cores, {threads} torch threads), torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    repeats: int


def time_function(
    fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 10
) -> Timing:
    """Median wall time of ``fn`` [ms]: CUDA events around each call on a GPU (after ``warmup``
    calls), ``time.perf_counter`` on the CPU."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return Timing(statistics.median(times), min(times), repeats)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak device memory ``fn`` allocates beyond what was allocated before it (None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return peak


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Achieved bytes/s (read + write) of a device-to-device copy of ``nbytes``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    repeats = 10 if device.type == "cuda" else 3
    timing = time_function(lambda: dst.copy_(src), device, warmup=2, repeats=repeats)
    return 2 * nbytes / (timing.median_ms * 1e-3)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]
    rule = [("-" * (w - 1) + ":") if n else "-" * w for w, n in zip(widths, numeric)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "| " + " | ".join(rule) + " |",
    ]
    for row in cells:
        lines.append(
            "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric)) + " |"
        )
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").lstrip("~").rstrip("x%"))
    except ValueError:
        return text in ("", "-")
    return True


def update_markdown_section(
    path: str | Path,
    key: str,
    body: str,
    header: str = "# Benchmarks\n\nMeasured results; each section is written by "
    "its script in `benchmarks/`.\n",
) -> None:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``path`` (created
    with ``header`` if missing; the section is appended if absent)."""
    path = Path(path)
    begin, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else header
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
