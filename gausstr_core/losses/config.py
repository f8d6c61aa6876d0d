"""The training losses' configuration: ``LossConfig`` with its sections ``PhotometricConfig`` and
``GaussRenderConfig`` (plain dataclasses; the losses are ``gausstr``, ``photometric`` and
``gaussrender`` of this package, the presets ``gausstr_core.presets``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gausstr_core.render import BACKENDS


@dataclass
class PhotometricConfig:
    """The photometric loss on the RGB head (a section of ``LossConfig``; off while ``weight`` is 0).

    Attributes:
        weight: weight of the photometric term of every decoder layer; 0 = off. Needs the model's
            RGB head (``model.head.rgb_head``).
        ssim_weight: alpha of alpha * (1 - SSIM) / 2 + (1 - alpha) * L1 (standard 0.85).
        window: SSIM window size (odd) and sigma: its Gaussian standard deviation [px].
        mask_by_depth: only pixels whose target depth is valid and within the loss' depth limit
            count: the model leaves the sky and the far field empty (its depth loss asks for that),
            so rendered colour there is black by design and must not be compared with the sky.
    """

    weight: float = 0.0
    ssim_weight: float = 0.85
    window: int = 11
    sigma: float = 1.5
    mask_by_depth: bool = True

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"loss.photometric.weight must be >= 0, got {self.weight}")
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"loss.photometric.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"loss.photometric.window must be odd and >= 1, got {self.window}")
        if not self.sigma > 0:
            raise ValueError(f"loss.photometric.sigma must be positive, got {self.sigma}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


DEFAULT_GAIN = math.log(2.0) / 0.04  # the inference density threshold renders at opacity 0.5


@dataclass
class GaussRenderConfig:
    """The GaussRender loss (a section of ``LossConfig``; off while ``weight`` is 0).

    Attributes:
        weight: lambda, the weight of the whole term (official 10); 0 = off.
        semantic_weight, depth_weight: weights of the semantic and the depth L1 inside it.
        scale: Gaussian standard deviation as a fraction of the voxel size (official 0.27 m / 0.4 m).
        sensor_views: sensor cameras rendered per scene (chosen at random each step; -1 = all).
        elevated_views: elevated cameras per scene (each from a random sensor camera; 0 = none).
        elevation: how far the elevated cameras are lifted [m] (official 8).
        pitch: how far they look down [deg] (official 20).
        yaw_jitter: their random turn about the vertical, up to this [deg] (official 5).
        around: their random horizontal shift around the ego, up to this per axis [m].
        bev: render the orthographic bird's-eye view.
        bev_resolution: its pixel size [m] (the grid's extent / this = the image size).
        render_scale: perspective renders at this fraction of the network input size.
        max_depth: depth normaliser of the perspective views [m] (official 50).
        density_floor: predicted voxels at or below this density are not rendered.
        occupancy_gain: predicted opacity = 1 - exp(-gain * density).
        visible_only: render only the camera-visible voxels (``mask_camera``) when the ground truth
            has a mask (the official behaviour: unobserved voxels are ignored).
        grid_factor: render a grid this many times coarser per axis (1 = the ground truth's own).
            The prediction is voxelized straight into the coarse grid; a coarse ground-truth voxel is
            occupied when any of its fine voxels is (majority label), visible when any is. A
            CPU-cost knob: 2 renders 8x fewer voxels (the tiny preset's setting).
        tile_size: tile edge of the CPU reference renderer (voxel Gaussians are small).
    """

    weight: float = 0.0
    semantic_weight: float = 1.0
    depth_weight: float = 1.0
    scale: float = 0.675
    sensor_views: int = 1
    elevated_views: int = 1
    elevation: float = 8.0
    pitch: float = 20.0
    yaw_jitter: float = 5.0
    around: float = 10.0
    bev: bool = True
    bev_resolution: float = 0.8
    render_scale: float = 0.5
    max_depth: float = 50.0
    density_floor: float = 1e-3
    occupancy_gain: float = DEFAULT_GAIN
    visible_only: bool = True
    grid_factor: int = 1
    tile_size: int = 8

    def __post_init__(self) -> None:
        for name in ("weight", "semantic_weight", "depth_weight", "density_floor", "around", "yaw_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.gaussrender.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "bev_resolution", "render_scale", "max_depth", "occupancy_gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"loss.gaussrender.{name} must be positive, got {getattr(self, name)}")
        if self.sensor_views < -1 or self.elevated_views < 0:
            raise ValueError(
                f"loss.gaussrender needs sensor_views >= -1 and elevated_views >= 0, got "
                f"{self.sensor_views}, {self.elevated_views}"
            )
        if not 0 <= self.pitch < 90:
            raise ValueError(f"loss.gaussrender.pitch must be in [0, 90) degrees, got {self.pitch}")
        if self.tile_size < 1 or self.grid_factor < 1:
            raise ValueError(
                f"loss.gaussrender.tile_size and grid_factor must be >= 1, got "
                f"{self.tile_size}, {self.grid_factor}"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass
class LossConfig:
    """Loss weights and rendering settings.

    Attributes:
        pca_dims: channels the features are reduced to by PCA before the cosine loss (official 128);
            None = no reduction (cosine on the full features).
        pca_niter: power iterations of ``torch.pca_lowrank``.
        feature_weight: weight of the cosine loss (official 5).
        centered_feature_weight: weight of a second cosine term between the rendered and target
            features both centred by the batch's mean target feature (in the PCA space), off (0)
            in the paper presets. When the targets share a large common component (text
            embeddings of different classes with cosine ~0.6), the official term is ~0.9 already
            for the mean feature and gives the class-discriminative residual little gradient; the
            centred term measures exactly that residual. Rendering is linear, so the centred render
            is ``F - alpha mu`` of the one render (no extra pass). With both terms the optimum is
            still the target itself (raw and centred directions agree only there), so inference
            is unchanged.
        centered_feature_start: the centred term is on from this fraction of the run on (the
            trainer's progress: the larger of the step and time fractions of its budget), off
            before, so that it reshapes the features once the geometry has formed; 0 = from the
            first step. At paper scale the term from the first step cost 6-8 IoU (docs/results.md).
        centered_feature_geometry_detached: the centred term's gradient reaches the Gaussians'
            features only, not their means, scales, rotations or opacities: it is computed on a
            second render of the features with the geometry detached (one more feature render per
            decoder layer). The term otherwise reshapes the geometry so that each pixel is won by
            one Gaussian (the densities fall, docs/results.md); detached, only the shared network
            trunk couples it to the geometry. The loss value is the same either way.
        depth_weight: weight of the depth loss (SILog + ``depth_l1_weight`` x L1).
        depth_l1_weight: weight of the L1 term inside the depth loss (official 0.2).
        silog_lambda: variance weight lambda of SILog (mmseg 0.5).
        depth_limit: target depths >= this [m] are replaced by ``beyond_limit_depth`` (official 51.2).
        beyond_limit_depth: the near-zero valid target beyond the limit (official 1e-3).
        segmentation_weight: weight of the segmentation cross-entropy (when labels and heads exist).
        segmentation_ignore_index: label ignored by the cross-entropy (official 0).
        zero_shot_label_weight: weight of the zero-shot label term (``gausstr_core.losses.zero_shot``):
            every layer's Gaussians splat their class distribution (cosine logits x
            ``zero_shot_logit_scale`` against the category prompts), and the cross-entropy of the
            class a pixel shows (the splatted distribution over its opacity) against the target
            patch's nearest-prompt class is averaged over the pixels with a class label and a valid
            depth target within the depth limit. Label-free (the labels come from the target
            features and the category names); 0 = off (the presets). Needs the class prototypes
            (the trainer builds them from the training categories).
        zero_shot_logit_scale: the cosine logit scale of the Gaussians' class distribution in that
            term (50: the tuned ``cos50`` readout of docs/results.md).
        zero_shot_geometry_detached: the term's class distributions are splatted in a render of
            their own with the Gaussians' means, scales, rotations and opacities detached (one more
            render of K + 1 channels per decoder layer), instead of riding along with the features.
            Why: through the shared render the term also moves the geometry (which Gaussian wins
            a pixel), and the term's paper-scale runs land 1.5-3.4 IoU below the baseline's
            (docs/results.md); detached, it trains only what decides the class. The loss value is
            the same either way.
        zero_shot_categories: the category entries (``Vocabulary.parse`` format, "name|prompt 2")
            whose prompts the zero-shot labels come from; empty = the evaluation vocabulary (the
            dataset's classes). A target patch of a class missing from the list is labelled with
            the nearest listed class, so the list should cover what the cameras see
            (docs/results.md measures classes left out of it).
        depth_head_weight: weight of the depth head's SILog + L1 against the target depth.
        render_scale: rendered resolution relative to the network input (official 1: it renders the
            input resolution, the 900x1600 originals scaled by the input's 0.56).
        near, far: renderer culling planes [m].
        render_backend: "auto", "gsplat" or "torch" (see ``gausstr_core.render``).
        channel_chunk: gsplat channels per launch.
        render_tile_size: torch renderer only: k = composite k x k pixel tiles against the Gaussians
            touching them (``render_gaussians(tile_size=k)``: the same image, several times faster on
            a CPU for many small Gaussians); None = every pixel against every Gaussian. gsplat
            ignores it (it always works in 16 x 16 tiles).
        prune_opacity: Gaussians with opacity <= this are not rendered (0 = every Gaussian).
        flatten_weight: weight of the mean of every Gaussian's smallest scale axis [m], per decoder
            layer (0 = off): it flattens the Gaussians into discs, as Gaussian surfels and 2DGS do.
            Why: the 2D losses barely see how thick a ground Gaussian is (the cameras look along the
            ground), and thick ground Gaussians fill the voxel layer above the ground: 18-30 % of all
            false-occupied voxels of trained featup and tiny models lie there
            (``scripts/occupancy_errors.py``, docs/results.md).
        photometric: the RGB photometric loss (``PhotometricConfig``).
        gaussrender: the GaussRender loss (``GaussRenderConfig``).
    """

    pca_dims: int | None = 128
    pca_niter: int = 4
    feature_weight: float = 5.0
    centered_feature_weight: float = 0.0
    centered_feature_start: float = 0.0
    centered_feature_geometry_detached: bool = False
    depth_weight: float = 1.0
    depth_l1_weight: float = 0.2
    silog_lambda: float = 0.5
    depth_limit: float = 51.2
    beyond_limit_depth: float = 1e-3
    segmentation_weight: float = 1.0
    segmentation_ignore_index: int = 0
    zero_shot_label_weight: float = 0.0
    zero_shot_logit_scale: float = 50.0
    zero_shot_geometry_detached: bool = False
    zero_shot_categories: tuple[str, ...] = ()
    depth_head_weight: float = 1.0
    render_scale: float = 1.0
    near: float = 0.1
    far: float = 100.0
    render_backend: str = "auto"
    channel_chunk: int = 32
    render_tile_size: int | None = None
    prune_opacity: float = 0.0
    flatten_weight: float = 0.0
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    gaussrender: GaussRenderConfig = field(default_factory=GaussRenderConfig)

    def __post_init__(self) -> None:
        if self.flatten_weight < 0:
            raise ValueError(f"loss.flatten_weight must be >= 0, got {self.flatten_weight}")
        if not 0 <= self.prune_opacity < 1:
            raise ValueError(f"loss.prune_opacity must be in [0, 1), got {self.prune_opacity}")
        if self.pca_dims is not None and self.pca_dims < 1:
            raise ValueError(f"loss.pca_dims must be >= 1 or None, got {self.pca_dims}")
        if self.render_tile_size is not None and self.render_tile_size < 1:
            raise ValueError(f"loss.render_tile_size must be >= 1 or None, got {self.render_tile_size}")
        if not self.render_scale > 0:
            raise ValueError(f"loss.render_scale must be positive, got {self.render_scale}")
        if self.render_backend not in BACKENDS:
            raise ValueError(f"loss.render_backend must be one of {BACKENDS}, got {self.render_backend!r}")
        if not 0 < self.beyond_limit_depth < self.depth_limit:
            raise ValueError(
                f"loss needs 0 < beyond_limit_depth < depth_limit, got "
                f"{self.beyond_limit_depth}, {self.depth_limit}"
            )
        for name in (
            "feature_weight",
            "centered_feature_weight",
            "depth_weight",
            "depth_l1_weight",
            "segmentation_weight",
            "zero_shot_label_weight",
            "depth_head_weight",
            "silog_lambda",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not self.zero_shot_logit_scale > 0:
            raise ValueError(f"loss.zero_shot_logit_scale must be positive, got {self.zero_shot_logit_scale}")
        if self.zero_shot_categories:
            from gausstr_core.text.vocabulary import Vocabulary

            try:
                Vocabulary.parse(list(self.zero_shot_categories))
            except ValueError as exc:
                raise ValueError(f"loss.zero_shot_categories: {exc}") from exc
        if not 0.0 <= self.centered_feature_start < 1.0:
            raise ValueError(
                f"loss.centered_feature_start must be in [0, 1), got {self.centered_feature_start}"
            )
