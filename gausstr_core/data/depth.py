"""The depth convention shared by training data, the node and the bag tools.

The model was trained (like the official GaussTR on Metric3D) on metric depth maps that have a value
at every pixel: where nothing is in range (the sky, far away) the depth network says "far". Depth
*cameras* instead report such pixels as missing (0, NaN or inf: a 16UC1 image cannot even hold a
depth beyond 65.5 m). ``fill_invalid_depth`` turns a camera's missing pixels into the far depth, so
the model sees them the way it saw them in training: beyond its depth limit (51.2 m), where its
head clamps the input and no Gaussian lands in the grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

FAR_DEPTH = 200.0
"""Far-field depth [m] of the training targets and of invalid camera pixels (> every depth limit)."""


def valid_depth(depth: Tensor) -> Tensor:
    """Bool mask of the pixels a depth camera measured: finite and > 0 (same shape as ``depth``)."""
    return torch.isfinite(depth) & (depth > 0)


def fill_invalid_depth(depth: Tensor, far: float = FAR_DEPTH) -> Tensor:
    """``depth`` with every unmeasured pixel (0, negative, NaN, inf) set to ``far`` (same shape)."""
    return torch.where(valid_depth(depth), depth, torch.full((), far, dtype=depth.dtype, device=depth.device))
