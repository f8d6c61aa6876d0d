"""Resizing keeps the camera model exact: a 3D point lands on the same scene content."""

from __future__ import annotations

import pytest
import torch

from gausstr_core.data.transforms import resize_matrix, resize_views


def test_resize_matrix_maps_pixel_edges_and_centres():
    aug = resize_matrix((900, 1600), (504, 896), dtype=torch.float64)
    corners = torch.tensor([[-0.5, -0.5, 1.0], [1599.5, 899.5, 1.0]], dtype=torch.float64)
    mapped = corners @ aug.T
    expected = torch.tensor([[-0.5, -0.5], [895.5, 503.5]], dtype=torch.float64)
    torch.testing.assert_close(mapped[:, :2], expected)


def test_resize_views_keeps_a_checkerboard_square_where_the_matrix_says():
    # A bright square at original pixels [40, 60) x [100, 140) must land where image_aug maps it.
    img = torch.zeros(2, 3, 120, 200, dtype=torch.uint8)
    img[:, :, 40:60, 100:140] = 255
    depth = torch.full((2, 120, 200), 7.0)
    depth[:, 0, 0] = float("nan")
    out, out_depth, aug = resize_views(img, (60, 100), depth)
    assert out.shape == (2, 3, 60, 100) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    centre = torch.tensor([119.5, 49.5, 1.0]) @ aug[0].T  # centre of the square
    u, v = round(float(centre[0])), round(float(centre[1]))
    assert out[0, 0, v, u] > 0.99 and out[0, 0, 5, 5] < 0.01
    assert out_depth.shape == (2, 60, 100) and torch.isfinite(out_depth).all()
    assert set(out_depth.unique().tolist()) <= {0.0, 7.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_resize_nearest_keeps_values_dtype_and_leading_dims(seed):
    from gausstr_core.data.transforms import resize_nearest

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 20, (2, 3, 9, 16), generator=g)
    out = resize_nearest(labels, (5, 7))
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.int64, f"seed {seed}"
    want = torch.nn.functional.interpolate(labels.float(), size=(5, 7), mode="nearest-exact").long()
    assert torch.equal(out, want), f"seed {seed}"
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()), f"seed {seed}"
    assert resize_nearest(labels, (9, 16)) is labels
    depth = 50 * torch.rand(4, 6, 8, generator=g)
    assert torch.equal(resize_nearest(depth, (12, 16))[1], resize_nearest(depth[1], (12, 16))), f"seed {seed}"
