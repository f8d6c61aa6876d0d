"""The network's configuration: ``ModelConfig`` and its sections (backbone, decoder, Gaussian heads,
depth head). Plain dataclasses (no torch import); presets are in ``gausstr_core.presets``, YAML I/O in
``gausstr_core.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKBONE_KINDS = ("dinov2", "open_clip", "precomputed", "vit")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class BackboneConfig:
    """The image feature extractor (one dense map per view at patch resolution).

    Attributes:
        kind: "dinov2" (any timm ViT, e.g. DINOv2 with registers), "open_clip" (CLIP ViT with
            MaskCLIP dense features in the joint image-text space), "precomputed" (``batch.features``
            are the map; no image network) or "vit" (a small timm ViT trained from scratch).
        name: timm model name ("dinov2") or open_clip model name ("open_clip", e.g. "ViT-B-16").
        weights: local weights file (.safetensors or .pth/.pt, read with weights_only=True); for
            "dinov2" both DINOv2 torch.hub and timm key names are accepted.
        random_init: allow random weights when ``weights`` is unset (tests, benchmarks); never
            implied.
        frozen: no gradients and always in eval mode (foundation models); "vit" may train.
        channels: C of the dense map (768 for ViT-B DINOv2, 512 for CLIP ViT-B/16 MaskCLIP).
        patch_size: stride of the map in input pixels (the input size must be a multiple of it).
        mean, std: per-channel image normalisation of [0, 1] RGB; None = the kind's default
            (ImageNet; CLIP statistics for open_clip).
        vit_depth, vit_heads: transformer size of the "vit" kind (its width is ``channels``).
    """

    kind: str = "dinov2"
    name: str = "vit_base_patch14_reg4_dinov2"
    weights: str | None = None
    random_init: bool = False
    frozen: bool = True
    channels: int = 768
    patch_size: int = 14
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    vit_depth: int = 4
    vit_heads: int = 4

    def __post_init__(self) -> None:
        if self.kind not in BACKBONE_KINDS:
            raise ValueError(f"backbone.kind must be one of {BACKBONE_KINDS}, got {self.kind!r}")
        if self.channels <= 0 or self.patch_size <= 0:
            raise ValueError(
                f"backbone.channels and patch_size must be positive, got {self.channels}, {self.patch_size}"
            )

    def normalization(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std) applied to [0, 1] RGB images."""
        default = (CLIP_MEAN, CLIP_STD) if self.kind == "open_clip" else (IMAGENET_MEAN, IMAGENET_STD)
        return (tuple(self.mean) if self.mean else default[0], tuple(self.std) if self.std else default[1])


@dataclass
class DecoderConfig:
    """The Gaussian query decoder (official: 3 layers, 300 queries per view, 8 heads, FFN 2048).

    Attributes:
        num_layers: decoder layers; each has its own Gaussian head and is supervised.
        queries_per_view: Q learnable queries per camera (N = V * Q Gaussians per scene).
        num_heads: attention heads (self- and cross-attention).
        num_points: deformable sampling points per head and level.
        ffn_dim: hidden width of the feed-forward block.
        cross_attn_dropout: dropout on the deformable attention output (mmcv default 0.1).
        self_attention: "scene" = every Gaussian attends to all Gaussians of the scene (all views,
            what the paper describes); "view" = only to its own view's queries (what the official
            code does, since its decoder batches views as separate samples).
        mean_position_encoding: add a sine encoding of the queries' current 3D means (ego frame,
            through an MLP) to the 2D reference-point encoding in self-attention. Needed for "scene"
            attention, where equal 2D reference points of different views are different places.
        position_range: (x0, y0, z0, x1, y1, z1) [m] mapped to [0, 1] before the 3D sine encoding.
        reference_init: initial reference points: "random" (uniform per forward, as official; in
            eval mode drawn from a generator seeded with ``reference_seed`` so inference is
            deterministic), "grid" (a fixed stratified grid over the image) or "point_cloud"
            (GaussianCross-style: pixels of a point cloud's points, spread uniformly over occupied
            3D space, see ``gausstr_core.model.point_cloud_init``; the cloud is ``GaussTR.forward``'s
            ``point_cloud`` (e.g. LiDAR) or else the depth map's own cloud, a depth camera's).
        reference_seed: seed of the eval-mode reference points.
        point_cloud_cells: "point_cloud": cells along the longest side of the cloud's unit cuboid.
        point_cloud_stride: "point_cloud" from the depth map: every this many pixels per axis.
    """

    num_layers: int = 3
    queries_per_view: int = 300
    num_heads: int = 8
    num_points: int = 4
    ffn_dim: int = 2048
    cross_attn_dropout: float = 0.1
    self_attention: str = "scene"
    mean_position_encoding: bool = True
    position_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 10.0)
    reference_init: str = "random"
    reference_seed: int = 0
    point_cloud_cells: int = 64
    point_cloud_stride: int = 4

    def __post_init__(self) -> None:
        if self.self_attention not in ("scene", "view"):
            raise ValueError(f"decoder.self_attention must be 'scene' or 'view', got {self.self_attention!r}")
        if self.reference_init not in ("random", "grid", "point_cloud"):
            raise ValueError(
                f"decoder.reference_init must be 'random', 'grid' or 'point_cloud', got "
                f"{self.reference_init!r}"
            )
        if self.point_cloud_cells < 1 or self.point_cloud_stride < 1:
            raise ValueError(
                f"decoder.point_cloud_cells and point_cloud_stride must be >= 1, got "
                f"{self.point_cloud_cells}, {self.point_cloud_stride}"
            )
        if self.num_layers < 1 or self.queries_per_view < 1:
            raise ValueError(
                f"decoder needs >= 1 layer and >= 1 query per view, got "
                f"{self.num_layers}, {self.queries_per_view}"
            )
        if len(self.position_range) != 6:
            raise ValueError(f"decoder.position_range needs 6 numbers, got {self.position_range}")


@dataclass
class HeadConfig:
    """Per-layer Gaussian heads (MLPs with hidden width 4x the query width).

    Attributes:
        feature_dim: per-Gaussian feature width (= the target features' and text embeddings' width).
        scale_range: sigmoid range of the scale head, in units of ``depth * scale_multiplier / fx``.
        scale_multiplier: with fx the focal length of the *network input* [px]. The official
            7.5 / fx_original equals 7.5 * 0.56 / fx_input for nuScenes at 504x896 (4.2) and
            7.5 * 0.48 / fx_input at 432x768 (3.6).
        depth_limit: depth [m] is clamped to this before the means are lifted (official 51.2).
        segment_classes: > 0 adds the featup auxiliary segmentation MLP (on rendered features of
            ``segment_input_dim`` channels, the loss' PCA width) to every layer.
        segment_input_dim: input width of the segmentation MLP.
        rgb_head: add an RGB colour MLP (sigmoid, in [0, 1]) to every layer, for the photometric
            loss (``loss.photometric``); off = no extra weights, the same checkpoints and outputs.
    """

    feature_dim: int = 768
    scale_range: tuple[float, float] = (1.0, 16.0)
    scale_multiplier: float = 4.2
    depth_limit: float = 51.2
    segment_classes: int = 0
    segment_input_dim: int = 128
    rgb_head: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.scale_range[0] < self.scale_range[1]:
            raise ValueError(f"head.scale_range must be 0 < lo < hi, got {self.scale_range}")


@dataclass
class DepthHeadConfig:
    """Optional light per-pixel metric depth predictor on the neck features, for cameras without
    a depth source (``batch.depth is None``); trained against the depth targets.

    Attributes:
        enabled: build it (adds weights: official checkpoints have none).
        min_depth, max_depth: output range [m]; the head predicts log-depth inside it.
        lift_fraction: the fraction of training steps (drawn at random per step) whose Gaussians
            are lifted at the head's own prediction (detached) instead of the batch's depth. On a
            camera-only robot the decoder sees only the head's depth, so training it on that input
            too narrows the gap to the measured-depth path; the losses still use the batch's depth.
        camera_rays: also feed the head each cell's viewing ray from the calibration (unit direction
            in the ego frame, and the depth at which it meets the ego frame's z = 0 ground plane).
            The neck's features say what is seen, not where the camera looks: without the rays the
            head has to infer pitch and mounting height from image content, which is where a
            metric depth error on the ground and far field comes from (camera-aware convolutions,
            Facil et al., CVPR 2019). The rays enter through a zero-initialised 1x1 convolution, so
            a checkpoint trained without them loads (``--init-weights``) and starts unchanged.
        context_blocks: residual 3 x 3 blocks with dilations 2, 4, 8, ... after the head's second
            convolution, widening its receptive field (the measured near-field error is close objects
            placed toward their background). Each block's last convolution starts at zero, so a
            checkpoint without them loads (``--init-weights``) and starts unchanged.
        image_width: base channel width of ``ImageDepthNet``, a U-Net that reads the RGB image
            instead of the neck (0 = the neck head). It shares nothing with the rest of the model, so
            it can be trained alone under a frozen model (``gausstr-train --train-only depth_head``);
            the neck head's options (``camera_rays``, ``context_blocks``) do not apply to it.
        color_jitter: in training only, the image U-Net reads each view with its brightness,
            contrast and saturation scaled by factors drawn from [1 - j, 1 + j] (torchvision's
            ``ColorJitter`` adjustments; 0 = off). Why: the head trains alone on a few hundred
            synthetic worlds and overfits them (AbsRel 0.071 on its training scenes against 0.141
            on the tune worlds, docs/results.md); depth does not change with exposure or white
            balance, so the jitter asks it to read shape and position rather than colour. Only the
            U-Net's input is jittered: the rest of the model sees the images unchanged.
    """

    enabled: bool = False
    min_depth: float = 0.5
    max_depth: float = 80.0
    lift_fraction: float = 0.0
    camera_rays: bool = False
    context_blocks: int = 0
    image_width: int = 0
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"depth_head.color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.color_jitter and not self.image_width:
            raise ValueError(
                "depth_head.color_jitter applies to the image U-Net (depth_head.image_width > 0)"
            )
        if self.image_width < 0 or self.image_width % 8:
            raise ValueError(
                f"depth_head.image_width must be 0 or a positive multiple of 8 (GroupNorm of 8 groups), "
                f"got {self.image_width}"
            )
        if self.image_width and (self.camera_rays or self.context_blocks):
            raise ValueError(
                "depth_head.camera_rays and depth_head.context_blocks belong to the neck head; "
                "they do not apply with depth_head.image_width > 0"
            )
        if self.context_blocks < 0:
            raise ValueError(f"depth_head.context_blocks must be >= 0, got {self.context_blocks}")
        if not 0.0 <= self.lift_fraction <= 1.0:
            raise ValueError(f"depth_head.lift_fraction must be in [0, 1], got {self.lift_fraction}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(
                f"depth_head needs 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )


@dataclass
class ModelConfig:
    """The GaussTR network.

    Attributes:
        image_size: (H, W) network input the data loaders and the node resize views to.
        embed_dim: width of the neck levels and the decoder queries (official 256).
        backbone, decoder, head, depth_head: see their classes.
    """

    image_size: tuple[int, int] = (504, 896)
    embed_dim: int = 256
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    depth_head: DepthHeadConfig = field(default_factory=DepthHeadConfig)

    def __post_init__(self) -> None:
        if self.embed_dim % self.decoder.num_heads or self.embed_dim % 2:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be even and divisible by "
                f"decoder.num_heads ({self.decoder.num_heads})"
            )
        if self.backbone.kind != "precomputed":
            h, w = self.image_size
            p = self.backbone.patch_size
            if h % p or w % p:
                raise ValueError(
                    f"image_size {tuple(self.image_size)} must be a multiple of the backbone patch size {p}"
                )
        if self.backbone.channels % 4:
            raise ValueError(
                f"backbone.channels ({self.backbone.channels}) must be divisible by 4 "
                f"(the neck's 4x upsampling level has channels / 4)"
            )
