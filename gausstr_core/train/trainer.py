"""The training loop: plain PyTorch, DDP through torchrun, bf16 autocast on CUDA, atomic resumable
checkpoints, TensorBoard, periodic zero-shot evaluation.

One optimizer step = one batch of ``batch_size`` scenes per process. Everything random in a step
(the model's random reference points, dropout) is seeded from (seed, rank, step), and the data order
of an epoch from (seed, epoch), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from gausstr_core.batch import CameraBatch
from gausstr_core.config import GaussTRConfig, config_to_yaml, to_dict
from gausstr_core.losses.gausstr import ALPHA_METRIC, OPAQUE_METRIC, OPAQUE_OPACITY
from gausstr_core.presets import config_from_yaml
from gausstr_core.train.config import TrainConfig, train_config_from_dict, train_config_to_yaml
from gausstr_core.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    barrier,
    broadcast_values,
    init_distributed,
)
from gausstr_core.train.schedule import budget_lr_factor, lr_factor, set_learning_rate
from gausstr_core.train.state import STATE_VERSION, atomic_torch_save, load_state, rng_state, set_rng_state
from gausstr_core.train.stop_signal import STOP_SIGNALS_BY_CODE, StopSignal, TrainingInterrupted

STATE_FILE = "checkpoints/last.pt"
MODEL_FILE = "model.safetensors"
MAX_BAD_STEPS = 20  # consecutive non-finite losses before the run is stopped
# A model that renders (almost) nothing anywhere has collapsed: every opacity went to ~0, the loss no
# longer reaches them and it stays there (seen on the GPU: featup at paper size, seed 1, a 40-step
# warm-up to 2e-4: the loss rose from 15 to 26 and the model scored IoU 0). Healthy models render the
# ground and the objects, i.e. alpha >> 0.01 over the image.
COLLAPSED_ALPHA = 0.01
COLLAPSE_PATIENCE = 100  # consecutive steps below it: the run has collapsed
# A collapsed run goes back to a snapshot taken before the collapse began and warms its learning rate
# up again over RECOVERY_WARMUP steps (to the full rate the first time, half of it the second), at
# most COLLAPSE_RECOVERIES times, then stops with the reason. Seen on the GPU (featup at paper size,
# 2 scenes per step, 2026-12-06): 2 of about 10 runs of the same recipe collapsed within 100 steps of
# reaching the full 2e-4 at the end of a short warm-up (40 and 125 steps; the official one is 200),
# the others trained normally. Half the rate for the whole run is no remedy: 1e-4 scored IoU 34.8 /
# mIoU 13.5 against 46.3 / 20.9 at 2e-4 (same data, 1,250 steps; docs/results.md).
COLLAPSE_RECOVERIES = 2
RECOVERY_WARMUP = 200
# A partly collapsed run renders something, so the guard above does not see it, but most of its
# Gaussians went transparent and its maps are mostly empty (featup at paper size, 2026-12-07: 23 % of
# the Gaussians above opacity 0.05, the median one transparent 2 m from the ego origin, IoU 15;
# healthy trained models keep 86-94 %; scripts/gaussian_stats.py). Below TRANSPARENT_FRACTION for
# COLLAPSE_PATIENCE steps the trainer warns (log, TensorBoard, the checkpoint's metadata) instead of
# acting: whether such a run could still recover is not measured. 0.5 lies midway between the two
# measured kinds; how low healthy paper-scale runs dip on the way is not measured either.
TRANSPARENT_FRACTION = 0.5
SNAPSHOT_EVERY = 50  # steps between in-memory snapshots of a healthy run (trainable weights, optimizer)
SNAPSHOT_MARGIN = 50  # the snapshot restored predates the first step that rendered nothing by this much


@dataclass
class Snapshot:
    """Host copies of the trainable parameters, the optimizer state and the loss scaler at ``step``."""

    step: int
    params: list[torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]

    @classmethod
    def take(cls, step: int, params: list[torch.Tensor], optimizer, scaler) -> Snapshot:
        scaler_state = scaler.state_dict() if scaler is not None else {}
        optimizer_state = _host_copy(optimizer.state_dict())
        return cls(step, _host_copy(list(params)), optimizer_state, _host_copy(scaler_state))

    def restore(self, params: list[torch.Tensor], optimizer, scaler) -> None:
        with torch.no_grad():
            for p, saved in zip(params, self.params):
                p.copy_(saved)
        # a copy again: on the CPU load_state_dict would keep these very tensors and step them
        optimizer.load_state_dict(_host_copy(self.optimizer))
        if scaler is not None and self.scaler:
            scaler.load_state_dict(self.scaler)


def _host_copy(value: Any) -> Any:
    """A deep copy of a (nested) state with every tensor copied to the host."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_copy(v) for v in value)
    return copy.deepcopy(value)


def train_only_prefixes(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """``TrainConfig.train_only`` as state-dict prefixes ending in "." (a name matches whole parts:
    ``heads.1`` is not ``heads.10``); each must name at least one parameter."""
    prefixes = tuple(n.rstrip(".") + "." for n in names)
    params = [n for n, _ in model.named_parameters()]
    unknown = [p.rstrip(".") for p in prefixes if not any(n.startswith(p) for n in params)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in params})
        raise ValueError(f"train_only names no parameter of the model: {unknown} (its parts: {tops})")
    return prefixes


def drop_replaced_parts(
    model: nn.Module, weights: dict[str, torch.Tensor], prefixes: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """``weights`` without the parts under ``prefixes`` that do not match the model's exactly (other
    names or shapes: the run replaces that part), and those prefixes. A part that matches is kept."""
    expected = model.state_dict()
    fresh = []
    for prefix in prefixes:
        theirs = {k: tuple(v.shape) for k, v in weights.items() if k.startswith(prefix)}
        ours = {k: tuple(v.shape) for k, v in expected.items() if k.startswith(prefix)}
        if theirs != ours:
            fresh.append(prefix)
    kept = {k: v for k, v in weights.items() if not k.startswith(tuple(fresh))} if fresh else weights
    return kept, tuple(fresh)


def state_step(state: dict[str, Any], key: str) -> int | None:
    """An optional step of a training state (``checkpoints/last.pt``), which stores None as -1
    (``rewarm_from``, ``transparent_since``; absent in states from before the field)."""
    step = int(state.get(key, -1))
    return None if step < 0 else step


def step_seed(seed: int, rank: int, step: int) -> int:
    """A distinct 63-bit seed for every (run seed, rank, step)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + 0x5EED) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002  (the legacy global generator third-party code uses)
    torch.manual_seed(seed)


class EpochSlice(Sampler[int]):
    """The scene indices of the current pass (the trainer sets ``indices`` before each): lets one
    DataLoader, with persistent workers, serve every epoch and a resumed epoch's remainder."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on a device (None = fp32)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device")
    return torch.float16


@dataclass
class StepResult:
    """Scalars of one optimizer step (floats, on the CPU)."""

    losses: dict[str, float]
    grad_norm: float
    lr: float
    skipped: bool


class Trainer:
    """Trains a GaussTR.

    Args:
        cfg: the run.
        ctx: the process's distributed context (``init_distributed`` when None).
        model_config: the model configuration (``build_model_config(cfg)`` when None).
        train_set: dataset of training items (built from ``cfg.data`` when None).
        val_set: dataset of evaluation items with ground truth (from ``cfg.val_data`` when None).
        resume: load ``<out>/checkpoints/last.pt`` if it exists and continue from it.
        command: the command line that started the run (recorded in the deployment checkpoint).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        ctx: DistributedContext | None = None,
        model_config: GaussTRConfig | None = None,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        resume: bool = False,
        command: str | None = None,
    ):
        self.command = command
        from gausstr_core.presets import build_model_config
        from gausstr_core.train import data as train_data

        self.ctx = ctx or init_distributed(cfg.device)
        self.out = Path(cfg.out)
        state = None
        if resume and (self.out / STATE_FILE).is_file():
            state = load_state(self.out / STATE_FILE)
            # The run continues with the configuration it was started with.
            check_resumable(cfg, state)
            model_config = config_from_yaml(state["model_config"])
        self.cfg = cfg
        if model_config is None:
            start = None
            if cfg.init_weights and not cfg.model_config:
                from gausstr_core.io.checkpoint import read_full_config

                start = read_full_config(cfg.init_weights)
            model_config = build_model_config(cfg, start)
        self.model_config = model_config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self.ctx.device
        self.amp_dtype = autocast_dtype(cfg.amp, self.device)

        seed_everything(cfg.seed)  # identical initial weights on every rank
        from gausstr_core.losses.gausstr import GaussTRLoss
        from gausstr_core.model.gausstr import GaussTR

        self.model = GaussTR(self.model_config.model)
        trained_prefixes = train_only_prefixes(self.model, cfg.train_only)
        if cfg.init_weights and state is None:
            from gausstr_core.io.checkpoint import load_model_checkpoint, load_state_dict_strict

            _, weights, _ = load_model_checkpoint(cfg.init_weights)
            weights, fresh = drop_replaced_parts(self.model, weights, trained_prefixes)
            if fresh and self.ctx.is_main:
                print(
                    f"note: {', '.join(p.rstrip('.') for p in fresh)} differs from {cfg.init_weights}'s: "
                    "starts from its initialisation"
                )
            # a fine-tuning may add parameters that start as a no-op (e.g. depth_head.camera_rays)
            load_state_dict_strict(
                self.model,
                weights,
                where=cfg.init_weights,
                may_be_missing=self.model.neutral_init_prefixes() + fresh,
            )
        if trained_prefixes:
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith(trained_prefixes))
        self.model = self.model.to(self.device)
        self.loss_fn = GaussTRLoss(self.model_config.loss)
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn = self.loss_fn.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ddp: nn.Module = self.model
        if self.ctx.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )

        # A ground-truth loss term (loss.gaussrender) trains on items with labels: (cameras, ground truth).
        self.needs_ground_truth = bool(getattr(self.loss_fn, "needs_ground_truth", False))
        self.train_set = (
            train_set
            if train_set is not None
            else train_data.build_dataset(
                cfg.data, cfg.train_split, self.model_config, training=not self.needs_ground_truth
            )
        )
        if val_set is None and (cfg.eval_every or cfg.eval_at_end):
            val_set = train_data.build_eval_dataset(cfg, self.model_config)
        self.val_set = val_set
        if getattr(self.loss_fn, "needs_prototypes", False):
            # GaussRender and the zero-shot label term compare Gaussian features with the text
            # prototypes of the categories the model is evaluated on.
            from gausstr_core.losses.gaussrender import ClassPrototypes

            self.loss_fn.class_prototypes = ClassPrototypes.from_config(
                self.model_config, self.eval_categories(), self.device
            )
            zero_shot_categories = self.model_config.loss.zero_shot_categories
            if zero_shot_categories:
                # the zero-shot labels from a vocabulary of the user's own (loss.zero_shot_categories)
                self.loss_fn.zero_shot_prototypes = ClassPrototypes.from_config(
                    self.model_config, list(zero_shot_categories), self.device
                )
            self.loss_fn.grid = self.model_config.grid
        self.sampler = DistributedSampler(
            self.train_set,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        self._epoch_slice = EpochSlice()
        self._data_loader: DataLoader | None = None
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set has {len(self.train_set)} scenes: too few for batch size "
                f"{cfg.batch_size} on {self.ctx.world_size} process(es)"
            )
        total = math.ceil(cfg.epochs * self.steps_per_epoch)
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total

        self.step = 0
        self.train_seconds = 0.0  # training wall time of the run so far (all sessions; rank 0's clock)
        self.history: list[dict[str, Any]] = []
        self.recoveries = 0
        self.rewarm_from: int | None = None  # the step a collapse recovery went back to
        self.transparent_since: int | None = None  # first step of a partial collapse still going on
        self._snapshots: list[Snapshot] = []
        if state is not None:
            self._load_state(state)
        self.writer = None
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train.yaml").write_text(train_config_to_yaml(self.cfg))
            (self.out / "model.yaml").write_text(config_to_yaml(self.model_config))

    # --- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The resumable training state (tensors and plain data only)."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng_state(),
            "train_config": train_config_to_yaml(self.cfg),
            "model_config": config_to_yaml(self.model_config),
            "history": json.dumps(self.history),
            "world_size": self.ctx.world_size,
            "recoveries": self.recoveries,
            "rewarm_from": -1 if self.rewarm_from is None else self.rewarm_from,
            "transparent_since": -1 if self.transparent_since is None else self.transparent_since,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = json.loads(state.get("history", "[]"))
        self.recoveries = int(state.get("recoveries", 0))
        self.rewarm_from = state_step(state, "rewarm_from")
        self.transparent_since = state_step(state, "transparent_since")
        if self.transparent_since is not None and self.ctx.is_main:
            print(
                f"warning: resuming a partial collapse: most Gaussians transparent since step "
                f"{self.transparent_since} (docs/training.md, 'A partial collapse is flagged')",
                flush=True,
            )
        if int(state.get("world_size", 1)) != self.ctx.world_size and self.ctx.is_main:
            print(
                f"note: resuming a {state.get('world_size')}-process run on {self.ctx.world_size} "
                f"process(es): the data order differs from the original run from here on"
            )

    def save_checkpoint(self) -> None:
        """Write the training state atomically (rank 0); every rank waits for it."""
        if self.ctx.is_main:
            atomic_torch_save(self.state_dict(), self.out / STATE_FILE)
        barrier(self.ctx)

    def save_model(self, path: Path | None = None, metrics: dict | None = None) -> Path | None:
        """Deployment checkpoint (safetensors + metadata) via gausstr_core.io.checkpoint (rank 0)."""
        if not self.ctx.is_main:
            return None
        from gausstr_core.train.data import save_deployment_checkpoint

        path = path or self.out / MODEL_FILE
        save_deployment_checkpoint(
            self.model,
            self.model_config,
            path,
            step=self.step,
            metrics=metrics,
            vocabulary=self.eval_categories(),
            training={
                "command": self.command,
                "train_config": to_dict(self.cfg),
                "train_minutes": round(self.train_seconds / 60, 2),
                "collapse_recoveries": self.recoveries,
                "lr_scale": self.lr_scale,
                "rewarm_from_step": self.rewarm_from,
                "mostly_transparent_since_step": self.transparent_since,
            },
        )
        return path

    # --- one step ---------------------------------------------------------------------------------

    def _seed_step(self) -> None:
        torch.manual_seed(step_seed(self.cfg.seed, self.ctx.rank, self.step))

    def train_step(self, batch: CameraBatch | tuple) -> tuple[StepResult, Any, Any]:
        """One optimizer step; returns its scalars, the model output and the loss output. ``batch`` is
        a CameraBatch, or (CameraBatch, ground truth) when the loss needs ground truth."""
        self.ddp.train()
        self._seed_step()
        batch, ground_truth = batch if isinstance(batch, tuple) else (batch, None)
        batch = batch.to(self.device, non_blocking=True)
        extra = {} if ground_truth is None else {"ground_truth": ground_truth}
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            output = self.ddp(batch)
            loss_out = self.loss_fn(
                output, batch, segmentation=batch.segmentation, progress=self.progress(), **extra
            )
        terms = _loss_terms(loss_out)
        loss = terms["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        factor = self.lr_factor() * self.lr_scale * self.rewarm_factor()
        set_learning_rate(self.optimizer, self.base_lrs, factor)
        # One device-to-host transfer for every scalar of the step (each float() of a device tensor is
        # a synchronisation of its own). Every rank sees the same all-reduced gradients, so every rank
        # takes the same decision.
        names = list(terms)
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names] + [grad_norm.float()])
        host = values.tolist()
        scalars, norm = dict(zip(names, host[:-1])), host[-1]
        finite = math.isfinite(scalars["loss"]) and math.isfinite(norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        self.step += 1
        return StepResult(scalars, norm, self.base_lrs[0] * factor, not finite), output, loss_out

    def progress(self) -> float:
        """Used fraction of the run's budget: the larger of steps / total steps and training time /
        ``max_minutes``, in [0, 1]."""
        p = self.step / self.total_steps
        if self.cfg.max_minutes is not None:
            p = max(p, self.train_seconds / (60.0 * self.cfg.max_minutes))
        return min(p, 1.0)

    def lr_factor(self) -> float:
        """The schedule's learning-rate multiplier for the current step."""
        cfg = self.cfg
        if cfg.schedule == "epochs":
            return lr_factor(
                self.step,
                self.steps_per_epoch,
                cfg.warmup_steps,
                cfg.warmup_start,
                cfg.decay_epochs,
                cfg.decay_gamma,
            )
        return budget_lr_factor(
            self.step,
            self.progress(),
            cfg.warmup_steps,
            cfg.warmup_fraction,
            cfg.warmup_start,
            cfg.decay_fractions,
            cfg.decay_gamma,
        )

    @property
    def lr_scale(self) -> float:
        """On top of the schedule: 1, halved from the second collapse recovery on."""
        return 0.5 ** max(self.recoveries - 1, 0)

    def rewarm_factor(self) -> float:
        """After a collapse recovery: a linear warm-up again, from the recipe's ``warmup_start`` to 1
        over RECOVERY_WARMUP steps from the step the run went back to; else 1."""
        if self.rewarm_from is None:
            return 1.0
        done = (self.step - self.rewarm_from + 1) / RECOVERY_WARMUP
        if done >= 1.0:
            return 1.0
        start = self.cfg.warmup_start
        return start + (1.0 - start) * max(done, 0.0)

    # --- the loop ---------------------------------------------------------------------------------

    def _epoch_indices(self, epoch: int) -> list[int]:
        self.sampler.set_epoch(epoch)
        return list(self.sampler)

    def _loader(self) -> DataLoader:
        """The run's one DataLoader: it reads ``self._epoch_slice`` (set before each pass), so its
        worker processes persist across epochs. A loader per epoch started them again every epoch:
        ~1 s with 15 workers on the GPU host, every 32 steps (64 scenes, batch 2) of a paper-scale
        run. Loading draws no random numbers, so the batches are the same either way."""
        from gausstr_core.train.data import collate_evaluation, collate_training

        if self._data_loader is None:
            collate = collate_evaluation if self.needs_ground_truth else collate_training
            self._data_loader = DataLoader(
                self.train_set,
                batch_size=self.cfg.batch_size,
                sampler=self._epoch_slice,
                num_workers=self.cfg.num_workers,
                collate_fn=collate,
                drop_last=True,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.cfg.num_workers > 0,
            )
        return self._data_loader

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (from the resumed step), evaluating and checkpointing on the way.

        Returns the final evaluation scores (empty without validation data).
        """
        from tqdm import tqdm

        cfg = self.cfg
        if self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)
            print(
                f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch, "
                f"{cfg.batch_size} scene(s) x {self.ctx.world_size} process(es)) on {self.device}"
                f"{' from step ' + str(self.step) if self.step else ''}; run directory {self.out}",
                flush=True,
            )
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not self.ctx.is_main,
        )
        try:
            with StopSignal() as signals:
                interrupted, last_eval = self._train_loop(bar, signals)
        finally:
            self._data_loader = None  # its persistent workers end with it, before the evaluation
        bar.close()
        self._check_replicas_in_sync()
        self.save_checkpoint()
        if interrupted:
            if self.writer is not None:
                self.writer.close()
            raise TrainingInterrupted(interrupted, self.step, str(self.out / STATE_FILE))
        if cfg.eval_at_end and self.val_set is not None:
            last_eval = self.evaluate(tag="final")
        self.save_model(metrics=last_eval.get("summary") if last_eval else None)
        if self.writer is not None:
            self.writer.close()
        return last_eval

    def _train_loop(self, bar: Any, signals: StopSignal) -> tuple[str | None, dict[str, Any]]:
        """The steps of ``fit``, until the step budget, the time budget or a stop signal ends them.

        Returns the signal's name when a signal ended them (else None) and the last evaluation's
        scores (``eval_every``; empty if none ran).
        """
        cfg = self.cfg
        window: dict[str, float] = {}
        window_steps, bad_steps, empty_steps, transparent_steps = 0, 0, 0, 0
        t_window = t_start = time.perf_counter()
        seconds_before = self.train_seconds
        last_eval: dict[str, Any] = {}
        out_of_time, interrupted = False, None
        self._take_snapshot()
        while self.step < self.total_steps and not out_of_time and not interrupted:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            start, stop = offset * cfg.batch_size, self.steps_per_epoch * cfg.batch_size
            self._epoch_slice.indices = self._epoch_indices(epoch)[start:stop]
            for batch in self._loader():
                result, output, loss_out = self.train_step(batch)
                bad_steps = bad_steps + 1 if result.skipped else 0
                if bad_steps >= MAX_BAD_STEPS:
                    self.save_checkpoint()
                    raise RuntimeError(
                        f"{bad_steps} consecutive steps had a non-finite loss or gradient "
                        f"(last losses {result.losses}); stopped at step {self.step}. Lower "
                        f"the learning rate or check the data"
                    )
                alpha = result.losses.get(ALPHA_METRIC)
                empty_steps = empty_steps + 1 if alpha is not None and alpha < COLLAPSED_ALPHA else 0
                opaque = result.losses.get(OPAQUE_METRIC)
                transparent_steps = (
                    transparent_steps + 1 if opaque is not None and opaque < TRANSPARENT_FRACTION else 0
                )
                self._watch_transparency(transparent_steps, opaque)
                for k, v in result.losses.items():
                    window[k] = window.get(k, 0.0) + v
                window["grad_norm"] = window.get("grad_norm", 0.0) + result.grad_norm
                window["skipped_steps"] = window.get("skipped_steps", 0.0) + float(result.skipped)
                window_steps += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - t_window
                    self._log_scalars(window, window_steps, elapsed, result.lr)
                    bar.set_postfix(loss=f"{window['loss'] / window_steps:.4f}", lr=f"{result.lr:.2e}")
                    window, window_steps, t_window = {}, 0, time.perf_counter()
                if cfg.image_every and self.step % cfg.image_every == 0 and self.ctx.is_main:
                    self._log_images(batch[0] if isinstance(batch, tuple) else batch, output, loss_out)
                if self.step % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                    last_eval = self.evaluate(tag=f"step{self.step}")
                del output, loss_out
                # Rank 0's clock and rank 0's stop signal decide (the schedule's progress, the stop),
                # in one broadcast, so every rank acts alike at the same step.
                elapsed = seconds_before + time.perf_counter() - t_start
                signalled = STOP_SIGNALS_BY_CODE.index(signals.requested)
                # rank 0's collapse count decides too: ranks see different scenes, and a rank that
                # stopped alone would leave the others waiting in the next all-reduce
                elapsed, signalled, empty = broadcast_values(
                    self.ctx, (elapsed, float(signalled), float(empty_steps))
                )
                if empty >= COLLAPSE_PATIENCE:
                    last = float("nan") if alpha is None else alpha
                    if self.recoveries >= COLLAPSE_RECOVERIES:
                        self.save_checkpoint()
                        raise RuntimeError(
                            f"training collapsed: the model has rendered almost nothing (mean alpha "
                            f"< {COLLAPSED_ALPHA}, last {last:.2e}) for {int(empty)} steps; stopped at "
                            f"step {self.step} after {self.recoveries} rollback(s) with a new warm-up "
                            f"(checkpoint saved). Its opacities went to zero and the loss no "
                            f"longer reaches them: lower the learning rate (--lr) or lengthen the "
                            f"warm-up (--warmup-steps, --warmup-fraction)"
                        )
                    self.train_seconds = elapsed
                    self._recover_from_collapse(onset=self.step - int(empty) + 1, alpha=last)
                    empty_steps = 0
                    break
                if empty == 0 and self.step % SNAPSHOT_EVERY == 0:
                    # rank 0's count, as for the collapse: every rank keeps the same snapshot steps
                    self._take_snapshot()
                self.train_seconds = elapsed
                interrupted = STOP_SIGNALS_BY_CODE[int(signalled)]
                if cfg.max_minutes is not None:
                    out_of_time = self.train_seconds > 60.0 * cfg.max_minutes
                    if out_of_time and self.ctx.is_main:
                        print(
                            f"\nstopping at step {self.step}: --max-minutes {cfg.max_minutes} reached",
                            flush=True,
                        )
                if self.step >= self.total_steps or out_of_time or interrupted:
                    break
        return interrupted, last_eval

    def _take_snapshot(self) -> None:
        """Keep a host copy of the trainable weights and the optimizer state at this (healthy) step;
        enough of them to reach back COLLAPSE_PATIENCE + SNAPSHOT_MARGIN steps."""
        keep = (COLLAPSE_PATIENCE + SNAPSHOT_MARGIN) // SNAPSHOT_EVERY + 2
        if self._snapshots and self._snapshots[-1].step == self.step:
            return
        self._snapshots.append(Snapshot.take(self.step, self.params, self.optimizer, self.scaler))
        del self._snapshots[:-keep]

    def _watch_transparency(self, streak: int, opaque: float | None) -> None:
        """Warn once when the last ``streak`` steps (COLLAPSE_PATIENCE or more) kept fewer than
        TRANSPARENT_FRACTION of the Gaussians visible, and say so when the run comes back (a loss
        without the metric, ``opaque`` None, ends nothing)."""
        if streak == COLLAPSE_PATIENCE and self.transparent_since is None:
            self.transparent_since = self.step - streak + 1
            if self.ctx.is_main:
                print(
                    f"\nwarning: partial collapse: for {streak} steps (since step {self.transparent_since}) "
                    f"fewer than {TRANSPARENT_FRACTION:.0%} of the Gaussians had opacity > {OPAQUE_OPACITY} "
                    f"(now {opaque:.1%}; trained healthy models keep 86-94 %). Its maps will be mostly "
                    "empty unless it recovers: consider stopping it and lowering --lr or dropping the "
                    "last option added (docs/training.md, 'A partial collapse is flagged')",
                    flush=True,
                )
        elif streak == 0 and opaque is not None and self.transparent_since is not None:
            if self.ctx.is_main:
                print(
                    f"\nthe partial collapse since step {self.transparent_since} ended at step {self.step} "
                    f"({opaque:.1%} of the Gaussians visible again)",
                    flush=True,
                )
            self.transparent_since = None

    def _recover_from_collapse(self, onset: int, alpha: float) -> None:
        """Go back to the newest snapshot at least SNAPSHOT_MARGIN steps before ``onset`` (the first
        step of the collapse; the oldest snapshot if none is that old) and warm the learning rate up
        again from there (``rewarm_factor``), to half the rate from the second recovery on.
        Every rank does the same (the decision is rank 0's, broadcast), from identical DDP weights."""
        older = [s for s in self._snapshots if s.step <= onset - SNAPSHOT_MARGIN]
        snapshot = older[-1] if older else self._snapshots[0]
        collapsed_at = self.step
        snapshot.restore(self.params, self.optimizer, self.scaler)
        self._snapshots = [s for s in self._snapshots if s.step <= snapshot.step]
        self.step = snapshot.step
        self.recoveries += 1
        self.rewarm_from = snapshot.step
        if self.ctx.is_main:
            print(
                f"\ntraining collapsed at step {collapsed_at} (mean alpha < {COLLAPSED_ALPHA} since step "
                f"{onset}, last {alpha:.2e}): back to the snapshot of step {snapshot.step}, the learning "
                f"rate warmed up again over {RECOVERY_WARMUP} steps to x{self.lr_scale:g} of the "
                f"schedule (recovery {self.recoveries} of {COLLAPSE_RECOVERIES})",
                flush=True,
            )
            if self.writer is not None:
                self.writer.add_scalar("optim/lr_scale", self.lr_scale, collapsed_at)
                self.writer.add_scalar("optim/collapse_recoveries", self.recoveries, collapsed_at)

    def _check_replicas_in_sync(self) -> None:
        """DDP keeps every rank's weights identical; verify it (a cheap checksum per rank) so that a
        broken set-up fails loudly instead of saving rank 0's diverged copy."""
        if not self.ctx.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            checksum = torch.stack([p.detach().double().sum() for p in self.params]).sum().reshape(1)
        dev = self.device if self.ctx.backend == "nccl" else torch.device("cpu")
        sums = [torch.zeros(1, dtype=torch.float64, device=dev) for _ in range(self.ctx.world_size)]
        dist.all_gather(sums, checksum.to(dev))
        values = [float(s) for s in sums]
        if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
            raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {values}")

    # --- logging ----------------------------------------------------------------------------------

    def _log_scalars(self, window: dict[str, float], steps: int, elapsed: float, lr: float) -> None:
        keys = sorted(window)
        values = torch.tensor(
            [window[k] / steps for k in keys],
            dtype=torch.float64,
            device=self.device if self.ctx.backend == "nccl" else "cpu",
        )
        values = all_reduce_mean(self.ctx, values).cpu()
        if self.writer is None:
            return
        for k, v in zip(keys, values.tolist()):
            group = "train" if k not in ("grad_norm", "skipped_steps") else "optim"
            self.writer.add_scalar(f"{group}/{k}", v, self.step)
        self.writer.add_scalar("optim/lr", lr, self.step)
        scenes = steps * self.cfg.batch_size * self.ctx.world_size
        self.writer.add_scalar("speed/scenes_per_s", scenes / max(elapsed, 1e-9), self.step)
        per_process = scenes / max(elapsed, 1e-9) / self.ctx.world_size
        self.writer.add_scalar("speed/scenes_per_s_per_process", per_process, self.step)
        self.writer.add_scalar("speed/s_per_step", elapsed / steps, self.step)

    @torch.no_grad()
    def _log_images(self, batch: CameraBatch, output, loss_out=None) -> None:
        """Rendered vs target depth and features (PCA colours) of the first scene, first 3 views.

        Uses what the loss rendered and compared (the last layer at the loss' render resolution,
        PCA-reduced features, the depth target after its limit handling) when the loss keeps it;
        otherwise renders the last layer here.
        """
        from gausstr_core.evaluation.visualize import depth_to_rgb, hstack_images, pca_rgb

        views = min(3, batch.num_views)
        rendered = getattr(loss_out, "rendered", None)
        if rendered is not None:
            depth_r = rendered.expected_depth()[0]
            feats_r = rendered.features[0]
            target_depth = getattr(loss_out, "target_depth", None)
            target_feats = getattr(loss_out, "target_features", None)
            target_depth = target_depth[0] if target_depth is not None else None
            target_feats = target_feats[0] if target_feats is not None else None
        else:
            from gausstr_core.render import render_gaussians

            batch = batch.to(self.device)
            g = output.final.detach().select(0).to(torch.float32)
            r = render_gaussians(
                g,
                batch.input_intrinsics()[:1, :views].float(),
                batch.cam_to_ego[:1, :views].float(),
                batch.image_size,
            )
            depth_r, feats_r = r.expected_depth()[0], r.features[0]
            target_depth = batch.depth[0] if batch.depth is not None else output.depth[0]
            target_feats = output.target_features[0] if output.target_features is not None else None
        rows_depth, rows_feat = [], []
        for v in range(views):
            panels = [depth_r[v].float()]
            if target_depth is not None:
                panels.append(target_depth[v].float())
            ref = panels[-1]
            valid = ref[(ref > 0.01) & torch.isfinite(ref)]
            dmax = float(torch.quantile(valid, 0.99)) if valid.numel() else 50.0
            rows_depth.append(hstack_images([depth_to_rgb(p, dmax) for p in panels]))
            if target_feats is not None and feats_r.shape[1] == target_feats.shape[1]:
                rgb_t, rgb_r = pca_rgb([target_feats[v].float(), feats_r[v].float()], reference=0)
                rows_feat.append(hstack_images([rgb_r, rgb_t]))
        self.writer.add_image("depth/rendered_vs_target", torch.cat(rows_depth, 1), self.step)
        if rows_feat:
            self.writer.add_image("features/rendered_vs_target_pca", torch.cat(rows_feat, 1), self.step)

    # --- evaluation -------------------------------------------------------------------------------

    def eval_categories(self) -> list[str]:
        from gausstr_core.train.data import categories_for

        return categories_for(self.val_set if self.val_set is not None else self.train_set)

    def evaluate(self, tag: str) -> dict[str, Any]:
        """Zero-shot occupancy metrics of the current model on the validation set (all ranks take a
        share; rank 0 writes ``eval/<tag>/`` and TensorBoard scalars)."""
        from gausstr_core.evaluation.runner import evaluate_model

        if self.val_set is None:
            return {}
        result = evaluate_model(
            self.model,
            self.model_config,
            self.val_set,
            self.eval_categories(),
            self.ctx,
            out_dir=self.out / "eval" / tag if self.ctx.is_main else None,
            max_scenes=self.cfg.eval_scenes or None,
            amp=self.cfg.amp,
        )
        if self.ctx.is_main:
            summary = result["summary"]
            self.history.append({"step": self.step, "tag": tag, **summary})
            if self.writer is not None:
                for k in ("miou", "iou", "miou_zero_shot", "rayiou"):
                    if summary.get(k) is not None:
                        self.writer.add_scalar(f"val/{k}", summary[k], self.step)
            print(
                f"[{tag}] step {self.step}: IoU {summary.get('iou')} mIoU {summary.get('miou')}", flush=True
            )
        return result


def _loss_terms(loss_out) -> dict[str, torch.Tensor]:
    """The loss module's scalars as a dict with a "loss" total (dict or dataclass outputs)."""
    if isinstance(loss_out, dict):
        terms = loss_out
    elif hasattr(loss_out, "terms"):
        terms = loss_out.terms
    else:
        raise TypeError(f"the loss returned {type(loss_out).__name__}; expected a dict with 'loss'")
    if "loss" not in terms:
        raise KeyError(f"the loss output has no 'loss' total; terms: {sorted(terms)}")
    return {k: v for k, v in terms.items() if isinstance(v, torch.Tensor) and v.dim() == 0}


# Fields that may change when a run is resumed (they do not change what is computed).
RESUMABLE_CHANGES = (
    "max_steps",
    "max_minutes",
    "epochs",
    "log_every",
    "image_every",
    "checkpoint_every",
    "eval_every",
    "eval_scenes",
    "eval_at_end",
    "num_workers",
    "device",
    "threads",
    "out",
)


def export_training_state(run_dir: str | Path, command: str = "") -> Path:
    """The model of a run's saved training state (``<run_dir>/checkpoints/last.pt``) as a deployment
    checkpoint, ``<run_dir>/model_step<N>.safetensors``.

    For a run stopped before its schedule ended (a deadline's SIGINT, a lost machine): the state has
    the weights, but only a finished run writes ``model.safetensors``. The metadata says which step,
    how many training minutes of how many planned, and how it was trained; the vocabulary comes from
    the run's training data as in ``Trainer.save_model`` (so the data must be where it was).
    """
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.train.data import build_dataset, categories_for, save_deployment_checkpoint

    run_dir = Path(run_dir)
    state = load_state(run_dir / STATE_FILE)
    cfg = saved_train_config(state)
    model_config = config_from_yaml(state["model_config"])
    model = GaussTR(model_config.model)
    model.load_state_dict(state["model"])
    step, minutes = int(state["step"]), float(state.get("train_seconds", 0.0)) / 60
    dataset = build_dataset(cfg.data, cfg.train_split, model_config, training=False)
    path = run_dir / f"model_step{step}.safetensors"
    save_deployment_checkpoint(
        model,
        model_config,
        path,
        step=step,
        metrics=None,
        vocabulary=categories_for(dataset),
        training={
            "command": command,
            "train_config": to_dict(cfg),
            "train_minutes": round(minutes, 2),
            "exported_from_state": {
                "step": step,
                "train_minutes": round(minutes, 2),
                "planned_minutes": cfg.max_minutes,
                "max_steps": cfg.max_steps,
            },
            "collapse_recoveries": state.get("recoveries", 0),
            "mostly_transparent_since_step": state_step(state, "transparent_since"),
        },
    )
    return path


def saved_train_config(state: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a training state was written with."""
    import yaml

    return train_config_from_dict(yaml.safe_load(state["train_config"]))


def check_resumable(requested: TrainConfig, state: dict[str, Any]) -> None:
    """Raise if ``requested`` changes what the saved run computes (only RESUMABLE_CHANGES may differ)."""
    saved = saved_train_config(state)
    changed = [
        k
        for k in saved.__dataclass_fields__
        if k not in RESUMABLE_CHANGES and getattr(saved, k) != getattr(requested, k)
    ]
    if changed:
        detail = ", ".join(f"{k}: {getattr(saved, k)!r} -> {getattr(requested, k)!r}" for k in changed[:4])
        raise ValueError(
            f"cannot resume with a different configuration ({detail}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change. Use a new --out to start a new run"
        )


def main_worker(cfg: TrainConfig, resume: bool = False, command: str | None = None) -> dict[str, Any]:
    """Entry point of one (torchrun) process; ``command`` is recorded in the deployment checkpoint."""
    from gausstr_core.train.distributed import cleanup

    ctx = init_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, ctx, resume=resume, command=command)
        result = trainer.fit()
    finally:
        cleanup(ctx)
    if ctx.is_main and result:
        print(json.dumps(result.get("summary", {}), indent=1))
    return result


__all__ = ["Trainer", "autocast_dtype", "main_worker", "step_seed"]
