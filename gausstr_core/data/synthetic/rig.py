"""A nuScenes-like 6-camera surround rig as a plain dataclass (shared with the ROS bag tools).

The poses and intrinsics are those of the nuScenes capture vehicle (Renault Zoe, calibration of
the public v1.0 release, rounded): five 1266-px-focal cameras (about 65 deg horizontal FOV) facing
0, +-55 and +-110 deg, and a wide 809-px-focal rear camera (about 90 deg horizontal FOV), all
about 1.5 m above the ground, at 1600 x 900 pixels. The cameras here are level (no pitch or roll)
so that the synthetic world stays exact and easy to reason about.

Frames: ``cam_to_ego`` maps the OpenCV optical frame (x right, y down, z forward) to the ego frame
(x forward, y left, z up, origin on the ground below the rear axle, as in nuScenes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from gausstr_core.geometry import matrix_to_quaternion

NUSCENES_IMAGE_SIZE = (900, 1600)

LIDAR_TOP_TRANSLATION = (0.944, 0.0, 1.840)
"""Position of nuScenes' roof LiDAR in the ego frame [m] (the origin of ``mask_lidar`` rays)."""


def optical_rotation(yaw: float, pitch: float = 0.0) -> Tensor:
    """(3, 3) float64 rotation of an optical frame looking along ``yaw`` (about ego z, CCW from x),
    tilted down by ``pitch`` [rad]; its columns are the camera x, y, z axes in the ego frame."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    forward = torch.tensor([cy * cp, sy * cp, -sp], dtype=torch.float64)
    right = torch.tensor([sy, -cy, 0.0], dtype=torch.float64)
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward], dim=1)


@dataclass(frozen=True)
class CameraSpec:
    """One pinhole camera of a rig.

    Attributes:
        name: channel name ("CAM_FRONT"), also the ROS frame / topic stem.
        height, width: image size [px].
        fx, fy, cx, cy: pinhole intrinsics in pixels (OpenCV/CameraInfo convention).
        translation: camera centre in the ego frame [m].
        rotation: (w, x, y, z) unit quaternion of the optical frame in the ego frame (cam -> ego).
    """

    name: str
    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    def intrinsics(self, dtype=torch.float32) -> Tensor:
        """(3, 3) pinhole matrix K."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=dtype)

    def cam_to_ego(self, dtype=torch.float32) -> Tensor:
        """(4, 4) transform from the optical frame to the ego frame."""
        from gausstr_core.geometry import quaternion_to_matrix

        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3] = quaternion_to_matrix(torch.tensor(self.rotation, dtype=torch.float64))
        out[:3, 3] = torch.tensor(self.translation, dtype=torch.float64)
        return out.to(dtype)

    def scaled(self, height: int, width: int) -> CameraSpec:
        """The same camera resampled to ``height x width`` (pixel centres at integer coordinates:
        u' = (u + 0.5) * width / self.width - 0.5, matching ``transforms.resize_matrix``)."""
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height} x {width}")
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            height=int(height),
            width=int(width),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )


@dataclass(frozen=True)
class CameraRig:
    """An ordered set of cameras on one vehicle."""

    cameras: tuple[CameraSpec, ...]

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("a camera rig needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) shared by all cameras (ValueError if they differ)."""
        sizes = {(c.height, c.width) for c in self.cameras}
        if len(sizes) != 1:
            raise ValueError(f"the cameras of this rig have different image sizes: {sorted(sizes)}")
        return next(iter(sizes))

    def intrinsics(self, dtype=torch.float32) -> Tensor:
        """(V, 3, 3) pinhole matrices."""
        return torch.stack([c.intrinsics(dtype) for c in self.cameras])

    def cam_to_ego(self, dtype=torch.float32) -> Tensor:
        """(V, 4, 4) optical-frame -> ego transforms."""
        return torch.stack([c.cam_to_ego(dtype) for c in self.cameras])

    def scaled(self, height: int, width: int) -> CameraRig:
        """Every camera resampled to ``height x width`` (exact pinhole scaling)."""
        return CameraRig(tuple(c.scaled(height, width) for c in self.cameras))

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera {name!r} in this rig (has {list(self.names)})")


# name, yaw [deg], translation [m], fx = fy, cx, cy at 1600 x 900
_NUSCENES_CAMERAS = (
    ("CAM_FRONT", 0.0, (1.701, 0.016, 1.511), 1266.4, 816.3, 491.5),
    ("CAM_FRONT_RIGHT", -55.0, (1.551, -0.493, 1.496), 1260.8, 808.0, 495.3),
    ("CAM_FRONT_LEFT", 55.0, (1.524, 0.495, 1.509), 1272.6, 826.6, 479.8),
    ("CAM_BACK", 180.0, (0.028, 0.003, 1.579), 809.2, 829.2, 481.8),
    ("CAM_BACK_LEFT", 110.0, (1.036, 0.485, 1.591), 1256.7, 792.1, 492.8),
    ("CAM_BACK_RIGHT", -110.0, (1.015, -0.481, 1.562), 1259.5, 807.3, 501.2),
)


def nuscenes_rig(height: int = 900, width: int = 1600) -> CameraRig:
    """The nuScenes-like surround rig at ``height x width`` (default: nuScenes' 900 x 1600)."""
    cams = []
    for name, yaw, trans, f, cx, cy in _NUSCENES_CAMERAS:
        quat = matrix_to_quaternion(optical_rotation(math.radians(yaw)))
        cams.append(
            CameraSpec(
                name,
                NUSCENES_IMAGE_SIZE[0],
                NUSCENES_IMAGE_SIZE[1],
                f,
                f,
                cx,
                cy,
                trans,
                tuple(float(q) for q in quat),
            )
        )  # type: ignore[arg-type]
    rig = CameraRig(tuple(cams))
    return rig if (height, width) == NUSCENES_IMAGE_SIZE else rig.scaled(height, width)
