"""Learning-rate schedule: linear warm-up, then step decay (the official GaussTR schedule:
mmengine ``LinearLR(start_factor=1e-3, end=200 iters)`` followed by ``MultiStepLR(milestones=[16]
epochs, gamma=0.1)`` over 24 epochs).

The schedule is a pure function of the step, applied to the optimizer each step; resuming a run
therefore needs nothing but the step number.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


def lr_factor(
    step: int,
    steps_per_epoch: int,
    warmup_steps: int = 200,
    warmup_start: float = 1e-3,
    decay_epochs: Sequence[float] = (16,),
    decay_gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up: mmengine's LinearLR, factor = start + (1 - start) * min(step, warmup) / warmup.
    Decay: multiplied by ``decay_gamma`` once for every milestone epoch already reached; the epoch
    of a step is step / steps_per_epoch (fractional milestones are allowed).

    Args:
        step: optimizer steps taken so far.
        steps_per_epoch: optimizer steps in one epoch (> 0).
        warmup_steps: length of the linear warm-up (0 = none).
        warmup_start: factor at step 0.
        decay_epochs: epochs (ascending) at which the rate is multiplied by ``decay_gamma``.
        decay_gamma: the step-decay factor.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if list(decay_epochs) != sorted(decay_epochs):
        raise ValueError(f"decay_epochs must be ascending, got {list(decay_epochs)}")
    factor = 1.0
    if warmup_steps > 0:
        factor = warmup_start + (1.0 - warmup_start) * min(step, warmup_steps) / warmup_steps
    # Milestones count in whole steps so that float epochs cannot flip a boundary by rounding.
    milestones = [round(e * steps_per_epoch) for e in decay_epochs]
    return factor * decay_gamma ** bisect.bisect_right(milestones, step)


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    """Set every parameter group's lr to its base lr times ``factor``."""
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
