"""Trivial occupancy baselines that any trained model has to beat.

Both use only what the model itself receives (camera geometry, the depth and feature targets, the
text prototypes), never ground-truth labels:

* ``all_free``: every voxel free (geometry IoU 0, mIoU 0: the floor of the metric).
* ``depth_unprojection``: every pixel's target depth is lifted into the grid and labelled with the
  text prototype nearest to the pixel's target feature; a voxel takes the label most of its
  pixels voted for. This is what the targets give "for free" without learning anything; it only
  marks visible surfaces (no extent behind them).
* ``InitialGaussians`` ("init"): the Gaussians a GaussTR predicts before any training, i.e. with
  its learnt heads at their initial output: one Gaussian per query at the model's (eval-mode)
  initial reference point, lifted at the input depth, with the scale head's initial size (the
  middle of its sigmoid range), opacity 0.5 and the camera's rotation; its feature is the target
  feature at that pixel. Run through the normal inference (``OccupancyPredictor``; without an
  opacity filter, which would drop every 0.5-opacity Gaussian), it shows what the architecture
  gives without learning: a trained model must beat it clearly.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import unproject
from gausstr_core.grid import VoxelGrid
from gausstr_core.model.config import ModelConfig
from gausstr_core.model.gausstr import initial_reference_points
from gausstr_core.model.heads import camera_rotations, gaussian_scales, lift_means, sample_depth


def all_free(grid: VoxelGrid, num_classes: int, batch_size: int = 1, device=None) -> Tensor:
    """(B, X, Y, Z) uint8 volume of the free label ``num_classes``."""
    if not 0 < num_classes < 256:
        raise ValueError(f"num_classes must be in [1, 255], got {num_classes}")
    return torch.full((batch_size, *grid.shape), num_classes, dtype=torch.uint8, device=device)


def pixel_labels(
    features: Tensor, prototypes: Tensor, out_size: tuple[int, int], prompt_classes: Tensor | None = None
) -> Tensor:
    """Label of the nearest (cosine) text prototype for every pixel of bilinearly upsampled features.

    Cosine argmax over prototypes does not depend on the feature's norm, and dot products are
    linear, so upsampling the dot products is exactly the same as upsampling the features first
    (and much cheaper than materialising (C, H, W) features).

    Args:
        features: (V, C, h, w) feature maps at patch resolution.
        prototypes: (P, C) text prototypes (one per prompt).
        out_size: (H, W) pixel resolution.
        prompt_classes: (P,) long class of each prompt (category groups: a class scores the max
            over its prompts); None = prompt p is class p.
    Returns:
        (V, H, W) long labels in [0, K).
    """
    if features.dim() != 4 or prototypes.dim() != 2 or features.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"features must be (V, C, h, w) and prototypes (P, C) with the same C, got "
            f"{tuple(features.shape)} and {tuple(prototypes.shape)}"
        )
    protos = F.normalize(prototypes.float(), dim=-1)
    labels = []
    for f in features.float():  # one view at a time bounds memory at (P, H, W)
        logits = torch.einsum("chw,pc->phw", f, protos)
        logits = F.interpolate(logits[None], size=out_size, mode="bilinear", align_corners=False)[0]
        if prompt_classes is not None:
            k = int(prompt_classes.max()) + 1
            grouped = torch.full((k, *out_size), -torch.inf, device=logits.device)
            idx = prompt_classes.to(logits.device)[:, None, None].expand_as(logits)
            logits = grouped.scatter_reduce(0, idx, logits, reduce="amax")
        labels.append(logits.argmax(0))
    return torch.stack(labels)


def depth_unprojection_predictor(config, categories, device="cpu"):
    """The depth-unprojection baseline as a predict function, with the config's text encoder.

    Args:
        config: a GaussTRConfig (its ``text`` encodes the prompts, its ``grid`` is the output grid).
        categories: the class names (node format: ``a|b`` gives a class several prompts).
        device: where the text encoder runs.
    Returns:
        CameraBatch -> (B, X, Y, Z) uint8 labels, free = the number of classes.
    """
    import dataclasses

    from gausstr_core.text.encoder import TextEncoder
    from gausstr_core.text.vocabulary import Vocabulary

    vocab = Vocabulary.parse(categories)
    text = TextEncoder(dataclasses.replace(config.text, device=str(device)))
    prototypes = text.encode(list(vocab.prompts)).float()
    groups = vocab.group_index()
    return lambda batch: depth_unprojection(batch, prototypes, config.grid, groups, vocab.num_classes)


def depth_unprojection(
    batch: CameraBatch,
    prototypes: Tensor,
    grid: VoxelGrid,
    prompt_classes: Tensor | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """Label volume from unprojected target depth + nearest-prototype labels (see module doc).

    Args:
        batch: CameraBatch with ``depth`` (B, V, H, W) and ``features`` (B, V, C, h, w).
        prototypes: (P, C) text prototypes.
        grid: output voxel grid.
        prompt_classes: (P,) class of each prompt, None = one prompt per class.
        num_classes: K (free = K); default the number of classes the prototypes name.
    Returns:
        (B, X, Y, Z) uint8 labels, free = K.
    """
    if batch.depth is None or batch.features is None:
        raise ValueError("depth_unprojection needs a batch with depth and features targets")
    k = (
        num_classes
        if num_classes is not None
        else (int(prompt_classes.max()) + 1 if prompt_classes is not None else prototypes.shape[0])
    )
    b, v, _, h, w = batch.images.shape
    xs, ys, zs = grid.shape
    n_vox = xs * ys * zs
    v_grid, u_grid = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    pixels = torch.stack([u_grid, v_grid], -1).reshape(-1, 2).to(batch.depth.device)
    k_in = batch.input_intrinsics()
    out = []
    for i in range(b):
        labels = pixel_labels(batch.features[i], prototypes.to(batch.features.device), (h, w), prompt_classes)
        depth = batch.depth[i].reshape(v, -1).float()
        points = unproject(pixels.expand(v, -1, -1), depth, k_in[i].float(), batch.cam_to_ego[i].float())
        idx, inside = grid.voxel_index(points)
        keep = inside & torch.isfinite(depth) & (depth > 0)
        lin = (idx[..., 0] * ys + idx[..., 1]) * zs + idx[..., 2]
        votes = torch.bincount(lin[keep] * k + labels.reshape(v, -1)[keep], minlength=n_vox * k)
        votes = votes.reshape(n_vox, k)
        label = torch.where(votes.sum(1) > 0, votes.argmax(1), torch.full((n_vox,), k, device=votes.device))
        out.append(label.reshape(xs, ys, zs).to(torch.uint8))
    return torch.stack(out)


class InitialGaussians(nn.Module):
    """The "init" baseline as a model: ``forward(batch)`` -> an output whose ``gaussians`` holds one
    layer of untrained GaussTR Gaussians (see the module docstring), so that ``OccupancyPredictor``
    labels and voxelizes them exactly as it does a trained model's.

    Args:
        config: the model whose initialisation is reproduced (queries per view, reference-point
            mode and seed, scale range and unit, depth limit, feature width).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def forward(self, batch: CameraBatch) -> SimpleNamespace:
        if batch.depth is None or batch.features is None:
            raise ValueError(
                "the init baseline lifts the input depth and reads the target features: the "
                "batch needs depth (B, V, H, W) and features (B, V, C, h, w)"
            )
        cfg = self.config
        b, v = batch.batch_size, batch.num_views
        q = cfg.decoder.queries_per_view
        h, w = batch.image_size
        if batch.features.shape[2] != cfg.head.feature_dim:
            raise ValueError(
                f"the target features have {batch.features.shape[2]} channels, the model's "
                f"Gaussian features {cfg.head.feature_dim}"
            )
        mode = "random" if cfg.decoder.reference_init == "point_cloud" else cfg.decoder.reference_init
        ref = initial_reference_points(
            b * v, q, mode, False, cfg.decoder.reference_seed, (h, w), batch.depth.device
        )  # (BV, Q, 2)
        depth = batch.depth.flatten(0, 1).float().clamp(max=cfg.head.depth_limit)
        sampled = sample_depth(depth, ref)  # (BV, Q): the untrained depth offset is ~0
        intrinsics = batch.input_intrinsics().flatten(0, 1).float()
        cam_to_ego = batch.cam_to_ego.flatten(0, 1).float()
        means = lift_means(ref, sampled, intrinsics, cam_to_ego, (h, w))
        lo, hi = cfg.head.scale_range
        size = lo + (hi - lo) * 0.5  # sigmoid(0): the scale head's initial output
        scales = gaussian_scales(torch.full((1, 1, 3), size), sampled, intrinsics, cfg.head.scale_multiplier)
        rotations = camera_rotations(cam_to_ego, q)
        grid = (2 * ref - 1).unsqueeze(1).to(batch.features.dtype)  # (BV, 1, Q, 2)
        features = F.grid_sample(
            batch.features.flatten(0, 1), grid, mode="bilinear", padding_mode="border", align_corners=False
        )[:, :, 0].transpose(1, 2)  # (BV, Q, C)
        gaussians = Gaussians(
            means=means.reshape(b, v * q, 3),
            scales=scales.reshape(b, v * q, 3),
            rotations=rotations.reshape(b, v * q, 4),
            opacities=torch.full((b, v * q), 0.5, device=means.device),
            features=features.float().reshape(b, v * q, -1),
        )
        return SimpleNamespace(gaussians=[gaussians])
