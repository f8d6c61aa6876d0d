"""The CUDA voxelizer: JIT build of `csrc/` on first use, and its autograd function.

The extension is compiled with `torch.utils.cpp_extension.load` the first time a CUDA tensor is
voxelized (about a minute; `TORCH_CUDA_ARCH_LIST` and `MAX_JOBS` are honoured) and cached in
``$GAUSSTR_EXTENSIONS_DIR`` if set, else torch's default (``~/.cache/torch_extensions``); the sources
are compiled from a copy named by their content (``stable_sources``), so a fresh copy of the package
with the same sources does not rebuild. Set ``GAUSSTR_VERBOSE_BUILD=1`` to see the compiler. A failed
build is remembered with the compiler's output, and `unavailable_reason` returns it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gausstr_core.grid import VoxelGrid
from gausstr_core.voxelize.checks import bad_gaussian_message

_SOURCES = ("voxelize.cpp", "voxelize_kernels.cu")
_EXTENSION_NAME = "gausstr_voxelize"
_state: dict[str, object] = {}


def _extensions_root() -> Path:
    """Where the builds live: ``$GAUSSTR_EXTENSIONS_DIR``, else torch's ``$TORCH_EXTENSIONS_DIR``, else
    ``~/.cache/torch_extensions``."""
    root = os.environ.get("GAUSSTR_EXTENSIONS_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "torch_extensions"


def stable_sources(csrc: Path) -> Path:
    """``csrc`` as a folder named by its content (SHA-256 of every file's name and bytes), copied there
    once, under ``_extensions_root()/gausstr_csrc``.

    Why: the build (ninja) decides by file times, and every fresh copy of this package (a checkout, a
    CI clone, the working tree sent to a lent GPU machine, a colcon install) gives the same sources
    new times, so the extension was compiled again each time (about a minute; measured on the lent
    H100: 55-72 s of every machine call). Same content, same folder, same times: no rebuild; changed
    sources get a folder of their own. ``csrc`` itself when the root is not writable.
    """
    files = sorted(p for p in csrc.iterdir() if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    target = _extensions_root() / "gausstr_csrc" / digest.hexdigest()[:20]
    if target.is_dir():
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for path in files:
            shutil.copy2(path, staging / path.name)
        os.rename(staging, target)  # atomic: a concurrent build sees all of it or nothing
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # not writable (another process winning the rename is fine)
            return csrc
    return target


def _build(name: str, sources: list[str], cflags: list[str], cuda_cflags: list[str]):
    """JIT-compile and import an extension; RuntimeError with the compiler's output on failure."""
    from torch.utils.cpp_extension import load

    build_dir = os.environ.get("GAUSSTR_EXTENSIONS_DIR")
    if build_dir:
        build_dir = os.path.join(build_dir, name)
        os.makedirs(build_dir, exist_ok=True)
    try:
        return load(
            name=name,
            sources=sources,
            extra_cflags=cflags,
            extra_cuda_cflags=cuda_cflags,
            build_directory=build_dir,
            verbose=os.environ.get("GAUSSTR_VERBOSE_BUILD", "") not in ("", "0"),
        )
    except Exception as exc:  # any build or import failure: keep the compiler's words
        message = str(exc)
        if len(message) > 4000:
            message = "...\n" + message[-4000:]
        raise RuntimeError(
            f"building the extension {name!r} failed ({type(exc).__name__}): {message}"
        ) from exc


def _load():
    """The compiled CUDA extension (built on first call), or RuntimeError with the reason."""
    if "module" in _state:
        return _state["module"]
    if "error" in _state:
        raise RuntimeError(_state["error"])
    csrc = stable_sources(Path(__file__).with_name("csrc"))
    try:
        # No fast-math: the kernel must agree with the reference to ~1e-6 (IEEE exp and division).
        _state["module"] = _build(
            _EXTENSION_NAME, [str(csrc / name) for name in _SOURCES], ["-O3"], ["-O3", "-diag-suppress=3306"]
        )
    except RuntimeError as exc:
        _state["error"] = str(exc)
        raise
    return _state["module"]


def load_cpu_emulation():
    """The same kernels and host code compiled for the CPU emulation harness (`csrc/cpu_emulation.h`):
    every CUDA thread becomes a host thread. For tests on machines without a GPU; slow."""
    if "emulation" not in _state:
        source = stable_sources(Path(__file__).with_name("csrc")) / "voxelize_cpu_emulation.cpp"
        _state["emulation"] = _build(
            _EXTENSION_NAME + "_emulation",
            [str(source)],
            ["-O1", "-Wno-unknown-pragmas", "-ffp-contract=off"],
            [],
        )
    return _state["emulation"]


def unavailable_reason() -> str | None:
    """None when the CUDA kernel can run here, else why not (no GPU, or the compiler's error)."""
    if not torch.cuda.is_available():
        return "torch reports no CUDA device"
    try:
        _load()
    except RuntimeError as exc:
        return str(exc)
    return None


def _forward(ext, means, covariances, opacities, features, valid, grid: VoxelGrid, eps: float):
    """The extension's forward with the input check turned into a ValueError."""
    density, voxel_features, params, boxes, bad = ext.forward(
        means,
        covariances,
        opacities,
        features,
        valid,
        list(grid.lower),
        grid.voxel_size,
        list(grid.shape),
        eps,
    )
    if bad >= 0:
        scene, index = divmod(bad, means.shape[1])
        raise ValueError(bad_gaussian_message(means, covariances, opacities, scene, index))
    return density, voxel_features, params, boxes


class _Voxelize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ext, means, covariances, opacities, features, valid, grid: VoxelGrid, eps: float):
        density, voxel_features, params, boxes = _forward(
            ext, means, covariances, opacities, features, valid, grid, eps
        )
        ctx.save_for_backward(covariances, features, params, boxes, density, voxel_features)
        ctx.ext, ctx.grid, ctx.eps = ext, grid, eps
        return density, voxel_features

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_density, grad_features):
        covariances, features, params, boxes, density, voxel_features = ctx.saved_tensors
        grid: VoxelGrid = ctx.grid
        grad_params, grad_gaussian_features = ctx.ext.backward(
            params,
            boxes,
            features,
            density,
            voxel_features,
            grad_density.contiguous(),
            grad_features.contiguous(),
            list(grid.lower),
            grid.voxel_size,
            list(grid.shape),
            ctx.eps,
        )
        b, n = features.shape[:2]
        grad_params = grad_params.view(b, n, 10)
        grad_covariances = None
        if ctx.needs_input_grad[2]:
            # The kernel differentiates w.r.t. the entries (xx, yy, zz, xy, xz, yz) of P = sym(Sigma^-1)
            # as they appear in d^T P d (off-diagonals counted twice); dL/dSigma = -P^T G P^T with G
            # the symmetric matrix dL/dP.
            g6 = grad_params[..., 3:9].double()
            off = 0.5 * g6[..., 3:]
            gram = torch.stack(
                [
                    torch.stack([g6[..., 0], off[..., 0], off[..., 1]], -1),
                    torch.stack([off[..., 0], g6[..., 1], off[..., 2]], -1),
                    torch.stack([off[..., 1], off[..., 2], g6[..., 2]], -1),
                ],
                -2,
            )
            inverse_t = torch.linalg.inv_ex(covariances.double())[0].mT
            grad_covariances = -(inverse_t @ gram @ inverse_t).to(covariances.dtype)
            # Excluded Gaussians may hold anything (NaN, singular): their gradient is exactly zero.
            active = (boxes[:, 0] <= boxes[:, 3]).view(b, n, 1, 1)
            grad_covariances = torch.where(active, grad_covariances, 0.0)
        return (
            None,
            grad_params[..., :3],
            grad_covariances,
            grad_params[..., 9],
            grad_gaussian_features,
            None,
            None,
            None,
        )


def _contiguous(means, covariances, opacities, features, valid) -> tuple:
    """The kernel inputs as the extension reads them (dense row-major; ``valid`` may be None)."""
    return (
        means.contiguous(),
        covariances.contiguous(),
        opacities.contiguous(),
        features.contiguous(),
        None if valid is None else valid.contiguous(),
    )


def voxelize_cuda(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    eps: float = 1e-6,
    extension=None,
) -> tuple[Tensor, Tensor]:
    """The CUDA kernel (semantics, shapes and errors: `voxelize_gaussians`); float32 or float64
    CUDA tensors of one dtype. ``extension``: the compiled module (default: the CUDA build;
    tests pass `load_cpu_emulation()` with CPU tensors)."""
    ext = _load() if extension is None else extension
    inputs = _contiguous(means, covariances, opacities, features, valid)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs[:4]):
        return _Voxelize.apply(ext, *inputs, grid, eps)
    return _forward(ext, *inputs, grid, eps)[:2]  # inference: no autograd bookkeeping


def voxelize_cuda_capturable(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    grid: VoxelGrid,
    valid: Tensor | None = None,
    eps: float = 1e-6,
    extension=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The CUDA forward without host synchronisation or data-dependent allocations, so that it can
    be captured in a CUDA graph (inference only: no autograd).

    Same outputs as `voxelize_cuda` (bitwise: the same Gaussians are summed in the same order), plus
    ``bad``: a (1,) int64 device tensor with the flat index (scene * N + index) of the first included
    Gaussian with a non-finite or not positive-definite input, or -1. When it is >= 0 the outputs are
    undefined; `raise_if_bad` turns it into the ValueError `voxelize_gaussians` raises (it reads the
    value, i.e. synchronises: call it once the outputs are needed on the host anyway). Its cost grows
    with N x tiles: meant for a scene of a few thousand Gaussians, such as the model's prediction.
    """
    ext = _load() if extension is None else extension
    return ext.forward_capturable(
        *_contiguous(means, covariances, opacities, features, valid),
        list(grid.lower),
        grid.voxel_size,
        list(grid.shape),
        eps,
    )


def raise_if_bad(bad: Tensor, means: Tensor, covariances: Tensor, opacities: Tensor) -> None:
    """Raise the input-check ValueError that `voxelize_cuda_capturable` reported in ``bad`` (syncs)."""
    index = int(bad.reshape(-1)[0])
    if index >= 0:
        scene, index = divmod(index, means.shape[1])
        raise ValueError(bad_gaussian_message(means, covariances, opacities, scene, index))
