"""The check of the Gaussians a voxelizer includes, and its error, shared by the PyTorch reference
(``api``) and the CUDA kernel (``cuda``, whose kernel reports the first bad Gaussian it finds)."""

from __future__ import annotations

import torch


def check_gaussians(means, covariances, opacities, valid):
    """Raise on included Gaussians that would make garbage (the CUDA kernel checks the same): a
    non-finite mean, opacity or covariance, or a covariance that is not positive definite
    (Sylvester: leading principal minors > 0, in float64)."""
    n = means.shape[1]
    cov = covariances.detach().double()
    minor2 = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    definite = (cov[..., 0, 0] > 0) & (minor2 > 0) & (torch.linalg.det(cov) > 0)
    finite = torch.isfinite(means).all(-1) & torch.isfinite(cov).flatten(-2).all(-1)
    finite &= torch.isfinite(opacities)
    bad = ~(finite & definite)
    if valid is not None:
        bad &= valid
    if n > 0 and bool(bad.any()):
        s, g = (int(i) for i in bad.nonzero()[0])
        raise ValueError(bad_gaussian_message(means, covariances, opacities, s, g))


def bad_gaussian_message(means, covariances, opacities, scene: int, index: int) -> str:
    """The error for an included Gaussian that fails `_check_gaussians` (shared with the kernel)."""
    return (
        f"Gaussian (scene {scene}, index {index}) has a non-finite mean/opacity/covariance or a "
        f"covariance that is not positive definite: mean {means[scene, index].tolist()}, opacity "
        f"{float(opacities[scene, index])}, covariance {covariances[scene, index].tolist()}"
    )
