"""Training losses of GaussTR: every decoder layer's Gaussians are splatted into the cameras, their
rendered features are aligned with the frozen foundation-model features and their rendered depth with
metric depth. No 3D labels are involved.

Per layer (faithful to the official ``GaussTRHead.loss``):

* Feature alignment: a PCA basis (``torch.pca_lowrank``, centred, 4 power iterations) of the target
  features of the whole batch reduces them and the Gaussian features to ``pca_dims`` channels; the
  reduced Gaussian features are rendered, the patch-resolution targets are upsampled bilinearly to
  the rendered resolution, and ``5 x (1 - cos)`` is averaged over all pixels.
* Depth: mmseg's SiLogLoss (per image, lambda 0.5, eps 1e-6) plus 0.2 x L1 over valid pixels, between
  the rendered (accumulated, not alpha-normalised) depth and the target depth. Target pixels at or
  beyond ``depth_limit`` become ``beyond_limit_depth`` (1e-3 m): a valid target near zero, so that the
  model learns to leave the far field and the sky empty (rendered depth ~0 where nothing is rendered).
  Invalid target pixels (0 or non-finite) are ignored.
* Segmentation (optional, featup): the model's segment head maps rendered PCA features to class
  logits, cross-entropy against per-pixel labels with an ignore index (0 = unlabelled).
* Zero-shot labels (optional, ``zero_shot_label_weight``; not in the official code): the Gaussians'
  class distributions are splatted with the features (extra channels of the same render) and trained
  by cross-entropy against each target patch's nearest-prompt class
  (``gausstr_core.losses.zero_shot``). Label-free; needs ``class_prototypes`` (or ``zero_shot_prototypes``).

One difference from the official code: the PCA basis is computed once per step and shared by the
layers (the official recomputes the randomized PCA per layer, which only adds noise).

Options from the related methods, all off by default (docs/training.md):

* ``photometric`` (GaussianCross): the RGB head's colours are appended to the rendered feature
  channels, so they are splatted in the same pass, and compared with the input images by
  0.85 (1 - SSIM) / 2 + 0.15 L1 (``gausstr_core.losses.photometric``), every layer.
* ``prune_opacity``: Gaussians with opacity at or below it are left out of the training renders
  (a scene that would keep none keeps all, so that its opacities can still rise).
* ``gaussrender`` (GaussRender): with ground-truth occupancy, the last layer's voxelized prediction
  and the ground truth are rendered as voxel Gaussians from sensor, elevated and bird's-eye cameras
  and compared by semantic and depth L1 (``gausstr_core.losses.gaussrender``). Needs the class prototypes
  of the ground truth's vocabulary and ``ground_truth=`` in the call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.batch import CameraBatch
from gausstr_core.data.transforms import resize_matrix, resize_nearest
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.losses.config import LossConfig
from gausstr_core.losses.gaussrender import ClassPrototypes, gaussrender_loss
from gausstr_core.losses.photometric import photometric_loss
from gausstr_core.losses.pruning import prune_by_opacity
from gausstr_core.losses.zero_shot import class_channels, zero_shot_label_loss, zero_shot_labels
from gausstr_core.render import RenderOutput, render_gaussians

ALPHA_METRIC = "metric/alpha_mean"  # the last layer's mean rendered opacity (alpha) over all pixels
# the last layer's fraction of Gaussians with opacity above OPAQUE_OPACITY: trained healthy models
# keep most of theirs visible (tiny, 112 x 200: 0.86-0.94), a partly collapsed one does not (featup
# at paper size, 2026-12-07: 0.23, the median Gaussian transparent 2 m from the ego origin;
# scripts/gaussian_stats.py)
OPAQUE_METRIC = "metric/opaque_fraction"
OPAQUE_OPACITY = 0.05


@dataclass
class LossOutput:
    """What one loss evaluation produces.

    Attributes:
        terms: scalar tensors: "loss" (the total that is optimised), per layer ``i``
            "layer{i}/feature", "layer{i}/depth", "layer{i}/segmentation", "depth_head", and the
            logged-only "metric/depth_mae" (last layer, L1 over valid pixels [m]), "metric/alpha_mean"
            and "metric/opaque_fraction" (last layer, see OPAQUE_METRIC).
        rendered: the last layer's render (PCA-reduced features, depth, alpha), detached, for pictures.
        target_features: (B, V, q, Hr, Wr) the upsampled PCA-reduced targets, detached, or None.
        target_depth: (B, V, Hr, Wr) the depth target after limit handling (0 = invalid), or None.
        rendered_rgb: (B, V, 3, Hr, Wr) the last layer's rendered colours, detached (RGB head and
            photometric loss on), else None.
    """

    terms: dict[str, Tensor]
    rendered: RenderOutput | None
    target_features: Tensor | None
    target_depth: Tensor | None
    rendered_rgb: Tensor | None = None


def pca_basis(features: Tensor, dims: int, niter: int = 4) -> Tensor:
    """Principal directions of feature vectors (``torch.pca_lowrank``, centred, in float64).

    Args:
        features: (M, C) samples.
        dims: q <= min(M, C) directions.
    Returns:
        (C, q) orthonormal columns in the features' dtype (constant: no gradient).
    """
    if features.dim() != 2 or dims > min(features.shape):
        raise ValueError(
            f"pca_basis needs (M, C) features with q <= min(M, C), got {tuple(features.shape)}, q={dims}"
        )
    with torch.no_grad():
        _, _, v = torch.pca_lowrank(features.detach().double(), q=dims, center=True, niter=niter)
    return v.to(features.dtype)


def project_targets(
    samples: Tensor, dims: int | None, niter: int = 4
) -> tuple[Tensor | None, Tensor, Tensor]:
    """The feature loss's view of one batch of target samples: the PCA basis of the batch, the samples
    projected onto it as they are (not centred: their common part stays, as in the official code),
    and the mean projected sample.

    Args:
        samples: (M, C) target features (every patch of every view of the batch).
        dims: ``LossConfig.pca_dims``; None = no reduction.
        niter: ``LossConfig.pca_niter``.
    Returns:
        basis (C, q) or None, projected (M, q) (the samples themselves without a basis), mean (q,).
    """
    if dims is not None and dims > min(samples.shape):
        raise ValueError(
            f"loss.pca_dims ({dims}) exceeds the target features' {samples.shape[1]} channels or "
            f"{samples.shape[0]} samples"
        )
    basis = None if dims is None else pca_basis(samples, dims, niter)
    projected = samples if basis is None else samples @ basis
    return basis, projected, projected.mean(dim=0).detach()


def silog_loss(pred: Tensor, target: Tensor, lam: float = 0.5, eps: float = 1e-6) -> Tensor:
    """mmseg's SiLogLoss: per image sqrt(mean(d^2) - lam mean(d)^2), d = log target - log pred,
    over pixels with target > eps; the mean over images.

    Args:
        pred, target: (I, ...) I images of depths [m]; pred is clamped to >= eps before the log.
    Returns:
        scalar. An image without valid pixels contributes 0 (as in mmseg); where the variance term
        is exactly 0 the gradient is 0 instead of sqrt's infinite slope.
    """
    pred, target = pred.flatten(1), target.flatten(1)
    valid = target > eps
    diff = torch.log(target.clamp_min(eps)) - torch.log(pred.clamp_min(eps))
    diff = torch.where(valid, diff, torch.zeros_like(diff))
    count = valid.sum(1).clamp_min(1)
    sq_mean = diff.pow(2).sum(1) / count
    mean = diff.sum(1) / count
    var = sq_mean - lam * mean.pow(2)
    positive = var > 1e-12
    return torch.where(
        positive, torch.sqrt(torch.where(positive, var, torch.ones_like(var))), torch.zeros_like(var)
    ).mean()


def masked_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean |pred - target| over pixels with target != 0 (0 when there are none)."""
    valid = target != 0
    diff = torch.where(valid, (pred - target).abs(), torch.zeros_like(pred))
    return diff.sum() / valid.sum().clamp_min(1)


def depth_loss(pred: Tensor, target: Tensor, l1_weight: float = 0.2, lam: float = 0.5) -> Tensor:
    """SILog + l1_weight * L1 (the official ``depth_loss(criterion='silog_l1')``), images (I, H, W)."""
    return silog_loss(pred, target, lam) + l1_weight * masked_l1(pred, target)


def clean_depth(depth: Tensor) -> Tensor:
    """Non-finite depths -> 0 (invalid)."""
    return torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))


class GaussTRLoss:
    """``GaussTRLoss(config)(output, batch, segmentation=None, ground_truth=None, progress=1.0)
    -> LossOutput``.

    ``output`` is a ``GaussTROutput`` (per-layer ``gaussians``, ``target_features``,
    ``predicted_depth``, ``segment_heads``, ``colors``); ``batch`` supplies the cameras, images and
    ``batch.depth``. ``segmentation`` (B, V, H, W) integer labels at the input resolution enable the
    segmentation term when the model has segment heads. ``ground_truth`` (``semantics`` and
    ``mask_camera`` (B, X, Y, Z)) feeds the GaussRender term, which also needs ``class_prototypes``
    (``ClassPrototypes.from_config(config, categories)``) and the ground truth's ``grid``.
    ``progress`` (the used fraction of the training run, in [0, 1]) switches terms that start late
    (``LossConfig.centered_feature_start``); outside a training run every term is on.
    Computed in float32 whatever the caller's autocast.
    """

    def __init__(
        self,
        config: LossConfig | None = None,
        class_prototypes: ClassPrototypes | None = None,
        grid: VoxelGrid | None = None,
        zero_shot_prototypes: ClassPrototypes | None = None,
    ):
        self.config = config or LossConfig()
        self.class_prototypes = class_prototypes
        self.zero_shot_prototypes = zero_shot_prototypes
        self.grid = grid or VoxelGrid()

    @property
    def needs_ground_truth(self) -> bool:
        """True when a term (GaussRender) needs ground-truth occupancy in every call."""
        return self.config.gaussrender.enabled

    @property
    def needs_prototypes(self) -> bool:
        """True when a term (GaussRender, zero-shot labels) needs ``class_prototypes``."""
        return self.config.gaussrender.enabled or self.config.zero_shot_label_weight > 0

    @property
    def label_prototypes(self) -> ClassPrototypes | None:
        """The prompts of the zero-shot labels: ``zero_shot_prototypes`` (the vocabulary of
        ``loss.zero_shot_categories``) when set, else ``class_prototypes``."""
        return self.zero_shot_prototypes if self.zero_shot_prototypes is not None else self.class_prototypes

    def render_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(Hr, Wr) of the rendered images for a network input of ``image_size``."""
        s = self.config.render_scale
        return max(1, round(image_size[0] * s)), max(1, round(image_size[1] * s))

    def __call__(
        self,
        output,
        batch: CameraBatch,
        segmentation: Tensor | None = None,
        ground_truth=None,
        progress: float = 1.0,
    ) -> LossOutput:
        if self.needs_ground_truth and ground_truth is None:
            raise ValueError(
                "loss.gaussrender is on (weight > 0): the loss needs ground_truth= "
                "(semantics, mask_camera); train on data with ground truth"
            )
        if self.config.gaussrender.enabled and self.class_prototypes is None:
            raise ValueError(
                "loss.gaussrender is on: GaussTRLoss needs class_prototypes "
                "(ClassPrototypes.from_config(config, categories))"
            )
        if self.config.zero_shot_label_weight > 0 and self.label_prototypes is None:
            raise ValueError(
                "loss.zero_shot_label_weight is on: GaussTRLoss needs class_prototypes or "
                "zero_shot_prototypes (ClassPrototypes.from_config(config, categories))"
            )
        if self.config.zero_shot_label_weight > 0 and getattr(output, "target_features", None) is None:
            raise ValueError(
                "loss.zero_shot_label_weight is on but the batch has no target features: the "
                "zero-shot labels are the target features' nearest prompts"
            )
        if self.config.photometric.enabled and getattr(output, "colors", None) is None:
            raise ValueError(
                "loss.photometric is on (weight > 0) but the model has no RGB head; set "
                "model.head.rgb_head=true"
            )
        device_type = batch.images.device.type
        with torch.autocast(device_type, enabled=False):
            return self._compute(output, batch, segmentation, ground_truth, progress)

    def _compute(
        self,
        output,
        batch: CameraBatch,
        segmentation: Tensor | None,
        ground_truth=None,
        progress: float = 1.0,
    ) -> LossOutput:
        cfg = self.config
        centered = cfg.centered_feature_weight > 0 and progress >= cfg.centered_feature_start
        b, v = batch.batch_size, batch.num_views
        h, w = batch.image_size
        hr, wr = self.render_size((h, w))
        intrinsics = (resize_matrix((h, w), (hr, wr)).to(batch.intrinsics) @ batch.input_intrinsics()).float()
        cam_to_ego = batch.cam_to_ego.float()
        if not output.gaussians:
            raise ValueError("the model output has no Gaussians (no decoder layers)")

        basis, target, target_mean = None, None, None
        if output.target_features is not None and (cfg.feature_weight > 0 or centered):
            basis, target, target_mean = self._reduced_targets(output.target_features.float(), (hr, wr))

        depth_target = None
        if batch.depth is not None:
            depth_target = clean_depth(batch.depth.float())
            depth_target = resize_nearest(depth_target, (hr, wr))
            depth_target = torch.where(
                depth_target < cfg.depth_limit,
                depth_target,
                torch.full_like(depth_target, cfg.beyond_limit_depth),
            )

        labels = None
        if segmentation is not None and output.segment_heads is not None and cfg.segmentation_weight > 0:
            if tuple(segmentation.shape) != (b, v, h, w):
                raise ValueError(
                    f"segmentation labels must be (B, V, H, W) = {(b, v, h, w)}, "
                    f"got {tuple(segmentation.shape)}"
                )
            labels = resize_nearest(segmentation.long(), (hr, wr))

        # Pixels with a valid depth target within the depth limit: beyond it the depth loss asks for
        # nothing to be rendered, so terms about what is rendered (photometric, zero-shot) skip them.
        within_limit = depth_target > cfg.beyond_limit_depth if depth_target is not None else None

        zero_shot = cfg.zero_shot_label_weight > 0
        zero_shot_targets = None
        if zero_shot:
            zero_shot_targets = zero_shot_labels(output.target_features, self.label_prototypes, (hr, wr))

        photometric = cfg.photometric.enabled
        images = photo_mask = None
        if photometric:
            images = F.interpolate(
                batch.images.float().flatten(0, 1),
                size=(hr, wr),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).reshape(b, v, 3, hr, wr)
            if cfg.photometric.mask_by_depth:
                photo_mask = within_limit

        def render(gaussians: Gaussians) -> RenderOutput:
            return render_gaussians(
                gaussians,
                intrinsics,
                cam_to_ego,
                (hr, wr),
                near=cfg.near,
                far=cfg.far,
                backend=cfg.render_backend,
                channel_chunk=cfg.channel_chunk,
                tile_size=cfg.render_tile_size,
            )

        terms: dict[str, Tensor] = {}
        total = batch.images.new_zeros((), dtype=torch.float32)
        rendered = rendered_rgb = None
        for i, gaussians in enumerate(output.gaussians):
            features = gaussians.features.float()
            classes = None
            if zero_shot:
                classes = class_channels(features, self.label_prototypes, cfg.zero_shot_logit_scale)
            if basis is not None:
                features = features @ basis
            elif target is None:
                features = features[..., :0]  # depth only
            q = features.shape[-1]
            if photometric:
                # GaussianCross' tri-attribute splatting: colours ride along as extra channels.
                features = torch.cat([features, output.colors[i].float()], dim=-1)
            if classes is not None:
                # the class distributions ride along too (after the colours)
                features = torch.cat([features, classes], dim=-1)
            g = Gaussians(
                gaussians.means.float(),
                gaussians.scales.float(),
                gaussians.rotations.float(),
                gaussians.opacities.float(),
                features,
            )
            if cfg.prune_opacity > 0:
                g, kept = prune_by_opacity(g, cfg.prune_opacity, keep_all_when_none_left=True)
                terms[f"metric/layer{i}_kept_fraction"] = kept.float().mean().detach()
            rendered_classes = class_alpha = None
            if classes is not None and cfg.zero_shot_geometry_detached:
                # split after the pruning, so that both renders see the same Gaussians
                k = classes.shape[-1]
                detached = render(g.with_detached_geometry(g.features[..., -k:]))
                rendered_classes, class_alpha = detached.features, detached.alpha
                g = replace(g, features=g.features[..., :-k])
            rendered = render(g)
            if classes is not None and rendered_classes is None:
                rendered_classes = rendered.features[:, :, -classes.shape[-1] :]
                rendered = RenderOutput(
                    rendered.features[:, :, : -classes.shape[-1]], rendered.depth, rendered.alpha
                )
            if photometric:
                rendered_rgb = rendered.features[:, :, q:]
                rendered = RenderOutput(rendered.features[:, :, :q], rendered.depth, rendered.alpha)
                term = cfg.photometric.weight * photometric_loss(
                    rendered_rgb,
                    images,
                    photo_mask,
                    cfg.photometric.ssim_weight,
                    cfg.photometric.window,
                    cfg.photometric.sigma,
                )
                terms[f"layer{i}/photometric"] = term
                total = total + term
            if target is not None and cfg.feature_weight > 0:
                term = cfg.feature_weight * cosine_loss(rendered.features, target)
                terms[f"layer{i}/feature"] = term
                total = total + term
            if target is not None and centered:
                source = rendered
                if cfg.centered_feature_geometry_detached:
                    source = render(g.with_detached_geometry(g.features[..., :q]))
                # sum_i w_i (f_i - mu) = F - alpha mu: the render of the centred Gaussian features
                mean = target_mean.view(1, 1, -1, 1, 1)
                term = cfg.centered_feature_weight * cosine_loss(
                    source.features - source.alpha.unsqueeze(2) * mean, target - mean
                )
                terms[f"layer{i}/feature_centered"] = term
                total = total + term
            if rendered_classes is not None:
                term = cfg.zero_shot_label_weight * zero_shot_label_loss(
                    rendered_classes,
                    rendered.alpha if class_alpha is None else class_alpha,
                    zero_shot_targets,
                    within_limit,
                )
                terms[f"layer{i}/zero_shot"] = term
                total = total + term
            if depth_target is not None and cfg.depth_weight > 0:
                term = cfg.depth_weight * depth_loss(
                    rendered.depth.flatten(0, 1),
                    depth_target.flatten(0, 1),
                    cfg.depth_l1_weight,
                    cfg.silog_lambda,
                )
                terms[f"layer{i}/depth"] = term
                total = total + term
            if cfg.flatten_weight > 0:
                # every Gaussian of the layer, pruned or not: the voxelizer sees them all
                term = cfg.flatten_weight * gaussians.scales.float().min(dim=-1).values.mean()
                terms[f"layer{i}/flatten"] = term
                total = total + term
            if labels is not None:
                # (B, V, Hr, Wr, q) rendered PCA features -> (B, V, Hr, Wr, classes) logits
                logits = output.segment_heads[i](rendered.features.permute(0, 1, 3, 4, 2))
                # A sum over labelled pixels / their count: the mean, and 0 (not NaN) if none is labelled.
                flat_labels = labels.flatten()
                labelled = (flat_labels != cfg.segmentation_ignore_index).sum().clamp_min(1)
                term = (
                    cfg.segmentation_weight
                    * F.cross_entropy(
                        logits.flatten(0, 3).float(),
                        flat_labels,
                        ignore_index=cfg.segmentation_ignore_index,
                        reduction="sum",
                    )
                    / labelled
                )
                terms[f"layer{i}/segmentation"] = term
                total = total + term

        if output.predicted_depth is not None and batch.depth is not None and cfg.depth_head_weight > 0:
            # Beyond the depth limit every depth means "nothing here" (the head's output is clamped
            # there before lifting): the far field's target is the limit, inside the head's range.
            target_in = clean_depth(batch.depth.float()).clamp(max=cfg.depth_limit)
            term = cfg.depth_head_weight * depth_loss(
                output.predicted_depth.float().flatten(0, 1),
                target_in.flatten(0, 1),
                cfg.depth_l1_weight,
                cfg.silog_lambda,
            )
            terms["depth_head"] = term
            total = total + term

        if self.needs_ground_truth:
            final = output.gaussians[-1]
            final = Gaussians(
                final.means.float(),
                final.scales.float(),
                final.rotations.float(),
                final.opacities.float(),
                final.features.float(),
            )
            if cfg.prune_opacity > 0:
                final, _ = prune_by_opacity(final, cfg.prune_opacity, keep_all_when_none_left=True)
            gr = gaussrender_loss(
                final,
                self.class_prototypes.to(final.means.device),
                ground_truth,
                batch,
                self.grid,
                cfg.gaussrender,
                render_backend=cfg.render_backend,
            )
            for name, value in gr.items():
                if name not in ("loss", "total"):
                    terms[f"gaussrender/{name}"] = value.detach()
            terms["gaussrender"] = gr["loss"]
            total = total + gr["loss"]

        if depth_target is not None and rendered is not None:
            terms["metric/depth_mae"] = masked_l1(rendered.depth.detach(), depth_target)
        if rendered is not None:  # the trainer's collapse guard reads it (last layer)
            terms[ALPHA_METRIC] = rendered.alpha.detach().float().mean()
        last = output.gaussians[-1].opacities.detach()
        terms[OPAQUE_METRIC] = (last > OPAQUE_OPACITY).float().mean()
        terms["loss"] = total
        return LossOutput(
            terms=terms,
            rendered=_detached(rendered),
            target_features=None if target is None else target.detach(),
            target_depth=depth_target,
            rendered_rgb=None if rendered_rgb is None else rendered_rgb.detach(),
        )

    def _reduced_targets(
        self, targets: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """PCA basis (C, q) or None, the reduced targets upsampled to size (B, V, q, Hr, Wr), and the
        mean reduced target feature (q,) of the batch (over all patches)."""
        if targets.dim() != 5:
            raise ValueError(f"target features must be (B, V, C, h, w), got {tuple(targets.shape)}")
        b, v, c, th, tw = targets.shape
        samples = targets.permute(0, 1, 3, 4, 2).reshape(-1, c)
        basis, projected, mean = project_targets(samples, self.config.pca_dims, self.config.pca_niter)
        reduced = projected.reshape(b, v, th, tw, -1).permute(0, 1, 4, 2, 3)
        # Interpolating the targets up (rather than pooling renders down) is worth ~0.7 mIoU (official).
        up = F.interpolate(reduced.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
        return basis, up.reshape(b, v, *up.shape[1:]).detach(), mean


def cosine_loss(rendered: Tensor, target: Tensor) -> Tensor:
    """Mean over pixels of 1 - cos(rendered, target), features along dim 2 of (B, V, C, H, W)."""
    if rendered.shape != target.shape:
        raise ValueError(
            f"rendered features {tuple(rendered.shape)} and targets {tuple(target.shape)} differ"
        )
    c = rendered.shape[2]
    x = rendered.movedim(2, -1).reshape(-1, c)
    y = target.movedim(2, -1).reshape(-1, c)
    return F.cosine_embedding_loss(x, y, torch.ones(x.shape[0], device=x.device, dtype=x.dtype))


def _detached(r: RenderOutput | None) -> RenderOutput | None:
    if r is None:
        return None
    return RenderOutput(r.features.detach(), r.depth.detach(), r.alpha.detach())
