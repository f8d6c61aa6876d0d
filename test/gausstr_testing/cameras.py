"""Camera batches for tests: rigs of outward-looking cameras and a single camera facing a wall."""

from __future__ import annotations

import math

import torch

from gausstr_core.batch import CameraBatch
from gausstr_core.data.transforms import resize_matrix


def rig(b: int, v: int, h: int, w: int, seed: int = 0) -> CameraBatch:
    """B scenes of V cameras looking outward around the ego z axis, with depth and features."""
    g = torch.Generator().manual_seed(seed)
    orig = (2 * h, 2 * w)  # original images twice the input size: image_aug is a real resize
    k = torch.tensor([[0.6 * orig[1], 0.0, orig[1] / 2], [0.0, 0.6 * orig[1], orig[0] / 2], [0.0, 0.0, 1.0]])
    cam_to_ego = torch.zeros(v, 4, 4)
    for i in range(v):
        yaw = 2 * math.pi * i / v
        forward = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        left = torch.tensor([-math.sin(yaw), math.cos(yaw), 0.0])
        up = torch.tensor([0.0, 0.0, 1.0])
        # camera x right = -left, y down = -up, z forward
        cam_to_ego[i, :3, :3] = torch.stack([-left, -up, forward], dim=1)
        cam_to_ego[i, :3, 3] = torch.tensor([1.0, 0.0, 1.6]) + 0.5 * forward
        cam_to_ego[i, 3, 3] = 1
    aug = resize_matrix(orig, (h, w))
    return CameraBatch(
        images=torch.rand(b, v, 3, h, w, generator=g),
        intrinsics=k.expand(b, v, 3, 3).clone(),
        cam_to_ego=cam_to_ego.expand(b, v, 4, 4).clone(),
        image_aug=aug.expand(b, v, 3, 3).clone(),
        depth=torch.rand(b, v, h, w, generator=g) * 60 + 1.0,  # beyond the 51.2 m limit too
        features=torch.randn(b, v, 64, h // 8, w // 8, generator=g),
    )


def front_camera_batch(depth_value: float, feature: torch.Tensor, h: int = 20, w: int = 30) -> CameraBatch:
    """One camera at the ego origin looking along +x (optical z = ego x), a flat wall at depth."""
    cam_to_ego = torch.eye(4)
    cam_to_ego[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cam_to_ego[2, 3] = 1.5
    k = torch.tensor([[20.0, 0, (w - 1) / 2], [0, 20.0, (h - 1) / 2], [0, 0, 1]])
    feats = feature[None, None, :, None, None].expand(1, 1, -1, 4, 6).clone()
    return CameraBatch(
        images=torch.zeros(1, 1, 3, h, w),
        intrinsics=k[None, None],
        cam_to_ego=cam_to_ego[None, None],
        image_aug=CameraBatch.identity_aug(1, 1),
        depth=torch.full((1, 1, h, w), depth_value),
        features=feats,
    )
