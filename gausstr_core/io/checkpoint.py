"""Model checkpoints: one safetensors file = the model's tensors + JSON metadata (config, run facts).

Nothing is ever unpickled. A frozen backbone whose weights come from a named local file is not
stored (the config names the file and building the model reads it); trainable or randomly
initialised backbones are stored. Loading into a model is strict: a mismatch raises
``CheckpointMismatchError`` listing missing, unexpected and mis-shaped keys.

Metadata keys written by the trainer and the converter (all optional, JSON values):
``preset``, ``vocabulary`` (category strings used in training), ``step``, ``metrics`` (name -> number),
``text_encoder_fingerprint`` (identifies the text embedding space the features were aligned with),
``source`` (e.g. the official checkpoint a conversion came from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gausstr_core.config import GaussTRConfig, from_dict, to_dict
from gausstr_core.model.config import ModelConfig
from gausstr_core.presets import preset

FORMAT = "gausstr-checkpoint/1"
_CONFIG_CLASSES = {"GaussTRConfig": GaussTRConfig, "ModelConfig": ModelConfig}


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model; the message lists the offending keys."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple, tuple]],
        where: str = "checkpoint",
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def listing(what: str, items: list[str]) -> str:
            more = ", ..." if len(items) > 5 else ""
            return f"{len(items)} {what} key(s): {', '.join(items[:5])}{more}"

        parts = []
        if missing:
            parts.append(listing("missing", missing))
        if unexpected:
            parts.append(listing("unexpected", unexpected))
        if mismatched:
            parts.append(
                listing(
                    "mis-shaped",
                    [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in mismatched],
                )
            )
        super().__init__(f"{where} does not fit the model: " + "; ".join(parts))


def _model_config(config: Any) -> ModelConfig:
    return config.model if isinstance(config, GaussTRConfig) else config


def checkpoint_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a checkpoint stores: the state dict minus the model's excluded prefixes."""
    excluded = tuple(getattr(model, "checkpoint_excluded_prefixes", lambda: ())())
    return {k: v for k, v in model.state_dict().items() if not k.startswith(excluded)}


def save_model_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: GaussTRConfig | ModelConfig,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with ``config`` and JSON-serialisable ``metadata``) to a safetensors file.

    The file is written next to ``path`` and renamed into place, so a crash never leaves a
    half-written checkpoint under the final name.
    """
    from safetensors.torch import save_file

    if type(config).__name__ not in _CONFIG_CLASSES:
        raise TypeError(f"config must be a GaussTRConfig or ModelConfig, got {type(config).__name__}")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in checkpoint_state_dict(model).items()}
    header = {
        "format": FORMAT,
        "config_class": type(config).__name__,
        "config": json.dumps(to_dict(config)),
        "metadata": json.dumps(metadata or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)
    return path


def rewrite_checkpoint(
    src: str | Path,
    dst: str | Path,
    config: GaussTRConfig | ModelConfig | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Copy a checkpoint with a new config and/or extra metadata keys (the tensors are unchanged),
    e.g. to record how a model was trained, or the inference settings chosen for it.

    Args:
        src, dst: checkpoint files (may be the same path; written atomically).
        config: replaces the stored config (None = keep).
        metadata: merged into the stored metadata (None = keep).
    """
    from safetensors.torch import load_file, save_file

    header = read_checkpoint_header(src)
    if config is not None:
        if type(config).__name__ not in _CONFIG_CLASSES:
            raise TypeError(f"config must be a GaussTRConfig or ModelConfig, got {type(config).__name__}")
        header["config_class"] = type(config).__name__
        header["config"] = json.dumps(to_dict(config))
    if metadata:
        header["metadata"] = json.dumps({**json.loads(header.get("metadata", "{}")), **metadata})
    tensors = load_file(str(src))
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(dst)
    return dst


def read_checkpoint_header(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a GaussTR checkpoint, validated (tensors are not read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise ValueError(
            f"{path} is not a safetensors file (truncated, or another format; official .pth "
            f"checkpoints go through gausstr-convert-official): {exc}"
        ) from exc
    if header.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a GaussTR checkpoint "
            f"(format {header.get('format')!r}, expected {FORMAT!r})"
        )
    return header


def read_checkpoint_config(path: str | Path) -> tuple[GaussTRConfig | ModelConfig, dict]:
    """(config, metadata) of a checkpoint, from its header alone (the tensors are not read)."""
    header = read_checkpoint_header(path)
    cls = _CONFIG_CLASSES.get(header.get("config_class", ""))
    if cls is None:
        raise ValueError(f"{path}: unknown config class {header.get('config_class')!r}")
    try:
        config = from_dict(cls, json.loads(header["config"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: corrupt checkpoint metadata: {exc}") from exc
    return config, metadata


def full_config(config: GaussTRConfig | ModelConfig, metadata: dict, path: str | Path) -> GaussTRConfig:
    """The GaussTRConfig of a checkpoint: its own, or for a checkpoint that carries only a model config
    (e.g. a converted official one) the preset named in its metadata with that model config."""
    if isinstance(config, GaussTRConfig):
        return config
    name = metadata.get("preset")
    if name is None:
        raise ValueError(
            f"checkpoint {path} has a model config but no text/inference config and no "
            f"'preset' in its metadata to take them from"
        )
    full = preset(name)
    full.model = config
    return full


def read_full_config(path: str | Path) -> GaussTRConfig:
    """The full GaussTRConfig of a checkpoint (``full_config``), from its header alone."""
    return full_config(*read_checkpoint_config(path), path)


def load_model_checkpoint(path: str | Path) -> tuple[GaussTRConfig | ModelConfig, dict[str, Tensor], dict]:
    """Read a checkpoint: (config, state_dict, metadata). Never unpickles anything."""
    from safetensors.torch import load_file

    config, metadata = read_checkpoint_config(path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the tensors (truncated file?): {exc}") from exc
    return config, state, metadata


def load_state_dict_strict(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    where: str = "checkpoint",
    may_be_missing: tuple[str, ...] = (),
) -> None:
    """Load every tensor the model stores in checkpoints; anything missing, extra or mis-shaped is an
    error naming the keys (keys under the model's excluded prefixes may be present or absent, and
    keys under ``may_be_missing`` may be absent: they keep their initialisation)."""
    expected = model.state_dict()
    excluded = tuple(getattr(model, "checkpoint_excluded_prefixes", lambda: ())())
    optional_prefixes = excluded + tuple(may_be_missing)
    optional = {k for k in expected if optional_prefixes and k.startswith(optional_prefixes)}
    missing = sorted(k for k in expected if k not in state_dict and k not in optional)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in sorted(state_dict)
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, where)
    model.load_state_dict(state_dict, strict=False)


def resolve_backbone_weights(config: ModelConfig, checkpoint_dir: Path) -> None:
    """A relative backbone weights path that does not exist from the working directory is taken
    relative to the checkpoint's directory (checkpoints travel with their backbone file)."""
    weights = config.backbone.weights
    if weights and not Path(weights).expanduser().is_absolute() and not Path(weights).exists():
        candidate = checkpoint_dir / weights
        if candidate.exists():
            config.backbone.weights = str(candidate)


def build_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode on ``device``, config, metadata) of a checkpoint file."""
    from gausstr_core.model.gausstr import GaussTR

    config, state, metadata = load_model_checkpoint(path)
    resolve_backbone_weights(_model_config(config), Path(path).parent)
    model = GaussTR(_model_config(config))
    load_state_dict_strict(model, state, where=str(path))
    return model.to(device).eval(), config, metadata
