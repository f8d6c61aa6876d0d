"""`voxelize_gaussians`: input checks and the choice between the CUDA kernel and the reference."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from gausstr_core.grid import VoxelGrid
from gausstr_core.voxelize.checks import check_gaussians
from gausstr_core.voxelize.reference import voxelize_reference

BACKENDS = ("auto", "cuda", "torch")
"""``backend`` of ``voxelize_gaussians`` (and of ``InferenceConfig.voxelizer_backend``)."""
_warned_fallback = False


def voxelize_gaussians(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    backend: str = "auto",
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Splat 3D Gaussians into a voxel grid: per-voxel density and density-weighted mean feature.

    For every voxel centre x of ``grid`` (centre of voxel i on an axis: lo + (i + 0.5) * voxel_size)
    and every included Gaussian g with mean mu, covariance Sigma, opacity o and feature f:

        w_g(x)     = o * exp(-0.5 * (x - mu)^T Sigma^-1 (x - mu))   if x lies in g's 3-sigma box,
                     0 otherwise; the box is axis aligned with half-extent 3 * sqrt(Sigma_ii) on
                     axis i (bounds inclusive), as in the official GaussTR voxelizer;
        density(x) = sum_g w_g(x);
        feature(x) = sum_g w_g(x) f_g / max(density(x), eps).

    A Gaussian is included when ``valid`` is None or true for it (use `filter_gaussians` for the
    official opacity / range / covariance filter). Gaussians straddling the grid boundary
    contribute to the voxels inside; Gaussians touching no voxel centre contribute nothing.
    Differentiable w.r.t. means, covariances, opacities and features on both backends (the box
    membership itself is piecewise constant and has no gradient; the feature gradient flows
    through the normalisation too, except where density < eps).

    Args:
        means: (B, N, 3) centres [m], ego frame.
        covariances: (B, N, 3, 3) symmetric positive-definite covariances [m^2].
        opacities: (B, N).
        features: (B, N, C), C >= 0 (e.g. class probabilities, C = number of categories).
        grid: the voxel grid, shape (X, Y, Z).
        valid: optional (B, N) bool, the Gaussians to include.
        backend: "auto" (CUDA kernel for CUDA tensors, else the PyTorch reference; falls back to
            the reference with a warning if the kernel cannot be built), "cuda" (the kernel; raises
            if unavailable) or "torch" (the reference, any device).
        eps: floor of the density in the feature normalisation (> 0).
    Returns:
        density (B, X, Y, Z) and voxel features (B, X, Y, Z, C), float32 or float64 (float16 and
        bfloat16 inputs are computed and returned in float32).
    Raises:
        ValueError: on wrong shapes, devices or dtypes, an unknown backend, or an included Gaussian
            with a non-finite mean/opacity/covariance or a covariance that is not positive definite.
        RuntimeError: backend "cuda" when the kernel cannot be built (with the compiler's reason).
    """
    means, covariances, opacities, features, valid = _checked(
        means, covariances, opacities, features, grid, valid, backend, eps
    )
    use_cuda = backend == "cuda" or (backend == "auto" and means.is_cuda)
    if use_cuda:
        from gausstr_core.voxelize import cuda

        reason = cuda.unavailable_reason()
        if reason is None:
            return cuda.voxelize_cuda(means, covariances, opacities, features, grid, valid, eps)
        if backend == "cuda":
            raise RuntimeError(f"the CUDA voxelizer is unavailable: {reason}")
        global _warned_fallback
        if not _warned_fallback:
            warnings.warn(
                f"CUDA voxelizer unavailable, using the PyTorch reference: {reason}",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned_fallback = True
    check_gaussians(means, covariances, opacities, valid)
    return voxelize_reference(means, covariances, opacities, features, grid, valid, eps)


def _checked(means, covariances, opacities, features, grid, valid, backend, eps):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(grid, VoxelGrid):
        raise ValueError(f"grid must be a gausstr_core.grid.VoxelGrid, got {type(grid).__name__}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if means.dim() != 3 or means.shape[-1] != 3:
        raise ValueError(f"means must be (B, N, 3), got {tuple(means.shape)}")
    b, n = means.shape[:2]
    expected = {"covariances": (covariances, (b, n, 3, 3)), "opacities": (opacities, (b, n))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(tensor.shape)}")
    if features.dim() != 3 or tuple(features.shape[:2]) != (b, n):
        raise ValueError(f"features must be (B, N, C) with B, N = {b}, {n}, got {tuple(features.shape)}")
    if valid is not None and (tuple(valid.shape) != (b, n) or valid.dtype != torch.bool):
        raise ValueError(f"valid must be a ({b}, {n}) bool tensor, got {tuple(valid.shape)} {valid.dtype}")
    tensors = [means, covariances, opacities, features] + ([valid] if valid is not None else [])
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    for name, t in zip(("means", "covariances", "opacities", "features"), tensors):
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if backend == "cuda" and not means.is_cuda:
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got {means.device}")

    dtype = torch.float32
    for t in tensors[:4]:
        dtype = torch.promote_types(dtype, t.dtype)
    means, covariances, opacities, features = (t.to(dtype) for t in tensors[:4])
    return means, covariances, opacities, features, valid
