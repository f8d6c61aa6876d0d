"""The PyTorch voxelizer against a dense float64 oracle, on seeded random inputs and hard cases."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.geometry import build_covariance
from gausstr_core.grid import VoxelGrid
from gausstr_core.voxelize import filter_gaussians, voxelize_gaussians
from gausstr_core.voxelize.boxes import box_volumes, gaussian_boxes
from gausstr_core.voxelize.reference import voxelize_reference
from gausstr_testing.numerics import rel_err
from gausstr_testing.random_scene import random_gaussians
from gausstr_testing.voxelize_loop import voxelize_loop
from gausstr_testing.voxelize_oracle import voxelize_dense

SMALL = VoxelGrid((-2.0, -2.0, -1.0, 2.0, 1.2, 0.6), 0.4)  # 10 x 8 x 4
TINY = VoxelGrid((0.0, 0.0, 0.0, 2.0, 1.6, 1.2), 0.4)  # 5 x 4 x 3


def check_against_oracle(inputs, grid, valid=None, tol=1e-6, **kwargs):
    density, features = voxelize_gaussians(*inputs, grid, valid=valid, backend="torch", **kwargs)
    ref_density, ref_features = voxelize_dense(*inputs, grid, valid=valid)
    assert density.shape == ref_density.shape and features.shape == ref_features.shape
    assert density.dtype == inputs[0].dtype
    assert rel_err(density, ref_density) < tol
    if features.numel():
        assert rel_err(features, ref_features) < tol
    return density, features


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_random_scenes_match_oracle(gen, dtype, tol):
    inputs = random_gaussians(2, 40, 7, SMALL, scale_range=(0.1, 1.0), dtype=dtype, generator=gen)
    density, _ = check_against_oracle(inputs, SMALL, tol=tol)
    assert (density > 0).float().mean() > 0.5  # the test exercises a well-covered grid


def test_gaussians_straddling_the_boundary(gen):
    inputs = random_gaussians(
        1, 60, 4, SMALL, scale_range=(0.2, 1.5), margin=2.0, dtype=torch.float64, generator=gen
    )
    means = inputs[0]
    lower = torch.tensor(SMALL.range[:3], dtype=torch.float64)
    upper = torch.tensor(SMALL.range[3:], dtype=torch.float64)
    outside = ((means < lower) | (means > upper)).any(-1)
    touching = box_volumes(gaussian_boxes(*inputs[:2], SMALL)) > 0
    assert (outside & touching).any()  # some Gaussians centred outside do reach into the grid
    check_against_oracle(inputs, SMALL)


def test_gaussians_entirely_outside_contribute_nothing(gen):
    means, cov, opacities, features = random_gaussians(
        1, 30, 3, SMALL, scale_range=(0.1, 0.5), dtype=torch.float64, generator=gen
    )
    means = means.clone()
    means[..., 0] = SMALL.range[3] + 1.6 + 3.0 * 0.5 * torch.rand(1, 30, generator=gen, dtype=torch.float64)
    assert (box_volumes(gaussian_boxes(means, cov, SMALL)) == 0).all()
    density, vf = voxelize_gaussians(means, cov, opacities, features, SMALL, backend="torch")
    assert (density == 0).all() and (vf == 0).all()


def test_tiny_covariances(gen):
    means, _, opacities, features = random_gaussians(1, 50, 3, SMALL, dtype=torch.float64, generator=gen)
    # Put the tiny Gaussians next to voxel centres so that some centres fall in their boxes.
    centres = SMALL.centers(dtype=torch.float64).reshape(-1, 3)
    pick = torch.randint(len(centres), (50,), generator=gen)
    sigma = 10 ** (-4 + 2 * torch.rand(1, 50, 3, generator=gen, dtype=torch.float64))
    means = centres[pick][None] + sigma * torch.randn(1, 50, 3, generator=gen, dtype=torch.float64)
    cov = build_covariance(sigma, torch.randn(1, 50, 4, generator=gen, dtype=torch.float64))
    density, _ = check_against_oracle((means, cov, opacities, features), SMALL)
    assert (density > 0).sum() > 5


def test_huge_covariances_cover_the_whole_grid(gen):
    inputs = random_gaussians(1, 5, 3, SMALL, scale_range=(20.0, 100.0), dtype=torch.float64, generator=gen)
    assert (box_volumes(gaussian_boxes(*inputs[:2], SMALL)) == SMALL.num_voxels).all()
    density, _ = check_against_oracle(inputs, SMALL)
    assert (density > 0).all()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_anisotropic_rotated_gaussians(gen, dtype, tol):
    n = 40
    scales = torch.stack([torch.full((n,), 0.05), torch.full((n,), 2.0), torch.full((n,), 0.4)], -1)
    scales = scales[:, torch.randperm(3, generator=gen)].double()[None]
    rotations = torch.randn(1, n, 4, generator=gen, dtype=torch.float64)
    means, _, opacities, features = random_gaussians(1, n, 5, SMALL, dtype=torch.float64, generator=gen)
    cov = build_covariance(scales, rotations)
    inputs = tuple(t.to(dtype) for t in (means, cov, opacities, features))
    check_against_oracle(inputs, SMALL, tol=tol)


def test_zero_gaussians_and_all_invalid(gen):
    for n in (0, 6):
        inputs = random_gaussians(2, n, 4, SMALL, dtype=torch.float64, generator=gen)
        valid = torch.zeros(2, n, dtype=torch.bool)
        density, features = voxelize_gaussians(*inputs, SMALL, valid=valid, backend="torch")
        assert density.shape == (2, *SMALL.shape) and features.shape == (2, *SMALL.shape, 4)
        assert (density == 0).all() and (features == 0).all()


def test_zero_channels(gen):
    inputs = random_gaussians(1, 10, 0, SMALL, dtype=torch.float64, generator=gen)
    _, features = check_against_oracle(inputs, SMALL)
    assert features.shape == (1, *SMALL.shape, 0)


def test_valid_mask_equals_dropping_the_gaussians(gen):
    inputs = random_gaussians(1, 30, 4, SMALL, dtype=torch.float64, generator=gen)
    valid = torch.rand(1, 30, generator=gen) < 0.5
    masked = voxelize_gaussians(*inputs, SMALL, valid=valid, backend="torch")
    dropped = voxelize_gaussians(*(t[:, valid[0]] for t in inputs), SMALL, backend="torch")
    for a, b in zip(masked, dropped):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    check_against_oracle(inputs, SMALL, valid=valid)


def test_batch_of_scenes_with_different_counts(gen):
    counts = (7, 3, 0)
    inputs = random_gaussians(3, 8, 5, SMALL, dtype=torch.float64, generator=gen)
    valid = torch.arange(8)[None] < torch.tensor(counts)[:, None]
    density, features = voxelize_gaussians(*inputs, SMALL, valid=valid, backend="torch")
    for s, k in enumerate(counts):
        d, f = voxelize_gaussians(*(t[s : s + 1, :k] for t in inputs), SMALL, backend="torch")
        torch.testing.assert_close(density[s : s + 1], d, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(features[s : s + 1], f, rtol=1e-12, atol=1e-12)


def test_768_channels(gen):
    inputs = random_gaussians(1, 25, 768, SMALL, scale_range=(0.2, 1.0), dtype=torch.float32, generator=gen)
    check_against_oracle(inputs, SMALL, tol=1e-4)


def test_chunking_does_not_change_the_result(gen):
    inputs = random_gaussians(2, 30, 6, SMALL, scale_range=(0.1, 1.5), dtype=torch.float64, generator=gen)
    whole = voxelize_reference(*inputs, SMALL)
    for chunk_elements in (1, 997):
        chunked = voxelize_reference(*inputs, SMALL, chunk_elements=chunk_elements)
        for a, b in zip(chunked, whole):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_loop_baseline_matches_reference(gen):
    inputs = random_gaussians(2, 15, 3, SMALL, scale_range=(0.1, 1.0), dtype=torch.float64, generator=gen)
    valid = torch.rand(2, 15, generator=gen) < 0.8
    for a, b in zip(
        voxelize_loop(*inputs, SMALL, valid=valid),
        voxelize_gaussians(*inputs, SMALL, valid=valid, backend="torch"),
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_reference_float64(gen):
    means, cov, opacities, features = random_gaussians(
        2, 4, 3, TINY, scale_range=(0.3, 0.8), dtype=torch.float64, generator=gen
    )
    valid = torch.tensor([[True, True, False, True], [True, True, True, True]])
    inputs = tuple(t.clone().requires_grad_() for t in (means, cov, opacities, features))

    def fn(m, c, o, f):
        return voxelize_gaussians(m, c, o, f, TINY, valid=valid, backend="torch", eps=1e-3)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_reference_gradients_match_oracle_gradients(gen):
    inputs = random_gaussians(1, 12, 4, SMALL, scale_range=(0.2, 1.0), dtype=torch.float64, generator=gen)
    grad_d = torch.randn(1, *SMALL.shape, generator=gen, dtype=torch.float64)
    grad_f = torch.randn(1, *SMALL.shape, 4, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (
        lambda *a: voxelize_gaussians(*a, SMALL, backend="torch"),
        lambda *a: voxelize_dense(*a, SMALL),
    ):
        leaves = [t.clone().requires_grad_() for t in inputs]
        d, f = fn(*leaves)
        torch.autograd.backward([d, f], [grad_d, grad_f])
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert rel_err(a, b) < 1e-9


def test_filter_semantics():
    grid = SMALL
    means = torch.tensor(
        [
            [
                [0.0, 0.0, 0.0],
                [2.0, 1.2, 0.6],
                [2.01, 0.0, 0.0],
                [-2.0, -2.0, -1.0],
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
            ]
        ]
    )
    opacities = torch.tensor([[0.7, 0.7, 0.9, 0.61, 0.6, 0.9, 0.9]])
    variances = torch.tensor([[[1.0, 1.0, 1.0]] * 5 + [[1.0, 0.0024, 1.0], [1.0, 0.0026, 1.0]]])
    cov = torch.diag_embed(variances)
    keep = filter_gaussians(means, cov, opacities, grid, opacity_threshold=0.6, min_extent=1.5e-2)
    # inside, on the upper bound, outside in x, on the lower bound, opacity == threshold,
    # 6 * 0.0024 = 0.0144 <= 0.015, 6 * 0.0026 = 0.0156 > 0.015
    assert keep.tolist() == [[True, True, False, True, False, False, True]]
    keep = filter_gaussians(means, cov, opacities, grid)
    assert keep.tolist() == [[True, True, False, True, True, True, True]]


def test_bad_inputs_raise_clear_errors(gen):
    means, cov, opacities, features = random_gaussians(1, 4, 2, SMALL, generator=gen)
    with pytest.raises(ValueError, match="covariances must be"):
        voxelize_gaussians(means, cov[..., :2], opacities, features, SMALL)
    with pytest.raises(ValueError, match="features must be"):
        voxelize_gaussians(means, cov, opacities, features[0], SMALL)
    with pytest.raises(ValueError, match="valid must be"):
        voxelize_gaussians(means, cov, opacities, features, SMALL, valid=torch.ones(1, 4))
    with pytest.raises(ValueError, match="backend"):
        voxelize_gaussians(means, cov, opacities, features, SMALL, backend="triton")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        voxelize_gaussians(means, cov, opacities, features, SMALL, backend="cuda")
    with pytest.raises(ValueError, match="VoxelGrid"):
        voxelize_gaussians(means, cov, opacities, features, (200, 200, 16))
    bad = means.clone()
    bad[0, 2, 1] = math.nan
    with pytest.raises(ValueError, match=r"scene 0, index 2"):
        voxelize_gaussians(bad, cov, opacities, features, SMALL)
    # A bad Gaussian that is not included is fine.
    valid = torch.tensor([[True, True, False, True]])
    voxelize_gaussians(bad, cov, opacities, features, SMALL, valid=valid)
    flat = cov.clone()
    flat[0, 1, 2, 2] = 0.0
    with pytest.raises(ValueError, match="not positive definite"):
        voxelize_gaussians(means, flat, opacities, features, SMALL)
    indefinite = torch.eye(3).repeat(1, 4, 1, 1)
    indefinite[0, 3, 0, 1] = indefinite[0, 3, 1, 0] = 1.5  # positive diagonal, determinant < 0
    with pytest.raises(ValueError, match=r"index 3\).* not positive definite"):
        voxelize_gaussians(means, indefinite, opacities, features, SMALL)


def test_excluded_gaussians_may_hold_garbage(gen):
    means, cov, opacities, features = random_gaussians(
        1, 6, 3, SMALL, scale_range=(0.2, 1.0), dtype=torch.float64, generator=gen
    )
    means, cov = means.clone(), cov.clone()
    means[0, 2] = math.nan
    cov[0, 2] = math.inf
    valid = torch.tensor([[True, True, False, True, True, True]])
    leaves = [t.requires_grad_() for t in (means, cov, opacities, features)]
    density, voxel_features = voxelize_gaussians(*leaves, SMALL, valid=valid, backend="torch")
    expected = voxelize_dense(*(t.detach()[:, valid[0]] for t in leaves), SMALL)
    assert rel_err(density, expected[0]) < 1e-9 and rel_err(voxel_features, expected[1]) < 1e-9
    (density.sum() + voxel_features.square().sum()).backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all() and (t.grad[0, 2] == 0).all()


def test_half_inputs_compute_in_float32(gen):
    inputs = random_gaussians(1, 10, 3, SMALL, generator=gen)
    density, features = voxelize_gaussians(*(t.half() for t in inputs), SMALL)
    assert density.dtype == torch.float32 and features.dtype == torch.float32


def test_auto_backend_on_cpu_is_the_reference(gen):
    inputs = random_gaussians(1, 10, 3, SMALL, generator=gen)
    for a, b in zip(voxelize_gaussians(*inputs, SMALL), voxelize_gaussians(*inputs, SMALL, backend="torch")):
        assert torch.equal(a, b)


def test_occ3d_grid_on_cpu_is_fast_enough(gen):
    """The node's CPU fallback: 1,800 Gaussians x 18 channels on the 200x200x16 grid."""
    import time

    grid = VoxelGrid()
    inputs = random_gaussians(1, 1800, 18, grid, scale_range=(0.1, 1.0), generator=gen)
    voxelize_gaussians(*inputs, grid, backend="torch")  # warm-up
    start = time.perf_counter()
    density, _ = voxelize_gaussians(*inputs, grid, backend="torch")
    elapsed = time.perf_counter() - start
    assert density.shape == (1, 200, 200, 16) and (density > 0).any()
    assert elapsed < 5.0, f"reference took {elapsed:.2f} s"
