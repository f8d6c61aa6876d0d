"""Learning-rate schedules: linear warm-up, then step decay.

* ``lr_factor`` ("epochs"): the official GaussTR schedule, mmengine ``LinearLR(start_factor=1e-3,
  end=200 iters)`` followed by ``MultiStepLR(milestones=[16] epochs, gamma=0.1)`` over 24 epochs. A
  run cut short by ``max_steps`` or ``max_minutes`` loses its decay (and, when short, most of its
  full-rate phase): fine for the official 24 epochs, wrong for a run that has a budget.
* ``budget_lr_factor`` ("budget"): the same shape placed on the run's *budget* instead of its
  epochs. Progress p in [0, 1] is the larger of steps / total steps and elapsed / allowed training
  time, so a run stopped by either limit still warms up, trains at full rate and decays at the
  same fractions (official proportions: decay at 16/24 = 2/3 of the run).

Both are pure functions of their arguments, applied to the optimizer each step; resuming a run needs
the step number and, for a time budget, the training time already spent (kept in the state).
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


def budget_lr_factor(
    step: int,
    progress: float,
    warmup_steps: int = 200,
    warmup_fraction: float = 0.1,
    warmup_start: float = 1e-3,
    decay_fractions: Sequence[float] = (2 / 3,),
    decay_gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at step ``step`` of a run that has used ``progress`` of
    its budget.

    Warm-up: linear from ``warmup_start`` to 1, complete after ``warmup_steps`` steps or at
    ``warmup_fraction`` of the budget, whichever comes first (a short run is not all warm-up).
    Decay: multiplied by ``decay_gamma`` once for every fraction in ``decay_fractions`` reached.

    Args:
        step: optimizer steps taken so far (>= 0).
        progress: used fraction of the budget (max of the step and time fractions), clipped to [0, 1].
        warmup_steps: warm-up length in steps (0 = none).
        warmup_fraction: warm-up length as a fraction of the budget (0 = only ``warmup_steps``).
        warmup_start: factor at step 0.
        decay_fractions: ascending fractions of the budget in (0, 1] where the rate drops.
        decay_gamma: the step-decay factor.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if list(decay_fractions) != sorted(decay_fractions) or any(not 0 < f <= 1 for f in decay_fractions):
        raise ValueError(f"decay_fractions must be ascending in (0, 1], got {list(decay_fractions)}")
    progress = min(max(float(progress), 0.0), 1.0)
    factor = 1.0
    if warmup_steps > 0 or warmup_fraction > 0:
        done = max(
            step / warmup_steps if warmup_steps > 0 else 0.0,
            progress / warmup_fraction if warmup_fraction > 0 else 0.0,
        )
        factor = warmup_start + (1.0 - warmup_start) * min(1.0, done)
    return factor * decay_gamma ** bisect.bisect_right(list(decay_fractions), progress)
