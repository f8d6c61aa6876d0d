"""Zero-shot 2D labels of the target features, and the rendered class distribution trained on them.

The featup targets' classes are nearly parallel in feature space (their text embeddings have cosines
of 0.89-0.98, docs/results.md), so the cosine feature loss is almost satisfied by the common part of a
class's features and gives the part that decides the class little gradient. Inference decides the
class by the nearest text prototype. This term trains that decision in 2D, without labels:

* each target feature patch gets the class of its nearest prompt (cosine), exactly the rule the depth
  unprojection baseline applies in 3D; the free-space prompts (e.g. "sky") give the label "free";
* every Gaussian's class distribution (the softmax over the prompts of its cosine logits, summed per
  class, ``ClassPrototypes.probabilities``) is splatted like a feature, which gives per pixel
  ``P_k = sum_i w_i p_ik`` with ``sum_k P_k`` = the rendered opacity;
* the term is the cross-entropy ``-log (P_label / alpha)``: the class of what the pixel shows, not
  how opaque it is, over the pixels labelled with a class whose depth target is valid and within the
  depth limit. A first version that counted every pixel and gave ``1 - alpha`` to "free" asked for
  opaque Gaussians wherever a distant building was labelled "manmade", against the depth loss's
  far-field target, and cost 2.7-8.2 IoU at tiny scale (docs/results.md).

The labels come from the frozen foundation-model features and the category names only (as the
official featup model's Grounded-SAM labels come from a frozen 2D model); no ground truth is read.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.data.transforms import resize_nearest
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
    c = targets.shape[2]
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
        return resize_nearest(classes[nearest], size)


def class_channels(features: Tensor, prototypes: ClassPrototypes, logit_scale: float) -> Tensor:
    """Per-Gaussian class distribution to splat: (B, N, D) features -> (B, N, K + 1), the K classes'
    probabilities (cosine x ``logit_scale``) and the free prompts' share last; rows sum to 1."""
    scaled = dataclasses.replace(prototypes, logit_scale=float(logit_scale))
    probs = scaled.probabilities(features.float())
    free = (1.0 - probs.sum(-1, keepdim=True)).clamp_min(0.0)
    return torch.cat([probs, free], dim=-1)


def zero_shot_label_loss(
    rendered: Tensor, alpha: Tensor, labels: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Mean cross-entropy of the rendered class distribution, normalised by the rendered opacity,
    against the zero-shot labels of the pixels that show something.

    Only what is rendered is classified: ``P_k / alpha`` is the class distribution of the Gaussians a
    pixel shows, whatever their opacity, so the term leaves the amount of opacity (the geometry) to
    the depth loss. Pixels labelled free (a free prompt is nearest) and pixels ``valid`` excludes
    (the far field and invalid depth) are not counted: there the depth loss asks for nothing to be
    rendered, and an opaque "manmade" 200 m away would fight it.

    Args:
        rendered: (B, V, K + 1, H, W) splatted ``class_channels`` (classes, then free prompts).
        alpha: (B, V, H, W) rendered opacity.
        labels: (B, V, H, W) int64 in [0, K]; K (free) is not counted.
        valid: (B, V, H, W) bool, pixels that may be counted; None = all.
    Returns:
        scalar: the mean over counted pixels of ``-log max(P_label / alpha, PROBABILITY_FLOOR)``;
        0 (with a gradient of 0) when no pixel is counted.
    """
    shapes_match = rendered.shape[:2] == labels.shape[:2] and rendered.shape[3:] == labels.shape[2:]
    if rendered.dim() != 5 or not shapes_match:
        raise ValueError(
            f"rendered classes (B, V, K + 1, H, W) {tuple(rendered.shape)} and labels (B, V, H, W) "
            f"{tuple(labels.shape)} do not match"
        )
    free = rendered.shape[2] - 1
    counted = labels < free
    if valid is not None:
        counted = counted & valid
    # labels come from zero_shot_labels (in range by construction): no per-step range check, which
    # would synchronise with the device
    picked = rendered.gather(2, labels.clamp_max(free).unsqueeze(2)).squeeze(2)
    share = picked / alpha.clamp_min(PROBABILITY_FLOOR)
    nll = -share.clamp(PROBABILITY_FLOOR, 1.0).log()
    weights = counted.to(nll.dtype)
    return (nll * weights).sum() / weights.sum().clamp_min(1.0)
