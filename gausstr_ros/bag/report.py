"""The report folder of a bag evaluation: written into a temporary directory and renamed into place
only when complete (an error leaves nothing behind), plus the pictures and tables it holds.

Pictures (PNG): bird's-eye views of prediction vs ground truth (``gausstr_core.evaluation.visualize``),
camera image | input depth | depth rendered from the Gaussians, the Gaussians seen from above, and the
latency histogram. Tables: ``frames.csv`` (one row per frame set), ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gausstr_core.grid import VoxelGrid


class ReportDir:
    """A report directory being written.

    Args:
        out: the final directory.
        overwrite: replace an existing ``out`` when the new report is complete; otherwise an
            existing non-empty ``out`` is an error (raised at once, before any work).
    """

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out).expanduser()
        if self.out.exists() and not overwrite and (not self.out.is_dir() or any(self.out.iterdir())):
            raise FileExistsError(
                f"report directory {self.out} exists and is not empty; pass --overwrite to "
                f"replace it, or choose another --out"
            )
        self.overwrite = overwrite
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))

    def file(self, name: str) -> Path:
        """Path of a file inside the report (directories created)."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> Path:
        """Move the finished report to its final place."""
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{self.path.name.rsplit('-', 1)[-1]}")
            self.out.rename(old)
        self.path.rename(self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> ReportDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, min, p50, p90, p99, max of a list of numbers (None entries when empty)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"count": 0, "mean": None, "min": None, "p50": None, "p90": None, "p99": None, "max": None}
    r = lambda x: round(float(x), 3)
    return {
        "count": int(v.size),
        "mean": r(v.mean()),
        "min": r(v.min()),
        "p50": r(np.percentile(v, 50)),
        "p90": r(np.percentile(v, 90)),
        "p99": r(np.percentile(v, 99)),
        "max": r(v.max()),
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """CSV with the union of the rows' keys as columns (in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 4)
    return v


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=1) + "\n")


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    if isinstance(v, Path):
        return str(v)
    return v


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_latency_histogram(path: Path, series: dict[str, Sequence[float]], title: str) -> Path:
    """Histogram of one or more latency series [ms] with their medians and 99th percentiles marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    drawn = False
    for name, values in series.items():
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            continue
        drawn = True
        line = ax.hist(v, bins=min(40, max(5, v.size)), alpha=0.55, label=f"{name} (n={v.size})")[2][0]
        color = line.get_facecolor()
        for q, style in ((50, "-"), (99, "--")):
            x = float(np.percentile(v, q))
            ax.axvline(x, color=color, linestyle=style, alpha=0.9, label=f"{name} p{q} {x:.0f} ms")
    if not drawn:
        ax.text(0.5, 0.5, "no frames were processed", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("frame sets")
    ax.set_title(title)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_prediction_bev(path: Path, labels: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    """Bird's-eye view of a prediction alone (x forward up, y left left), with a legend."""
    from matplotlib.patches import Patch

    from gausstr_core.colors import class_colors
    from gausstr_core.evaluation.visualize import bev_labels, bev_rgb

    plt = _pyplot()
    free = len(class_names)
    colors = class_colors(class_names)
    top, _ = bev_labels(labels, free)
    fig, ax = plt.subplots(figsize=(6.5, 7), dpi=100)
    ax.imshow(bev_rgb(top, colors, free), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    present = sorted(k for k in top.unique().tolist() if k < free)
    ax.legend(
        handles=[Patch(color=colors[k] / 255.0, label=class_names[k]) for k in present],
        loc="lower center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_depth_comparison(
    path: Path,
    camera_names: Sequence[str],
    images: Sequence[np.ndarray],
    input_depth: Sequence[np.ndarray | None] | None,
    rendered_depth: Sequence[np.ndarray] | None,
    title: str,
) -> Path:
    """Per camera: image | input depth | depth rendered from the Gaussians (one turbo scale for all).

    Args:
        images: V (H, W, 3) uint8 RGB.
        input_depth: V (H, W) float depth [m] (0 invalid) or None entries / None when the bag has none.
        rendered_depth: V (h, w) float depth [m] at the network input size, or None.
    """
    from gausstr_core.evaluation.visualize import depth_to_rgb

    plt = _pyplot()
    maps = [
        d
        for d in (
            *(input_depth if input_depth is not None else ()),
            *(rendered_depth if rendered_depth is not None else ()),
        )
        if d is not None
    ]
    valid = [np.asarray(d)[(np.asarray(d) > 0) & np.isfinite(d)] for d in maps]
    pool = np.concatenate(valid) if valid else np.zeros(0)
    max_depth = float(np.percentile(pool, 99)) if pool.size else 1.0
    columns = ["camera image", "input depth", "rendered depth (Gaussians)"]
    v = len(camera_names)
    fig, axes = plt.subplots(v, 3, figsize=(11, 1.9 * v + 0.8), dpi=100, squeeze=False)
    for i, name in enumerate(camera_names):
        panels = [images[i]]
        for depths in (input_depth, rendered_depth):
            d = depths[i] if depths is not None else None
            panels.append(
                None
                if d is None
                else depth_to_rgb(torch.from_numpy(np.array(d, np.float32)), max_depth)
                .permute(1, 2, 0)
                .numpy()
            )
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(
                    0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, fontsize=8
                )
            else:
                ax.imshow(panel, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"{title} (depth colour: turbo, 0 to {max_depth:.0f} m, black = invalid)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_gaussians_top_view(
    path: Path,
    means: np.ndarray,
    scales: np.ndarray,
    rotations_wxyz: np.ndarray,
    opacities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    grid: VoxelGrid,
    title: str,
    background: np.ndarray | None = None,
) -> Path:
    """The Gaussians from above: 2-sigma ellipses of their horizontal footprint, coloured by class,
    opacity as alpha, over an optional bird's-eye picture (e.g. the ground truth); x forward up.

    Args:
        means, scales: (N, 3) [m]; rotations_wxyz: (N, 4); opacities, labels: (N,).
        background: (X, Y, 3) uint8 picture in ``bev_rgb``'s orientation, or None.
    """
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Patch

    from gausstr_core.colors import class_colors
    from gausstr_core.geometry import build_covariance

    plt = _pyplot()
    free = len(class_names)
    colors = class_colors(class_names) / 255.0
    x0, y0, _, x1, y1, _ = grid.range
    fig, ax = plt.subplots(figsize=(7, 7.6), dpi=100)
    if background is not None:
        # bev_rgb images have x forward up and y left to the left: plot coordinates (-y, x).
        ax.imshow(background, extent=(-y1, -y0, x0, x1), alpha=0.35, interpolation="nearest")
    n = len(means)
    if n:
        cov = build_covariance(
            torch.from_numpy(np.array(scales, np.float32)),
            torch.from_numpy(np.array(rotations_wxyz, np.float32)),
        ).numpy()
        # Footprint in plot coordinates (u, w) = (-y, x).
        flip = np.array([[0.0, -1.0], [1.0, 0.0]])
        c2 = flip @ cov[:, :2, :2] @ flip.T
        evals, evecs = np.linalg.eigh(c2)
        evals = np.clip(evals, 1e-8, None)
        widths = 2 * 2 * np.sqrt(evals[:, 1])  # 2 sigma each side
        heights = 2 * 2 * np.sqrt(evals[:, 0])
        angles = np.degrees(np.arctan2(evecs[:, 1, 1], evecs[:, 0, 1]))
        labels = np.asarray(labels).astype(np.int64)
        face = np.zeros((n, 4))
        occupied = labels < free
        face[occupied, :3] = colors[labels[occupied]]
        face[~occupied, :3] = 0.6
        face[:, 3] = np.clip(np.asarray(opacities, np.float64), 0.05, 1.0) * np.where(occupied, 0.8, 0.25)
        offsets = np.stack([-means[:, 1], means[:, 0]], axis=1)
        ax.add_collection(
            EllipseCollection(
                widths,
                heights,
                angles,
                units="xy",
                offsets=offsets,
                offset_transform=ax.transData,
                facecolors=face,
                edgecolors=face[:, :3] * 0.6,
                linewidths=0.3,
            )
        )
        present = sorted(set(labels[occupied].tolist()))
        handles = [Patch(color=colors[k], label=class_names[k]) for k in present]
        handles.append(Patch(color=(0.6, 0.6, 0.6), alpha=0.4, label="free / filtered"))
        ax.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, -0.17),
            ncol=4,
            fontsize=8,
            frameon=False,
        )
    ax.plot([0], [0], marker="^", color="black", markersize=7)
    ax.set_xlim(-y1, -y0)
    ax.set_ylim(x0, x1)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (right) [m]")
    ax.set_ylabel("x (forward) [m]")
    ax.set_title(f"{title}: {n} Gaussians (2-sigma footprints)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def picture_indices(expected: int, count: int) -> set[int]:
    """``count`` frame indices spread evenly over ``expected`` frames (first and last included)."""
    if count <= 0 or expected <= 0:
        return set()
    if count >= expected:
        return set(range(expected))
    return {round(i * (expected - 1) / max(count - 1, 1)) for i in range(count)}
