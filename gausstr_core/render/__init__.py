"""``render_gaussians``: splat 3D Gaussians into cameras (gsplat on CUDA, a PyTorch reference elsewhere).

Both backends compute the same image (gsplat 1.5.3's classic 3DGS math, see ``reference``):
features (B, V, C, H, W), accumulated depth and alpha (B, V, H, W). Pixel centres follow the OpenCV
convention of the intrinsics (integer coordinates).
"""

from __future__ import annotations

from torch import Tensor

from gausstr_core.gaussians import Gaussians
from gausstr_core.render.common import RenderOutput, check_render_inputs
from gausstr_core.render.gsplat_backend import gsplat_available, render_gsplat
from gausstr_core.render.reference import render_reference

BACKENDS = ("auto", "gsplat", "torch")

__all__ = [
    "BACKENDS",
    "RenderOutput",
    "gsplat_available",
    "render_gaussians",
    "render_gsplat",
    "render_reference",
    "resolve_backend",
]


def resolve_backend(backend: str, device_type: str) -> str:
    """The backend "auto" means on a device: gsplat on CUDA when it is installed, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"render backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "gsplat" if device_type == "cuda" and gsplat_available() else "torch"


def render_gaussians(
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float = 0.1,
    far: float = 100.0,
    backend: str = "auto",
    channel_chunk: int = 32,
    camera_model: str = "pinhole",
    tile_size: int | None = None,
) -> RenderOutput:
    """Render the Gaussians' features and depth into every camera of every scene.

    Args:
        gaussians: B scenes of N Gaussians in the ego frame, features (B, N, C) (C may be 0).
        intrinsics: (B, V, 3, 3) OpenCV intrinsics of the rendered H x W image (for the network
            input: ``batch.input_intrinsics()``; scale them with ``resize_matrix`` for other sizes).
        cam_to_ego: (B, V, 4, 4) camera -> ego transforms.
        image_size: (H, W) of the rendered images.
        near, far: Gaussians whose centre lies outside [near, far] in camera z are culled [m].
        backend: "auto" (gsplat for CUDA tensors when installed, else torch), "gsplat" or "torch".
        channel_chunk: gsplat only: channels per rasterization launch.
        camera_model: "pinhole" (perspective) or "ortho" (orthographic: u = fx x + cx with fx in
            pixels per metre, e.g. a bird's-eye view; gsplat's ``camera_model="ortho"``).
        tile_size: torch backend only: evaluate k x k pixel tiles against the Gaussians touching
            them instead of every pixel against every Gaussian (same image; much faster for many
            small Gaussians). gsplat always works in 16 x 16 tiles.
    Returns:
        RenderOutput: features (B, V, C, H, W), depth (B, V, H, W) = sum_i w_i z_i (0 where nothing
        is rendered; ``expected_depth()`` divides by alpha), alpha (B, V, H, W).
    """
    _, _, h, w = check_render_inputs(gaussians, intrinsics, cam_to_ego, image_size, near, far, camera_model)
    image_size = (h, w)
    chosen = resolve_backend(backend, gaussians.means.device.type)
    if chosen == "gsplat" and gaussians.num_gaussians > 0:
        return render_gsplat(
            gaussians, intrinsics, cam_to_ego, image_size, near, far, channel_chunk, camera_model
        )
    return render_reference(
        gaussians,
        intrinsics,
        cam_to_ego,
        image_size,
        near,
        far,
        camera_model=camera_model,
        tile_size=tile_size,
    )
