"""Render views of GaussRender (Chambon et al., ICCV 2025): the input (sensor) cameras at another size,
elevated cameras lifted and pitched down from them, and an orthographic bird's-eye view above the
grid (``RenderView``), and rendering voxel Gaussians into them (``render_occupancy``). Which views a
loss or metric evaluation uses is ``gausstr_core.losses.gaussrender.render_views``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gausstr_core.batch import CameraBatch
from gausstr_core.data.transforms import resize_matrix
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.render import RenderOutput, render_gaussians

VIEW_KINDS = ("sensor", "elevated", "bev")


@dataclass
class RenderView:
    """A set of cameras of one kind, rendered together.

    Attributes:
        kind: "sensor", "elevated" or "bev".
        intrinsics: (B, V, 3, 3) of the rendered image (pixels per metre for "ortho").
        cam_to_ego: (B, V, 4, 4).
        image_size: (H, W).
        camera_model: "pinhole" or "ortho".
        max_depth: the depth normaliser of the depth L1 [m].
        near, far: renderer culling planes [m].
    """

    kind: str
    intrinsics: Tensor
    cam_to_ego: Tensor
    image_size: tuple[int, int]
    camera_model: str
    max_depth: float
    near: float = 0.1
    far: float = 100.0


def sensor_view(
    cameras: CameraBatch, size: tuple[int, int], views: Tensor | None = None, max_depth: float = 50.0
) -> RenderView:
    """The input cameras at ``size`` (all of them, or ``views`` (B, V') indices per scene)."""
    k = (resize_matrix(cameras.image_size, size).to(cameras.intrinsics) @ cameras.input_intrinsics()).float()
    pose = cameras.cam_to_ego.float()
    if views is not None:
        k = torch.gather(k, 1, views[..., None, None].expand(*views.shape, 3, 3))
        pose = torch.gather(pose, 1, views[..., None, None].expand(*views.shape, 4, 4))
    return RenderView("sensor", k, pose, tuple(size), "pinhole", max_depth)


def elevated_poses(
    cam_to_ego: Tensor, elevation: float, pitch_deg: float, yaw_deg: Tensor, shift: Tensor
) -> Tensor:
    """Cameras lifted, pitched down, turned and moved (GaussRender's "elevated" strategy).

    Args:
        cam_to_ego: (..., 4, 4) source cameras (optical frame: x right, y down, z forward).
        elevation: lift along ego z [m].
        pitch_deg: downward tilt about each camera's own x axis [deg].
        yaw_deg: (...) turn about the vertical through the camera [deg].
        shift: (..., 2) horizontal translation in the ego frame [m].
    Returns:
        (..., 4, 4) the new camera -> ego transforms.
    """
    t = math.radians(pitch_deg)
    # Columns: the new camera axes in the old camera frame; z' = (0, sin, cos) leans down (+y).
    tilt = cam_to_ego.new_tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(t), math.sin(t)], [0.0, -math.sin(t), math.cos(t)]]
    )
    yaw = torch.deg2rad(yaw_deg.to(cam_to_ego.dtype))
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    turn = torch.stack(
        [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1), torch.stack([zero, zero, one], -1)],
        -2,
    )
    out = cam_to_ego.clone()
    out[..., :3, :3] = turn @ cam_to_ego[..., :3, :3] @ tilt
    out[..., 0, 3] = cam_to_ego[..., 0, 3] + shift[..., 0]
    out[..., 1, 3] = cam_to_ego[..., 1, 3] + shift[..., 1]
    out[..., 2, 3] = cam_to_ego[..., 2, 3] + elevation
    return out


def elevated_view(
    cameras: CameraBatch,
    size: tuple[int, int],
    count: int,
    elevation: float,
    pitch: float,
    yaw_jitter: float,
    around: float,
    max_depth: float = 50.0,
    generator: torch.Generator | None = None,
) -> RenderView:
    """``count`` elevated cameras per scene, each from a random sensor camera lifted ``elevation`` m,
    pitched ``pitch`` degrees down, turned by a random yaw of up to ``yaw_jitter`` degrees and moved up
    to ``around`` m per horizontal axis (``elevated_poses``)."""
    b, v = cameras.batch_size, cameras.num_views
    base = sensor_view(cameras, size, max_depth=max_depth)
    gen_device = generator.device if generator is not None else "cpu"
    source = torch.randint(0, v, (b, count), generator=generator, device=gen_device)
    source = source.to(base.intrinsics.device)
    yaw = (2 * torch.rand(b, count, generator=generator, device=gen_device) - 1) * yaw_jitter
    shift = (2 * torch.rand(b, count, 2, generator=generator, device=gen_device) - 1) * around
    k = torch.gather(base.intrinsics, 1, source[..., None, None].expand(b, count, 3, 3))
    pose = torch.gather(base.cam_to_ego, 1, source[..., None, None].expand(b, count, 4, 4))
    pose = elevated_poses(pose, elevation, pitch, yaw.to(pose), shift.to(pose))
    return RenderView("elevated", k, pose, tuple(size), "pinhole", max_depth)


def bev_view(
    grid: VoxelGrid, batch_size: int, resolution: float, device=None, height: float = 1.0
) -> RenderView:
    """The fixed orthographic camera ``height`` m above the grid's top, looking straight down.

    Image rows run from the grid's front (x max, top row) to its back, columns from its left (y max)
    to its right, each pixel ``resolution`` m; depth is the drop below the camera.
    """
    x0, y0, z0, x1, y1, z1 = grid.range
    h, w = round((x1 - x0) / resolution), round((y1 - y0) / resolution)
    if h < 1 or w < 1:
        raise ValueError(f"bev_resolution {resolution} m is coarser than the grid {grid.range}")
    pose = torch.eye(4, device=device)
    # Optical axes in the ego frame: x right = -y (ego right), y down = -x (backwards), z = down.
    pose[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], device=device)
    pose[:3, 3] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, z1 + height], device=device)
    f = 1.0 / resolution
    k = torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]], device=device)
    depth_range = z1 + height - z0
    return RenderView(
        "bev",
        k.expand(batch_size, 1, 3, 3).clone(),
        pose.expand(batch_size, 1, 4, 4).clone(),
        (h, w),
        "ortho",
        depth_range,
        near=0.5 * height,
        far=depth_range + 1.0,
    )


def render_occupancy(
    gaussians: Gaussians, view: RenderView, tile_size: int | None = 8, backend: str = "auto"
) -> RenderOutput:
    """Render voxel Gaussians into a view: semantics (B, V, K, H, W), accumulated depth (B, V, H, W)."""
    k, pose = view.intrinsics.to(gaussians.means), view.cam_to_ego.to(gaussians.means)
    return render_gaussians(
        gaussians,
        k,
        pose,
        view.image_size,
        near=view.near,
        far=view.far,
        backend=backend,
        camera_model=view.camera_model,
        tile_size=tile_size,
    )
