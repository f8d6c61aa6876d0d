"""Opacity-based pruning (the option of GaussianCross, Yao et al., ACM MM 2025): Gaussians with
opacity at or below a threshold are dropped before rendering (``prune_by_opacity``; the voxelizer
takes ``valid`` masks instead).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.gaussians import Gaussians


def prune_by_opacity(
    gaussians: Gaussians, threshold: float, keep_all_when_none_left: bool = False
) -> tuple[Gaussians, Tensor]:
    """Drop the Gaussians whose opacity is at or below ``threshold``.

    Args:
        gaussians: B scenes of N Gaussians.
        threshold: opacity threshold (0 keeps every Gaussian with a positive opacity).
        keep_all_when_none_left: a scene whose every Gaussian is at or below the threshold keeps
            them all instead. Training needs it: a pruned Gaussian gets no gradient, so a scene pruned
            to nothing renders nothing, its loss no longer depends on the model, and the opacities
            that fell below the threshold could never rise again (a step where every scene is empty
            has no gradient at all).
    Returns:
        the kept Gaussians, N' = the largest kept count of a scene, each scene's kept ones first in
        their original order and the rest padded with opacity-0 Gaussians (which both renderers and
        the voxelizer's ``valid`` mask leave out), and keep (B, N) bool over the original Gaussians.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"opacity threshold must be in [0, 1), got {threshold}")
    keep = gaussians.opacities > threshold
    if keep_all_when_none_left:
        keep = keep | ~keep.any(1, keepdim=True)
    b = gaussians.batch_size
    counts = keep.sum(1)
    n = int(counts.max()) if b else 0
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :n]
    present = torch.arange(n, device=keep.device)[None] < counts[:, None]

    def take(t: Tensor) -> Tensor:
        index = order if t.dim() == 2 else order[..., None].expand(b, n, t.shape[-1])
        return torch.gather(t, 1, index)

    zero = torch.zeros((), dtype=gaussians.opacities.dtype, device=keep.device)
    opacities = torch.where(present, take(gaussians.opacities), zero)
    pruned = Gaussians(
        take(gaussians.means),
        take(gaussians.scales),
        take(gaussians.rotations),
        opacities,
        take(gaussians.features),
    )
    return pruned, keep
