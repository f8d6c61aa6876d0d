"""The one class colour map: RViz messages (``gausstr_ros``) and evaluation pictures use it alike.

A class keeps its colour when the vocabulary changes, because the colour follows its name: the Occ3D
palette (``gausstr_core.data.occ3d.OCC3D_COLORS``, the Occ3D / SurroundOcc visualisation colours) for
the Occ3D class names and a few common aliases ("road", "person", "building", ...), and otherwise a
saturated hue hashed from the name (CRC-32, the same in every process and on every machine).
"others" is grey instead of the palette's black, which vanishes on RViz's dark background.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from gausstr_core.data.occ3d import NUM_OCCUPIED_CLASSES, OCC3D_CLASS_NAMES, OCC3D_COLORS

KNOWN_COLORS: dict[str, tuple[int, int, int]] = {
    **dict(zip(OCC3D_CLASS_NAMES[:NUM_OCCUPIED_CLASSES], OCC3D_COLORS[:NUM_OCCUPIED_CLASSES])),
    "others": (128, 128, 128),
}
"""RGB colour of each Occ3D class name (underscored, lower case)."""

ALIASES: dict[str, str] = {
    "drivable_surface": "driveable_surface",
    "road": "driveable_surface",
    "building": "manmade",
    "pole": "manmade",
    "cone": "traffic_cone",
    "person": "pedestrian",
    "tree": "vegetation",
}
"""Other names of Occ3D classes that take that class's colour."""


def color_key(name: str) -> str:
    """The name a colour is chosen by: the category's name (before any "|prompt"), stripped, lower
    case, spaces as underscores, aliases resolved."""
    key = name.split("|")[0].strip().lower().replace(" ", "_")
    return ALIASES.get(key, key)


def hashed_color(key: str) -> tuple[int, int, int]:
    """A saturated colour (HSV saturation 0.75, value 0.95) with the hue hashed from ``key``."""
    hue = (zlib.crc32(key.encode()) % 360) / 60.0
    sat, val = 0.75, 0.95
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
    return tuple(round(255 * (v + val - c)) for v in rgb)  # type: ignore[return-value]


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class (see the module docstring)."""
    colors = np.empty((len(class_names), 3), dtype=np.uint8)
    for i, name in enumerate(class_names):
        key = color_key(name)
        colors[i] = KNOWN_COLORS.get(key) or hashed_color(key)
    return colors
