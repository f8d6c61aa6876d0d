"""The PyTorch reference renderer: hand-computed cases, a per-pixel loop oracle, invariances, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import matrix_to_quaternion, project, quaternion_to_matrix
from gausstr_core.render import RenderOutput, render_gaussians, resolve_backend
from gausstr_core.render.common import ALPHA_THRESHOLD, EPS2D, MAX_ALPHA, MIN_TRANSMITTANCE
from gausstr_core.render.reference import project_gaussians

IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


def _camera(f=50.0, cx=20.0, cy=12.0, dtype=torch.float64):
    """One camera (B = V = 1) at the ego origin looking along ego z (cam_to_ego = identity)."""
    k = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return k[None, None], torch.eye(4, dtype=dtype)[None, None]


def _gaussians(means, scales, opacities, features, quats=None, dtype=torch.float64):
    means = torch.as_tensor(means, dtype=dtype).reshape(1, -1, 3)
    n = means.shape[1]
    scales = torch.as_tensor(scales, dtype=dtype).reshape(1, n, 3)
    quats = torch.tensor([IDENTITY_QUAT] * n, dtype=dtype)[None] if quats is None else quats
    opacities = torch.as_tensor(opacities, dtype=dtype).reshape(1, n)
    features = torch.as_tensor(features, dtype=dtype).reshape(1, n, -1)
    return Gaussians(means, scales, quats, opacities, features)


def _random_scene(generator, b=1, v=2, n=40, c=5, h=16, w=24, dtype=torch.float64):
    """Gaussians in front of V cameras of a small rig, and the cameras."""
    f = 0.8 * w
    k = torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    k = k.expand(b, v, 3, 3).clone()
    cam_to_ego = torch.eye(4, dtype=dtype).repeat(b, v, 1, 1)
    q = torch.randn(b, v, 4, generator=generator, dtype=dtype)
    cam_to_ego[..., :3, :3] = quaternion_to_matrix(q)
    cam_to_ego[..., :3, 3] = torch.randn(b, v, 3, generator=generator, dtype=dtype)
    # Unproject random pixels at random depths of random views: every Gaussian is in front of one.
    view = torch.randint(0, v, (b, n), generator=generator)
    pix = torch.rand(b, n, 2, generator=generator, dtype=dtype) * torch.tensor([w, h], dtype=dtype)
    depth = 2 + 6 * torch.rand(b, n, generator=generator, dtype=dtype)
    ray = torch.cat([(pix - k[0, 0, :2, 2]) / f, torch.ones(b, n, 1, dtype=dtype)], -1) * depth[..., None]
    pose = torch.gather(cam_to_ego, 1, view[..., None, None].expand(b, n, 4, 4))
    means = (pose[..., :3, :3] @ ray[..., None])[..., 0] + pose[..., :3, 3]
    g = Gaussians(
        means=means,
        scales=0.05 + 0.4 * torch.rand(b, n, 3, generator=generator, dtype=dtype),
        rotations=torch.randn(b, n, 4, generator=generator, dtype=dtype),
        opacities=0.05 + 0.9 * torch.rand(b, n, generator=generator, dtype=dtype),
        features=torch.randn(b, n, c, generator=generator, dtype=dtype),
    )
    return g, k, cam_to_ego, (h, w)


def _loop_render(g: Gaussians, k, cam_to_ego, size, near=0.1, far=100.0):
    """Oracle: gsplat's forward kernel as a per-pixel Python loop (one scene, one view)."""
    means2d, conics, depths, valid = project_gaussians(g, k, cam_to_ego, size, near, far)
    means2d, conics, depths, valid = means2d[0, 0], conics[0, 0], depths[0, 0], valid[0, 0]
    order = sorted(range(g.num_gaussians), key=lambda i: float(depths[i]))
    h, w = size
    feats = torch.zeros(h, w, g.features.shape[-1], dtype=g.means.dtype)
    depth = torch.zeros(h, w, dtype=g.means.dtype)
    alpha_out = torch.zeros(h, w, dtype=g.means.dtype)
    stopped = 0
    for i in range(h):
        for j in range(w):
            t = 1.0
            for gid in order:
                if not valid[gid]:
                    continue
                dx, dy = float(means2d[gid, 0]) - (j + 0.5), float(means2d[gid, 1]) - (i + 0.5)
                a, b, c = (float(x) for x in conics[gid])
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(MAX_ALPHA, float(g.opacities[0, gid]) * math.exp(-sigma))
                if sigma < 0 or alpha < ALPHA_THRESHOLD:
                    continue
                next_t = t * (1 - alpha)
                if next_t <= MIN_TRANSMITTANCE:
                    stopped += 1
                    break
                feats[i, j] += alpha * t * g.features[0, gid]
                depth[i, j] += alpha * t * depths[gid]
                t = next_t
            alpha_out[i, j] = 1 - t
    return feats.permute(2, 0, 1), depth, alpha_out, stopped


def test_one_isotropic_gaussian_peaks_at_opacity_times_feature_with_its_depth():
    k, pose = _camera()
    z, s, o = 8.0, 0.3, 0.7
    feature = [1.5, -2.0, 0.25]
    # The centre projects onto pixel (row 12, column 20): exactly the principal point.
    out = render_gaussians(_gaussians([0, 0, z], [s, s, s], [o], feature), k, pose, (25, 41), backend="torch")
    assert isinstance(out, RenderOutput)
    assert out.features.shape == (1, 1, 3, 25, 41) and out.depth.shape == out.alpha.shape == (1, 1, 25, 41)
    peak = out.features[0, 0, :, 12, 20]
    torch.testing.assert_close(peak, o * torch.tensor(feature, dtype=torch.float64), rtol=1e-12, atol=0)
    assert out.depth[0, 0, 12, 20].item() == pytest.approx(o * z, rel=1e-12)
    assert out.expected_depth()[0, 0, 12, 20].item() == pytest.approx(z, rel=1e-12)
    assert out.alpha[0, 0, 12, 20].item() == pytest.approx(o, rel=1e-12)
    # One pixel to the right: the projected variance is (f s / z)^2 plus the 0.3 px^2 low-pass.
    var2d = (50.0 * s / z) ** 2 + EPS2D
    expected = o * math.exp(-0.5 / var2d)
    assert out.alpha[0, 0, 12, 21].item() == pytest.approx(expected, rel=1e-12)
    assert out.alpha[0, 0, 11, 20].item() == pytest.approx(expected, rel=1e-12)
    assert out.alpha.argmax().item() == 12 * 41 + 20


def test_a_point_like_gaussian_is_still_blurred_by_the_low_pass_filter():
    k, pose = _camera()
    out = render_gaussians(_gaussians([0, 0, 5.0], [1e-6] * 3, [0.9], [1.0]), k, pose, (25, 41))
    assert out.alpha[0, 0, 12, 20].item() == pytest.approx(0.9, rel=1e-9)
    assert out.alpha[0, 0, 12, 21].item() == pytest.approx(0.9 * math.exp(-0.5 / EPS2D), rel=1e-6)


def test_pixel_centres_follow_the_opencv_convention_of_the_intrinsics():
    g = torch.Generator().manual_seed(3)
    k, pose = _camera(cx=19.3, cy=11.6)
    point = torch.tensor([[[0.4, -0.2, 6.0]]], dtype=torch.float64)
    pixel, _ = project(point, k[0], pose[0])
    u, v = (round(x) for x in pixel[0, 0].tolist())
    # Shift the point so that it projects exactly onto the centre of pixel (v, u).
    point[..., 0] += (u - pixel[0, 0, 0]) * 6.0 / 50.0
    point[..., 1] += (v - pixel[0, 0, 1]) * 6.0 / 50.0
    feats = torch.randn(1, 1, 2, generator=g, dtype=torch.float64)
    out = render_gaussians(_gaussians(point, [0.2] * 3, [0.5], feats), k, pose, (25, 41))
    assert out.alpha[0, 0].flatten().argmax().item() == v * 41 + u
    assert out.alpha[0, 0, v, u].item() == pytest.approx(0.5, rel=1e-9)


def test_two_overlapping_gaussians_composite_front_to_back_whatever_their_order():
    k, pose = _camera()
    front = ([0, 0, 4.0], [0.3] * 3, 0.6, [1.0, 0.0])
    back = ([0, 0, 9.0], [0.6] * 3, 0.8, [0.0, 1.0])
    expect_feat = torch.tensor([0.6, (1 - 0.6) * 0.8], dtype=torch.float64)
    expect_depth = 0.6 * 4.0 + (1 - 0.6) * 0.8 * 9.0
    for pair in ((front, back), (back, front)):
        g = _gaussians([p[0] for p in pair], [p[1] for p in pair], [p[2] for p in pair], [p[3] for p in pair])
        out = render_gaussians(g, k, pose, (25, 41))
        torch.testing.assert_close(out.features[0, 0, :, 12, 20], expect_feat, rtol=1e-12, atol=0)
        assert out.depth[0, 0, 12, 20].item() == pytest.approx(expect_depth, rel=1e-12)
        assert out.alpha[0, 0, 12, 20].item() == pytest.approx(1 - 0.4 * 0.2, rel=1e-12)


def test_compositing_stops_before_transmittance_drops_below_the_threshold():
    k, pose = _camera()
    # T after the first = 0.005, after the second it would be 2.5e-5 <= 1e-4: the second and third
    # Gaussians are left out entirely (gsplat's exclusive stop), and alpha stays 0.995.
    g = _gaussians(
        [[0, 0, 3.0], [0, 0, 5.0], [0, 0, 7.0]],
        [[0.4] * 3] * 3,
        [0.995] * 3,
        [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]],
    )
    out = render_gaussians(g, k, pose, (25, 41))
    expected = torch.tensor([0.995, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(out.features[0, 0, :, 12, 20], expected)
    assert out.alpha[0, 0, 12, 20].item() == pytest.approx(0.995)
    # Alpha is clamped to 0.999 even for an opacity of 1.
    out = render_gaussians(_gaussians([0, 0, 3.0], [0.4] * 3, [1.0], [1.0]), k, pose, (25, 41))
    assert out.alpha[0, 0, 12, 20].item() == pytest.approx(MAX_ALPHA)


def test_near_far_and_opacity_culling():
    k, pose = _camera()
    one = lambda z, o=0.9: _gaussians([0, 0, z], [0.3] * 3, [o], [1.0])
    assert render_gaussians(one(-5.0), k, pose, (25, 41)).alpha.max() == 0  # behind the camera
    assert render_gaussians(one(0.05), k, pose, (25, 41), near=0.1).alpha.max() == 0
    assert render_gaussians(one(50.0), k, pose, (25, 41), far=40.0).alpha.max() == 0
    assert render_gaussians(one(50.0), k, pose, (25, 41), far=60.0).alpha.max() > 0.8
    assert render_gaussians(one(5.0, o=0.5 / 255), k, pose, (25, 41)).alpha.max() == 0


def test_matches_a_per_pixel_loop_of_the_cuda_kernel():
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(7), v=1, n=30, c=3, h=10, w=14)
    # Two large, nearly opaque Gaussians on the optical axis make early termination happen.
    on_axis = torch.tensor([[0.0, 0.0, 2.5], [0.1, 0.0, 3.0]], dtype=torch.float64)
    g.means[0, :2] = on_axis @ pose[0, 0, :3, :3].T + pose[0, 0, :3, 3]
    g.opacities[0, :2] = 0.999
    g.scales[0, :2] = 2.0
    feats, depth, alpha, stopped = _loop_render(g, k, pose, size)
    out = render_gaussians(g, k, pose, size, backend="torch")
    assert stopped >= 5, "the scene should exercise the transmittance cut"
    torch.testing.assert_close(out.features[0, 0], feats, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.depth[0, 0], depth, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.alpha[0, 0], alpha, rtol=1e-10, atol=1e-12)


def test_invariant_to_gaussian_order_to_the_world_frame_and_to_batching():
    gen = torch.Generator().manual_seed(11)
    g, k, pose, size = _random_scene(gen, b=2, v=3, n=50, c=4)
    ref = render_gaussians(g, k, pose, size)
    assert ref.alpha.max() > 0.5

    perm = torch.randperm(50, generator=gen)
    shuffled = Gaussians(
        g.means[:, perm], g.scales[:, perm], g.rotations[:, perm], g.opacities[:, perm], g.features[:, perm]
    )
    out = render_gaussians(shuffled, k, pose, size)
    torch.testing.assert_close(out.features, ref.features, rtol=1e-10, atol=1e-12)

    # Move the world (Gaussians and cameras) by one rigid transform: the images do not change.
    rot = quaternion_to_matrix(torch.randn(4, generator=gen, dtype=torch.float64))
    shift = torch.randn(3, generator=gen, dtype=torch.float64)
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3], world[:3, 3] = rot, shift
    moved = Gaussians(
        g.means @ rot.T + shift,
        g.scales,
        matrix_to_quaternion(rot @ quaternion_to_matrix(g.rotations)),
        g.opacities,
        g.features,
    )
    out = render_gaussians(moved, k, world @ pose, size)
    torch.testing.assert_close(out.features, ref.features, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out.depth, ref.depth, rtol=1e-8, atol=1e-10)

    for i in range(2):
        single = render_gaussians(g.select(i), k[i : i + 1], pose[i : i + 1], size)
        torch.testing.assert_close(single.features, ref.features[i : i + 1], rtol=1e-12, atol=0)
        torch.testing.assert_close(single.alpha, ref.alpha[i : i + 1], rtol=1e-12, atol=0)


def test_features_are_rendered_linearly():
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(5), c=6)
    proj = torch.randn(6, 2, dtype=torch.float64)
    out = render_gaussians(g, k, pose, size)
    out_proj = render_gaussians(g.with_features(g.features @ proj), k, pose, size)
    torch.testing.assert_close(out_proj.features, torch.einsum("bvchw,cd->bvdhw", out.features, proj))
    empty = render_gaussians(g.with_features(g.features[..., :0]), k, pose, size)
    assert empty.features.shape[2] == 0
    torch.testing.assert_close(empty.depth, out.depth)


def test_small_pixel_blocks_give_the_same_image():
    from gausstr_core.render.reference import render_reference

    g, k, pose, size = _random_scene(torch.Generator().manual_seed(9), v=3, n=60)
    full = render_reference(g, k, pose, size)
    blocked = render_reference(g, k, pose, size, block_elements=500)
    torch.testing.assert_close(blocked.features, full.features, rtol=1e-12, atol=0)


def test_gradients_reach_every_gaussian_parameter_and_pass_gradcheck():
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(2), v=2, n=12, c=2, h=8, w=10)
    params = [
        t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.features)
    ]
    out = render_gaussians(Gaussians(*params), k, pose, size)
    loss = (out.features**2).sum() + out.depth.sum() + out.alpha.sum()
    loss.backward()
    for name, p in zip(("means", "scales", "rotations", "opacities", "features"), params):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name

    def fn(means, scales, rotations, opacities, features):
        r = render_gaussians(Gaussians(means, scales, rotations, opacities, features), k, pose, size)
        return r.features, r.depth, r.alpha

    inputs = [p.detach().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-5)


def test_float32_matches_float64():
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(4), v=3, n=80)
    ref = render_gaussians(g, k, pose, size)
    out = render_gaussians(g.to(torch.float32), k.float(), pose.float(), size)
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
    assert rel(out.features, ref.features) < 1e-5
    assert rel(out.depth, ref.depth) < 1e-5


def test_a_realistic_cpu_render_is_quick():
    import time

    g, k, pose, size = _random_scene(
        torch.Generator().manual_seed(1), v=6, n=300, c=16, h=56, w=100, dtype=torch.float32
    )
    start = time.perf_counter()
    out = render_gaussians(g, k, pose, size)
    elapsed = time.perf_counter() - start
    assert out.alpha.mean() > 0.05
    assert elapsed < 10.0, f"6 x 56 x 100 with 300 Gaussians took {elapsed:.1f} s"


def test_bad_inputs_are_rejected_with_reasons():
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="intrinsics must be"):
        render_gaussians(g, k[..., :2, :], pose, size)
    with pytest.raises(ValueError, match="cam_to_ego must be"):
        render_gaussians(g, k, pose[:, :1], size)
    with pytest.raises(ValueError, match="image_size"):
        render_gaussians(g, k, pose, (16.5, 24))
    with pytest.raises(ValueError, match="image_size"):
        render_gaussians(g, k, pose, (0, 24))
    with pytest.raises(ValueError, match="near < far"):
        render_gaussians(g, k, pose, size, near=5.0, far=1.0)
    with pytest.raises(ValueError, match="backend"):
        render_gaussians(g, k, pose, size, backend="opengl")
    skewed = k.clone()
    skewed[..., 0, 1] = 3.0
    with pytest.raises(ValueError, match="skew"):
        render_gaussians(g, skewed, pose, size)
    with pytest.raises(ValueError, match="CUDA"):
        render_gaussians(g, k, pose, size, backend="gsplat")
    with pytest.raises(ValueError, match="Gaussians"):
        render_gaussians(g.means, k, pose, size)


def test_auto_backend_uses_the_reference_on_the_cpu_and_no_gaussians_render_nothing():
    assert resolve_backend("auto", "cpu") == "torch"
    g, k, pose, size = _random_scene(torch.Generator().manual_seed(0))
    none = g.select(0, torch.zeros(g.num_gaussians, dtype=torch.bool))
    out = render_gaussians(none, k, pose, size)
    assert out.features.shape == (1, 2, 5, *size) and out.alpha.abs().max() == 0


def test_projection_matches_gsplats_own_pytorch_projection():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed")
    from gausstr_core.geometry import invert_rigid
    from gausstr_core.render.common import gsplat_intrinsics

    g, k, pose, (h, w) = _random_scene(torch.Generator().manual_seed(12), b=1, v=3, n=80)
    g.means[0, :5] = g.means[0, :5] * 40  # some far outside the field of view: Jacobian clamping
    means2d, conics, depths, valid = project_gaussians(g, k, pose, (h, w), 0.1, 100.0)
    _, means2d_gs, depths_gs, conics_gs, _ = torch_impl._fully_fused_projection(
        g.means[0],
        g.covariances()[0],
        invert_rigid(pose[0]),
        gsplat_intrinsics(k[0]),
        w,
        h,
        eps2d=EPS2D,
        near_plane=0.1,
        far_plane=100.0,
    )
    in_front = depths_gs > 0.1
    assert valid[0].sum() > 20 and (valid[0] & in_front).sum() == valid[0].sum()
    sel = valid[0]
    torch.testing.assert_close(means2d[0][sel], means2d_gs[sel], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(conics[0][sel], conics_gs[sel], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(depths[0][sel], depths_gs[sel], rtol=1e-12, atol=1e-12)


def _fake_rasterization(
    means,
    quats,
    scales,
    opacities,
    colors,
    viewmats,
    Ks,
    width,
    height,
    near_plane,
    far_plane,
    eps2d,
    packed,
    render_mode,
    rasterize_mode,
    channel_chunk,
):
    """gsplat.rasterization's contract (its argument checks and output layout) computed by the
    reference renderer, to test the gsplat backend's conversions without a GPU."""
    from gausstr_core.geometry import invert_rigid
    from gausstr_core.render.reference import render_reference

    b, n = means.shape[:2]
    v = viewmats.shape[1]
    assert quats.shape == (b, n, 4) and scales.shape == (b, n, 3) and opacities.shape == (b, n)
    assert colors.dim() == 3 and colors.shape[:2] == (b, n) and colors.shape[2] >= 1
    assert viewmats.shape == (b, v, 4, 4) and Ks.shape == (b, v, 3, 3)
    assert all(
        t.dtype == torch.float32 and t.is_contiguous()
        for t in (means, quats, scales, opacities, colors, viewmats, Ks)
    )
    assert render_mode in ("RGB+D", "D") and not packed and rasterize_mode == "classic" and eps2d == EPS2D
    k = Ks.clone()
    k[..., :2, 2] -= 0.5  # back to the OpenCV convention
    g = Gaussians(means, scales, quats, opacities, colors if render_mode == "RGB+D" else colors[..., :0])
    out = render_reference(g, k, invert_rigid(viewmats), (height, width), near_plane, far_plane)
    rendered = torch.cat([out.features.permute(0, 1, 3, 4, 2), out.depth[..., None]], dim=-1)
    return rendered, out.alpha[..., None], {}


def test_gsplat_backend_conversions_against_gsplats_contract():
    from gausstr_core.render.gsplat_backend import rasterize_with

    g, k, pose, size = _random_scene(
        torch.Generator().manual_seed(21), b=2, v=3, n=40, c=5, dtype=torch.float32
    )
    ref = render_gaussians(g, k, pose, size, backend="torch")
    for gaussians in (g, g.with_features(g.features[..., :0])):
        out = rasterize_with(_fake_rasterization, gaussians, k, pose, size, 0.1, 100.0, 32)
        assert out.features.shape == (2, 3, gaussians.features.shape[-1], *size)
        torch.testing.assert_close(out.depth, ref.depth, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.alpha, ref.alpha, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.features, ref.features[:, :, :0])
    out = rasterize_with(_fake_rasterization, g, k, pose, size, 0.1, 100.0, 32)
    torch.testing.assert_close(out.features, ref.features, rtol=1e-5, atol=1e-5)
