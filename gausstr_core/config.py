"""Dataclass configurations, the presets (``tiny``, ``talk2dino``, ``featup``) and YAML I/O.

``GaussTRConfig`` composes the model (this module) with the text encoder (``gausstr_core.text``), the
losses (``gausstr_core.losses``), inference (``gausstr_core.inference``) and the voxel grid. Those
sections are imported lazily so that building a model never pulls in open_clip's text side.

YAML files mirror the dataclasses field by field; an unknown key is an error that names the key and
the allowed ones, a missing key takes the dataclass default.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gausstr_core.grid import VoxelGrid

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
            3D space, see ``gausstr_core.photometric``; the cloud is ``GaussTR.forward``'s
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
    """

    enabled: bool = False
    min_depth: float = 0.5
    max_depth: float = 80.0

    def __post_init__(self) -> None:
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


# --- the composed configuration ------------------------------------------------------------------

# Sections owned by other modules, imported on first use: name -> (module, class).
_SECTIONS = {
    "text": ("gausstr_core.text", "TextEncoderConfig"),
    "loss": ("gausstr_core.losses", "LossConfig"),
    "inference": ("gausstr_core.inference", "InferenceConfig"),
}


def _section_class(name: str) -> type:
    module, cls = _SECTIONS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"config section {name!r} needs {module}.{cls}, which is not available: {exc}"
        ) from exc


@dataclass
class GaussTRConfig:
    """Everything needed to build, train and run one GaussTR.

    Attributes:
        preset: the preset this config started from ("tiny", "talk2dino", "featup" or "custom").
        model: the network.
        text: the open_clip text encoder (gausstr_core.text.TextEncoderConfig).
        loss: training losses (gausstr_core.losses.LossConfig).
        inference: open-vocabulary inference (gausstr_core.inference.InferenceConfig).
        grid: the occupancy voxel grid.
    """

    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    text: Any = field(default_factory=lambda: _section_class("text")())
    loss: Any = field(default_factory=lambda: _section_class("loss")())
    inference: Any = field(default_factory=lambda: _section_class("inference")())
    grid: VoxelGrid = field(default_factory=VoxelGrid)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Cross-section consistency: the Gaussian features must live in the text embedding space."""
        text_dim = _first_attr(self.text, ("embed_dim", "output_dim", "dim"))
        if text_dim is not None and text_dim != self.model.head.feature_dim:
            raise ValueError(
                f"model.head.feature_dim ({self.model.head.feature_dim}) must equal the text "
                f"encoder's embedding width ({text_dim}): Gaussian features are compared with "
                f"text embeddings"
            )
        pca = _first_attr(self.loss, ("pca_dims", "reduce_dims", "pca_dim"))
        if self.model.head.segment_classes and pca is not None and pca != self.model.head.segment_input_dim:
            raise ValueError(
                f"model.head.segment_input_dim ({self.model.head.segment_input_dim}) must equal "
                f"the loss PCA width ({pca}): the segmentation head reads rendered PCA features"
            )


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        if hasattr(obj, n) and isinstance(getattr(obj, n), int):
            return getattr(obj, n)
    return None


# --- presets -------------------------------------------------------------------------------------


def talk2dino_model() -> ModelConfig:
    """Paper size, Talk2DINO: frozen DINOv2 ViT-B/14 with registers, 504x896, 300 queries per view,
    768-d Gaussian features (Talk2DINO maps text into the DINOv2 space)."""
    return ModelConfig(
        image_size=(504, 896),
        embed_dim=256,
        backbone=BackboneConfig(
            kind="dinov2", name="vit_base_patch14_reg4_dinov2", channels=768, patch_size=14
        ),
        decoder=DecoderConfig(),
        head=HeadConfig(feature_dim=768, scale_multiplier=7.5 * 0.56),
    )


def featup_model() -> ModelConfig:
    """Paper size, FeatUp: 432x768, precomputed 512-d FeatUp/MaskCLIP features at stride 16, and
    the 26-class auxiliary segmentation head. Switch ``backbone.kind`` to "open_clip" (MaskCLIP on
    OpenAI CLIP ViT-B/16, open_clip "ViT-B-16-quickgelu") to compute the features online, e.g. on a
    robot."""
    return ModelConfig(
        image_size=(432, 768),
        embed_dim=256,
        backbone=BackboneConfig(kind="precomputed", name="ViT-B-16-quickgelu", channels=512, patch_size=16),
        decoder=DecoderConfig(),
        head=HeadConfig(feature_dim=512, scale_multiplier=7.5 * 0.48, segment_classes=26),
    )


def tiny_model(feature_dim: int = 64) -> ModelConfig:
    """CPU-sized: a small trainable ViT (patch 8, width 128), 112x200 input, 40 queries per view,
    2 decoder layers, and the depth head on (robots without depth input)."""
    return ModelConfig(
        image_size=(112, 200),
        embed_dim=64,
        backbone=BackboneConfig(
            kind="vit",
            name="tiny_vit",
            frozen=False,
            random_init=True,
            channels=128,
            patch_size=8,
            vit_depth=4,
            vit_heads=4,
        ),
        decoder=DecoderConfig(
            num_layers=2, queries_per_view=40, num_heads=4, num_points=4, ffn_dim=256, cross_attn_dropout=0.0
        ),
        head=HeadConfig(feature_dim=feature_dim, scale_multiplier=4.2),
        depth_head=DepthHeadConfig(enabled=True),
    )


_MODEL_PRESETS = {"tiny": tiny_model, "talk2dino": talk2dino_model, "featup": featup_model}
PRESETS = tuple(_MODEL_PRESETS)

_SECTION_PRESET_FUNCTIONS = {"text": "{}_text", "loss": "{}_loss", "inference": "{}_inference"}


def _section_preset(section: str, name: str) -> Any:
    """A preset's value of a section owned by another module: the function ``<preset>_<section>``
    of that module (e.g. ``gausstr_core.text.tiny_text``) when it defines one, else the default."""
    module = importlib.import_module(_SECTIONS[section][0])
    function = getattr(module, _SECTION_PRESET_FUNCTIONS[section].format(name), None)
    return function() if function is not None else _section_class(section)()


def preset_model(name: str) -> ModelConfig:
    """The ModelConfig of a preset (no other sections needed)."""
    if name not in _MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return _MODEL_PRESETS[name]()


def preset(name: str) -> GaussTRConfig:
    """The full configuration of a preset: "tiny", "talk2dino" or "featup"."""
    model = preset_model(name)
    sections = {section: _section_preset(section, name) for section in _SECTIONS}
    return GaussTRConfig(preset=name, model=model, **sections)


# --- dict / YAML conversion ----------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """Plain YAML-safe data (dicts, lists, numbers, strings, None) of a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from plain data; unknown keys are errors naming the allowed ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config {where or cls.__name__} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValueError(
            f"unknown config key {where + '.' if where else ''}{unknown[0]!r} in "
            f"{cls.__name__}; allowed: {', '.join(names)}"
        )
    hints = _type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = f"{where}.{name}" if where else name
        if cls is GaussTRConfig and name in _SECTIONS:
            kwargs[name] = from_dict(_section_class(name), value, sub)
        else:
            kwargs[name] = _convert(hints.get(name, Any), value, sub)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"config {where or cls.__name__}: {exc}") from exc


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError:
        return {}


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Coerce YAML data to annotated type ``tp`` (nested dataclasses, tuples, optionals)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config {where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"config {where} needs {len(args)} values, got {len(value)}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, where) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def config_to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def load_config(path: str | Path, cls: type = GaussTRConfig) -> Any:
    """Read a YAML config. A top-level ``preset: <name>`` key fills unset values from that preset."""
    text = Path(path).read_text()
    return config_from_yaml(text, cls, where=str(path))


def config_from_yaml(text: str, cls: type = GaussTRConfig, where: str = "") -> Any:
    data = yaml.safe_load(text) or {}
    if cls is GaussTRConfig and isinstance(data, dict) and data.get("preset") in _MODEL_PRESETS:
        data = _merge(to_dict(preset(data["preset"])), data)
    try:
        return from_dict(cls, data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}" if where else str(exc)) from exc


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
