"""The trainer and the evaluation pieces on a CUDA GPU (skipped without one): bf16 autocast training
of the tiny model with the gsplat renderer, checkpoint/resume, and CPU/GPU agreement of the metrics
and the depth-unprojection baseline."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gausstr_core.presets import build_model_config
from gausstr_core.train.distributed import DistributedContext
from gausstr_core.train.trainer import STATE_FILE, Trainer, autocast_dtype

pytestmark = pytest.mark.gpu


def test_bf16_training_on_cuda_and_resume(tmp_path):
    from gausstr_testing.training import RandomScenes, train_config

    ctx = DistributedContext(device=torch.device("cuda", 0))
    assert autocast_dtype("auto", ctx.device) == torch.bfloat16
    cfg = train_config(
        tmp_path, device="cuda", amp="auto", max_steps=4, checkpoint_every=2, eval_at_end=True, eval_scenes=1
    )
    trainer = Trainer(
        cfg,
        ctx,
        build_model_config(cfg),
        train_set=RandomScenes(4),
        val_set=RandomScenes(1, with_ground_truth=True, offset=50),
    )
    result = trainer.fit()
    assert trainer.step == 4 and result["summary"]["scenes"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    longer = dataclasses.replace(cfg, max_steps=6, eval_at_end=False)
    resumed = Trainer(longer, ctx, build_model_config(longer), train_set=RandomScenes(4), resume=True)
    assert resumed.step == 4
    resumed.fit()
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / "model.safetensors").is_file()


def test_metrics_and_baseline_agree_between_cpu_and_cuda():
    from gausstr_core.evaluation.baselines import depth_unprojection
    from gausstr_core.evaluation.metrics import confusion_matrix
    from gausstr_core.grid import VoxelGrid
    from gausstr_testing.cameras import front_camera_batch

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 18, (2, 50, 50, 8), generator=g)
    gt = torch.randint(0, 18, (2, 50, 50, 8), generator=g)
    mask = torch.rand(2, 50, 50, 8, generator=g) > 0.5
    on_gpu = confusion_matrix(pred.cuda(), gt.cuda(), 18, mask.cuda())
    assert torch.equal(on_gpu, confusion_matrix(pred, gt, 18, mask))
    protos = torch.eye(4, 8)
    # 12.1 m (not 12.0) keeps every unprojected point off voxel boundaries, where the last bit of
    # CPU and CUDA arithmetic may legitimately pick different voxels.
    batch = front_camera_batch(12.1, protos[1] * 2 + 0.3 * protos[3])
    cpu = depth_unprojection(batch, protos, VoxelGrid())
    gpu = depth_unprojection(batch.to("cuda"), protos.cuda(), VoxelGrid())
    assert torch.equal(gpu.cpu(), cpu)
