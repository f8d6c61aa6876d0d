"""GaussTR: camera images (+ depth) -> per-decoder-layer sets of 3D Gaussians in the ego frame.

backbone -> neck (4-level pyramid) -> decoder (deformable cross-attention into each query's own view,
self-attention, FFN; reference points refined after every layer) -> one Gaussian head per layer.

Choices where the paper, the issue and the official code differ (docs/official_checkpoints.md):

* Self-attention: the official decoder runs with views as separate batch entries, so its
  self-attention only mixes the queries of one view. The presets use ``scene`` attention (all
  Gaussians of a scene, as the paper describes) plus a sine encoding of the queries' current 3D
  means (unprojected reference points at the sampled depth), because equal 2D reference points of
  different views are different places. ``view`` mode without the 3D encoding is the official
  behaviour, used for converted official checkpoints.
* Reference points start uniformly random on every training forward (official); in eval mode they
  come from a seeded generator so the same input gives the same output.
* Depth: ``batch.depth`` when given (metric depth, as official), else the optional depth head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.model.backbones import build_backbone
from gausstr_core.model.config import ModelConfig
from gausstr_core.model.decoder import GaussianDecoder
from gausstr_core.model.heads import DepthHead, GaussianHead, lift_means, sample_depth
from gausstr_core.model.image_depth import ImageDepthNet
from gausstr_core.model.neck import SimpleFeaturePyramid


@dataclass
class GaussTROutput:
    """Everything one forward pass produces; the loss renders every layer, inference uses the last.

    B scenes, V views, Q queries per view, N = V * Q Gaussians per scene, ordered view-major
    (Gaussian ``v * Q + q`` comes from query ``q`` of view ``v``), L decoder layers.

    Attributes:
        gaussians: L ``Gaussians`` (one per decoder layer, the last is the prediction), means in the
            ego frame [m], scales [m], camera-aligned rotations, opacities in (0, 1), features
            (B, N, feature_dim) float32 (the feature head output, e.g. 768-d for talk2dino).
        reference_points: L tensors (B, V, Q, 2), the normalised image coordinates (x right, y down,
            in [0, 1] over the input image edges) of each Gaussian's centre pixel; pixel (u, v) =
            (x * W - 0.5, y * H - 0.5) with pixel centres at integer coordinates.
        depth: (B, V, H, W) metric depth [m] the means were lifted with, before the depth-limit clamp
            (``batch.depth`` when given, else the depth head's prediction); 0 = invalid.
        predicted_depth: (B, V, H, W) depth head output [m] (trained against ``batch.depth``), or None
            when the model has no depth head.
        target_features: (B, V, C, h, w) foundation-model features the rendered features are aligned
            with: the frozen backbone's own output (official talk2dino behaviour), else
            ``batch.features`` (precomputed or synthetic targets); None if neither exists.
        segment_heads: L callables (..., reduce_dims) -> (..., num_classes) mapping rendered
            PCA-reduced features to segmentation logits (the official featup auxiliary head), or None.
            They are modules of the model so that their weights train and checkpoint with it.
        colors: L tensors (B, N, 3) in [0, 1], every Gaussian's RGB colour (the optional RGB head,
            ``model.head.rgb_head``, for the photometric loss), or None without that head.
    """

    gaussians: list[Gaussians]
    reference_points: list[Tensor]
    depth: Tensor
    predicted_depth: Tensor | None
    target_features: Tensor | None
    segment_heads: list[Callable[[Tensor], Tensor]] | None = None
    colors: list[Tensor] | None = None

    @property
    def final(self) -> Gaussians:
        """The last layer's Gaussians (the prediction)."""
        return self.gaussians[-1]

    @property
    def num_layers(self) -> int:
        return len(self.gaussians)


@dataclass
class DecodedQueries:
    """The decoder's result, before the Gaussian heads (internal to ``GaussTR.forward``).

    Attributes:
        hidden: L (BV, Q, C) normed queries; references: L (BV, Q, 2) refined reference points;
        depth: (B, V, H, W) the depth used; predicted_depth: (B, V, H, W) or None;
        intrinsics: (BV, 3, 3) input intrinsics; cam_to_ego: (BV, 4, 4).
    """

    hidden: list[Tensor]
    references: list[Tensor]
    depth: Tensor
    predicted_depth: Tensor | None
    intrinsics: Tensor
    cam_to_ego: Tensor


_SEEDED_REFERENCES: dict[tuple, Tensor] = {}


def _seeded_reference_points(num: int, queries: int, seed: int, device: torch.device) -> Tensor:
    """The eval-mode random reference points, drawn once per (shape, seed, device) and kept on the
    device: no host-to-device copy per forward (such a copy synchronises the stream and cannot be
    captured in a CUDA graph). Callers only read them."""
    key = (num, queries, seed, str(device))
    cached = _SEEDED_REFERENCES.get(key)
    if cached is None:
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode(False):  # a normal tensor: usable with autograd too
            cached = torch.rand(num, queries, 2, generator=gen).to(device)
        if len(_SEEDED_REFERENCES) >= 16:
            _SEEDED_REFERENCES.clear()
        _SEEDED_REFERENCES[key] = cached
    return cached


def initial_reference_points(
    num: int,
    queries: int,
    mode: str,
    training: bool,
    seed: int,
    image_size: tuple[int, int],
    device: torch.device,
) -> Tensor:
    """(num, Q, 2) starting reference points in [0, 1]^2.

    "random" draws uniformly (every forward in training, as official); in eval mode from a generator
    seeded with ``seed`` so that the same input always gives the same Gaussians. "grid" lays the Q
    points on a stratified grid with the image's aspect ratio.
    """
    if mode == "random":
        if training:
            return torch.rand(num, queries, 2, device=device)
        return _seeded_reference_points(num, queries, seed, torch.device(device))
    h, w = image_size
    rows = max(1, round(math.sqrt(queries * h / w)))
    cols = math.ceil(queries / rows)
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)[:queries]
    return grid.to(device).expand(num, queries, 2).clone()


class GaussTR(nn.Module):
    """The feed-forward Gaussian transformer.

    Submodules: ``backbone`` (None for precomputed features), ``neck``, ``query_embed``
    (Q x C learnable queries shared by all views), ``decoder``, ``heads`` (one per decoder layer),
    ``depth_head`` (optional).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.backbone = build_backbone(config.backbone, tuple(config.image_size))
        self.neck = SimpleFeaturePyramid(config.backbone.channels, c)
        self.query_embed = nn.Embedding(config.decoder.queries_per_view, c)
        self.decoder = GaussianDecoder(c, config.decoder, num_levels=len(SimpleFeaturePyramid.scales))
        self.heads = nn.ModuleList(GaussianHead(c, config.head) for _ in range(config.decoder.num_layers))
        self.depth_head: DepthHead | ImageDepthNet | None = None
        if config.depth_head.enabled:
            dh = config.depth_head
            self.depth_head = ImageDepthNet(dh) if dh.image_width else DepthHead(c, dh)

    # --- checkpoint support -----------------------------------------------------------------------

    def neutral_init_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of parameters that start as a no-op (zero-initialised additions): an
        ``--init-weights`` checkpoint trained without them may leave them at their initialisation."""
        if self.depth_head is None:
            return ()
        return tuple(f"depth_head.{p}" for p in self.depth_head.neutral_init_prefixes())

    def checkpoint_excluded_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes a checkpoint leaves out: a frozen backbone loaded from a named weights
        file is re-read from that file; a trainable or randomly initialised one is stored."""
        bb = self.config.backbone
        if self.backbone is not None and bb.frozen and bb.weights:
            return ("backbone.",)
        return ()

    # --- forward ----------------------------------------------------------------------------------

    def extract_features(self, batch: CameraBatch) -> Tensor:
        """(B*V, C, h, w) backbone features (or the precomputed ``batch.features``)."""
        b, v = batch.batch_size, batch.num_views
        if self.backbone is None:
            if batch.features is None:
                raise ValueError(
                    "the 'precomputed' backbone reads batch.features (B, V, C, h, w), which is None"
                )
            feats = batch.features.flatten(0, 1)
        else:
            feats = self.backbone(batch.images.flatten(0, 1))
        if feats.shape[1] != self.config.backbone.channels:
            raise ValueError(
                f"backbone features have {feats.shape[1]} channels, the neck expects "
                f"{self.config.backbone.channels} (model.backbone.channels)"
            )
        if feats.shape[0] != b * v:
            raise ValueError(f"expected {b * v} feature maps, got {feats.shape[0]}")
        return feats

    def forward(self, batch: CameraBatch, point_cloud: Tensor | None = None) -> GaussTROutput:
        """Predict every decoder layer's Gaussians for a batch of multi-view scenes (see GaussTROutput).

        ``point_cloud`` (B, P, 3) ego-frame points (non-finite rows = padding), e.g. LiDAR, seed the
        reference points when ``decoder.reference_init`` is "point_cloud" (else the depth map's
        cloud does); other modes ignore it.
        """
        feats = self.extract_features(batch)
        levels = self.neck(feats)
        decoded = self.decode(batch, levels, point_cloud)
        gaussians, reference_points, colors = self.head_outputs(batch, decoded)
        if self.backbone is not None and self.backbone.frozen:
            target_features = feats.reshape(batch.batch_size, batch.num_views, *feats.shape[1:])
        else:
            target_features = batch.features
        segment_heads = (
            [head.segment for head in self.heads] if self.config.head.segment_classes > 0 else None
        )
        return GaussTROutput(
            gaussians,
            reference_points,
            decoded.depth,
            decoded.predicted_depth,
            target_features,
            segment_heads,
            colors,
        )

    # The stages of forward, public so that benchmarks can time them one by one.

    def decode(
        self, batch: CameraBatch, levels: list[Tensor], point_cloud: Tensor | None = None
    ) -> DecodedQueries:
        """Depth (input or predicted), then the decoder over the pyramid ``levels`` (B*V maps each)."""
        cfg = self.config
        b, v = batch.batch_size, batch.num_views
        h, w = batch.image_size
        q = cfg.decoder.queries_per_view
        shapes = [tuple(lv.shape[-2:]) for lv in levels]
        value = torch.cat([lv.flatten(2).transpose(1, 2) for lv in levels], dim=1)  # (BV, S, C)

        intrinsics = batch.input_intrinsics().flatten(0, 1).float()
        cam_to_ego = batch.cam_to_ego.flatten(0, 1).float()
        predicted_depth = None
        # With measured depth the head's prediction is only needed for its training loss.
        if self.depth_head is not None and (batch.depth is None or self.training):
            if isinstance(self.depth_head, ImageDepthNet):
                predicted = self.depth_head(batch.images.flatten(0, 1))
            else:
                predicted = self.depth_head(levels, (h, w), intrinsics, cam_to_ego)
            predicted_depth = predicted.reshape(b, v, h, w)
        if batch.depth is not None:
            depth = batch.depth
            fraction = cfg.depth_head.lift_fraction
            if predicted_depth is not None and self.training and fraction > 0 and torch.rand(()) < fraction:
                depth = predicted_depth.detach()
        elif predicted_depth is not None:
            depth = predicted_depth
        else:
            raise ValueError(
                "batch.depth is None and the model has no depth head "
                "(enable model.depth_head, or provide metric depth)"
            )
        depth_flat = depth.flatten(0, 1).float()
        clamped = depth_flat.clamp(max=cfg.head.depth_limit)

        query = self.query_embed.weight.unsqueeze(0).expand(b * v, -1, -1)
        if cfg.decoder.reference_init == "point_cloud":
            reference = self._point_cloud_reference(batch, depth, point_cloud).reshape(b * v, q, 2)
        else:
            reference = initial_reference_points(
                b * v,
                q,
                cfg.decoder.reference_init,
                self.training,
                cfg.decoder.reference_seed,
                (h, w),
                query.device,
            )

        def means_of(ref: Tensor) -> Tensor:
            return lift_means(ref, sample_depth(clamped, ref), intrinsics, cam_to_ego, (h, w))

        hidden, references = self.decoder(
            query, value, shapes, reference, v, [head.refine for head in self.heads], means_of
        )
        return DecodedQueries(hidden, references, depth, predicted_depth, intrinsics, cam_to_ego)

    def _point_cloud_reference(self, batch: CameraBatch, depth: Tensor, point_cloud: Tensor | None) -> Tensor:
        """(B, V, Q, 2) initial reference points from ``point_cloud`` or the depth map's cloud."""
        from gausstr_core.model.point_cloud_init import depth_point_cloud, point_cloud_reference_points

        cfg = self.config.decoder
        with torch.no_grad():
            if point_cloud is not None:
                b = batch.batch_size
                if point_cloud.dim() != 3 or point_cloud.shape[0] != b or point_cloud.shape[-1] != 3:
                    raise ValueError(
                        f"point_cloud must be (B, P, 3) with B = {batch.batch_size}, got "
                        f"{tuple(point_cloud.shape)}"
                    )
                points = point_cloud.float()
                valid = torch.isfinite(points).all(-1)
            else:
                points, valid = depth_point_cloud(
                    depth.float(),
                    batch.input_intrinsics(),
                    batch.cam_to_ego,
                    cfg.point_cloud_stride,
                    self.config.head.depth_limit,
                )
            # Training draws afresh every forward (as "random" does); eval is seeded: same input, same output.
            generator = None if self.training else torch.Generator().manual_seed(cfg.reference_seed)
            return point_cloud_reference_points(
                points,
                valid,
                batch.input_intrinsics(),
                batch.cam_to_ego,
                batch.image_size,
                cfg.queries_per_view,
                cfg.point_cloud_cells,
                generator=generator,
            )

    def gaussians(self, batch: CameraBatch, decoded: DecodedQueries) -> tuple[list[Gaussians], list[Tensor]]:
        """Every layer's head: (L Gaussians (B, V*Q, ...), L reference points (B, V, Q, 2))."""
        gaussians, reference_points, _ = self.head_outputs(batch, decoded)
        return gaussians, reference_points

    def head_outputs(
        self, batch: CameraBatch, decoded: DecodedQueries
    ) -> tuple[list[Gaussians], list[Tensor], list[Tensor] | None]:
        """``gaussians`` plus every layer's colours (B, V*Q, 3) from the RGB head (None without it)."""
        b, v = batch.batch_size, batch.num_views
        q = self.config.decoder.queries_per_view
        depth_flat = decoded.depth.flatten(0, 1).float()
        gaussians, reference_points, colors = [], [], []
        for head, hid, ref in zip(self.heads, decoded.hidden, decoded.references):
            p = head(hid, ref, depth_flat, decoded.intrinsics, decoded.cam_to_ego)
            gaussians.append(
                Gaussians(
                    means=p["means"].reshape(b, v * q, 3),
                    scales=p["scales"].reshape(b, v * q, 3),
                    rotations=p["rotations"].reshape(b, v * q, 4),
                    opacities=p["opacities"].reshape(b, v * q),
                    features=p["features"].reshape(b, v * q, -1),
                )
            )
            reference_points.append(p["reference_points"].reshape(b, v, q, 2))
            if "colors" in p:
                colors.append(p["colors"].reshape(b, v * q, 3))
        return gaussians, reference_points, colors or None
