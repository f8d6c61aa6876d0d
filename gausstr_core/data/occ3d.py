"""Occ3D-nuScenes ground truth: class ids, names, colours, and ``labels.npz`` files.

Occ3D-nuScenes (Tian et al., 2023) stores one ``labels.npz`` per key frame at
``gts/<scene_name>/<sample_token>/labels.npz`` with three arrays over the ego-frame grid
[-40, -40, -1, 40, 40, 5.4] at 0.4 m, indexed [ix, iy, iz] (shape (200, 200, 16)):

* ``semantics``  uint8 class id per voxel, 0..16 occupied classes, 17 = free;
* ``mask_lidar``  uint8 0/1, voxels observed by the LiDAR;
* ``mask_camera`` uint8 0/1, voxels observed by at least one camera (the evaluation mask).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

OCC3D_CLASS_NAMES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
"""The 18 Occ3D-nuScenes labels in id order; the last, ``free`` (17), is empty space."""

FREE_LABEL = 17
NUM_OCCUPIED_CLASSES = 17
OCC3D_SHAPE = (200, 200, 16)

# The palette of the Occ3D / SurroundOcc visualisations (RGB), so pictures read like the papers'.
OCC3D_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 120, 50),
    (255, 192, 203),
    (255, 255, 0),
    (0, 150, 245),
    (0, 255, 255),
    (200, 180, 0),
    (255, 0, 0),
    (255, 240, 150),
    (135, 60, 0),
    (160, 32, 240),
    (255, 0, 255),
    (139, 137, 137),
    (75, 0, 75),
    (150, 240, 80),
    (230, 230, 250),
    (0, 175, 0),
    (255, 255, 255),
)

CLASS_ID = {name: i for i, name in enumerate(OCC3D_CLASS_NAMES)}


def occ3d_palette() -> Tensor:
    """(18, 3) uint8 RGB colour of each Occ3D label (index 17 = free, white)."""
    return torch.tensor(OCC3D_COLORS, dtype=torch.uint8)


@dataclass
class Occ3DLabels:
    """One key frame's Occ3D ground truth.

    Attributes:
        semantics: (X, Y, Z) uint8 labels, 17 = free.
        mask_lidar: (X, Y, Z) bool, observed by the LiDAR.
        mask_camera: (X, Y, Z) bool, observed by a camera.
    """

    semantics: Tensor
    mask_lidar: Tensor
    mask_camera: Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.semantics.shape)
        if self.semantics.dim() != 3:
            raise ValueError(f"semantics must be (X, Y, Z), got {shape}")
        if self.semantics.dtype != torch.uint8:
            raise ValueError(f"semantics must be uint8, got {self.semantics.dtype}")
        for name in ("mask_lidar", "mask_camera"):
            mask = getattr(self, name)
            if tuple(mask.shape) != shape:
                raise ValueError(f"{name} must have the semantics' shape {shape}, got {tuple(mask.shape)}")
            if mask.dtype != torch.bool:
                raise ValueError(f"{name} must be bool, got {mask.dtype}")


def _as_mask(name: str, array: np.ndarray, path: Path) -> Tensor:
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: {name} must be an integer or bool 0/1 array, got {array.dtype}")
    if array.dtype != np.bool_ and array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(
            f"{path}: {name} must hold only 0 and 1, got values in [{array.min()}, {array.max()}]"
        )
    return torch.from_numpy(array.astype(np.bool_))


def load_labels(
    path: str | os.PathLike, expected_shape: tuple[int, int, int] | None = OCC3D_SHAPE
) -> Occ3DLabels:
    """Read an Occ3D ``labels.npz`` (never unpickles: ``allow_pickle=False``).

    Args:
        path: the ``labels.npz`` file (or the sample directory that holds it).
        expected_shape: (X, Y, Z) the arrays must have; None accepts any 3D shape.
    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing array, a wrong shape or dtype, or labels above 17.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "labels.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Occ3D labels not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"semantics", "mask_lidar", "mask_camera"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(data.files)})")
        semantics = data["semantics"]
        masks = {name: data[name] for name in ("mask_lidar", "mask_camera")}
    if semantics.ndim != 3 or (expected_shape is not None and semantics.shape != tuple(expected_shape)):
        raise ValueError(f"{path}: semantics must be {expected_shape or '(X, Y, Z)'}, got {semantics.shape}")
    if not np.issubdtype(semantics.dtype, np.integer):
        raise ValueError(f"{path}: semantics must be integer class ids, got {semantics.dtype}")
    if semantics.size and (semantics.min() < 0 or semantics.max() > FREE_LABEL):
        raise ValueError(
            f"{path}: semantics must be in [0, {FREE_LABEL}], got [{semantics.min()}, {semantics.max()}]"
        )
    return Occ3DLabels(
        semantics=torch.from_numpy(semantics.astype(np.uint8)),
        mask_lidar=_as_mask("mask_lidar", masks["mask_lidar"], path),
        mask_camera=_as_mask("mask_camera", masks["mask_camera"], path),
    )


def save_labels(path: str | os.PathLike, labels: Occ3DLabels, compress: bool = True) -> Path:
    """Write ``labels.npz`` like Occ3D (uint8 semantics, uint8 0/1 masks), atomically.

    Args:
        path: the file to write, or a directory (``labels.npz`` is written inside it).
        compress: zip-deflate the arrays (Occ3D's files are compressed; ~20x smaller).
    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path / "labels.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "semantics": labels.semantics.cpu().numpy().astype(np.uint8),
        "mask_lidar": labels.mask_lidar.cpu().numpy().astype(np.uint8),
        "mask_camera": labels.mask_camera.cpu().numpy().astype(np.uint8),
    }
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path
