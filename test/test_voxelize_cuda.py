"""The CUDA voxelizer against the PyTorch reference.

Two ways to run the same kernels:
  * on a GPU (tests marked ``gpu``; they skip without one): exactness, gradients, the large cases;
  * on the CPU through the emulation harness (csrc/cpu_emulation.h, every CUDA thread a host
    thread), so that indexing, synchronisation and the host pipeline are checked on every machine.
"""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.geometry import build_covariance
from gausstr_core.grid import VoxelGrid
from gausstr_core.voxelize import cuda as vcuda
from gausstr_core.voxelize import voxelize_gaussians
from gausstr_core.voxelize.reference import voxelize_reference
from gausstr_testing.numerics import rel_err
from gausstr_testing.random_scene import random_gaussians

OCC3D = VoxelGrid()
SMALL = VoxelGrid((-2.0, -2.0, -1.0, 2.0, 1.2, 0.6), 0.4)  # 10 x 8 x 4: two tiles per scene
ODD = VoxelGrid((-3.0, -1.0, -1.0, 3.4, 2.6, 1.4), 0.4)  # 16 x 9 x 6: partial tiles on y and z
TINY = VoxelGrid((0.0, 0.0, 0.0, 2.0, 1.6, 1.2), 0.4)  # 5 x 4 x 3


def assert_close_outputs(actual, expected, tol):
    (d, f), (rd, rf) = actual, expected
    assert d.shape == rd.shape and f.shape == rf.shape and d.dtype == rd.dtype
    if rd.abs().max() == 0:
        assert (d == 0).all() and (f == 0).all()
        return
    assert rel_err(d, rd) < tol, f"density relative error {rel_err(d, rd):.3g}"
    if f.numel():
        assert rel_err(f, rf) < tol, f"feature relative error {rel_err(f, rf):.3g}"


def gradients(fn, inputs, grad_outputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outputs = fn(*leaves)
    torch.autograd.backward(list(outputs), list(grad_outputs))
    return [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]


def hard_cases(gen, dtype, device):
    """(name, inputs, valid, grid) for the cases the issue lists, on `device`."""

    def put(*tensors):
        return tuple(t.to(device=device, dtype=dtype) for t in tensors)

    cases = []
    inputs = random_gaussians(
        2, 60, 5, SMALL, scale_range=(0.2, 1.5), margin=2.0, dtype=torch.float64, generator=gen
    )
    cases.append(("straddling", put(*inputs), None, SMALL))
    means, cov, opacities, features = random_gaussians(
        1, 20, 3, SMALL, scale_range=(0.1, 0.5), dtype=torch.float64, generator=gen
    )
    means = means.clone()
    means[..., 0] = SMALL.range[3] + 1.6 + 1.5 * torch.rand(1, 20, generator=gen, dtype=torch.float64)
    cases.append(("outside", put(means, cov, opacities, features), None, SMALL))
    centres = ODD.centers(dtype=torch.float64).reshape(-1, 3)
    sigma = 10 ** (-4 + 2 * torch.rand(1, 50, 3, generator=gen, dtype=torch.float64))
    means = centres[torch.randint(len(centres), (50,), generator=gen)][None]
    means = means + sigma * torch.randn(1, 50, 3, generator=gen, dtype=torch.float64)
    cov = build_covariance(sigma, torch.randn(1, 50, 4, generator=gen, dtype=torch.float64))
    features = torch.randn(1, 50, 4, generator=gen, dtype=torch.float64)
    cases.append(
        ("tiny", put(means, cov, torch.rand(1, 50, generator=gen, dtype=torch.float64), features), None, ODD)
    )
    inputs = random_gaussians(1, 4, 3, ODD, scale_range=(20.0, 100.0), dtype=torch.float64, generator=gen)
    cases.append(("huge", put(*inputs), None, ODD))
    n = 40
    scales = torch.tensor([0.05, 2.0, 0.4], dtype=torch.float64)[torch.randperm(3, generator=gen)]
    cov = build_covariance(scales.expand(1, n, 3), torch.randn(1, n, 4, generator=gen, dtype=torch.float64))
    means, _, opacities, features = random_gaussians(1, n, 6, ODD, dtype=torch.float64, generator=gen)
    cases.append(("anisotropic", put(means, cov, opacities, features), None, ODD))
    inputs = random_gaussians(2, 0, 4, SMALL, dtype=torch.float64, generator=gen)
    cases.append(("zero gaussians", put(*inputs), None, SMALL))
    inputs = random_gaussians(
        3, 12, 7, ODD, scale_range=(0.1, 1.2), margin=0.5, dtype=torch.float64, generator=gen
    )
    valid = torch.arange(12)[None] < torch.tensor([12, 5, 0])[:, None]
    valid &= torch.rand(3, 12, generator=gen) < 0.8
    cases.append(("batch with masks", put(*inputs), valid.to(device), ODD))
    inputs = random_gaussians(1, 10, 0, SMALL, dtype=torch.float64, generator=gen)
    cases.append(("no channels", put(*inputs), None, SMALL))
    inputs = random_gaussians(1, 12, 40, ODD, scale_range=(0.2, 1.0), dtype=torch.float64, generator=gen)
    cases.append(("two channel chunks", put(*inputs), None, ODD))
    return cases


# ---------------------------------------------------------------------------------------------
# CPU emulation of the kernels (runs everywhere).


@pytest.fixture(scope="module")
def emulation():
    return vcuda.load_cpu_emulation()


@pytest.mark.slow
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_emulated_kernel_forward_matches_reference(emulation, gen, dtype, tol):
    for name, inputs, valid, grid in hard_cases(gen, dtype, "cpu"):
        out = vcuda.voxelize_cuda(*inputs, grid, valid, extension=emulation)
        expected = voxelize_reference(*inputs, grid, valid)
        try:
            assert_close_outputs(out, expected, tol)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from exc


@pytest.mark.slow
def test_emulated_kernel_backward_matches_reference(emulation, gen):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        inputs = random_gaussians(
            2, 10, 5, SMALL, scale_range=(0.1, 1.0), margin=1.0, dtype=dtype, generator=gen
        )
        valid = torch.rand(2, 10, generator=gen) < 0.8
        grad_out = (
            torch.randn(2, *SMALL.shape, generator=gen).to(dtype),
            torch.randn(2, *SMALL.shape, 5, generator=gen).to(dtype),
        )
        ours = gradients(
            lambda *a, v=valid: vcuda.voxelize_cuda(*a, SMALL, v, eps=1e-2, extension=emulation),
            inputs,
            grad_out,
        )
        ref = gradients(lambda *a, v=valid: voxelize_reference(*a, SMALL, v, eps=1e-2), inputs, grad_out)
        for name, a, b in zip(("means", "covariances", "opacities", "features"), ours, ref):
            assert rel_err(a, b) < tol, f"{dtype} d/d{name}: relative error {rel_err(a, b):.3g}"


@pytest.mark.slow
def test_emulated_kernel_excluded_gaussians_get_zero_gradients(emulation, gen):
    means, cov, opacities, features = random_gaussians(1, 6, 3, SMALL, scale_range=(0.2, 1.0), generator=gen)
    cov, means = cov.clone(), means.clone()
    cov[0, 2] = math.nan
    means[0, 2] = math.nan
    valid = torch.tensor([[True, True, False, True, True, True]])
    leaves = [t.requires_grad_() for t in (means, cov, opacities, features)]
    density, voxel_features = vcuda.voxelize_cuda(*leaves, SMALL, valid, extension=emulation)
    (density.sum() + voxel_features.square().sum()).backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all()
        assert (t.grad[0, 2] == 0).all()
    assert (cov.grad[0, valid[0]] != 0).any()


@pytest.mark.slow
def test_emulated_kernel_gradcheck(emulation, gen):
    inputs = random_gaussians(1, 4, 3, TINY, scale_range=(0.3, 0.8), dtype=torch.float64, generator=gen)
    leaves = [t.clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda *a: vcuda.voxelize_cuda(*a, TINY, None, eps=1e-3, extension=emulation),
        leaves,
        eps=1e-6,
        atol=1e-7,
        rtol=1e-5,
        fast_mode=True,
    )


@pytest.mark.slow
def test_emulated_kernel_reports_bad_inputs(emulation, gen):
    means, cov, opacities, features = random_gaussians(2, 5, 2, SMALL, generator=gen)
    cov = cov.clone()
    cov[1, 3, 1, 1] = -1.0
    with pytest.raises(ValueError, match=r"scene 1, index 3"):
        vcuda.voxelize_cuda(means, cov, opacities, features, SMALL, extension=emulation)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3] = False
    vcuda.voxelize_cuda(means, cov, opacities, features, SMALL, valid, extension=emulation)
    indefinite = torch.eye(3).repeat(2, 5, 1, 1)
    indefinite[0, 4, 0, 1] = indefinite[0, 4, 1, 0] = 1.5  # positive diagonal, determinant < 0
    with pytest.raises(ValueError, match=r"scene 0, index 4\).* not positive definite"):
        vcuda.voxelize_cuda(means, indefinite, opacities, features, SMALL, extension=emulation)


@pytest.mark.slow
def test_emulated_capturable_forward_is_bitwise_the_sorted_forward(emulation, gen):
    """The capturable forward (no host sync, for CUDA graphs) finds each tile's Gaussians by a scan
    instead of sorted keys: same Gaussians, same order, so the very same bits."""
    cases = hard_cases(gen, torch.float32, "cpu")
    inputs = random_gaussians(2, 300, 40, ODD, scale_range=(0.1, 1.0), dtype=torch.float32, generator=gen)
    cases.append(("two scan windows", inputs, torch.rand(2, 300, generator=gen) < 0.8, ODD))
    for name, inputs, valid, grid in cases:
        expected = vcuda.voxelize_cuda(*inputs, grid, valid, extension=emulation)
        density, features, bad = vcuda.voxelize_cuda_capturable(*inputs, grid, valid, extension=emulation)
        assert bad.tolist() == [-1], name
        assert torch.equal(density, expected[0]), name
        assert torch.equal(features, expected[1]), name


@pytest.mark.slow
def test_emulated_capturable_forward_reports_the_first_bad_input(emulation, gen):
    means, cov, opacities, features = random_gaussians(2, 5, 2, SMALL, generator=gen)
    cov = cov.clone()
    cov[1, 3, 1, 1] = -1.0
    cov[1, 4, 0, 0] = math.nan
    bad = vcuda.voxelize_cuda_capturable(means, cov, opacities, features, SMALL, extension=emulation)[2]
    assert bad.tolist() == [8]
    with pytest.raises(ValueError, match=r"scene 1, index 3"):
        vcuda.raise_if_bad(bad, means, cov, opacities)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    out = vcuda.voxelize_cuda_capturable(means, cov, opacities, features, SMALL, valid, extension=emulation)
    vcuda.raise_if_bad(out[2], means, cov, opacities)  # excluded: nothing to report
    assert out[2].tolist() == [-1]


def test_failed_build_reports_the_compiler_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSTR_EXTENSIONS_DIR", str(tmp_path / "build"))
    source = tmp_path / "broken.cpp"
    source.write_text('#error "deliberately broken source"\n')
    with pytest.raises(RuntimeError, match="deliberately broken source"):
        vcuda._build("gausstr_broken_test", [str(source)], [], [])


# ---------------------------------------------------------------------------------------------
# The real kernel on a GPU.


def _cuda_reason():
    return vcuda.unavailable_reason()


@pytest.fixture(scope="module")
def kernel():
    reason = _cuda_reason()
    if reason is not None:
        pytest.fail(f"CUDA voxelizer unavailable on a GPU machine: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [0, 3, 18, 40, 128])
def test_cuda_matches_reference_on_random_scenes(kernel, gen, channels):
    inputs = random_gaussians(2, 2000, channels, OCC3D, margin=2.0, device="cuda", generator=gen)
    valid = (torch.rand(2, 2000, generator=gen) < 0.9).cuda()
    out = voxelize_gaussians(*inputs, OCC3D, valid=valid, backend="cuda")
    assert_close_outputs(out, voxelize_gaussians(*inputs, OCC3D, valid=valid, backend="torch"), 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_cuda_hard_cases(kernel, gen, dtype, tol):
    for name, inputs, valid, grid in hard_cases(gen, dtype, "cuda"):
        out = voxelize_gaussians(*inputs, grid, valid=valid, backend="cuda")
        try:
            assert_close_outputs(out, voxelize_reference(*inputs, grid, valid), tol)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from exc


@pytest.mark.gpu
def test_cuda_100k_gaussians(kernel, gen):
    inputs = random_gaussians(1, 100_000, 18, OCC3D, device="cuda", generator=gen)
    out = voxelize_gaussians(*inputs, OCC3D, backend="cuda")
    assert_close_outputs(out, voxelize_gaussians(*inputs, OCC3D, backend="torch"), 1e-4)


@pytest.mark.gpu
def test_cuda_768_channels(kernel, gen):
    inputs = random_gaussians(1, 3000, 768, OCC3D, device="cuda", generator=gen)
    out = voxelize_gaussians(*inputs, OCC3D, backend="cuda")
    assert_close_outputs(out, voxelize_gaussians(*inputs, OCC3D, backend="torch"), 1e-4)


@pytest.mark.gpu
def test_cuda_180k_gaussians_768_channels_runs(kernel, gen):
    """The largest benchmark case runs without running out of memory; spot-checked."""
    inputs = random_gaussians(1, 180_000, 768, OCC3D, device="cuda", generator=gen)
    density, features = voxelize_gaussians(*inputs, OCC3D, backend="cuda")
    assert density.shape == (1, *OCC3D.shape) and features.shape == (1, *OCC3D.shape, 768)
    means, cov, opacities, feats = inputs
    del inputs
    torch.cuda.empty_cache()
    ref_density, ref_features = voxelize_reference(means, cov, opacities, feats[..., :3].contiguous(), OCC3D)
    assert rel_err(density, ref_density) < 1e-4
    assert rel_err(features[..., :3], ref_features) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_cuda_gradients_match_reference(kernel, gen, dtype, tol):
    grid = VoxelGrid((-10.0, -10.0, -1.0, 10.0, 10.0, 5.4), 0.4)
    inputs = random_gaussians(2, 400, 18, grid, margin=1.0, dtype=dtype, device="cuda", generator=gen)
    valid = (torch.rand(2, 400, generator=gen) < 0.9).cuda()
    grad_out = (
        torch.randn(2, *grid.shape, generator=gen).to("cuda", dtype),
        torch.randn(2, *grid.shape, 18, generator=gen).to("cuda", dtype),
    )
    ours = gradients(
        lambda *a: voxelize_gaussians(*a, grid, valid=valid, backend="cuda", eps=1e-3), inputs, grad_out
    )
    ref = gradients(
        lambda *a: voxelize_gaussians(*a, grid, valid=valid, backend="torch", eps=1e-3), inputs, grad_out
    )
    for name, a, b in zip(("means", "covariances", "opacities", "features"), ours, ref):
        assert rel_err(a, b) < tol, f"d/d{name}: relative error {rel_err(a, b):.3g}"


@pytest.mark.gpu
def test_cuda_gradcheck_float64(kernel, gen):
    inputs = random_gaussians(
        2, 4, 3, TINY, scale_range=(0.3, 0.8), dtype=torch.float64, device="cuda", generator=gen
    )
    leaves = [t.clone().requires_grad_() for t in inputs]
    valid = torch.tensor([[True, False, True, True], [True, True, True, True]], device="cuda")
    assert torch.autograd.gradcheck(
        lambda *a: voxelize_gaussians(*a, TINY, valid=valid, backend="cuda", eps=1e-3),
        leaves,
        eps=1e-6,
        atol=1e-7,
        rtol=1e-5,
    )


@pytest.mark.gpu
def test_cuda_writes_every_output_element(kernel, gen):
    """Outputs come from torch.empty: poison the allocator's cache with NaN first."""
    inputs = random_gaussians(2, 500, 18, OCC3D, device="cuda", generator=gen)
    for _ in range(3):
        poison = [
            torch.full((2, *OCC3D.shape), math.nan, device="cuda"),
            torch.full((2, *OCC3D.shape, 18), math.nan, device="cuda"),
        ]
        del poison
        density, features = voxelize_gaussians(*inputs, OCC3D, backend="cuda")
        assert torch.isfinite(density).all() and torch.isfinite(features).all()
    assert_close_outputs((density, features), voxelize_gaussians(*inputs, OCC3D, backend="torch"), 1e-4)


@pytest.mark.gpu
def test_cuda_is_deterministic_and_auto_selects_it(kernel, gen):
    inputs = random_gaussians(1, 3000, 18, OCC3D, device="cuda", generator=gen)
    first = voxelize_gaussians(*inputs, OCC3D, backend="cuda")
    again = voxelize_gaussians(*inputs, OCC3D)  # auto
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.gpu
def test_unavailable_kernel_falls_back_or_raises(kernel, gen, monkeypatch):
    from gausstr_core.voxelize import api

    inputs = random_gaussians(1, 50, 4, SMALL, device="cuda", generator=gen)
    monkeypatch.setattr(vcuda, "unavailable_reason", lambda: "compiler said no (test)")
    monkeypatch.setattr(api, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match="compiler said no"):
        out = voxelize_gaussians(*inputs, SMALL)
    assert_close_outputs(out, voxelize_reference(*inputs, SMALL), 1e-6)
    with pytest.raises(RuntimeError, match="compiler said no"):
        voxelize_gaussians(*inputs, SMALL, backend="cuda")


@pytest.mark.gpu
def test_cuda_input_handling(kernel, gen):
    means, cov, opacities, features = random_gaussians(2, 50, 6, SMALL, device="cuda", generator=gen)
    expected = voxelize_reference(means, cov, opacities, features, SMALL)
    # Non-contiguous views and half precision.
    strided = features.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    out = voxelize_gaussians(means, cov, opacities, strided, SMALL, backend="cuda")
    assert_close_outputs(out, expected, 1e-4)
    density, out = voxelize_gaussians(means.half(), cov, opacities, features.half(), SMALL, backend="cuda")
    assert density.dtype == torch.float32 and out.dtype == torch.float32
    bad = means.clone()
    bad[1, 7, 0] = math.inf
    with pytest.raises(ValueError, match=r"scene 1, index 7"):
        voxelize_gaussians(bad, cov, opacities, features, SMALL, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [0, 18, 40])
def test_cuda_capturable_forward_in_a_graph_is_bitwise_the_eager_kernel(kernel, gen, channels):
    """forward_capturable records into a CUDA graph (no host sync) and replays the eager kernel's bits
    on new inputs copied into the captured ones."""
    inputs = random_gaussians(1, 1800, channels, OCC3D, margin=2.0, device="cuda", generator=gen)
    valid = (torch.rand(1, 1800, generator=gen) < 0.9).cuda()
    static = [t.clone() for t in inputs] + [valid.clone()]

    def run():
        return vcuda.voxelize_cuda_capturable(*static[:4], OCC3D, static[4])

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    for _ in range(2):
        fresh = random_gaussians(1, 1800, channels, OCC3D, margin=2.0, device="cuda", generator=gen)
        for dst, src in zip(static, [*fresh, (torch.rand(1, 1800, generator=gen) < 0.9).cuda()]):
            dst.copy_(src)
        graph.replay()
        expected = voxelize_gaussians(*static[:4], OCC3D, valid=static[4], backend="cuda")
        assert out[2].item() == -1
        assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    bad_cov = static[1].clone()
    static[1][0, 7] = math.nan
    static[4][0, 7] = True
    graph.replay()
    assert out[2].item() == 7
    with pytest.raises(ValueError, match=r"scene 0, index 7"):
        vcuda.raise_if_bad(out[2], static[0], static[1], static[2])
    static[1].copy_(bad_cov)
