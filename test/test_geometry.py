"""Geometry, Gaussian and grid primitives: exact round trips on fresh random inputs."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import (
    build_covariance,
    invert_rigid,
    matrix_to_quaternion,
    project,
    quaternion_to_matrix,
    unproject,
)
from gausstr_core.grid import VoxelGrid


def _random_rotations(n, generator, dtype=torch.float64):
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return q / q.norm(dim=-1, keepdim=True)


def _random_camera(generator, dtype=torch.float64):
    q = _random_rotations(1, generator, dtype)[0]
    t = torch.eye(4, dtype=dtype)
    t[:3, :3] = quaternion_to_matrix(q)
    t[:3, 3] = torch.randn(3, generator=generator, dtype=dtype)
    k = torch.tensor([[800.0, 0.0, 640.0], [0.0, 790.0, 360.0], [0.0, 0.0, 1.0]], dtype=dtype)
    k[:2] += torch.rand(2, 3, generator=generator, dtype=dtype) * torch.tensor([[50, 0, 30], [0, 50, 30]])
    return k, t


def test_quaternion_matrix_round_trip_and_orthonormality():
    g = torch.Generator().manual_seed(0)
    q = _random_rotations(1000, g)
    r = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=q.dtype).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    assert torch.allclose(torch.linalg.det(r), torch.ones(1000, dtype=q.dtype))
    q_back = matrix_to_quaternion(r)
    # q and -q are the same rotation: compare up to sign.
    sign = torch.sign((q * q_back).sum(-1, keepdim=True))
    torch.testing.assert_close(q_back * sign, q, atol=1e-10, rtol=0)


def test_matrix_to_quaternion_handles_half_turns():
    # 180-degree rotations make w = 0, the case a naive trace formula gets wrong.
    for axis in torch.eye(3, dtype=torch.float64):
        r = 2 * torch.outer(axis, axis) - torch.eye(3, dtype=torch.float64)
        torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-12, rtol=0)


def test_covariance_is_symmetric_positive_definite_with_the_right_eigenvalues():
    g = torch.Generator().manual_seed(1)
    scales = torch.rand(500, 3, generator=g, dtype=torch.float64) * 3 + 1e-3
    cov = build_covariance(scales, _random_rotations(500, g))
    torch.testing.assert_close(cov, cov.transpose(-1, -2))
    eig = torch.linalg.eigvalsh(cov)
    assert (eig > 0).all()
    torch.testing.assert_close(eig, (scales**2).sort(-1).values, rtol=1e-9, atol=1e-12)


def test_unproject_then_project_returns_the_pixel():
    g = torch.Generator().manual_seed(2)
    k, t = _random_camera(g)
    pixels = torch.rand(2000, 2, generator=g, dtype=torch.float64) * torch.tensor([1280.0, 720.0])
    depth = torch.rand(2000, generator=g, dtype=torch.float64) * 60 + 0.5
    points = unproject(pixels, depth, k, t)
    pixels_back, depth_back = project(points, k, t)
    torch.testing.assert_close(pixels_back, pixels, rtol=0, atol=1e-8)
    torch.testing.assert_close(depth_back, depth, rtol=1e-12, atol=1e-10)
    # The point lies at the requested distance along the optical axis from the camera centre.
    optical_axis = t[:3, 2]
    torch.testing.assert_close((points - t[:3, 3]) @ optical_axis, depth, rtol=1e-12, atol=1e-10)


def test_batched_unproject_matches_per_camera_calls():
    g = torch.Generator().manual_seed(3)
    cams = [_random_camera(g) for _ in range(6)]
    k = torch.stack([c[0] for c in cams]).reshape(2, 3, 3, 3)
    t = torch.stack([c[1] for c in cams]).reshape(2, 3, 4, 4)
    pixels = torch.rand(2, 3, 50, 2, generator=g, dtype=torch.float64) * 500
    depth = torch.rand(2, 3, 50, generator=g, dtype=torch.float64) * 10 + 1
    batched = unproject(pixels, depth, k, t)
    for b in range(2):
        for v in range(3):
            torch.testing.assert_close(batched[b, v], unproject(pixels[b, v], depth[b, v], k[b, v], t[b, v]))


def test_invert_rigid():
    g = torch.Generator().manual_seed(4)
    _, t = _random_camera(g)
    torch.testing.assert_close(invert_rigid(t) @ t, torch.eye(4, dtype=t.dtype), atol=1e-12, rtol=0)


def test_occ3d_grid_shape_centres_and_indices():
    grid = VoxelGrid()
    assert grid.shape == (200, 200, 16)
    assert grid.num_voxels == 640_000
    centres = grid.centers()
    assert centres.shape == (200, 200, 16, 3)
    torch.testing.assert_close(centres[0, 0, 0], torch.tensor([-39.8, -39.8, -0.8]))
    torch.testing.assert_close(centres[-1, -1, -1], torch.tensor([39.8, 39.8, 5.2]))
    idx, inside = grid.voxel_index(centres.reshape(-1, 3))
    expected = torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid.shape], indexing="ij"), -1)
    assert torch.equal(idx, expected.reshape(-1, 3)) and inside.all()
    _, inside = grid.voxel_index(torch.tensor([[40.0, 0.0, 0.0], [0.0, 0.0, -1.01]]))
    assert not inside.any()


@pytest.mark.parametrize(
    "bad",
    [
        dict(range=(0, 0, 0, 1, 1)),
        dict(voxel_size=0.0),
        dict(range=(0, 0, 0, 1, 1, 1), voxel_size=0.3),
        dict(range=(1, 0, 0, 0, 1, 1)),
    ],
)
def test_grid_rejects_bad_definitions(bad):
    with pytest.raises(ValueError):
        VoxelGrid(**bad)


def test_gaussians_and_camera_batch_validate_shapes():
    g = Gaussians(
        torch.zeros(2, 5, 3),
        torch.ones(2, 5, 3),
        torch.tensor([1.0, 0, 0, 0]).expand(2, 5, 4),
        torch.ones(2, 5),
        torch.zeros(2, 5, 7),
    )
    assert g.covariances().shape == (2, 5, 3, 3)
    assert g.select(1, torch.tensor([True, False, True, False, False])).num_gaussians == 2
    with pytest.raises(ValueError, match="opacities"):
        Gaussians(
            torch.zeros(2, 5, 3),
            torch.ones(2, 5, 3),
            torch.ones(2, 5, 4),
            torch.ones(2, 4),
            torch.zeros(2, 5, 1),
        )
    images = torch.rand(1, 6, 3, 32, 48)
    eye = CameraBatch.identity_aug(1, 6)
    batch = CameraBatch(images, torch.eye(3).expand(1, 6, 3, 3), torch.eye(4).expand(1, 6, 4, 4), eye)
    assert batch.image_size == (32, 48) and batch.num_views == 6
    with pytest.raises(ValueError, match="depth"):
        CameraBatch(
            images,
            torch.eye(3).expand(1, 6, 3, 3),
            torch.eye(4).expand(1, 6, 4, 4),
            eye,
            depth=torch.ones(1, 6, 32, 47),
        )
    assert math.isclose(float(batch.input_intrinsics()[0, 0, 0, 0]), 1.0)
