"""Synthetic stand-ins for the precomputed foundation-model targets of the official pipeline.

The official GaussTR trains against two precomputed, per-image targets: dense vision-foundation-
model features at patch resolution (FeatUp/MaskCLIP, Talk2DINO's DINOv2) and Metric3D depth. Here
both come from the synthetic world's per-pixel rendering:

* Features: every pixel carries the text embedding of its synthetic name ("car", "pole", "sky"),
  the embeddings are area-averaged to the patch grid (a patch straddling two classes gets the
  mixture, like a ViT token), blurred (VFM features bleed across boundaries) and noised. The
  embedding matrix is an argument: ``gausstr_core.text.encoder.TextEncoder(config).encode(names)`` gives
  features that live in the text space the model is evaluated in (zero-shot), exactly as VFM
  features aligned with CLIP/Talk2DINO text do.
* Depth: the true z-depth times a per-image scale bias (monocular depth is scale-ambiguous), a
  smooth low-frequency multiplicative error and per-pixel multiplicative noise. The sky and every
  depth beyond ``max_depth`` get the far depth ``FAR_DEPTH`` (200 m): a monocular metric-depth
  network never answers "unknown", it answers "far" (Metric3D saturates on the sky; its reference
  inference clamps to 300 m). The official pipeline depends on that: its loss replaces depths
  beyond 51.2 m by a 1e-3 m target, which tells the renderer to put nothing on those pixels and is
  what stops Gaussians from spilling past object edges into the sky. ``far_field="invalid"`` keeps
  the old behaviour (0 = invalid, the pixel never reaches the loss) for the ablation.

Both are deterministic per seed. Neither contains any label: the training data never sees the
per-pixel classes, only embeddings of them.

Optionally (``gausstr-synth --segmentation-labels``) a third target stands in for the official
FeatUp model's auxiliary 2D labels, Grounded SAM 2 prompted with the class names
(``segmentation_targets``): the class of every pixel's surface, as an ideal 2D segmenter would give
it. These are 2D labels from a frozen 2D model in the official pipeline, never 3D ground truth; here
they are exact, so they are an upper bound of what Grounded SAM 2 gives on real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.data.depth import FAR_DEPTH
from gausstr_core.data.synthetic.vocabulary import SKY_CLASS

FAR_FIELD_MODES = ("far", "invalid")


@dataclass(frozen=True)
class FeatureTargetConfig:
    """How the synthetic foundation-model feature maps are made.

    Attributes:
        patch_size: image pixels per feature cell when ``feature_size`` is None (ViT stride).
        feature_size: (h, w) of the feature map; None = (H // patch_size, W // patch_size).
        blur_sigma: Gaussian blur standard deviation [feature cells] (0 = none).
        noise_std: standard deviation of the additive Gaussian noise as a fraction of a unit
            embedding's norm (each of D channels gets noise_std / sqrt(D)).
        dtype: storage dtype ("float32" or "float16").
    """

    patch_size: int = 16
    feature_size: tuple[int, int] | None = None
    blur_sigma: float = 0.6
    noise_std: float = 0.2
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.feature_size is not None and (len(self.feature_size) != 2 or min(self.feature_size) < 1):
            raise ValueError(f"feature_size must be (h, w) with h, w >= 1, got {self.feature_size}")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError(
                f"blur_sigma and noise_std must be >= 0, got {self.blur_sigma}, {self.noise_std}"
            )
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the feature map of an H x W image."""
        if self.feature_size is not None:
            return tuple(self.feature_size)  # type: ignore[return-value]
        h, w = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        if h < 1 or w < 1:
            raise ValueError(f"image {image_size} is smaller than one {self.patch_size}-pixel patch")
        return h, w


@dataclass(frozen=True)
class DepthTargetConfig:
    """How the synthetic metric-depth predictions are made from the true depth.

    Attributes:
        scale_bias: systematic multiplicative bias of every image (1 = unbiased).
        scale_jitter: per-image scale factor drawn uniformly from 1 +- this, on top of the bias.
        smooth_noise_std: std of a smooth (low-frequency) multiplicative log-depth error.
        smooth_scale: correlation length of that error as a fraction of the image width.
        pixel_noise_std: std of independent per-pixel multiplicative log-depth noise.
        max_depth: the generator's range [m]: what lies beyond it counts as far field.
        far_field: what the sky and depths beyond ``max_depth`` become: "far" (``far_depth``, what
            a metric-depth network outputs there; the default) or "invalid" (0, the ablation of the
            old targets, which leaves the far field unsupervised).
        far_depth: the far-field depth [m]; anything beyond the loss' depth limit (51.2 m) acts the
            same (the loss turns it into its beyond-limit target, the model clamps its input).
    """

    scale_bias: float = 1.03
    scale_jitter: float = 0.03
    smooth_noise_std: float = 0.04
    smooth_scale: float = 0.1
    pixel_noise_std: float = 0.02
    max_depth: float = 80.0
    far_field: str = "far"
    far_depth: float = FAR_DEPTH

    def __post_init__(self) -> None:
        if self.far_field not in FAR_FIELD_MODES:
            raise ValueError(f"far_field must be one of {FAR_FIELD_MODES}, got {self.far_field!r}")
        if not self.far_depth > self.max_depth:
            raise ValueError(f"far_depth ({self.far_depth}) must exceed max_depth ({self.max_depth})")
        if self.scale_bias <= 0 or not 0 <= self.scale_jitter < 1:
            raise ValueError(
                f"need scale_bias > 0 and 0 <= scale_jitter < 1, got {self.scale_bias}, {self.scale_jitter}"
            )
        if (
            min(self.smooth_noise_std, self.pixel_noise_std) < 0
            or self.smooth_scale <= 0
            or self.max_depth <= 0
        ):
            raise ValueError("depth noise stds must be >= 0 and smooth_scale, max_depth > 0")


def random_embeddings(num: int, dim: int, seed: int = 0) -> Tensor:
    """(num, dim) float32 random unit vectors (a text-encoder stand-in for tests)."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num, dim, generator=g), dim=-1)


def name_embeddings(text_config) -> Tensor:
    """(K, D) float32 embeddings of ``vocabulary.name_strings()`` by a text encoder.

    Args:
        text_config: a ``gausstr_core.text.config.TextEncoderConfig``; use the one the model is evaluated
            with, so that the feature targets live in the space of its zero-shot prototypes.
    """
    from gausstr_core.data.synthetic.vocabulary import name_strings
    from gausstr_core.text.encoder import TextEncoder

    return TextEncoder(text_config).encode(name_strings()).float().cpu()


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, h, w) with replicate padding."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def feature_targets(
    name_id: Tensor,
    embeddings: Tensor,
    config: FeatureTargetConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Synthetic dense foundation-model features.

    Args:
        name_id: (V, H, W) integer synthetic name id of every pixel (0..K-1).
        embeddings: (K, D) embedding of every synthetic name (e.g. unit text embeddings).
        config: patch grid, blur and noise.
        generator: RNG of the noise (deterministic when seeded).
    Returns:
        (V, D, h, w) features in ``config.dtype``.
    """
    config = config or FeatureTargetConfig()
    if name_id.dim() != 3:
        raise ValueError(f"name_id must be (V, H, W), got {tuple(name_id.shape)}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (K, D), got {tuple(embeddings.shape)}")
    k, d = embeddings.shape
    ids = name_id.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
        raise ValueError(f"name ids must be in [0, {k}), got [{int(ids.min())}, {int(ids.max())}]")
    grid = config.grid_size(tuple(ids.shape[1:]))
    # Area fractions of every name in every patch, then the embedding mixture: exact area
    # averaging of the per-pixel embeddings without materialising (V, D, H, W).
    onehot = F.one_hot(ids, k).permute(0, 3, 1, 2).float()  # (V, K, H, W)
    fractions = F.adaptive_avg_pool2d(onehot, grid)  # (V, K, h, w)
    feats = torch.einsum("vkhw,kd->vdhw", fractions, embeddings.float().cpu())
    feats = _gaussian_blur(feats, config.blur_sigma)
    if config.noise_std > 0:
        noise = torch.randn(feats.shape, generator=generator)
        feats = feats + noise * (config.noise_std / math.sqrt(d))
    return feats.to(getattr(torch, config.dtype))


def depth_targets(
    depth: Tensor, config: DepthTargetConfig | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Synthetic metric-depth predictions.

    Args:
        depth: (V, H, W) true z-depth [m]; 0 (or non-finite) = no surface.
        config: bias, noise and range.
        generator: RNG (deterministic when seeded).
    Returns:
        (V, H, W) float32 predicted depth [m]; the sky and depths beyond ``max_depth`` are
        ``far_depth`` (``far_field="far"``) or 0 (``"invalid"``).
    """
    config = config or DepthTargetConfig()
    if depth.dim() != 3:
        raise ValueError(f"depth must be (V, H, W), got {tuple(depth.shape)}")
    v, h, w = depth.shape
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    scale = config.scale_bias * (1 + config.scale_jitter * (2 * torch.rand(v, 1, 1, generator=generator) - 1))
    log_err = torch.zeros(v, h, w)
    if config.smooth_noise_std > 0:
        # Low-frequency error: coarse white noise, bicubically upsampled, renormalised to unit std.
        cells = max(2, round(1 / config.smooth_scale))
        coarse_h = max(2, round(cells * h / w))
        coarse = torch.randn(v, 1, coarse_h, cells, generator=generator)
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[:, 0]
        smooth = smooth / smooth.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None]
        log_err = log_err + config.smooth_noise_std * smooth
    if config.pixel_noise_std > 0:
        log_err = log_err + config.pixel_noise_std * torch.randn(v, h, w, generator=generator)
    pred = torch.where(valid, depth, torch.zeros_like(depth)) * scale * torch.exp(log_err)
    keep = valid & (pred <= config.max_depth)
    far = config.far_depth if config.far_field == "far" else 0.0
    return torch.where(keep, pred, torch.full_like(pred, far))


def segmentation_targets(occ_class: Tensor) -> Tensor:
    """Per-pixel 2D labels in the official Grounded SAM 2 file convention (0 = unlabelled).

    Args:
        occ_class: (V, H, W) uint8 Occ3D class of each pixel's surface, ``SKY_CLASS`` for the sky
            (``RenderedViews.occ_class``).
    Returns:
        (V, H, W) uint8: Occ3D class + 1 (1-17; the featup preset's 26-way head has room for them),
        0 for the sky (no class name covers it; the loss ignores label 0).
    """
    if occ_class.dim() != 3:
        raise ValueError(f"occ_class must be (V, H, W), got {tuple(occ_class.shape)}")
    labels = occ_class.to(torch.int64) + 1
    return torch.where(occ_class == SKY_CLASS, torch.zeros_like(labels), labels).to(torch.uint8)


def sample_generator(seed: int, scene_index: int, sample_index: int, stream: int) -> torch.Generator:
    """A torch RNG unique to (dataset seed, scene, key frame, purpose), stable across processes."""
    mixed = (seed * 1_000_003 + scene_index) * 1_000_033 + sample_index
    return torch.Generator().manual_seed((mixed * 97 + stream) % (2**63 - 1))
