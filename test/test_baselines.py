"""Trivial baselines: all-free and depth unprojection with nearest-prototype labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gausstr_core.batch import CameraBatch
from gausstr_core.evaluation.baselines import InitialGaussians, all_free, depth_unprojection, pixel_labels
from gausstr_core.grid import VoxelGrid
from gausstr_testing.cameras import front_camera_batch


def _naive_pixel_labels(features, prototypes, out_size, prompt_classes):
    """Reference: upsample the features themselves, cosine to every prompt, max per class, argmax."""
    up = F.interpolate(features.float(), size=out_size, mode="bilinear", align_corners=False)
    cos = torch.einsum("vchw,pc->vphw", F.normalize(up, dim=1), F.normalize(prototypes, dim=-1))
    k = int(prompt_classes.max()) + 1
    per_class = torch.stack([cos[:, prompt_classes == c].amax(1) for c in range(k)], 1)
    return per_class.argmax(1)


def test_pixel_labels_match_naive_reference():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 16, 6, 10, generator=g)
    protos = torch.randn(7, 16, generator=g)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    ours = pixel_labels(feats, protos, (24, 40), groups)
    ref = _naive_pixel_labels(feats, protos, (24, 40), groups)
    assert ours.shape == (3, 24, 40)
    assert (ours == ref).float().mean() > 0.999  # exact up to float ties
    ident = pixel_labels(feats, protos[:4], (6, 10))
    assert torch.equal(ident, _naive_pixel_labels(feats, protos[:4], (6, 10), torch.arange(4)))


def test_depth_unprojection_marks_the_wall_with_the_nearest_prototype():
    grid = VoxelGrid()
    protos = torch.eye(4, 8)
    batch = front_camera_batch(10.0, protos[2] * 3 + 0.1 * protos[1])
    pred = depth_unprojection(batch, protos, grid)
    assert pred.shape == (1, *grid.shape) and pred.dtype == torch.uint8
    occupied = (pred[0] != 4).nonzero()
    assert len(occupied) > 0 and (pred[0][pred[0] != 4] == 2).all()
    # The wall is at ego x = 10 m: voxel index (10 + 40) / 0.4 = 125.
    assert set(occupied[:, 0].tolist()) == {125}
    # z spans 1.5 m +- 10 * (h/2)/f = +-5 m, clipped by the grid's [-1, 5.4] m
    assert occupied[:, 2].min() == 0 and occupied[:, 2].max() == 15
    # Invalid depth (0) contributes nothing.
    batch.depth.zero_()
    assert (depth_unprojection(batch, protos, grid) == 4).all()


def test_majority_vote_and_groups():
    grid = VoxelGrid()
    protos = torch.eye(3, 8)
    groups = torch.tensor([0, 1, 1])  # prompts 1 and 2 both name class 1
    batch = front_camera_batch(10.0, protos[2])
    pred = depth_unprojection(batch, protos, grid, prompt_classes=groups, num_classes=2)
    assert set(pred.unique().tolist()) == {1, 2}  # class 1 and free (= 2)


def test_all_free_and_errors():
    grid = VoxelGrid((-2, -2, -1, 2, 2, 1), 0.5)
    out = all_free(grid, 17, batch_size=2)
    assert out.shape == (2, 8, 8, 4) and (out == 17).all()
    with pytest.raises(ValueError, match="num_classes"):
        all_free(grid, 300)
    batch = front_camera_batch(5.0, torch.ones(8))
    batch.features = None
    with pytest.raises(ValueError, match="depth and features"):
        depth_unprojection(batch, torch.eye(3, 8), grid)
    with pytest.raises(ValueError, match="same C"):
        pixel_labels(torch.zeros(1, 8, 2, 2), torch.zeros(3, 5), (4, 4))


def test_init_baseline_places_untrained_gaussians_at_the_input_depth():
    from gausstr_core.presets import preset_model

    config = preset_model("tiny")
    config.decoder.queries_per_view = 12
    feature = torch.zeros(config.head.feature_dim)
    feature[3] = 1.0
    batch = front_camera_batch(10.0, feature, h=config.image_size[0], w=config.image_size[1])
    batch.depth[..., :10, :] = 80.0  # far field: clamped at the depth limit like the model's head
    g = InitialGaussians(config)(batch).gaussians[-1]
    assert g.means.shape == (1, 12, 3) and g.features.shape == (1, 12, config.head.feature_dim)
    near = g.means[0, :, 0] < 11
    # 10 m ahead (ego x), or the depth limit for points in the far rows
    torch.testing.assert_close(g.means[0, near, 0], torch.full((int(near.sum()),), 10.0))
    assert torch.all(g.means[0, ~near].norm(dim=-1) >= config.head.depth_limit - 1e-3)
    assert torch.all(g.opacities == 0.5)
    # scale: the middle of the head's sigmoid range, in units of depth * multiplier / fx
    lo, hi = config.head.scale_range
    fx = float(batch.input_intrinsics()[0, 0, 0, 0])
    expected = (lo + hi) / 2 * 10.0 * config.head.scale_multiplier / fx
    torch.testing.assert_close(g.scales[0, near], torch.full_like(g.scales[0, near], expected))
    torch.testing.assert_close(g.features[0], feature.expand(12, -1))
    # the model's eval-mode reference points: seeded, so the baseline is deterministic
    assert torch.equal(InitialGaussians(config)(batch).gaussians[-1].means, g.means)
    no_depth = CameraBatch(batch.images, batch.intrinsics, batch.cam_to_ego, batch.image_aug)
    with pytest.raises(ValueError, match="needs depth"):
        InitialGaussians(config)(no_depth)
