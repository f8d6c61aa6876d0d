"""Synthetic surround-camera frames as ROS messages: Image, CameraInfo, depth and the rig's /tf_static,
for the node tests (messages built by ``gausstr_ros.rig_messages``).

The rig is the nuScenes-like 6-camera rig of ``gausstr_core.data.synthetic.rig`` scaled to a small
size; images are smooth per-camera colour patterns with noise (cheap, different per camera and per
frame, the same for the same arguments), depth a flat ground plane seen by each camera capped at 40 m.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausstr_core.data.synthetic.rig import CameraRig, nuscenes_rig
from gausstr_ros.rig_messages import RigMessages, make_header, optical_frame

TARGET_FRAME = "base_link"
__all__ = ["TARGET_FRAME", "SyntheticCameras", "optical_frame", "topics"]


def topics(camera: str) -> dict[str, str]:
    """Relative input topics of a camera (resolved in the node's namespace)."""
    stem = camera.lower()
    return {"image": f"{stem}/image_rect", "info": f"{stem}/camera_info", "depth": f"{stem}/depth"}


@dataclass
class SyntheticCameras:
    """Messages of a scaled nuScenes rig.

    Args:
        height, width: image size of every camera.
        seed: image noise seed.
        like: SimpleNamespace look-alikes instead of ROS messages.
    """

    height: int = 90
    width: int = 160
    seed: int = 0
    like: bool = False

    def __post_init__(self) -> None:
        self.rig: CameraRig = nuscenes_rig(self.height, self.width)
        self.messages = RigMessages(self.rig, like=self.like)
        self.names = list(self.rig.names)
        v = np.linspace(0, 1, self.height, dtype=np.float32)[:, None]
        u = np.linspace(0, 1, self.width, dtype=np.float32)[None, :]
        self._base = []
        for k in range(len(self.names)):
            r = 0.5 + 0.5 * np.sin(6.0 * u + k)
            g = 0.5 + 0.5 * np.cos(4.0 * v + 0.7 * k)
            b = 0.5 + 0.5 * np.sin(3.0 * (u + v) + 1.3 * k)
            self._base.append(np.stack(np.broadcast_arrays(r, g, b), axis=-1))

    def rgb(self, camera: int, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 image of one camera at one frame (the same for the same arguments)."""
        shift = 0.1 * np.sin(0.3 * frame)
        rng = np.random.default_rng((self.seed, camera, frame))
        noise = rng.normal(0, 0.03, (self.height, self.width, 3)).astype(np.float32)
        return (np.clip(self._base[camera] + shift + noise, 0, 1) * 255).astype(np.uint8)

    def depth(self, camera: int) -> np.ndarray:
        """(H, W) float32 metric depth of the ground plane (z = 0), 40 m where the ray misses it."""
        spec = self.rig.cameras[camera]
        v = np.arange(self.height, dtype=np.float64)[:, None]
        # level cameras: a ground point at image row v has depth fy * h / (v - cy)
        with np.errstate(divide="ignore"):
            z = spec.fy * spec.translation[2] / (v - spec.cy)
        z = np.where((v > spec.cy) & (z < 40.0), z, 40.0)
        return np.broadcast_to(z, (self.height, self.width)).astype(np.float32)

    def header(self, frame_id: str, stamp_ns: int):
        return make_header(frame_id, stamp_ns, self.like)

    def image_msg(self, camera: int, frame: int, stamp_ns: int, encoding: str = "rgb8", pixels=None):
        """Image of camera ``camera``; an encoding other than rgb8/bgr8/mono8 labels rgb8 bytes with it
        (bad-input tests)."""
        rgb = self.rgb(camera, frame) if pixels is None else pixels
        if encoding in ("rgb8", "bgr8", "mono8"):
            return self.messages.image(camera, rgb, stamp_ns, encoding)
        msg = self.messages.image(camera, rgb, stamp_ns, "rgb8")
        msg.encoding = encoding
        return msg

    def depth_msg(self, camera: int, stamp_ns: int, encoding: str = "32FC1", depth=None):
        return self.messages.depth(camera, self.depth(camera) if depth is None else depth, stamp_ns, encoding)

    def info_msg(self, camera: int, stamp_ns: int = 0):
        return self.messages.camera_info(camera, stamp_ns)

    def static_transforms(self, target_frame: str = TARGET_FRAME):
        return self.messages.static_transforms(target_frame)

    def cam_to_target(self, camera: int) -> np.ndarray:
        return self.messages.cam_to_target(camera)
