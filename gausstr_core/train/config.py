"""``TrainConfig``: everything about a training run that is not the model (data, optimisation,
schedule, logging, checkpointing), as a dataclass with YAML I/O and ``key=value`` overrides.

The model, loss, text and inference sections live in ``gausstr_core.config.GaussTRConfig``; a run
stores both (``train.yaml`` and ``model.yaml`` in its output directory and inside every checkpoint).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gausstr_core.config import from_dict, to_dict

AmpMode = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)
Schedule = Literal["epochs", "budget"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        preset: model preset ("tiny", "talk2dino", "featup") the GaussTRConfig starts from.
        model_config: optional YAML file of a GaussTRConfig (overrides ``preset``).
        init_weights: a model checkpoint (.safetensors) whose weights start the run instead of random
            ones (fine-tuning: the optimizer, the schedule and the step count start fresh). The model
            config is the checkpoint's own (with ``overrides``) unless ``model_config`` is given; its
            tensors must fit that model exactly.
        data: training data: a directory in the nuScenes/Occ3D layout (synthetic or real), or
            ``synthetic:scenes=N,seed=S`` for scenes generated in memory.
        val_data: evaluation data (same forms); None = the held-out split of ``data`` when it is a
            directory, nothing otherwise.
        train_split, val_split: split names inside a data directory.
        out: run directory (checkpoints, TensorBoard, pictures, metrics).
        epochs: passes over the training set (fractional allowed); the schedule's milestones count
            in epochs.
        max_steps: stop after this many optimizer steps (None = epochs decide).
        max_minutes: also stop (checkpoint, evaluate, save the model) once the run has trained this
            long (wall time of its training loops, summed over resumed sessions; None = no limit).
            The "budget" schedule places its phases on it.
        batch_size: scenes per optimizer step per process.
        num_workers: DataLoader worker processes per rank (0 = load in the training process).
        lr, weight_decay: AdamW (official 2e-4, 5e-3).
        betas: AdamW betas.
        schedule: "epochs" (the official schedule: decay at ``decay_epochs``, whatever the budget)
            or "budget" (warm-up, full rate and decay placed on the run's budget: ``max_steps``,
            ``max_minutes`` or the epochs, whichever ends the run first; see
            ``gausstr_core.train.schedule``). The recipes use "budget".
        warmup_steps, warmup_start: linear warm-up (official 200 iterations from 1e-3).
        warmup_fraction: "budget": the warm-up also ends at this fraction of the budget.
        decay_epochs, decay_gamma: step decay (official x0.1 at epoch 16 of 24); "epochs" schedule.
        decay_fractions: "budget": fractions of the budget where the rate is multiplied by
            ``decay_gamma`` (official proportion 16 / 24 = 2/3).
        grad_clip: max global gradient L2 norm (official 35; 0 = off).
        amp: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp16" (CUDA, with a grad
            scaler) or "off".
        device: "auto", "cpu", "cuda".
        seed: seeds parameters, data order and every step's randomness (resume is exact).
        log_every: steps between TensorBoard scalar writes (and progress-bar updates).
        image_every: steps between TensorBoard images (rendered vs target depth / features); 0 = off.
        checkpoint_every: steps between resumable checkpoints (at most this much work is lost on a
            kill); the final step is always saved.
        eval_every: steps between evaluations on the validation data (0 = only at the end).
        eval_scenes: evaluate on at most this many validation scenes (0 = all).
        eval_at_end: evaluate the final model on the validation data.
        threads: torch intra-op threads (None = torch's default).
        find_unused_parameters: DDP flag for models with parameters a step does not use.
        train_only: state-dict prefixes (``depth_head``, ``heads.2``) of the only parameters this
            run trains; every other parameter keeps its value (from ``init_weights``). With
            ``init_weights``, a part named here is loaded from it when the checkpoint holds exactly
            that part (same names and shapes), else it starts from its initialisation: a fine-tuning
            may replace it (e.g. the neck depth head by ``depth_head.image_width``). Empty = all.
        overrides: ``key=value`` changes applied to the model config (e.g. ``loss.depth_weight=0``),
            kept so that a resumed run rebuilds the same model.
    """

    preset: str = "tiny"
    model_config: str | None = None
    init_weights: str | None = None
    data: str = "synthetic:scenes=64,seed=0"
    val_data: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    out: str = "runs/gausstr"
    epochs: float = 24.0
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 1
    num_workers: int = 0
    lr: float = 2e-4
    weight_decay: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    warmup_start: float = 1e-3
    schedule: Schedule = "epochs"
    warmup_fraction: float = 0.1
    decay_epochs: tuple[float, ...] = (16.0,)
    decay_fractions: tuple[float, ...] = (2 / 3,)
    decay_gamma: float = 0.1
    grad_clip: float = 35.0
    amp: AmpMode = "auto"
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    image_every: int = 200
    checkpoint_every: int = 100
    eval_every: int = 0
    eval_scenes: int = 0
    eval_at_end: bool = True
    threads: int | None = None
    find_unused_parameters: bool = False
    train_only: tuple[str, ...] = ()
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        positive = {
            "batch_size": self.batch_size,
            "log_every": self.log_every,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or unset), got {self.max_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive (or unset), got {self.max_minutes}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, grad_clip >= 0; got {self.lr}, "
                f"{self.weight_decay}, {self.grad_clip}"
            )
        if list(self.decay_epochs) != sorted(self.decay_epochs):
            raise ValueError(f"decay_epochs must be ascending, got {list(self.decay_epochs)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        fractions = list(self.decay_fractions)
        if fractions != sorted(fractions) or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"decay_fractions must be ascending in (0, 1], got {fractions}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        for name in ("image_every", "eval_every", "eval_scenes", "num_workers", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def parse_value(text: str) -> Any:
    """A ``key=value`` right-hand side as YAML (numbers, booleans, lists, null, strings)."""
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict, overrides: list[str], where: str) -> dict:
    """Set dotted keys of a nested dict from ``key=value`` strings (values parsed as YAML)."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{where} override {item!r} must look like key=value (e.g. loss.depth_weight=0)")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"{where} override {item!r} has an empty key")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                sections = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise ValueError(
                    f"{where} override {item!r}: {p!r} is not a section (sections here: {sections})"
                )
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(
                f"{where} override {item!r}: unknown key {parts[-1]!r}; allowed: {', '.join(node)}"
            )
        node[parts[-1]] = parse_value(value)
    return data


def train_config_to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def train_config_from_dict(data: dict) -> TrainConfig:
    return from_dict(TrainConfig, data)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a TrainConfig YAML (unknown keys are errors naming the allowed ones)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return from_dict(TrainConfig, data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
