"""The trainer in-process with the real tiny GaussTR on small deterministic random scenes: outputs,
exact resume, evaluation and the deployment checkpoint."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from gausstr_core.presets import build_model_config
from gausstr_core.train.config import TrainConfig
from gausstr_core.train.distributed import DistributedContext
from gausstr_core.train.stop_signal import TrainingInterrupted
from gausstr_core.train.trainer import STATE_FILE, Trainer
from gausstr_testing.training import RandomScenes, train_config


def _trainer(cfg: TrainConfig, resume: bool = False, val=None) -> Trainer:
    return Trainer(
        cfg,
        DistributedContext(),
        build_model_config(cfg),
        train_set=RandomScenes(4),
        val_set=val,
        resume=resume,
    )


def _assert_same_weights(straight: Trainer, resumed: Trainer, what: str) -> None:
    """Every parameter of two trainers' models bitwise equal (``what``: how ``resumed`` got there)."""
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after {what}"


def test_fit_writes_checkpoints_tensorboard_and_a_loadable_model(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gausstr_core.inference.predictor import OccupancyPredictor

    cfg = train_config(tmp_path, eval_at_end=True, eval_scenes=1)
    trainer = _trainer(cfg, val=RandomScenes(2, with_ground_truth=True, offset=50))
    assert trainer.steps_per_epoch == 4 and trainer.total_steps == 6
    result = trainer.fit()
    assert trainer.step == 6
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "train.yaml").is_file() and (tmp_path / "model.yaml").is_file()
    summary = result["summary"]
    assert summary["scenes"] == 1 and summary["iou"] is not None
    assert (tmp_path / "eval" / "final" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "final" / "bev_000.png").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "optim/lr", "optim/grad_norm", "speed/scenes_per_s"} <= set(tags["scalars"])
    assert {"depth/rendered_vs_target", "features/rendered_vs_target_pca"} <= set(tags["images"])
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    predictor = OccupancyPredictor.from_checkpoint(tmp_path / "model.safetensors", device="cpu")
    from gausstr_core.io.checkpoint import load_model_checkpoint

    training = load_model_checkpoint(tmp_path / "model.safetensors")[2]["training"]
    assert training["train_config"]["max_steps"] == 6 and training["train_minutes"] >= 0
    state = trainer.model.state_dict()
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(train_config(tmp_path / "a"))
    straight.fit()
    first = _trainer(train_config(tmp_path / "b", max_steps=3))
    first.fit()
    resumed = _trainer(train_config(tmp_path / "b", max_steps=6), resume=True)
    assert resumed.step == 3
    resumed.fit()
    _assert_same_weights(straight, resumed, "resume")
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_the_state_and_resume_continues_exactly(tmp_path, signum):
    """SIGINT / SIGTERM (a time-boxed machine ending the run) mid-run: the trainer finishes the
    step, saves the state (not the every-3-steps checkpoint: step 2) and stops without a deployment
    model; --resume then ends exactly where an uninterrupted run ends."""
    straight = _trainer(train_config(tmp_path / "a", checkpoint_every=100))
    straight.fit()
    first = _trainer(train_config(tmp_path / "b", checkpoint_every=100))
    step = first.train_step

    def step_then_signal(batch):
        out = step(batch)
        if first.step == 2:
            os.kill(os.getpid(), signum)
        return out

    first.train_step = step_then_signal
    handler_before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name} at step 2") as info:
        first.fit()
    assert info.value.step == 2
    assert torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)["step"] == 2
    assert not (tmp_path / "b" / "model.safetensors").exists()
    assert signal.getsignal(signum) is handler_before, "the trainer left its signal handler installed"
    resumed = _trainer(train_config(tmp_path / "b", checkpoint_every=100), resume=True)
    assert resumed.step == 2
    resumed.fit()
    _assert_same_weights(straight, resumed, "an interrupted and resumed run")


def test_budget_schedule_in_the_trainer(tmp_path):
    """A step budget: the decay comes at 2/3 of max_steps and a resumed run with the same budget
    continues exactly; a time budget drives the schedule from the training clock."""
    budget = dict(schedule="budget", decay_fractions=(2 / 3,), warmup_steps=0, warmup_fraction=0.0)
    straight = _trainer(train_config(tmp_path / "a", **budget))
    factors = []
    for _ in range(straight.total_steps):
        factors.append(straight.lr_factor())
        straight.step += 1
    assert factors == [1.0] * 4 + [pytest.approx(0.1)] * 2  # 6 steps: decay from step 4
    straight.step = 0
    straight.fit()
    first = _trainer(train_config(tmp_path / "b", **budget))
    step = first.train_step

    def killed_after_step_3(batch):  # the run dies after its step-3 checkpoint (same budget)
        if first.step == 3:
            raise RuntimeError("killed")
        return step(batch)

    first.train_step = killed_after_step_3
    with pytest.raises(RuntimeError, match="killed"):
        first.fit()
    resumed = _trainer(train_config(tmp_path / "b", **budget), resume=True)
    assert resumed.step == 3 and resumed.train_seconds > 0
    resumed.fit()
    _assert_same_weights(straight, resumed, "a kill and resume under the budget schedule")

    timed = _trainer(train_config(tmp_path / "c", max_steps=1000, max_minutes=10.0, **budget))
    timed.step, timed.train_seconds = 10, 0.5 * 600  # 1 % of the steps, half of the time
    assert timed.progress() == 0.5 and timed.lr_factor() == 1.0
    timed.train_seconds = 0.7 * 600
    assert timed.lr_factor() == pytest.approx(0.1)


def test_resume_refuses_a_changed_configuration(tmp_path):
    _trainer(train_config(tmp_path, max_steps=3)).fit()
    with pytest.raises(ValueError, match=r"cannot resume with a different configuration.*lr"):
        _trainer(train_config(tmp_path, max_steps=6, lr=5e-4), resume=True)


def test_init_weights_starts_from_a_checkpoint(tmp_path):
    """Fine-tuning: the run starts from the checkpoint's weights and model config (its overrides
    included, so a run given only ``init_weights`` rebuilds the same model), with a fresh optimizer
    and step count; a checkpoint of another shape is refused by name."""
    from gausstr_core.io.checkpoint import CheckpointMismatchError

    first = _trainer(train_config(tmp_path / "a", max_steps=3))
    first.fit()
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    start = str(tmp_path / "a" / "model.safetensors")
    cfg = train_config(tmp_path / "b", max_steps=2, init_weights=start, overrides=[])
    tuned = Trainer(cfg, DistributedContext(), train_set=RandomScenes(4))
    assert tuned.step == 0 and not tuned.optimizer.state
    assert tuned.model_config.model == first.model_config.model
    for k, v in tuned.model.state_dict().items():
        assert torch.equal(v, trained[k]), f"{k} was not loaded from the checkpoint"
    tuned.fit()
    assert tuned.step == 2
    assert any(not torch.equal(v, trained[k]) for k, v in tuned.model.state_dict().items())

    wider = train_config(tmp_path / "c", init_weights=start, overrides=["model.embed_dim=32"])
    with pytest.raises(CheckpointMismatchError, match=r"does not fit the model: \d+ mis-shaped key"):
        Trainer(wider, DistributedContext(), train_set=RandomScenes(4))


def test_init_weights_may_add_a_branch_that_starts_as_a_no_op(tmp_path):
    """A fine-tuning that turns on depth_head.camera_rays starts from a checkpoint without it: the
    checkpoint's tensors load, the new zero-initialised branch keeps its initialisation, and any other
    missing tensor is still an error."""
    from gausstr_core.io.checkpoint import (
        CheckpointMismatchError,
        load_model_checkpoint,
        load_state_dict_strict,
    )

    first = _trainer(train_config(tmp_path / "a", max_steps=2))
    first.fit()
    start = str(tmp_path / "a" / "model.safetensors")
    cfg = train_config(
        tmp_path / "b", max_steps=1, init_weights=start, overrides=["model.depth_head.camera_rays=true"]
    )
    tuned = Trainer(cfg, DistributedContext(), train_set=RandomScenes(4))
    assert tuned.model_config.model.depth_head.camera_rays
    for k, v in first.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[k], v), k
    assert not tuned.model.depth_head.ray_proj.weight.any()
    _, weights, _ = load_model_checkpoint(start)
    del weights["depth_head.blocks.0.bias"]
    with pytest.raises(CheckpointMismatchError, match=r"depth_head\.blocks\.0\.bias"):
        load_state_dict_strict(tuned.model, weights, may_be_missing=tuned.model.neutral_init_prefixes())


def test_train_only_trains_the_named_part_which_may_replace_the_checkpoint_s(tmp_path):
    """``train_only``: a fine-tuning that swaps the neck depth head for ImageDepthNet loads every other
    tensor from the checkpoint, trains only the new head (everything else bitwise unchanged after the
    steps), a part the checkpoint holds exactly is loaded rather than re-initialised, and a name that
    matches no parameter is refused."""
    from gausstr_core.model.image_depth import ImageDepthNet

    first = _trainer(train_config(tmp_path / "a", max_steps=2))
    first.fit()
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    start = str(tmp_path / "a" / "model.safetensors")
    cfg = train_config(
        tmp_path / "b",
        max_steps=3,
        init_weights=start,
        overrides=["model.depth_head.image_width=8"],
        train_only=("depth_head",),
    )
    tuned = Trainer(cfg, DistributedContext(), train_set=RandomScenes(4))
    assert isinstance(tuned.model.depth_head, ImageDepthNet)
    assert all(n.startswith("depth_head.") for n, p in tuned.model.named_parameters() if p.requires_grad)
    initial = {k: v.clone() for k, v in tuned.model.state_dict().items()}
    for k, v in initial.items():
        if not k.startswith("depth_head."):
            assert torch.equal(v, trained[k]), f"{k} was not loaded from the checkpoint"
    tuned.fit()
    after = tuned.model.state_dict()
    for k, v in after.items():
        if not k.startswith("depth_head."):
            assert torch.equal(v, initial[k]), f"{k} changed although only depth_head trains"
    assert any(not torch.equal(v, initial[k]) for k, v in after.items() if k.startswith("depth_head."))

    same = train_config(tmp_path / "c", init_weights=start, overrides=[], train_only=("depth_head",))
    kept = Trainer(same, DistributedContext(), train_set=RandomScenes(4))
    for k, v in kept.model.state_dict().items():
        assert torch.equal(v, trained[k]), f"{k} was re-initialised although the checkpoint holds it"

    with pytest.raises(ValueError, match=r"train_only names no parameter of the model: \['depth'\]"):
        _trainer(train_config(tmp_path / "d", train_only=("depth",)))


def test_export_model_writes_the_saved_states_model(tmp_path, capsys):
    """gausstr-train --export-model: a run's training state becomes a deployment checkpoint with the
    state's weights, step and minutes (for a run a deadline stopped before its schedule ended);
    without a state it is a clear error."""
    import json

    from gausstr_core.io.checkpoint import build_model_from_checkpoint, read_checkpoint_header
    from gausstr_core.train import cli

    run = _trainer(train_config(tmp_path / "a", max_steps=3, checkpoint_every=3))
    run.fit()
    capsys.readouterr()
    assert cli.main(["--out", str(tmp_path / "a"), "--export-model"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "a" / "model_step3.safetensors"
    model, _, _ = build_model_from_checkpoint(path)
    for k, v in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    meta = json.loads(read_checkpoint_header(path)["metadata"])
    assert meta["step"] == 3 and meta["training"]["exported_from_state"]["step"] == 3
    assert meta["training"]["command"].endswith("--export-model") and meta["vocabulary"]
    assert cli.main(["--out", str(tmp_path / "none"), "--export-model"]) == 2
    assert "no training state" in capsys.readouterr().err


def test_one_loader_with_persistent_workers_serves_every_epoch(tmp_path, monkeypatch):
    """Worker processes start once per run, not once per epoch (3 passes here: 4 steps per epoch,
    10 steps, a resumed remainder), and the batches equal those loaded in the training process."""
    from torch.utils.data import DataLoader

    started = []
    original = DataLoader._get_iterator

    def counting(self):
        started.append(self.num_workers)
        return original(self)

    monkeypatch.setattr(DataLoader, "_get_iterator", counting)
    in_process = _trainer(train_config(tmp_path / "a", max_steps=10))
    in_process.fit()
    assert started == [0, 0, 0], started  # without workers every pass builds its (cheap) iterator
    started.clear()
    first = _trainer(train_config(tmp_path / "b", max_steps=5, num_workers=1))
    first.fit()
    workers = _trainer(train_config(tmp_path / "b", max_steps=10, num_workers=1), resume=True)
    workers.fit()
    assert started == [1, 1], f"worker processes started {len(started)} times for 2 runs: {started}"
    assert workers._data_loader is None, "the loader (and its workers) outlived the training loop"
    _assert_same_weights(in_process, workers, "loading in a worker process and a resume")


def _forced_alpha(trainer, empty_when):
    """Wrap the trainer's loss so that its mean-alpha metric reads "rendered nothing" (1e-4) whenever
    ``empty_when(call number from 1)`` is true; returns the list of the real alphas seen."""
    import dataclasses

    from gausstr_core.losses.gausstr import ALPHA_METRIC

    real_loss = trainer.loss_fn
    seen = []

    def loss(output, batch, **kw):
        out = real_loss(output, batch, **kw)
        seen.append(float(out.terms[ALPHA_METRIC]))
        value = out.terms[ALPHA_METRIC]
        if empty_when(len(seen)):
            value = value * 0 + 1e-4
        return dataclasses.replace(out, terms={**out.terms, ALPHA_METRIC: value})

    trainer.loss_fn = loss
    return seen


def test_a_model_that_keeps_rendering_nothing_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    """The collapse guard: COLLAPSE_PATIENCE consecutive steps whose last layer renders (almost)
    nothing are a collapse (seen on the GPU: IoU 0 after 4 minutes). A healthy step resets the count.
    The run goes back to a snapshot with a new warm-up COLLAPSE_RECOVERIES times; a run that
    collapses again after that stops with the reason and a saved checkpoint, instead of training a
    model that maps everything as free."""
    from gausstr_core.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "COLLAPSE_PATIENCE", 3)
    monkeypatch.setattr(trainer_module, "SNAPSHOT_EVERY", 1)
    monkeypatch.setattr(trainer_module, "SNAPSHOT_MARGIN", 0)
    trainer = _trainer(train_config(tmp_path))
    # call 1 dips below the cut, call 2 is healthy (resets the count), every later one renders nothing
    seen = _forced_alpha(trainer, lambda call: call == 1 or call >= 3)
    with pytest.raises(
        RuntimeError, match=r"training collapsed.*for 3 steps; stopped at step 5 after 2 rollback"
    ):
        trainer.fit()
    assert seen[0] > trainer_module.COLLAPSED_ALPHA  # the real model renders plenty
    # steps 3-5 collapsed three times: back to the snapshot of step 2 twice, then stopped
    assert len(seen) == 2 + 3 * 3
    assert trainer.recoveries == 2 and trainer.lr_scale == 0.5 and trainer.rewarm_from == 2
    assert (tmp_path / STATE_FILE).is_file()


def _collapse_and_recover(tmp_path, monkeypatch, **config):
    """A collapse that does not come back: the run continues from the snapshot's weights and
    optimizer state (bitwise) with the learning rate warmed up again from the recipe's start factor,
    to its end; the deployment checkpoint and the resumable state record it."""
    from gausstr_core.io.checkpoint import load_model_checkpoint
    from gausstr_core.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "COLLAPSE_PATIENCE", 2)
    monkeypatch.setattr(trainer_module, "SNAPSHOT_EVERY", 2)
    monkeypatch.setattr(trainer_module, "SNAPSHOT_MARGIN", 1)
    trainer = _trainer(train_config(tmp_path, max_steps=8, **config))
    weights_at = {}
    real_step = trainer.train_step

    def step(batch):
        weights_at.setdefault(
            (trainer.step, trainer.recoveries), [p.detach().clone() for p in trainer.params]
        )
        return real_step(batch)

    trainer.train_step = step
    # steps 5 and 6 (calls 5 and 6) render nothing: a collapse with onset 5 at step 6, back to the
    # newest snapshot at least 1 step before it (step 4), then healthy
    _forced_alpha(trainer, lambda call: call in (5, 6) and trainer.recoveries == 0)
    trainer.fit()
    assert trainer.step == 8 and trainer.recoveries == 1 and trainer.lr_scale == 1.0
    assert trainer.rewarm_from == 4
    for before, after in zip(weights_at[(4, 0)], weights_at[(4, 1)]):
        assert torch.equal(before, after)
    # the optimizer state is back on the parameters' device, and stepping it left the snapshot as it was
    for p in trainer.params:
        for value in trainer.optimizer.state[p].values():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.device == p.device
    # warming up again: at step 8, 5 of RECOVERY_WARMUP steps from the recipe's start factor
    start = trainer.cfg.warmup_start
    expected = start + (1 - start) * 5 / trainer_module.RECOVERY_WARMUP
    assert trainer.rewarm_factor() == pytest.approx(expected)
    training = load_model_checkpoint(tmp_path / "model.safetensors")[2]["training"]
    assert training["collapse_recoveries"] == 1 and training["rewarm_from_step"] == 4
    resumed = _trainer(train_config(tmp_path, max_steps=8, **config), resume=True)
    assert resumed.recoveries == 1 and resumed.rewarm_from == 4 and resumed.lr_scale == 1.0


def test_a_collapsed_run_goes_back_to_a_snapshot_and_warms_up_again(tmp_path, monkeypatch):
    _collapse_and_recover(tmp_path, monkeypatch)


def test_a_run_whose_gaussians_go_transparent_is_flagged_in_the_log_and_the_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """The partial-collapse watch: COLLAPSE_PATIENCE steps with fewer than TRANSPARENT_FRACTION of
    the last layer's Gaussians visible print one warning naming the first such step, which the
    checkpoint's metadata and the resumable state keep; a visible step again ends it, with a note.
    The run itself goes on (a warning, not a stop). The metric is the real model's fraction."""
    import dataclasses

    from gausstr_core.io.checkpoint import load_model_checkpoint
    from gausstr_core.losses.gausstr import OPAQUE_METRIC
    from gausstr_core.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "COLLAPSE_PATIENCE", 2)
    trainer = _trainer(train_config(tmp_path, max_steps=6))
    real_loss = trainer.loss_fn
    seen = []

    def loss(output, batch, **kw):
        out = real_loss(output, batch, **kw)
        real = float(out.terms[OPAQUE_METRIC])
        expected = float((output.gaussians[-1].opacities > 0.05).float().mean())
        seen.append((real, expected))
        value = out.terms[OPAQUE_METRIC]
        if len(seen) in (2, 3, 4):  # steps 2-4 keep 10 % visible: flagged at step 3, since step 2
            value = value * 0 + 0.1
        return dataclasses.replace(out, terms={**out.terms, OPAQUE_METRIC: value})

    trainer.loss_fn = loss
    trainer.fit()
    log = capsys.readouterr().out
    assert all(real == pytest.approx(expected) for real, expected in seen), seen
    assert seen[0][0] > trainer_module.TRANSPARENT_FRACTION  # the initial Gaussians are all visible
    assert log.count("warning: partial collapse") == 1 and "since step 2" in log
    assert "the partial collapse since step 2 ended at step 5" in log
    assert trainer.step == 6 and trainer.transparent_since is None
    # a run that ends while flagged keeps the step in its checkpoint and its resumable state
    monkeypatch.setattr(trainer_module, "TRANSPARENT_FRACTION", 1.01)  # every step is "transparent"
    flagged = _trainer(train_config(tmp_path / "f", max_steps=3))
    flagged.fit()
    training = load_model_checkpoint(tmp_path / "f" / "model.safetensors")[2]["training"]
    assert training["mostly_transparent_since_step"] == 1
    exported = load_model_checkpoint(trainer_module.export_training_state(tmp_path / "f"))[2]["training"]
    assert exported["mostly_transparent_since_step"] == 1
    capsys.readouterr()
    resumed = _trainer(train_config(tmp_path / "f", max_steps=3), resume=True)
    assert resumed.transparent_since == 1
    assert "resuming a partial collapse: most Gaussians transparent since step 1" in capsys.readouterr().out


@pytest.mark.gpu
def test_a_collapsed_run_recovers_on_cuda_with_bf16(tmp_path, monkeypatch):
    """The same on the GPU: host snapshots of CUDA parameters and optimizer state go back to the
    device, under bf16 autocast."""
    _collapse_and_recover(tmp_path, monkeypatch, device="cuda", amp="bf16", threads=0)


def test_the_trainer_hands_its_progress_to_the_loss_so_a_late_term_starts_on_time(tmp_path):
    """loss.centered_feature_start: off for the steps before that fraction of the run, on after."""
    from gausstr_testing.training import OVERRIDES

    overrides = [*OVERRIDES, "loss.centered_feature_weight=1", "loss.centered_feature_start=0.5"]
    trainer = _trainer(train_config(tmp_path, overrides=overrides))
    real_loss = trainer.loss_fn
    calls = []  # (progress, centred term present) per step

    def loss(output, batch, **kw):
        out = real_loss(output, batch, **kw)
        calls.append((kw["progress"], "layer0/feature_centered" in out.terms))
        return out

    trainer.loss_fn = loss
    trainer.fit()
    assert [round(p, 3) for p, _ in calls] == [round(i / 6, 3) for i in range(6)]
    assert [on for _, on in calls] == [False, False, False, True, True, True], calls


def test_the_trainer_trains_the_segmentation_heads_on_the_batches_2d_labels(tmp_path):
    """The featup auxiliary head: batches with labels feed the loss's segmentation term, and the
    heads' weights move; a model without heads ignores the labels."""
    import dataclasses

    from gausstr_testing.training import OVERRIDES

    class LabelledScenes(RandomScenes):
        def __getitem__(self, i):
            batch = super().__getitem__(i)
            g = torch.Generator().manual_seed(i)
            labels = torch.randint(0, 5, (1, *batch.images.shape[1:2], *batch.image_size), generator=g)
            return dataclasses.replace(batch, segmentation=labels)

    overrides = [*OVERRIDES, "model.head.segment_classes=5", "model.head.segment_input_dim=16"]
    cfg = train_config(tmp_path, overrides=overrides, max_steps=2)
    trainer = Trainer(cfg, DistributedContext(), build_model_config(cfg), train_set=LabelledScenes(4))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "segment" in k}
    assert before, "the model should have segmentation heads"
    trainer._epoch_slice.indices = [0]
    result, _, _ = trainer.train_step(next(iter(trainer._loader())))
    assert result.losses["layer0/segmentation"] > 0 and not result.skipped
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the segmentation heads did not train"

    plain = train_config(tmp_path / "plain", max_steps=1)
    trainer = Trainer(plain, DistributedContext(), build_model_config(plain), train_set=LabelledScenes(4))
    trainer._epoch_slice.indices = [0]
    result, _, _ = trainer.train_step(next(iter(trainer._loader())))
    assert not any("segmentation" in k for k in result.losses)
