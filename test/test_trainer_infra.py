"""Trainer infrastructure without a model: schedule, atomic state files, RNG capture, configs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from gausstr_core.train.config import TrainConfig, apply_overrides, load_train_config, train_config_to_yaml
from gausstr_core.train.distributed import DistributedContext, all_reduce_mean, init_distributed
from gausstr_core.train.schedule import budget_lr_factor, lr_factor, set_learning_rate
from gausstr_core.train.state import atomic_torch_save, load_state, rng_state, set_rng_state


def _torch_reference_lrs(steps: int, steps_per_epoch: int, base: float = 2e-4) -> list[float]:
    """The official schedule rebuilt from torch's own schedulers, stepped once per iteration:
    LinearLR(1e-3 -> 1 over 200 iterations) chained with MultiStepLR(x0.1 at epoch 16)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=200),
            torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[16 * steps_per_epoch], gamma=0.1),
        ]
    )
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_schedule_matches_torch_schedulers():
    spe = 30
    ref = _torch_reference_lrs(24 * spe, spe)
    ours = [2e-4 * lr_factor(s, spe) for s in range(24 * spe)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert ours[0] == pytest.approx(2e-7) and ours[200] == pytest.approx(2e-4)
    assert ours[16 * spe - 1] == pytest.approx(2e-4) and ours[16 * spe] == pytest.approx(2e-5)


def test_schedule_edges_and_errors():
    assert lr_factor(0, 10, warmup_steps=0) == 1.0
    assert lr_factor(4, 10, warmup_steps=0, decay_epochs=(0.5, 1.0), decay_gamma=0.5) == 1.0
    assert lr_factor(7, 10, warmup_steps=0, decay_epochs=(0.5, 1.0), decay_gamma=0.5) == 0.5
    assert lr_factor(15, 10, warmup_steps=0, decay_epochs=(0.5, 1.0), decay_gamma=0.5) == 0.25
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_factor(0, 0)
    with pytest.raises(ValueError, match="ascending"):
        lr_factor(0, 10, decay_epochs=(3, 1))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW(
        [{"params": [p], "lr": 1.0}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2.0}]
    )
    set_learning_rate(opt, [1.0, 2.0], 0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]


def test_budget_schedule_keeps_its_phases_whatever_ends_the_run():
    """The budget schedule places warm-up, full rate and decay on the run's budget: a 768-step run and
    a 10,000-step run both decay at 2/3 and both spend most of the run at the full rate."""
    for total in (60, 768, 10_000):
        factors = [budget_lr_factor(s, s / total) for s in range(total)]
        full = sum(f == 1.0 for f in factors)
        decayed = [s for s, f in enumerate(factors) if f == pytest.approx(0.1)]
        assert decayed[0] == math.ceil(total * 2 / 3), (total, decayed[0])
        assert all(f == pytest.approx(0.1) for f in factors[decayed[0] :])
        # warm-up: 200 steps or 10 % of the run, whichever is shorter
        warm = min(200, math.ceil(0.1 * total))
        assert factors[0] == pytest.approx(1e-3) and factors[warm] == 1.0 and factors[warm - 1] < 1.0
        assert full == decayed[0] - warm, (total, full)
    # A time budget: progress comes from the clock, not the step count.
    assert budget_lr_factor(10, progress=0.5) == 1.0  # 10 steps, but past the 10 % time warm-up
    assert budget_lr_factor(10, progress=0.7) == pytest.approx(0.1)
    assert budget_lr_factor(5000, progress=2.0) == pytest.approx(0.1)  # clipped to the end
    assert (
        budget_lr_factor(
            0, 0.9, warmup_steps=0, warmup_fraction=0, decay_fractions=(0.5, 0.8), decay_gamma=0.5
        )
        == 0.25
    )
    with pytest.raises(ValueError, match="ascending in"):
        budget_lr_factor(0, 0.1, decay_fractions=(0.8, 0.5))
    with pytest.raises(ValueError, match="ascending in"):
        budget_lr_factor(0, 0.1, decay_fractions=(1.5,))
    for bad in ({"schedule": "cosine"}, {"decay_fractions": (0.0,)}, {"warmup_fraction": 1.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_paper_recipes_use_the_budget_schedule():
    from gausstr_core.presets import recipe

    for name in ("featup", "talk2dino", "tiny"):
        assert recipe(name).schedule == "budget", name
    assert recipe("featup").decay_fractions == (2 / 3,)


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"version": 1, "x": torch.arange(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"version": 1, "x": torch.arange(5)}, path)
    monkeypatch.undo()
    assert torch.equal(load_state(path)["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file left behind


class _NotAllowed:
    """A class a weights_only load must refuse to construct."""

    def __init__(self):
        self.value = 1


def test_load_state_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"version": 1, "obj": _NotAllowed()}, path)
    with pytest.raises(ValueError, match="not a readable training state"):
        load_state(path)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gausstr training state"):
        load_state(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "missing.pt")


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)  # noqa: NPY002
    state = rng_state()
    atomic_torch_save({"version": 1, "rng": state}, tmp_path / "s.pt")
    first = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)  # noqa: NPY002
    set_rng_state(load_state(tmp_path / "s.pt")["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_train_config_validation_yaml_and_overrides(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), max_steps=5, decay_epochs=(1.0, 2.0))
    path = tmp_path / "train.yaml"
    path.write_text(train_config_to_yaml(cfg))
    assert load_train_config(path) == cfg
    path.write_text("lr: 0.1\nbogus: 1\n")
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        load_train_config(path)
    for bad in ({"amp": "fp8"}, {"batch_size": 0}, {"epochs": 0}, {"decay_epochs": (3.0, 1.0)}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    data = {"loss": {"depth_weight": 1.0, "feature_weight": 5.0}, "model": {"embed_dim": 64}}
    out = apply_overrides(data, ["loss.depth_weight=0", "model.embed_dim=32"], "model config")
    assert out["loss"]["depth_weight"] == 0 and out["model"]["embed_dim"] == 32
    assert data["loss"]["depth_weight"] == 1.0  # the input is not modified
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        apply_overrides(data, ["loss.nope=1"], "model config")
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(data, ["loss.depth_weight"], "model config")
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides(data, ["model.embed_dim.x=1"], "model config")


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext() and ctx.is_main and not ctx.distributed
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_mean(ctx, x), x)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            init_distributed("cuda")
