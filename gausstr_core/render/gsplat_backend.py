"""Rendering with ``gsplat.rasterization`` on CUDA: features and depth in one projection pass.

gsplat is imported lazily: it JIT-compiles CUDA code on first use and is not needed (or installed)
on machines that only use the PyTorch reference renderer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import invert_rigid
from gausstr_core.render.common import EPS2D, RenderOutput, check_render_inputs, gsplat_intrinsics


def gsplat_available() -> bool:
    """True when gsplat can be imported (it still needs a CUDA device to run)."""
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gsplat(
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float = 0.1,
    far: float = 100.0,
    channel_chunk: int = 32,
    camera_model: str = "pinhole",
) -> RenderOutput:
    """Render with gsplat's CUDA rasterizer (render_mode "RGB+D", unpacked, classic 3DGS).

    Args:
        gaussians: means (B, N, 3), scales, rotations (w, x, y, z), opacities (B, N), features
            (B, N, C) on a CUDA device.
        intrinsics: (B, V, 3, 3) OpenCV intrinsics of the H x W rendered image.
        cam_to_ego: (B, V, 4, 4).
        image_size: (H, W).
        near, far: centres outside [near, far] in camera z are culled [m].
        channel_chunk: channels rasterized per kernel launch (features + 1 depth channel); wider
            features are rendered in several launches over one projection and one tile sort.
        camera_model: "pinhole" or "ortho" (gsplat's orthographic projection).
    Returns:
        RenderOutput with features (B, V, C, H, W), depth and alpha (B, V, H, W), float32.
    """
    _, _, h, w = check_render_inputs(gaussians, intrinsics, cam_to_ego, image_size, near, far, camera_model)
    if gaussians.means.device.type != "cuda":
        raise ValueError(
            f"the gsplat backend needs CUDA tensors, got {gaussians.means.device}; "
            "use backend='torch' (the reference renderer) on the CPU"
        )
    if channel_chunk < 1:
        raise ValueError(f"channel_chunk must be >= 1, got {channel_chunk}")
    try:
        from gsplat import rasterization
    except ImportError as exc:
        raise ImportError(
            "backend='gsplat' needs the gsplat package (pip install gsplat==1.5.3); "
            "backend='torch' renders without it"
        ) from exc
    return rasterize_with(
        rasterization, gaussians, intrinsics, cam_to_ego, (h, w), near, far, channel_chunk, camera_model
    )


def rasterize_with(
    rasterization,
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float,
    far: float,
    channel_chunk: int,
    camera_model: str = "pinhole",
) -> RenderOutput:
    """Call a function with ``gsplat.rasterization``'s interface on our Gaussians and cameras (the
    conversions: ego->camera view matrices, gsplat's pixel convention, float32, output layout)."""
    b = gaussians.batch_size
    h, w = image_size
    c = gaussians.features.shape[-1]
    f32 = lambda t: t.float().contiguous()
    # gsplat reshapes colors with view(..., -1) before it looks at the render mode, which fails for
    # zero channels: a depth-only render passes one placeholder channel in mode "D" instead.
    colors = gaussians.features if c > 0 else gaussians.opacities.new_zeros(b, gaussians.num_gaussians, 1)
    # gsplat's default model is "pinhole"; naming the model only when it differs keeps the perspective
    # call exactly what it always was.
    model = {} if camera_model == "pinhole" else {"camera_model": camera_model}
    # gsplat's kernels are float32 only; mixed-precision callers get a float32 render.
    with torch.autocast("cuda", enabled=False):
        viewmats = invert_rigid(f32(cam_to_ego))
        rendered, alphas, _ = rasterization(
            means=f32(gaussians.means),
            quats=f32(gaussians.rotations),
            scales=f32(gaussians.scales),
            opacities=f32(gaussians.opacities),
            colors=f32(colors),
            viewmats=viewmats.contiguous(),
            Ks=f32(gsplat_intrinsics(intrinsics.float())),
            width=w,
            height=h,
            near_plane=near,
            far_plane=far,
            eps2d=EPS2D,
            # gsplat 1.5.3's packed mode mis-renders every scene after the first when the Gaussians
            # carry a batch dimension (measured on an H100: scene 0 exact, scene 1 off by up to 1% of
            # the image norm, while packed=False matches the reference to 3e-5); the unpacked
            # (B, V, N) projection costs little at GaussTR's ~2k Gaussians.
            packed=False,
            render_mode="RGB+D" if c > 0 else "D",
            rasterize_mode="classic",
            channel_chunk=channel_chunk,
            **model,
        )  # (B, V, H, W, C + 1), (B, V, H, W, 1)
    return RenderOutput(
        features=rendered[..., :c].permute(0, 1, 4, 2, 3),
        depth=rendered[..., c],
        alpha=alphas[..., 0],
    )
