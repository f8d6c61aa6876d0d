"""GaussTR on CUDA: the same numbers as on the CPU, bf16 autocast close to fp32, paper scale runs."""

from __future__ import annotations

import pytest
import torch

from gausstr_core.model.deformable_attention import deformable_sample
from gausstr_core.model.gausstr import GaussTR
from gausstr_core.presets import preset_model
from gausstr_testing.cameras import rig

pytestmark = pytest.mark.gpu


def test_deformable_sample_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    shapes = [(36, 64), (18, 32), (9, 16), (5, 8)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(12, s, 8, 32, generator=g, dtype=torch.float64)
    loc = torch.rand(12, 300, 8, 4, 4, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(12, 300, 8, 4, 4, generator=g, dtype=torch.float64)
    want = deformable_sample(value, shapes, loc, weights)
    got = deformable_sample(value.cuda(), shapes, loc.cuda(), weights.cuda()).cpu()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 on Ampere+ (10-bit mantissa): exact CPU parity needs IEEE fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tiny_model_cuda_matches_cpu_and_bf16_is_close(no_tf32):
    torch.manual_seed(0)
    model = GaussTR(preset_model("tiny")).eval()
    batch = rig(2, 6, 112, 200)
    with torch.no_grad():
        want = model(batch).final
        model_gpu = model.cuda()
        got = model_gpu(batch.to("cuda")).final
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model_gpu(batch.to("cuda")).final
    for name in ("means", "scales", "opacities", "features"):
        torch.testing.assert_close(
            getattr(got, name).cpu(),
            getattr(want, name),
            rtol=1e-3,
            atol=1e-3,
            msg=lambda m, name=name: f"{name}: {m}",
        )
        ref, low = getattr(got, name), getattr(half, name)
        rel = (low - ref).norm() / ref.norm()
        # bf16 keeps 8 mantissa bits (~0.4% per rounding); through a random-init backbone, 3 decoder
        # layers and the logit-space position refinement that compounds to a few percent. The bound
        # catches broken mixed precision (NaN, wrong dtype, garbage), not rounding.
        assert low.dtype == torch.float32 and rel < 0.1, (name, float(rel))


def test_talk2dino_paper_scale_forward_backward():
    cfg = preset_model("talk2dino")
    cfg.backbone.random_init = True
    torch.manual_seed(0)
    model = GaussTR(cfg).cuda().train()
    batch = rig(1, 6, 504, 896).to("cuda")
    batch.features = None
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
    assert out.final.means.shape == (1, 1800, 3) and out.target_features.shape == (1, 6, 768, 36, 64)
    loss = sum(
        g.features.square().mean() + g.means.square().mean() + g.scales.mean() + g.opacities.mean()
        for g in out.gaussians
    )
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert torch.cuda.max_memory_allocated() < 16 * 1024**3
