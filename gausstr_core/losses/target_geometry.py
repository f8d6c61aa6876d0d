"""How much of the feature loss's signal separates classes: the geometry of the feature targets as the
cosine term sees them.

The official feature term is ``1 - cos(rendered, target)`` after projecting both onto a PCA basis of
the batch's targets (``GaussTRLoss``; the basis is computed from centred samples, but the samples are
projected as they are, so their common component stays). When every target shares a large common
direction (text embeddings of class names from one text tower), a render of that common direction
already scores a high cosine against every class, and the term has little gradient left for the
class-discriminative residual: what ``LossConfig.centered_feature_weight`` measures instead. This
module puts numbers on that for a dataset (``scripts/feature_target_geometry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.losses.gausstr import project_targets


@dataclass(frozen=True)
class CosineSpread:
    """Pairwise cosines of a set of vectors (off-diagonal pairs only)."""

    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, vectors: Tensor) -> CosineSpread:
        """vectors: (K, C), K >= 2."""
        if vectors.dim() != 2 or vectors.shape[0] < 2:
            raise ValueError(f"need (K >= 2, C) vectors, got {tuple(vectors.shape)}")
        unit = F.normalize(vectors.double(), dim=1)
        cos = unit @ unit.T
        off = cos[~torch.eye(len(unit), dtype=torch.bool)]
        return cls(off.mean().item(), off.min().item(), off.max().item())


@dataclass(frozen=True)
class TargetGeometry:
    """What the cosine feature term sees: the raw targets, the targets projected onto the loss's PCA
    basis (what the official term compares), and, for the prototypes, those centred by the batch's
    mean projected target (what the centred term compares).

    Attributes:
        mean_score_*: mean over samples of cos(sample, mean sample): the cosine a render of the mean
            feature everywhere would already get, i.e. how much of the term's range is spent on what
            every class shares (1 = no signal left to separate classes).
        classes_*: pairwise cosines of the class prototypes (None when no prototypes were given).
        common_norm, residual_norm: norm of the mean projected target, and the mean norm of the
            samples' projected residuals about it.
    """

    mean_score_raw: float
    mean_score_projected: float
    classes_raw: CosineSpread | None
    classes_projected: CosineSpread | None
    classes_centred: CosineSpread | None
    common_norm: float
    residual_norm: float


def _mean_score(samples: Tensor) -> float:
    return F.cosine_similarity(samples, samples.mean(0, keepdim=True), dim=1).mean().item()


def target_geometry(
    samples: Tensor, pca_dims: int | None, prototypes: Tensor | None = None, niter: int = 4
) -> TargetGeometry:
    """The geometry of one batch of feature targets as the feature loss sees it.

    Args:
        samples: (M, C) target feature vectors of one training batch (every patch of every view).
        pca_dims: the loss's ``pca_dims`` (None: no projection, as ``LossConfig``).
        prototypes: (K, C) class prototypes (e.g. the text embeddings the targets were made from),
            or None.
        niter: power iterations of the PCA (``LossConfig.pca_niter``).
    Returns:
        TargetGeometry (no mean score for the centred space: a centred set's mean is 0).
    """
    if samples.dim() != 2:
        raise ValueError(f"samples must be (M, C), got {tuple(samples.shape)}")
    samples = samples.double()
    basis, projected, mean = project_targets(samples, pca_dims, niter)
    centred = projected - mean
    raw_c = proj_c = cent_c = None
    if prototypes is not None:
        prototypes = prototypes.double()
        proto_proj = prototypes if basis is None else prototypes @ basis
        raw_c = CosineSpread.of(prototypes)
        proj_c = CosineSpread.of(proto_proj)
        cent_c = CosineSpread.of(proto_proj - mean)
    return TargetGeometry(
        mean_score_raw=_mean_score(samples),
        mean_score_projected=_mean_score(projected),
        classes_raw=raw_c,
        classes_projected=proj_c,
        classes_centred=cent_c,
        common_norm=mean.norm().item(),
        residual_norm=centred.norm(dim=1).mean().item(),
    )
