"""Multi-scale deformable attention against an explicit, loop-by-loop bilinear sampling reference."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.model.deformable_attention import MultiScaleDeformableAttention, deformable_sample


def bilinear_zero_padded(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample (D, h, w) at normalised (x, y): pixel coordinate x*w - 0.5, zeros outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wx = (px - x0) if dx else (1 - (px - x0))
            wy = (py - y0) if dy else (1 - (py - y0))
            if 0 <= xi < w and 0 <= yi < h:
                out += wx * wy * img[:, yi, xi]
    return out


def reference_sample(value, shapes, locations, weights):
    """The definition, one query / head / level / point at a time."""
    b, _, m, d = value.shape
    _, q, _, _, p, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(b, q, m, d, dtype=value.dtype)
    for bi in range(b):
        for qi in range(q):
            for mi in range(m):
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, starts[li] : starts[li + 1], mi].T.reshape(d, h, w)
                    for pi in range(p):
                        x, y = locations[bi, qi, mi, li, pi].tolist()
                        out[bi, qi, mi] += weights[bi, qi, mi, li, pi] * bilinear_zero_padded(img, x, y)
    return out.reshape(b, q, m * d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 9), (3, 5), (2, 2), (1, 3)]
    b, q, m, d, p = 2, 5, 3, 4, 2
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=g, dtype=torch.float64)
    # Locations beyond [0, 1] too: the zero padding must match.
    locations = torch.rand(b, q, m, len(shapes), p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(b, q, m, len(shapes), p, generator=g, dtype=torch.float64)
    got = deformable_sample(value, shapes, locations, weights)
    want = reference_sample(value, shapes, locations, weights)
    assert got.shape == (b, q, m * d)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_module_matches_reference_composition():
    """The module = value_proj -> sampling at ref + offset / (w, h) -> output_proj, plus residual."""
    torch.manual_seed(3)
    c, m, levels, p = 16, 4, 2, 3
    attn = MultiScaleDeformableAttention(c, m, levels, p, dropout=0.0).double()
    # Non-trivial offsets/weights (the init zeroes the weight matrices).
    for lin in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.normal_(lin.weight, std=0.3)
    shapes = [(5, 7), (3, 4)]
    s = sum(h * w for h, w in shapes)
    query, pos = torch.randn(2, 3, c, dtype=torch.float64), torch.randn(2, 3, c, dtype=torch.float64)
    value = torch.randn(2, s, c, dtype=torch.float64)
    ref = torch.rand(2, 3, 2, dtype=torch.float64)
    got = attn(query, value, ref, shapes, query_pos=pos)

    x = query + pos
    offsets = attn.sampling_offsets(x).view(2, 3, m, levels, p, 2)
    weights = attn.attention_weights(x).view(2, 3, m, levels * p).softmax(-1).view(2, 3, m, levels, p)
    loc = torch.empty_like(offsets)
    for li, (h, w) in enumerate(shapes):
        loc[:, :, :, li, :, 0] = ref[:, :, None, None, 0] + offsets[:, :, :, li, :, 0] / w
        loc[:, :, :, li, :, 1] = ref[:, :, None, None, 1] + offsets[:, :, :, li, :, 1] / h
    v = attn.value_proj(value).view(2, s, m, c // m)
    want = query + attn.output_proj(reference_sample(v, shapes, loc, weights))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_init_points_spread_and_uniform_weights():
    attn = MultiScaleDeformableAttention(32, 8, 4, 4)
    bias = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    # Point i of every head sits i+1 steps along the head's direction; weights start uniform.
    assert torch.allclose(bias[:, :, 1], 2 * bias[:, :, 0])
    assert bias[0, 0, 0].tolist() == [1.0, 0.0]
    assert torch.count_nonzero(attn.attention_weights.weight) == 0


def test_gradients_reach_value_query_and_reference():
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(16, 4, 2, 2, dropout=0.0)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    shapes = [(4, 6), (2, 3)]
    query = torch.randn(1, 5, 16, requires_grad=True)
    value = torch.randn(1, 30, 16, requires_grad=True)
    ref = torch.rand(1, 5, 2, requires_grad=True)
    attn(query, value, ref, shapes).square().sum().backward()
    for t in (query, value, ref):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_bad_shapes_are_clear_errors():
    attn = MultiScaleDeformableAttention(16, 4, 2, 2)
    with pytest.raises(ValueError, match="levels"):
        attn(torch.randn(1, 3, 16), torch.randn(1, 10, 16), torch.rand(1, 3, 2), [(2, 5)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        attn(torch.randn(1, 3, 16), torch.randn(1, 11, 16), torch.rand(1, 3, 2), [(2, 4), (1, 2)])
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDeformableAttention(10, 4)
