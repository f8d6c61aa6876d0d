"""RayIoU: vectorised ray casting against the scalar reference traversal, and hand-checked scores."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.evaluation.rayiou import (
    NUSCENES_LIDAR_ORIGIN,
    RayIoUMetric,
    cast_rays,
    cast_rays_reference,
    lidar_ray_directions,
)
from gausstr_core.grid import VoxelGrid

FREE = 17


def _random_volume(seed: int, grid: VoxelGrid, density: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lab = torch.full(grid.shape, FREE, dtype=torch.long)
    occ = torch.rand(grid.shape, generator=g) < density
    lab[occ] = torch.randint(0, 17, (int(occ.sum()),), generator=g)
    lab[:, :, 0] = torch.where(torch.rand(grid.shape[:2], generator=g) < 0.7, 11, FREE)
    return lab


def test_fan_matches_sparseocc():
    dirs = lidar_ray_directions()
    # 10 pitches from atan, then the last spacing continued up to 0.21 rad: 39 x 360 rays.
    assert dirs.shape == (39 * 360, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, dtype=torch.float64), atol=1e-6)
    pitch = torch.asin(dirs[::360, 2])
    assert pitch[0] == pytest.approx(-math.pi / 4, abs=1e-6) and pitch[-1] >= 0.21 - 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_cast_matches_reference(seed):
    grid = VoxelGrid()
    lab = _random_volume(seed, grid, density=0.002 * (seed + 1))
    g = torch.Generator().manual_seed(100 + seed)
    dirs = lidar_ray_directions()[torch.randperm(14040, generator=g)[:150]]
    # add axis-aligned and exactly diagonal directions (ties between voxel borders)
    extra = torch.tensor(
        [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [1, 1, 0], [-1, 1, -1]], dtype=torch.float64
    )
    dirs = torch.cat([dirs, extra / extra.norm(dim=-1, keepdim=True)])
    origins = torch.tensor([NUSCENES_LIDAR_ORIGIN, [3.3, -7.1, 0.2], [-39.5, 39.9, 5.0]])
    ref_l, ref_d = cast_rays_reference(lab, origins, dirs, grid, FREE)
    lab_out, d = cast_rays(lab, origins, dirs, grid, FREE)
    assert torch.equal(lab_out, ref_l)
    torch.testing.assert_close(d, ref_d, rtol=1e-12, atol=1e-9)
    assert (ref_l != FREE).any() and (ref_l == FREE).any()


def test_single_wall_depth_and_label():
    grid = VoxelGrid()
    lab = torch.full(grid.shape, FREE, dtype=torch.long)
    ix = 125  # voxel [10.0, 10.4) m along x
    lab[ix, :, :] = 4
    origin = torch.tensor([[0.1, 0.1, 0.1]])
    lab_out, d = cast_rays(lab, origin, torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]), grid, FREE)
    assert lab_out.tolist() == [4, FREE]
    # depth = where the ray leaves the hit voxel (10.4 m - 0.1 m); the miss reports the grid exit.
    assert d[0].item() == pytest.approx(10.3) and d[1].item() == pytest.approx(40.1)


def test_rayiou_perfect_and_shifted():
    grid = VoxelGrid()
    names = [f"c{i}" for i in range(17)]
    gt = _random_volume(5, grid)
    m = RayIoUMetric(names, grid)
    m.update(gt, gt)
    r = m.compute()
    assert r["rayiou"] == pytest.approx(1.0) and r["rayiou@1"] == pytest.approx(1.0)
    # Pushing every wall 3 voxels (1.2 m) further out: fails at 1 m, passes at 2 and 4 m
    lab = torch.full(grid.shape, FREE, dtype=torch.long)
    lab[150, :, :] = 4
    far = torch.full(grid.shape, FREE, dtype=torch.long)
    far[153, :, :] = 4
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0]], dtype=torch.float64)
    m = RayIoUMetric(names, grid, directions=dirs / dirs.norm(dim=-1, keepdim=True))
    m.update(far, lab, origins=[[0.0, 0.0, 0.0]])
    r = m.compute()
    assert r["rayiou@1"] == 0.0 and r["rayiou@2"] == 1.0 and r["rayiou@4"] == 1.0
    assert r["rayiou"] == pytest.approx(2 / 3)
    assert math.isnan(r["per_class"]["c0"]["@1"])
    # Predicting free everywhere: GT rays hit class 4, prediction hits nothing -> IoU 0.
    m = RayIoUMetric(names, grid, directions=dirs / dirs.norm(dim=-1, keepdim=True))
    m.update(torch.full(grid.shape, FREE), lab, origins=[[0.0, 0.0, 0.0]])
    assert m.compute()["rayiou"] == 0.0


def test_rayiou_rejects_bad_labels():
    grid = VoxelGrid()
    m = RayIoUMetric([f"c{i}" for i in range(17)], grid)
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(200, 200, 16, dtype=torch.long), torch.zeros(200, 200, 15, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 17\]"):
        m.update(torch.full((200, 200, 16), 30), torch.zeros(200, 200, 16, dtype=torch.long))


@pytest.mark.gpu
def test_cuda_cast_matches_cpu():
    grid = VoxelGrid()
    lab = _random_volume(7, grid, density=0.004)
    dirs = lidar_ray_directions()
    origins = torch.tensor([NUSCENES_LIDAR_ORIGIN, [5.0, -3.0, 0.5]])
    cpu_l, cpu_d = cast_rays(lab, origins, dirs, grid, FREE)
    gpu_l, gpu_d = cast_rays(lab.cuda(), origins, dirs, grid, FREE)
    assert torch.equal(gpu_l.cpu(), cpu_l)
    torch.testing.assert_close(gpu_d.cpu(), cpu_d, rtol=1e-12, atol=1e-9)
