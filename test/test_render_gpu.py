"""gsplat (CUDA) against the PyTorch reference renderer: images and gradients on fresh random scenes.

Run on a GPU machine (gsplat JIT-compiles its CUDA code on first use, ~40 s):
    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python -m pytest test/test_render_gpu.py -q

Tolerances. Both renderers evaluate the same float32 math; they differ in summation order (the
reference sums over Gaussians with a matrix product, gsplat sequentially per pixel) and gsplat's
backward recovers each transmittance by dividing the final one by (1 - alpha) repeatedly. Both are
relative rounding effects of ~1e-6 per operation. A Gaussian whose alpha sits within rounding of the
1/255 skip threshold, or a pixel whose transmittance sits at the 1e-4 stop, may be decided
differently; such a flip changes that pixel by at most alpha_threshold * |feature| (forward) but can
move the gradient of one Gaussian noticeably. Images must therefore agree to 1e-3 relative (as
required), feature gradients (linear in the weights, no thresholds involved beyond the weights
themselves) to 1e-3, and geometric gradients (means, scales, rotations, opacities) in direction
(cosine > 0.99) and to 1e-2 relative.
"""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.gaussians import Gaussians
from gausstr_core.render import gsplat_available, render_gaussians

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gsplat_available(), reason="gsplat is not installed (pip install gsplat==1.5.3)"),
]


def _rig(v: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A ring of V cameras 1.5 m above the ego origin, looking outwards (nuScenes-like)."""
    f = 0.9 * w
    k = torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
    poses = []
    for i in range(v):
        yaw = 2 * math.pi * i / v
        # Optical z along (cos, sin, 0), x right = (sin, -cos, 0), y down = -ego z.
        rot = torch.tensor(
            [[math.sin(yaw), 0.0, math.cos(yaw)], [-math.cos(yaw), 0.0, math.sin(yaw)], [0.0, -1.0, 0.0]]
        )
        pose = torch.eye(4)
        pose[:3, :3], pose[:3, 3] = rot, torch.tensor([0.0, 0.0, 1.5])
        poses.append(pose)
    return k.expand(1, v, 3, 3).clone().to(device), torch.stack(poses)[None].to(device)


def _scene(seed: int, b: int, v: int, per_view: int, c: int, h: int, w: int, device="cuda"):
    """Gaussians lifted from random pixels at random depths of every view, sized like GaussTR's."""
    g = torch.Generator().manual_seed(seed)
    k, poses = _rig(v, h, w, "cpu")
    k, poses = k.expand(b, v, 3, 3), poses.expand(b, v, 4, 4)
    pix = torch.rand(b, v, per_view, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    depth = 2.0 + 30.0 * torch.rand(b, v, per_view, generator=g)
    f = k[0, 0, 0, 0]
    ray = torch.cat([(pix - k[0, 0, :2, 2]) / f, torch.ones(b, v, per_view, 1)], -1) * depth[..., None]
    means = (poses[:, :, None, :3, :3] @ ray[..., None])[..., 0] + poses[:, :, None, :3, 3]
    # GaussTR's scale head: sigmoid range (1, 16) x depth * 7.5 / focal, i.e. 7.5 to 120 pixels at its
    # 896-pixel-wide input; scaled here to the same fraction of this image's width.
    footprint = 7.5 * w / 896
    scales = (1 + 15 * torch.rand(b, v, per_view, 3, generator=g)) * (depth * footprint / f)[..., None]
    n = v * per_view
    gaussians = Gaussians(
        means=means.reshape(b, n, 3),
        scales=scales.reshape(b, n, 3),
        rotations=torch.randn(b, n, 4, generator=g),
        opacities=0.05 + 0.9 * torch.rand(b, n, generator=g),
        features=torch.randn(b, n, c, generator=g),
    )
    return gaussians.to(device), k.to(device), poses.to(device), (h, w)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.mark.parametrize("channels", [8, 40, 128])
def test_gsplat_images_match_the_reference(channels):
    g, k, poses, size = _scene(seed=channels, b=2, v=6, per_view=100, c=channels, h=72, w=128)
    ref = render_gaussians(g, k, poses, size, backend="torch")
    out = render_gaussians(g, k, poses, size, backend="gsplat", channel_chunk=32)
    assert out.features.shape == ref.features.shape and out.features.dtype == torch.float32
    assert ref.alpha.mean() > 0.2, "the scene should cover the images"
    assert _rel(out.features, ref.features) < 1e-3
    assert _rel(out.depth, ref.depth) < 1e-3
    assert _rel(out.alpha, ref.alpha) < 1e-3


def test_gsplat_gradients_match_the_reference():
    g, k, poses, size = _scene(seed=1, b=1, v=6, per_view=60, c=16, h=64, w=112)
    gen = torch.Generator(device="cuda").manual_seed(0)
    w_feat = torch.randn(1, 6, 16, *size, generator=gen, device="cuda")
    w_depth = torch.randn(1, 6, *size, generator=gen, device="cuda")
    grads = {}
    for backend in ("torch", "gsplat"):
        params = [
            t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.features)
        ]
        out = render_gaussians(Gaussians(*params), k, poses, size, backend=backend)
        ((out.features * w_feat).sum() + (out.depth * w_depth).sum()).backward()
        grads[backend] = [p.grad for p in params]
    names = ("means", "scales", "rotations", "opacities", "features")
    for name, ref, out in zip(names, grads["torch"], grads["gsplat"]):
        assert torch.isfinite(out).all(), name
        assert _cos(out, ref) > 0.99, (name, _cos(out, ref))
        bound = 1e-3 if name == "features" else 1e-2
        assert _rel(out, ref) < bound, (name, _rel(out, ref))


def test_gsplat_hand_case_and_pixel_convention():
    k = torch.tensor([[[[50.0, 0.0, 20.0], [0.0, 50.0, 12.0], [0.0, 0.0, 1.0]]]], device="cuda")
    pose = torch.eye(4, device="cuda")[None, None]
    g = Gaussians(
        means=torch.tensor([[[0.0, 0.0, 8.0]]], device="cuda"),
        scales=torch.full((1, 1, 3), 0.3, device="cuda"),
        rotations=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], device="cuda"),
        opacities=torch.tensor([[0.7]], device="cuda"),
        features=torch.tensor([[[1.5, -2.0, 0.25]]], device="cuda"),
    )
    out = render_gaussians(g, k, pose, (25, 41), backend="gsplat")
    torch.testing.assert_close(out.features[0, 0, :, 12, 20], 0.7 * g.features[0, 0], rtol=1e-5, atol=1e-6)
    assert out.depth[0, 0, 12, 20].item() == pytest.approx(0.7 * 8.0, rel=1e-5)
    assert out.alpha[0, 0].flatten().argmax().item() == 12 * 41 + 20


def test_gsplat_under_autocast_renders_in_float32():
    g, k, poses, size = _scene(seed=3, b=1, v=6, per_view=50, c=24, h=48, w=80)
    ref = render_gaussians(g, k, poses, size, backend="gsplat")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = render_gaussians(g.with_features(g.features.bfloat16()), k, poses, size, backend="gsplat")
    assert out.features.dtype == torch.float32
    assert _rel(out.features, ref.features) < 1e-2  # the features themselves were rounded to bf16
    assert _rel(out.depth, ref.depth) < 1e-6
    depth_only = render_gaussians(g.with_features(g.features[..., :0]), k, poses, size, backend="gsplat")
    assert depth_only.features.shape[2] == 0
    assert _rel(depth_only.depth, ref.depth) < 1e-6


def test_auto_backend_picks_gsplat_on_cuda():
    from gausstr_core.render import resolve_backend

    assert resolve_backend("auto", "cuda") == "gsplat"
