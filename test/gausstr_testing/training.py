"""Training helpers for tests: small deterministic random scenes and a quick tiny-preset TrainConfig."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import Dataset

from gausstr_core.batch import CameraBatch
from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_core.data.transforms import resize_matrix
from gausstr_core.train.config import TrainConfig

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


def train_config(tmp_path, **kw) -> TrainConfig:
    """A 6-step tiny run on the CPU at 48 x 88 writing into ``tmp_path`` (``kw`` overrides fields)."""
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
