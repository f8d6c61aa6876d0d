"""The voxel grid occupancy is predicted on (Occ3D-nuScenes layout by default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OCC3D_RANGE = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
OCC3D_VOXEL_SIZE = 0.4


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned grid of cubic voxels in the ego frame.

    Voxel (ix, iy, iz) covers [lo + i * voxel_size, lo + (i + 1) * voxel_size) on each axis, its
    centre is at lo + (i + 0.5) * voxel_size, and dense arrays over the grid are indexed
    [ix, iy, iz] (Occ3D-nuScenes: shape (200, 200, 16), 17 = free).

    Attributes:
        range: (x_min, y_min, z_min, x_max, y_max, z_max) [m].
        voxel_size: edge length [m].
    """

    range: tuple[float, float, float, float, float, float] = OCC3D_RANGE
    voxel_size: float = OCC3D_VOXEL_SIZE

    def __post_init__(self) -> None:
        if len(self.range) != 6:
            raise ValueError(
                f"grid range needs 6 numbers (x_min, y_min, z_min, x_max, y_max, z_max), got {self.range}"
            )
        object.__setattr__(self, "range", tuple(float(v) for v in self.range))
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {self.voxel_size}")
        for axis, (lo, hi) in enumerate(zip(self.range[:3], self.range[3:])):
            if not hi > lo:
                raise ValueError(f"grid range axis {'xyz'[axis]} is empty: [{lo}, {hi}]")
            n = (hi - lo) / self.voxel_size
            if abs(n - round(n)) > 1e-4:
                raise ValueError(
                    f"grid extent {hi - lo} m along {'xyz'[axis]} is not a whole number of "
                    f"{self.voxel_size} m voxels"
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) number of voxels per axis."""
        return tuple(round((hi - lo) / self.voxel_size) for lo, hi in zip(self.range[:3], self.range[3:]))  # type: ignore[return-value]

    @property
    def num_voxels(self) -> int:
        x, y, z = self.shape
        return x * y * z

    @property
    def lower(self) -> tuple[float, float, float]:
        """The minimum corner of voxel (0, 0, 0) [m]."""
        return self.range[:3]  # type: ignore[return-value]

    def centers(self, device: torch.device | str | None = None, dtype=torch.float32) -> Tensor:
        """(X, Y, Z, 3) voxel centre coordinates [m]."""
        axes = [
            (torch.arange(n, device=device, dtype=torch.float64) + 0.5) * self.voxel_size + lo
            for n, lo in zip(self.shape, self.lower)
        ]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        return grid.to(dtype)

    def voxel_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Integer voxel indices (..., 3) of points (..., 3), and a mask of points inside the grid."""
        lo = torch.tensor(self.lower, device=points.device, dtype=points.dtype)
        idx = torch.floor((points - lo) / self.voxel_size).long()
        size = torch.tensor(self.shape, device=points.device)
        inside = ((idx >= 0) & (idx < size)).all(-1)
        return idx, inside
