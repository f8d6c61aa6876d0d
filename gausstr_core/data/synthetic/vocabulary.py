"""The synthetic world's fine class names, their Occ3D classes, and their base colours.

Every primitive and ground region of the synthetic world carries a *synthetic name* such as
"building" or "pole". The feature targets (the stand-in for precomputed foundation-model
features) are built from the text embedding of these names; the ground truth uses the Occ3D class
each name belongs to ("building" and "pole" are both ``manmade``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gausstr_core.data.occ3d import CLASS_ID, OCC3D_CLASS_NAMES

SKY_CLASS = 255
"""Per-pixel Occ3D class of pixels that hit nothing (sky): not a voxel class."""


@dataclass(frozen=True)
class SyntheticName:
    """A fine-grained category of the synthetic world.

    Attributes:
        name: the text the feature targets embed ("traffic cone").
        occ_class: Occ3D class id (0..16), or ``SKY_CLASS`` for the sky.
        color: base RGB colour in [0, 1] before texture and shading.
        texture: amplitude of the procedural texture noise (0 = flat colour).
    """

    name: str
    occ_class: int
    color: tuple[float, float, float]
    texture: float


def _n(name: str, occ: str | int, rgb: tuple[int, int, int], texture: float) -> SyntheticName:
    occ_class = occ if isinstance(occ, int) else CLASS_ID[occ]
    return SyntheticName(name, occ_class, tuple(c / 255.0 for c in rgb), texture)  # type: ignore[arg-type]


SYNTHETIC_NAMES: tuple[SyntheticName, ...] = (
    _n("trash bin", "others", (60, 70, 60), 0.05),
    _n("barrier", "barrier", (200, 200, 190), 0.08),
    _n("bicycle", "bicycle", (40, 90, 160), 0.05),
    _n("bus", "bus", (220, 180, 40), 0.06),
    _n("car", "car", (150, 30, 30), 0.04),
    _n("construction vehicle", "construction_vehicle", (240, 170, 20), 0.08),
    _n("motorcycle", "motorcycle", (30, 30, 30), 0.05),
    _n("pedestrian", "pedestrian", (90, 60, 120), 0.1),
    _n("traffic cone", "traffic_cone", (250, 110, 20), 0.05),
    _n("trailer", "trailer", (170, 170, 180), 0.06),
    _n("truck", "truck", (230, 230, 235), 0.06),
    _n("road", "driveable_surface", (80, 80, 85), 0.12),
    _n("lane marking", "driveable_surface", (235, 235, 225), 0.05),
    _n("traffic island", "other_flat", (150, 140, 120), 0.12),
    _n("parking lot", "other_flat", (105, 100, 95), 0.1),
    _n("sidewalk", "sidewalk", (170, 165, 160), 0.1),
    _n("grass", "terrain", (90, 140, 50), 0.25),
    _n("building", "manmade", (180, 150, 120), 0.1),
    _n("wall", "manmade", (150, 150, 140), 0.12),
    _n("pole", "manmade", (110, 110, 115), 0.05),
    _n("traffic sign", "manmade", (30, 80, 200), 0.03),
    _n("tree", "vegetation", (40, 110, 40), 0.35),
    _n("tree trunk", "vegetation", (90, 65, 40), 0.2),
    _n("bush", "vegetation", (60, 120, 45), 0.3),
    _n("sky", SKY_CLASS, (140, 180, 230), 0.0),
)
"""All synthetic names; the index into this tuple is the per-pixel "name id"."""

NAME_ID = {n.name: i for i, n in enumerate(SYNTHETIC_NAMES)}
SKY_NAME_ID = NAME_ID["sky"]


def name_strings() -> list[str]:
    """The K synthetic names as plain strings (the rows of the feature targets' embedding matrix)."""
    return [n.name for n in SYNTHETIC_NAMES]


def name_to_occ_class() -> Tensor:
    """(K,) uint8 Occ3D class of each synthetic name (``SKY_CLASS`` for the sky)."""
    return torch.tensor([n.occ_class for n in SYNTHETIC_NAMES], dtype=torch.uint8)


def name_colors() -> Tensor:
    """(K, 3) float32 base colour of each synthetic name."""
    return torch.tensor([n.color for n in SYNTHETIC_NAMES], dtype=torch.float32)


def name_textures() -> Tensor:
    """(K,) float32 texture-noise amplitude of each synthetic name."""
    return torch.tensor([n.texture for n in SYNTHETIC_NAMES], dtype=torch.float32)


def synthetic_vocabulary() -> list[str]:
    """The 17 Occ3D categories as open-vocabulary groups of the synthetic names.

    Entry i is category i of Occ3D (so predicted labels are Occ3D ids) written as
    ``"name|prompt|..."`` with the synthetic names of that class as the prompts (e.g. manmade is
    ``"building|wall|pole|traffic sign"``); a class with no synthetic name is its Occ3D name.
    Use it to evaluate zero-shot on the synthetic world with the same text encoder that built the
    feature targets.
    """
    groups: list[str] = []
    for occ_class, occ_name in enumerate(OCC3D_CLASS_NAMES[:-1]):
        names = [n.name for n in SYNTHETIC_NAMES if n.occ_class == occ_class]
        groups.append("|".join(names) if names else occ_name.replace("_", " "))
    return groups
