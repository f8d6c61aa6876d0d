"""The messages a camera rig publishes (Image, depth Image, CameraInfo, /tf_static) built from arrays
and a ``gausstr_core.data.synthetic.rig.CameraRig``: for tests, benchmarks and demos.

With ``like=True`` the builders return ``types.SimpleNamespace`` objects with the same fields instead
of ROS messages, so the node's pipeline can be fed (and timed) on machines without ROS.
"""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import torch

from gausstr_core.data.synthetic.rig import CameraRig


def optical_frame(camera: str) -> str:
    """The optical frame id of a camera: "CAM_FRONT" -> "cam_front_optical"."""
    return f"{camera.lower()}_optical"


def make_header(frame_id: str, stamp_ns: int, like: bool = False):
    """std_msgs/Header (or a look-alike) with a stamp in nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    if like:
        return SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=sec, nanosec=nanosec))
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _image(pixels: np.ndarray, encoding: str, header, like: bool):
    from gausstr_ros.conversions.images import array_to_image_message

    if not like:
        return array_to_image_message(pixels, encoding, header)
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(pixels.tobytes())
    return SimpleNamespace(
        header=header,
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=pixels.strides[0],
        data=data,
    )


def _compressed(fmt: str, data: bytes, header, like: bool):
    if like:
        return SimpleNamespace(header=header, format=fmt, data=np.frombuffer(data, np.uint8))
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.header = header
    msg.data = data
    return msg


class RigMessages:
    """Builds the messages of each camera of a rig.

    Args:
        rig: the cameras (intrinsics, size, pose in the target frame).
        like: build SimpleNamespace look-alikes instead of ROS messages (no ROS needed).
    """

    def __init__(self, rig: CameraRig, like: bool = False):
        self.rig = rig
        self.like = like
        self.names = list(rig.names)

    def frame_id(self, camera: int) -> str:
        return optical_frame(self.names[camera])

    def image(self, camera: int, rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8"):
        """Image of (H, W, 3) uint8 RGB pixels in ``encoding`` (rgb8, bgr8 or mono8 = the red channel)."""
        if encoding == "bgr8":
            rgb = rgb[..., ::-1]
        elif encoding == "mono8":
            rgb = rgb[..., 0]
        elif encoding != "rgb8":
            raise ValueError(f"image encoding must be rgb8, bgr8 or mono8, got {encoding!r}")
        header = make_header(self.frame_id(camera), stamp_ns, self.like)
        return _image(np.ascontiguousarray(rgb), encoding, header, self.like)

    def depth(self, camera: int, depth_m: np.ndarray, stamp_ns: int, encoding: str = "32FC1"):
        """Depth Image of (H, W) metres as 32FC1 (metres) or 16UC1 (millimetres)."""
        header = make_header(self.frame_id(camera), stamp_ns, self.like)
        if encoding == "16UC1":
            mm = np.clip(np.nan_to_num(np.round(depth_m * 1000), nan=0.0, posinf=0.0), 0, 65535)
            return _image(mm.astype(np.uint16), "16UC1", header, self.like)
        if encoding != "32FC1":
            raise ValueError(f"depth encoding must be 32FC1 or 16UC1, got {encoding!r}")
        return _image(np.asarray(depth_m, dtype=np.float32), "32FC1", header, self.like)

    def compressed_image(
        self, camera: int, rgb: np.ndarray, stamp_ns: int, fmt: str = "jpeg", quality: int = 95
    ):
        """sensor_msgs/CompressedImage of (H, W, 3) uint8 RGB pixels as compressed_image_transport
        publishes it (``fmt`` jpeg or png; format "rgb8; jpeg compressed bgr8")."""
        from gausstr_ros.conversions.compressed import encode_compressed

        header = make_header(self.frame_id(camera), stamp_ns, self.like)
        return _compressed(*encode_compressed(rgb, fmt, quality=quality), header, self.like)

    def compressed_depth(self, camera: int, depth_m: np.ndarray, stamp_ns: int):
        """sensor_msgs/CompressedImage of (H, W) metres as compressed_depth_image_transport publishes a
        16UC1 camera (millimetres in a 16-bit PNG after its 12-byte header; 0 = unmeasured)."""
        from gausstr_ros.conversions.compressed import encode_compressed_depth

        header = make_header(self.frame_id(camera), stamp_ns, self.like)
        return _compressed(
            *encode_compressed_depth(np.asarray(depth_m, np.float32), "16UC1"), header, self.like
        )

    def camera_info(self, camera: int, stamp_ns: int = 0):
        """CameraInfo of a rectified camera: no distortion, P = [K | 0]."""
        spec = self.rig.cameras[camera]
        k = [spec.fx, 0.0, spec.cx, 0.0, spec.fy, spec.cy, 0.0, 0.0, 1.0]
        p = [spec.fx, 0.0, spec.cx, 0.0, 0.0, spec.fy, spec.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        fields = dict(
            header=make_header(self.frame_id(camera), stamp_ns, self.like),
            width=spec.width,
            height=spec.height,
            distortion_model="plumb_bob",
            d=[0.0] * 5,
            k=k,
            r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p=p,
            binning_x=0,
            binning_y=0,
        )
        if self.like:
            return SimpleNamespace(**fields, roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0))
        from sensor_msgs.msg import CameraInfo

        return CameraInfo(**fields)

    def cam_to_target(self, camera: int) -> np.ndarray:
        """(4, 4) float64 optical frame -> target frame."""
        return self.rig.cameras[camera].cam_to_ego(dtype=torch.float64).numpy()

    def static_transforms(self, target_frame: str = "base_link"):
        """tf2_msgs/TFMessage with target_frame -> <camera>_optical for every camera (needs ROS)."""
        from tf2_msgs.msg import TFMessage

        from gausstr_ros.conversions.transforms import matrix_to_transform_message

        header = make_header(target_frame, 0)
        transforms = [
            matrix_to_transform_message(self.cam_to_target(k), header, self.frame_id(k))
            for k in range(len(self.names))
        ]
        return TFMessage(transforms=transforms)
