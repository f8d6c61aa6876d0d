"""GaussRender (Chambon et al., ICCV 2025): occupancy grids rendered as Gaussians, compared in 2D.

Both the predicted and the ground-truth occupancy become grids of simple Gaussians:

* one Gaussian per rendered voxel, centred at the voxel centre, isotropic with standard deviation
  ``scale * voxel_size`` (the official 0.27 m for 0.4 m Occ3D voxels: ``scale = 0.675``), identity
  rotation;
* colour = class probabilities (K channels, free space has no channel): the prediction's
  density-weighted class probabilities, the ground truth's one-hot labels;
* opacity: prediction 1 - exp(-gain * density), the probability that the voxel is non-empty under a
  Beer-Lambert reading of the density (``gain`` = ln 2 / 0.04 by default, so the inference threshold
  of 0.04 renders half opaque); ground truth 1 for occupied voxels (free voxels are not rendered).

They are rendered from three kinds of cameras (``render_views``):

1. sensor: the input cameras (a random subset per step during training);
2. elevated: sensor cameras lifted ``elevation`` m, pitched ``pitch`` degrees down, turned by a random
   yaw of up to ``yaw_jitter`` degrees and moved up to ``around`` m horizontally around the ego;
3. bird's-eye view: one fixed orthographic camera above the grid looking down.

The loss is, per kind, the L1 difference of the rendered semantics (mean over pixels and classes)
plus the L1 difference of the rendered (accumulated) depths divided by a maximum depth, over the
pixels where the ground truth renders something (official: depth > 0.1 m; perspective views
normalised by 50 m, the BEV by its camera height above the grid floor); the sum over kinds is
weighted by ``weight`` (lambda; official 10).

Only voxels that can matter are rendered: with ``visible_only`` the camera-visible ones (Occ3D's
``mask_camera``, as the official code ignores unobserved voxels), of those the ground truth's
occupied voxels and the predicted voxels with density above ``density_floor`` (a voxel below it
renders below gsplat's 1/255 alpha skip in any case). The same renders score any prediction as a
projective-consistency metric (``gausstr_core.evaluation.projective.ProjectiveConsistency``).

Our model predicts Gaussians, not voxels: its last layer's Gaussians are voxelized
(``voxelize_gaussians``, differentiable) with per-Gaussian class probabilities from the text
prototypes of the vocabulary (``ClassPrototypes``), so the loss reaches every Gaussian parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.losses.config import DEFAULT_GAIN, GaussRenderConfig
from gausstr_core.render import RenderOutput
from gausstr_core.render.views import RenderView, bev_view, elevated_view, render_occupancy, sensor_view
from gausstr_core.voxelize.voxel_gaussians import voxel_gaussians

# --- label grids ----------------------------------------------------------------------------------


def ground_truth_occupancy(semantics: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """One-hot colours and opacities of ground-truth labels.

    Args:
        semantics: (B, X, Y, Z) integer labels, 0..K-1 classes, K = free, anything larger ignored.
        num_classes: K.
    Returns:
        colors (B, X, Y, Z, K) float32 one-hot (zero for free and ignored voxels), opacities
        (B, X, Y, Z) float32 (1 occupied, 0 free), ignored (B, X, Y, Z) bool (labels > K).
    """
    labels = semantics.long()
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    occupied = labels < num_classes
    colors = torch.nn.functional.one_hot(labels.clamp(max=num_classes), num_classes + 1)[..., :num_classes]
    return colors.float(), occupied.float(), labels > num_classes


def coarse_grid(grid: VoxelGrid, factor: int) -> VoxelGrid:
    """The grid with ``factor`` times larger voxels over the same range (its shape must divide)."""
    if factor == 1:
        return grid
    if any(n % factor for n in grid.shape):
        raise ValueError(f"grid shape {grid.shape} is not divisible by grid_factor {factor}")
    return VoxelGrid(grid.range, grid.voxel_size * factor)


def coarsen_labels(
    semantics: Tensor, mask: Tensor | None, num_classes: int, factor: int
) -> tuple[Tensor, Tensor | None]:
    """Ground truth on a ``factor`` times coarser grid.

    Args:
        semantics: (B, X, Y, Z) labels (K = free, > K ignored); mask: (B, X, Y, Z) bool or None.
        num_classes: K.
    Returns:
        semantics (B, X/f, Y/f, Z/f): the most frequent class among a block's occupied voxels (ties:
        the lower label), free when none is occupied, ignored (K + 1) when every voxel is ignored;
        mask: true where any voxel of the block is.
    """
    if factor == 1:
        return semantics, mask
    b, x, y, z = semantics.shape
    f, k2 = factor, num_classes + 2
    labels = semantics.long().clamp(max=num_classes + 1)  # K + 1 = ignored
    coarse = (b, x // f, y // f, z // f)
    ix, iy, iz = (torch.arange(n, device=labels.device) // f for n in (x, y, z))
    block = ((ix[:, None, None] * coarse[2] + iy[None, :, None]) * coarse[3] + iz[None, None, :]).reshape(-1)
    scene = torch.arange(b, device=labels.device)[:, None] * (coarse[1] * coarse[2] * coarse[3])
    key = ((scene + block[None]) * k2 + labels.reshape(b, -1)).reshape(-1)
    counts = torch.bincount(key, minlength=b * coarse[1] * coarse[2] * coarse[3] * k2).reshape(*coarse, k2)
    counts = counts.movedim(-1, 1)  # (B, K + 2, X/f, Y/f, Z/f)
    occupied = counts[:, :num_classes].sum(1) > 0
    majority = counts[:, :num_classes].argmax(1)
    all_ignored = counts[:, num_classes + 1] == f**3
    out = torch.where(occupied, majority, torch.where(all_ignored, num_classes + 1, num_classes))
    coarse_mask = None
    if mask is not None:
        coarse_mask = mask.bool().reshape(b, x // f, f, y // f, f, z // f, f).any(6).any(4).any(2)
    return out.to(semantics.dtype), coarse_mask


# --- cameras --------------------------------------------------------------------------------------


def render_views(
    cameras: CameraBatch,
    grid: VoxelGrid,
    config: GaussRenderConfig,
    generator: torch.Generator | None = None,
    all_sensors: bool = False,
) -> list[RenderView]:
    """The cameras of one GaussRender evaluation (sensor, elevated, BEV) as the config asks.

    ``all_sensors`` renders every sensor camera (the metric); otherwise ``config.sensor_views``
    random ones per scene.
    """
    b, v = cameras.batch_size, cameras.num_views
    h, w = cameras.image_size
    size = (max(1, round(h * config.render_scale)), max(1, round(w * config.render_scale)))
    views = []
    count = v if (all_sensors or config.sensor_views < 0) else min(config.sensor_views, v)
    if count > 0:
        chosen = None
        if count < v:
            gen_device = generator.device if generator is not None else "cpu"
            chosen = torch.stack(
                [torch.randperm(v, generator=generator, device=gen_device)[:count] for _ in range(b)]
            ).to(cameras.images.device)
        views.append(sensor_view(cameras, size, chosen, config.max_depth))
    if config.elevated_views > 0:
        views.append(
            elevated_view(
                cameras,
                size,
                config.elevated_views,
                config.elevation,
                config.pitch,
                config.yaw_jitter,
                config.around,
                config.max_depth,
                generator,
            )
        )
    if config.bev:
        views.append(bev_view(grid, b, config.bev_resolution, cameras.images.device))
    return views


# --- the loss -------------------------------------------------------------------------------------


def view_errors(pred: RenderOutput, target: RenderOutput, max_depth: float) -> tuple[Tensor, Tensor]:
    """Semantic L1 (mean over pixels and classes) and depth L1 / max_depth over the pixels where the
    target's accumulated depth exceeds 0.1 m (0 when there are none)."""
    semantic = (pred.features - target.features).abs().mean()
    covered = target.depth > 0.1
    diff = torch.where(covered, (pred.depth - target.depth).abs(), torch.zeros_like(pred.depth))
    depth = diff.sum() / covered.sum().clamp_min(1) / max_depth
    return semantic, depth


def gaussrender_terms(
    pred_colors: Tensor,
    pred_opacity: Tensor,
    pred_include: Tensor,
    target_colors: Tensor,
    target_opacity: Tensor,
    target_include: Tensor,
    views: list[RenderView],
    grid: VoxelGrid,
    config: GaussRenderConfig,
    backend: str = "auto",
) -> dict[str, Tensor]:
    """Render prediction and target voxel grids into every view and compare them.

    Args:
        pred_colors, target_colors: (B, X, Y, Z, K) class probabilities / one-hot labels.
        pred_opacity, target_opacity: (B, X, Y, Z) in [0, 1].
        pred_include, target_include: (B, X, Y, Z) bool, the voxels to render of each.
        views: the cameras (``render_views``).
        grid, config: the grid and the GaussRender settings (scale, weights, tile size).
    Returns:
        per view kind ``<kind>/semantic`` and ``<kind>/depth`` (unweighted), and ``total`` =
        sum over kinds of semantic_weight * semantic + depth_weight * depth (not yet times
        ``config.weight``).
    """
    pred = voxel_gaussians(pred_colors, pred_opacity, pred_include, grid, config.scale)
    with torch.no_grad():
        target = voxel_gaussians(
            target_colors.to(pred_colors), target_opacity.to(pred_colors), target_include, grid, config.scale
        )
    terms: dict[str, Tensor] = {}
    total = pred_colors.new_zeros(())
    for view in views:
        rendered = render_occupancy(pred, view, config.tile_size, backend)
        with torch.no_grad():
            reference = render_occupancy(target, view, config.tile_size, backend)
        semantic, depth = view_errors(rendered, reference, view.max_depth)
        terms[f"{view.kind}/semantic"] = semantic
        terms[f"{view.kind}/depth"] = depth
        total = total + config.semantic_weight * semantic + config.depth_weight * depth
    terms["total"] = total
    return terms


@dataclass
class ClassPrototypes:
    """What turns Gaussian features into class probabilities (as inference does, differentiably).

    Attributes:
        prototypes: (P + F, D) unit text embeddings of the P vocabulary prompts, then F free-space
            prompts (e.g. "sky").
        groups: (P,) the class of each vocabulary prompt.
        num_classes: K.
        logit_scale: None = raw features . prototypes (official), else cosine x this.
    """

    prototypes: Tensor
    groups: Tensor
    num_classes: int
    logit_scale: float | None = None

    def probabilities(self, features: Tensor) -> Tensor:
        """(B, N, D) Gaussian features -> (B, N, K) class probabilities: the softmax over all
        prompts, summed over each class's prompts (free-space prompts keep their mass out of the K
        classes, so such a Gaussian colours nothing)."""
        protos = self.prototypes.to(features)
        if self.logit_scale is None:
            logits = features @ protos.T
        else:
            logits = self.logit_scale * (torch.nn.functional.normalize(features, dim=-1) @ protos.T)
        probs = logits.softmax(-1)
        p = self.groups.shape[0]
        out = probs.new_zeros(*probs.shape[:-1], self.num_classes)
        return out.index_add(-1, self.groups.to(probs.device), probs[..., :p])

    def to(self, device) -> ClassPrototypes:
        return ClassPrototypes(
            self.prototypes.to(device), self.groups.to(device), self.num_classes, self.logit_scale
        )

    @classmethod
    def from_config(cls, config, categories, device="cpu") -> ClassPrototypes:
        """Prototypes of a vocabulary with the text encoder and free prompts of a ``GaussTRConfig``."""
        import dataclasses

        from gausstr_core.text.encoder import TextEncoder
        from gausstr_core.text.vocabulary import Vocabulary

        vocabulary = Vocabulary.parse(categories)
        known = {q.casefold() for q in vocabulary.prompts}
        free = [q for q in config.inference.free_prompts if q.casefold() not in known]
        encoder = TextEncoder(dataclasses.replace(config.text, device=str(device)))
        with torch.no_grad():
            prototypes = encoder.encode(list(vocabulary.prompts) + free).float().to(device)
        groups = torch.tensor(vocabulary.groups, dtype=torch.long, device=device)
        return cls(prototypes, groups, vocabulary.num_classes, config.inference.logit_scale)


def predicted_occupancy(
    gaussians: Gaussians,
    class_probs: Tensor,
    grid: VoxelGrid,
    gain: float = DEFAULT_GAIN,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Voxelize Gaussians with their class probabilities (differentiable).

    Args:
        gaussians: B scenes of N Gaussians (ego frame).
        class_probs: (B, N, K) per-Gaussian class probabilities.
        grid: the voxel grid.
        gain: opacity = 1 - exp(-gain * density).
        backend: voxelizer backend.
    Returns:
        colors (B, X, Y, Z, K) density-weighted class probabilities, opacity (B, X, Y, Z), density
        (B, X, Y, Z). Gaussians whose mean lies outside the grid are left out (as at inference).
    """
    from gausstr_core.voxelize import filter_gaussians, voxelize_gaussians

    covariances = gaussians.covariances()
    valid = filter_gaussians(gaussians.means, covariances, gaussians.opacities, grid)
    density, colors = voxelize_gaussians(
        gaussians.means, covariances, gaussians.opacities, class_probs, grid, valid, backend=backend
    )
    return colors, 1 - torch.exp(-gain * density), density


def gaussrender_loss(
    gaussians: Gaussians,
    prototypes: ClassPrototypes,
    ground_truth,
    cameras: CameraBatch,
    grid: VoxelGrid,
    config: GaussRenderConfig,
    render_backend: str = "auto",
    voxelizer_backend: str = "auto",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The GaussRender loss of the model's Gaussians against ground-truth occupancy.

    Args:
        gaussians: the prediction (usually the last decoder layer), features (B, N, D).
        prototypes: class prototypes of the ground truth's vocabulary (K classes, free = K).
        ground_truth: ``semantics`` (B, X, Y, Z) and optional ``mask_camera`` (B, X, Y, Z).
        cameras: the batch's cameras (sensor and elevated views).
        grid: the voxel grid of the ground truth.
        config: GaussRender settings.
        generator: random cameras (None = torch's global generator, seeded per step by the trainer).
    Returns:
        the terms of ``gaussrender_terms`` plus "loss" = ``config.weight * total``.
    """
    semantics = ground_truth.semantics.to(gaussians.means.device)
    if tuple(semantics.shape) != (gaussians.batch_size, *grid.shape):
        raise ValueError(
            f"ground-truth semantics must be (B, X, Y, Z) = "
            f"{(gaussians.batch_size, *grid.shape)}, got {tuple(semantics.shape)}"
        )
    k = prototypes.num_classes
    mask = getattr(ground_truth, "mask_camera", None)
    mask = None if mask is None else mask.to(semantics.device)
    semantics, mask = coarsen_labels(semantics, mask, k, config.grid_factor)
    grid = coarse_grid(grid, config.grid_factor)
    probs = prototypes.probabilities(gaussians.features.float())
    pred_colors, pred_opacity, density = predicted_occupancy(
        gaussians, probs, grid, config.occupancy_gain, voxelizer_backend
    )
    target_colors, target_opacity, ignored = ground_truth_occupancy(semantics, k)
    considered = ~ignored
    if config.visible_only and mask is not None:
        considered &= mask.bool()
    target_include = considered & (target_opacity > 0)
    pred_include = considered & ((density.detach() > config.density_floor) | target_include)
    views = render_views(cameras, grid, config, generator)
    terms = gaussrender_terms(
        pred_colors,
        pred_opacity,
        pred_include,
        target_colors,
        target_opacity,
        target_include,
        views,
        grid,
        config,
        render_backend,
    )
    terms["loss"] = config.weight * terms["total"]
    return terms
