"""sensor_msgs/CameraInfo -> the pinhole camera model of the published (rectified) images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausstr_ros.conversions import ConversionError


@dataclass(frozen=True)
class CameraModel:
    """Pinhole model of the images a camera publishes (rectified images are expected).

    Attributes:
        intrinsics: (3, 3) float64 pinhole matrix of the published image (binning and ROI applied).
        width, height: size [px] of the published image these intrinsics describe.
        distorted: the CameraInfo carries non-zero distortion coefficients.
        source: "P" (the rectified projection matrix) or "K" (P was empty).
    """

    intrinsics: np.ndarray
    width: int
    height: int
    distorted: bool
    source: str


def _field(msg, lower: str, upper: str):
    # ROS 2 and rosbags spell the matrices k, d, p; ROS 1 style objects K, D, P.
    return getattr(msg, lower) if hasattr(msg, lower) else getattr(msg, upper)


def camera_info_to_camera(info) -> CameraModel:
    """Pinhole model of a sensor_msgs/CameraInfo.

    The image the node receives is expected to be rectified (e.g. image_proc's ``image_rect``), so
    the intrinsics are the left 3x3 block of P (the projection matrix of the rectified image); K
    is used only when P is all zeros. Binning and a region of interest are applied like
    image_geometry's PinholeCameraModel does.

    Args:
        info: a CameraInfo-like object (``width``, ``height``, ``k``, ``d``, ``p``, optionally
            ``binning_x``, ``binning_y``, ``roi``).
    Raises:
        ConversionError: zero size, neither P nor K is a valid pinhole matrix, or its values are not
            plausible once in float32 (``check_intrinsics``).
    """
    width, height = int(info.width), int(info.height)
    if width <= 0 or height <= 0:
        raise ConversionError(
            f"CameraInfo size must be positive, got {width}x{height} (uncalibrated camera?)"
        )
    p = np.asarray(_field(info, "p", "P"), dtype=np.float64).reshape(-1)
    k = np.asarray(_field(info, "k", "K"), dtype=np.float64).reshape(-1)
    if p.size == 12 and np.isfinite(p).all() and p[0] > 0 and p[5] > 0:
        intrinsics, source = p.reshape(3, 4)[:, :3].copy(), "P"
    elif k.size == 9 and np.isfinite(k).all() and k[0] > 0 and k[4] > 0:
        intrinsics, source = k.reshape(3, 3).copy(), "K"
    else:
        raise ConversionError(
            f"CameraInfo has no valid pinhole matrix: P = {p.tolist()}, K = {k.tolist()} "
            f"(focal lengths must be positive and finite)"
        )
    if not np.allclose(intrinsics[2], (0.0, 0.0, 1.0)):
        raise ConversionError(f"CameraInfo {source} last row must be (0, 0, 1), got {intrinsics[2].tolist()}")
    distortion = np.asarray(_field(info, "d", "D"), dtype=np.float64).reshape(-1)
    distorted = bool(distortion.size and np.any(distortion != 0))

    bx = max(int(getattr(info, "binning_x", 0) or 0), 1)
    by = max(int(getattr(info, "binning_y", 0) or 0), 1)
    roi = getattr(info, "roi", None)
    x0 = y0 = 0
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        x0, y0 = int(roi.x_offset), int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    if (bx, by, x0, y0) != (1, 1, 0, 0):
        # The published image is the ROI, downsampled by the binning factors.
        intrinsics[0, 2] -= x0
        intrinsics[1, 2] -= y0
        intrinsics[0] /= bx
        intrinsics[1] /= by
        width, height = width // bx, height // by
    check_intrinsics(intrinsics, width, height, source)
    return CameraModel(intrinsics, width, height, distorted, source)


# Plausible focal lengths relative to the image's larger side: 0.02 (a 175 degree field of view)
# to 100 (0.6 degrees). Outside, the CameraInfo is corrupt or in the wrong units.
FOCAL_RANGE = (0.02, 100.0)
# Largest ratio between fx and fy (non-square pixels, e.g. binning 4 x 1).
MAX_ASPECT = 10.0


def check_intrinsics(intrinsics: np.ndarray, width: int, height: int, source: str = "K") -> None:
    """Refuse intrinsics the model cannot use, as they will be in the model's float32.

    A float64 CameraInfo can hold focal lengths like 1e-300 or 1e300 that are positive and finite but
    become 0 or inf in float32: every Gaussian would then be NaN and the grid all free. So the matrix
    must be finite in float32 with positive focal lengths in a plausible range for the image size
    (``FOCAL_RANGE`` times its larger side, fx / fy within ``MAX_ASPECT``).

    Raises:
        ConversionError: naming the value and the range expected.
    """
    with np.errstate(over="ignore"):  # 1e300 becomes inf: refused below
        k32 = np.asarray(intrinsics, dtype=np.float64).astype(np.float32)
    fx, fy = float(k32[0, 0]), float(k32[1, 1])
    size = max(width, height)
    lo, hi = FOCAL_RANGE[0] * size, FOCAL_RANGE[1] * size
    where = f"CameraInfo {source} (as float32)"
    if not np.isfinite(k32).all():
        raise ConversionError(f"{where} has non-finite values: {k32.tolist()}")
    for name, f in (("fx", fx), ("fy", fy)):
        if not lo <= f <= hi:
            raise ConversionError(
                f"{where}: {name} = {f:.6g} px is not a plausible focal length for a {width}x{height} image "
                f"(expected {lo:.6g} to {hi:.6g} px, {FOCAL_RANGE[0]} to {FOCAL_RANGE[1]:g} times the larger "
                f"side)"
            )
    if not 1 / MAX_ASPECT <= fx / fy <= MAX_ASPECT:
        raise ConversionError(f"{where}: fx / fy = {fx / fy:.4g} (fx {fx:.6g}, fy {fy:.6g}) is not plausible")


def distortion_warning(info, image_topic: str) -> str | None:
    """A warning when a CameraInfo has non-zero distortion but its image topic does not look rectified.

    image_proc publishes rectified images on ``image_rect`` / ``image_rect_color`` together with the
    original CameraInfo (non-zero D, rectified P); those are fine. Anything else with non-zero D
    is probably a raw, distorted image that the pinhole model does not describe.
    """
    distortion = np.asarray(_field(info, "d", "D"), dtype=np.float64).reshape(-1)
    if not (distortion.size and np.any(distortion != 0)) or "rect" in image_topic:
        return None
    return (
        f"CameraInfo for {image_topic} has non-zero distortion ({info.distortion_model}: "
        f"{np.round(distortion, 4).tolist()}) but the topic does not look rectified; the node expects "
        f"rectified images (image_proc's image_rect) and uses P as a pinhole model"
    )
