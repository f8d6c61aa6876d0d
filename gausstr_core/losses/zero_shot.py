"""Zero-shot 2D labels of the target features, and the rendered class distribution trained on them.

The featup targets' classes are nearly parallel in feature space (their text embeddings have cosines
of 0.89-0.98, docs/results.md), so the cosine feature loss is almost satisfied by the common part of a
class's features and gives the part that decides the class little gradient. Inference decides the
class by the nearest text prototype. This term trains that decision in 2D, without labels:

* each target feature patch gets the class of its nearest prompt (cosine), exactly the rule the depth
  unprojection baseline applies in 3D; the free-space prompts (e.g. "sky") give the label "free";
* every Gaussian's class distribution (the softmax over the prompts of its cosine logits, summed per
  class, ``ClassPrototypes.probabilities``) is splatted like a feature, which gives per pixel
  ``P_k = sum_i w_i p_ik`` with ``sum_k P_k`` = the rendered opacity; what is not rendered
  (``1 - alpha``) joins the free outcome;
* the term is the cross-entropy ``-log P_label`` over all pixels.

The labels come from the frozen foundation-model features and the category names only (as the
official featup model's Grounded-SAM labels come from a frozen 2D model); no ground truth is read.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.losses.gaussrender import ClassPrototypes

# Rendered probabilities are clamped to this before the log: a pixel the Gaussians give no mass to
# its label costs -log(1e-6) ~ 13.8 instead of infinity.
PROBABILITY_FLOOR = 1e-6


def zero_shot_labels(targets: Tensor, prototypes: ClassPrototypes, size: tuple[int, int]) -> Tensor:
    """The class of each target patch's nearest prompt, upsampled (nearest) to the rendered size.

    Args:
        targets: (B, V, C, h, w) target features.
        prototypes: the P vocabulary prompts then F free prompts, (P + F, C).
        size: (Hr, Wr) the rendered resolution.
    Returns:
        (B, V, Hr, Wr) int64 labels in [0, K]: the class of a vocabulary prompt, K = free (a free
        prompt is nearest).
    """
    if targets.dim() != 5:
        raise ValueError(f"target features must be (B, V, C, h, w), got {tuple(targets.shape)}")
    b, v, c, h, w = targets.shape
    protos = prototypes.prototypes.to(targets)
    if protos.shape[1] != c:
        raise ValueError(f"prototypes have {protos.shape[1]} channels, the target features {c}")
    p = prototypes.groups.shape[0]
    with torch.no_grad():
        cos = (
            F.normalize(targets.detach().float().movedim(2, -1), dim=-1)
            @ F.normalize(protos.float(), dim=-1).T
        )
        nearest = cos.argmax(-1)  # (B, V, h, w) prompt index
        classes = torch.cat(
            [
                prototypes.groups.to(nearest.device),
                nearest.new_full((protos.shape[0] - p,), prototypes.num_classes),
            ]
        )
        labels = classes[nearest]
        if (h, w) != tuple(size):
            labels = F.interpolate(labels.flatten(0, 1)[:, None].float(), size=size, mode="nearest-exact")
            labels = labels.reshape(b, v, *size).long()
    return labels


def class_channels(features: Tensor, prototypes: ClassPrototypes, logit_scale: float) -> Tensor:
    """Per-Gaussian class distribution to splat: (B, N, D) features -> (B, N, K + 1), the K classes'
    probabilities (cosine x ``logit_scale``) and the free prompts' share last; rows sum to 1."""
    scaled = dataclasses.replace(prototypes, logit_scale=float(logit_scale))
    probs = scaled.probabilities(features.float())
    free = (1.0 - probs.sum(-1, keepdim=True)).clamp_min(0.0)
    return torch.cat([probs, free], dim=-1)


def zero_shot_label_loss(rendered: Tensor, alpha: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the rendered class distribution against the zero-shot labels.

    Args:
        rendered: (B, V, K + 1, H, W) splatted ``class_channels`` (classes, then free).
        alpha: (B, V, H, W) rendered opacity; ``1 - alpha`` is added to the free outcome.
        labels: (B, V, H, W) int64 in [0, K].
    Returns:
        scalar: mean over pixels of ``-log max(P_label, PROBABILITY_FLOOR)``.
    """
    if (
        rendered.dim() != 5
        or rendered.shape[:2] != labels.shape[:2]
        or rendered.shape[3:] != labels.shape[2:]
    ):
        raise ValueError(
            f"rendered classes (B, V, K + 1, H, W) {tuple(rendered.shape)} and labels (B, V, H, W) "
            f"{tuple(labels.shape)} do not match"
        )
    # labels come from zero_shot_labels (in range by construction): no per-step range check, which
    # would synchronise with the device
    free = (1.0 - alpha).clamp_min(0.0).unsqueeze(2)
    zeros = torch.zeros_like(rendered[:, :, :-1])
    distribution = rendered + torch.cat([zeros, free], dim=2)
    picked = distribution.gather(2, labels.unsqueeze(2)).squeeze(2)
    return -picked.clamp_min(PROBABILITY_FLOOR).log().mean()
