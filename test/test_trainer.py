"""The trainer in-process with the real tiny GaussTR on small deterministic random scenes: outputs,
exact resume, evaluation and the deployment checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Dataset

from gausstr_core.data.batch import CameraBatch
from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_core.data.transforms import resize_matrix
from gausstr_core.train.config import TrainConfig, build_model_config
from gausstr_core.train.distributed import DistributedContext
from gausstr_core.train.trainer import STATE_FILE, Trainer

SIZE = (48, 88)
OVERRIDES = ["model.image_size=[48, 88]", "loss.pca_dims=16", "model.decoder.queries_per_view=8"]


class RandomScenes(Dataset):
    """Deterministic random scenes (images, nuScenes-like cameras, smooth depth, 64-d features)."""

    def __init__(self, n: int, with_ground_truth: bool = False, offset: int = 0):
        self.n, self.gt, self.offset = n, with_ground_truth, offset
        rig = nuscenes_rig()
        self.k, self.c2e = rig.intrinsics(), rig.cam_to_ego()
        self.aug = resize_matrix(rig.image_size, SIZE)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(1000 + i + self.offset)
        h, w = SIZE
        depth = torch.nn.functional.interpolate(
            4 + 30 * torch.rand(6, 1, 3, 5, generator=g), size=SIZE, mode="bilinear", align_corners=False
        )[:, 0]
        batch = CameraBatch(
            images=torch.rand(1, 6, 3, h, w, generator=g),
            intrinsics=self.k[None],
            cam_to_ego=self.c2e[None],
            image_aug=self.aug.expand(1, 6, 3, 3).clone(),
            depth=depth[None],
            features=torch.randn(1, 6, 64, h // 8, w // 8, generator=g),
        )
        if not self.gt:
            return batch
        sem = torch.full((1, 200, 200, 16), 17, dtype=torch.uint8)
        sem[0, 90:110, 90:110, 2] = 11
        mask = torch.ones(1, 200, 200, 16, dtype=torch.bool)
        return batch, SimpleNamespace(semantics=sem, mask_camera=mask)


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        preset="tiny",
        out=str(tmp_path),
        max_steps=6,
        epochs=100,
        lr=1e-3,
        warmup_steps=2,
        decay_epochs=(1.0,),
        checkpoint_every=3,
        log_every=2,
        image_every=3,
        eval_at_end=False,
        overrides=list(OVERRIDES),
        threads=1,
        device="cpu",
        amp="off",
    )
    base.update(kw)
    return TrainConfig(**base)


def _trainer(cfg: TrainConfig, resume: bool = False, val=None) -> Trainer:
    return Trainer(
        cfg,
        DistributedContext(),
        build_model_config(cfg),
        train_set=RandomScenes(4),
        val_set=val,
        resume=resume,
    )


def test_fit_writes_checkpoints_tensorboard_and_a_loadable_model(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gausstr_core.inference import OccupancyPredictor

    cfg = _cfg(tmp_path, eval_at_end=True, eval_scenes=1)
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
    state = trainer.model.state_dict()
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(_cfg(tmp_path / "a"))
    straight.fit()
    first = _trainer(_cfg(tmp_path / "b", max_steps=3))
    first.fit()
    resumed = _trainer(_cfg(tmp_path / "b", max_steps=6), resume=True)
    assert resumed.step == 3
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_budget_schedule_in_the_trainer(tmp_path):
    """A step budget: the decay comes at 2/3 of max_steps and a resumed run with the same budget
    continues exactly; a time budget drives the schedule from the training clock."""
    budget = dict(schedule="budget", decay_fractions=(2 / 3,), warmup_steps=0, warmup_fraction=0.0)
    straight = _trainer(_cfg(tmp_path / "a", **budget))
    factors = []
    for _ in range(straight.total_steps):
        factors.append(straight.lr_factor())
        straight.step += 1
    assert factors == [1.0] * 4 + [pytest.approx(0.1)] * 2  # 6 steps: decay from step 4
    straight.step = 0
    straight.fit()
    first = _trainer(_cfg(tmp_path / "b", **budget))
    first.total_steps = 3  # interrupted halfway (same budget: max_steps stays 6)
    first.fit()
    resumed = _trainer(_cfg(tmp_path / "b", **budget), resume=True)
    assert resumed.step == 3 and resumed.train_seconds > 0
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    timed = _trainer(_cfg(tmp_path / "c", max_steps=1000, max_minutes=10.0, **budget))
    timed.step, timed.train_seconds = 10, 0.5 * 600  # 1 % of the steps, half of the time
    assert timed.progress() == 0.5 and timed.lr_factor() == 1.0
    timed.train_seconds = 0.7 * 600
    assert timed.lr_factor() == pytest.approx(0.1)


def test_resume_refuses_a_changed_configuration(tmp_path):
    _trainer(_cfg(tmp_path, max_steps=3)).fit()
    with pytest.raises(ValueError, match=r"cannot resume with a different configuration.*lr"):
        _trainer(_cfg(tmp_path, max_steps=6, lr=5e-4), resume=True)
