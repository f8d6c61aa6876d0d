"""Class colours chosen by name, for RViz messages and pictures."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from gausstr_core.data.occ3d import NUM_OCCUPIED_CLASSES, OCC3D_CLASS_NAMES, OCC3D_COLORS

# The Occ3D / SurroundOcc visualisation colours for the Occ3D names, so that a familiar vocabulary
# looks familiar in RViz ("others" is grey here: black vanishes on RViz's background).
_KNOWN_COLORS: dict[str, tuple[int, int, int]] = {
    **dict(zip(OCC3D_CLASS_NAMES[:NUM_OCCUPIED_CLASSES], OCC3D_COLORS[:NUM_OCCUPIED_CLASSES])),
    "others": (128, 128, 128),
}


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) uint8 RGB colour of each class, chosen by name so a class keeps its colour when the
    vocabulary changes: the Occ3D colours for the Occ3D names, a hue hashed from the name otherwise."""
    colors = np.empty((len(class_names), 3), dtype=np.uint8)
    for i, name in enumerate(class_names):
        key = name.strip().lower().replace(" ", "_")
        if key in _KNOWN_COLORS:
            colors[i] = _KNOWN_COLORS[key]
            continue
        hue = (zlib.crc32(key.encode()) % 360) / 60.0
        sat, val = 0.75, 0.95
        c = val * sat
        x = c * (1 - abs(hue % 2 - 1))
        rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
        colors[i] = [round(255 * (v + val - c)) for v in rgb]
    return colors
