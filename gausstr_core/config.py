"""``GaussTRConfig``, the configuration of one GaussTR (model, text encoder, losses, inference, grid),
and the dataclass <-> plain data <-> YAML conversion every config of the project uses.

Each section is typed with its real class and lives with its concern: ``gausstr_core.model.config``,
``gausstr_core.text.config``, ``gausstr_core.losses.config``, ``gausstr_core.inference.config`` and
``gausstr_core.grid``. None of them imports a network, so reading a config never pulls in open_clip
or timm. The named presets are in ``gausstr_core.presets``, which also reads YAML files
(``load_config``): a file may start from a preset and change only a few values.

YAML files mirror the dataclasses field by field; an unknown key is an error that names the key and
the allowed ones, a missing key takes the dataclass default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gausstr_core.grid import VoxelGrid
from gausstr_core.inference.config import InferenceConfig
from gausstr_core.losses.config import LossConfig
from gausstr_core.model.config import ModelConfig
from gausstr_core.text.config import TextEncoderConfig


@dataclass
class GaussTRConfig:
    """Everything needed to build, train and run one GaussTR.

    Attributes:
        preset: the preset this config started from ("tiny", "talk2dino", "featup" or "custom").
        model: the network.
        text: the open_clip text encoder.
        loss: training losses.
        inference: open-vocabulary inference.
        grid: the occupancy voxel grid.
    """

    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    grid: VoxelGrid = field(default_factory=VoxelGrid)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Cross-section consistency: the Gaussian features must live in the text embedding space, and
        the segmentation head reads the loss' PCA-reduced features."""
        head = self.model.head
        if self.text.embed_dim != head.feature_dim:
            raise ValueError(
                f"model.head.feature_dim ({head.feature_dim}) must equal the text "
                f"encoder's embedding width ({self.text.embed_dim}): Gaussian features are "
                f"compared with text embeddings"
            )
        pca = self.loss.pca_dims
        if head.segment_classes and pca is not None and pca != head.segment_input_dim:
            raise ValueError(
                f"model.head.segment_input_dim ({head.segment_input_dim}) must equal "
                f"the loss PCA width ({pca}): the segmentation head reads rendered PCA features"
            )


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
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where)  # None = the defaults
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
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
    Path(path).write_text(config_to_yaml(config))


def config_to_yaml(config: Any) -> str:
    """A config dataclass as YAML text."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
