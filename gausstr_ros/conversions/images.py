"""sensor_msgs/Image <-> numpy: decoding (rgb8, bgr8, rgba8, bgra8, mono8 colour; 32FC1 metres, 16UC1 and
mono16 millimetres depth) without copies where possible, and encoding arrays into Image messages.
sensor_msgs/CompressedImage (JPEG / PNG, compressedDepth) is decoded by ``conversions.compressed``."""

from __future__ import annotations

import numpy as np

from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.buffers import array_of, message_bytes

# encoding -> (element dtype, channels). Only what the node consumes or produces.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")


def image_to_array(msg) -> np.ndarray:
    """View of a sensor_msgs/Image's pixels, shaped by its encoding, without copying when possible.

    Args:
        msg: an Image-like object (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
            ``data``).
    Returns:
        (H, W, C) uint8 for rgb8/bgr8/rgba8/bgra8 (channel order as encoded), (H, W) uint8 for
        mono8, (H, W) float32 for 32FC1, (H, W) uint16 for 16UC1/mono16. A view of ``msg.data``
        unless the byte order differs from this machine's (then a converted copy).
    Raises:
        ConversionError: unsupported encoding, non-positive size, ``step`` shorter than a row, or
            ``data`` not exactly ``step * height`` bytes.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(IMAGE_ENCODINGS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image size must be positive, got {width}x{height} ({encoding})")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is shorter than a row of {width} px x {channels} ch x "
            f"{dtype.itemsize} B = {row_bytes} B ({encoding})"
        )
    raw = message_bytes(msg.data)
    if raw.size != step * height:
        raise ConversionError(
            f"image data has {raw.size} bytes, expected step * height = {step} * {height} "
            f"= {step * height} ({encoding}, {width}x{height})"
        )
    rows = raw.reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(wire)  # the last axis is contiguous, so this is a view even with row padding
    if wire != dtype.newbyteorder("="):
        pixels = pixels.astype(dtype)
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)


def image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an rgb8, bgr8, rgba8, bgra8 or mono8 Image, without copying (bgr8 is a
    reversed-channel view, rgba8/bgra8 drop alpha in a view, mono8 a broadcast); a CompressedImage
    (JPEG / PNG) is decoded (``conversions.compressed``: a new array).

    Raises:
        ConversionError: the encoding is not a colour encoding, or the data is malformed.
    """
    from gausstr_ros.conversions.compressed import compressed_to_rgb, is_compressed

    if is_compressed(msg):
        return compressed_to_rgb(msg)
    if str(msg.encoding) not in COLOR_ENCODINGS:
        raise ConversionError(
            f"colour image encoding {msg.encoding!r} is not supported; expected one of "
            f"{', '.join(COLOR_ENCODINGS)}"
        )
    pixels = image_to_array(msg)
    if msg.encoding in ("bgr8", "bgra8"):
        return pixels[..., 2::-1]
    if msg.encoding == "rgba8":
        return pixels[..., :3]
    if msg.encoding == "mono8":
        return np.broadcast_to(pixels[..., None], (*pixels.shape, 3))
    return pixels


def depth_image_to_metres(msg) -> np.ndarray:
    """(H, W) float32 metric depth of a 32FC1 (metres: a view), 16UC1 or mono16 (millimetres:
    converted) Image, or of a compressedDepth / 16-bit PNG CompressedImage (decoded).

    Non-finite and non-positive values are returned as they are; the pipeline turns them into the far
    depth (``gausstr_core.data.depth.fill_invalid_depth``).

    Raises:
        ConversionError: the encoding is not a depth encoding, or the data is malformed.
    """
    from gausstr_ros.conversions.compressed import compressed_to_depth_metres, is_compressed

    if is_compressed(msg):
        return compressed_to_depth_metres(msg)
    if str(msg.encoding) not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"depth image encoding {msg.encoding!r} is not supported; expected 32FC1 "
            f"(metres) or 16UC1 / mono16 (millimetres)"
        )
    pixels = image_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        return pixels.astype(np.float32) * np.float32(0.001)
    return pixels


def sanitize_depth(depth: np.ndarray) -> tuple[np.ndarray, float]:
    """Depth with non-finite and non-positive pixels set to 0 (invalid), and the valid fraction.

    Args:
        depth: (H, W) float32 metric depth.
    Returns:
        (H, W) float32 depth (a new array) and the fraction of valid pixels in [0, 1].
    """
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False), float(valid.mean())


def array_to_image_message(pixels: np.ndarray, encoding: str, header):
    """sensor_msgs/Image holding ``pixels`` (one copy into the message buffer).

    Args:
        pixels: (H, W) or (H, W, C) array matching ``encoding`` (e.g. float32 (H, W) for 32FC1).
        encoding: one of ``IMAGE_ENCODINGS``.
        header: std_msgs/Header (frame and stamp).
    """
    from sensor_msgs.msg import Image

    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(IMAGE_ENCODINGS)}"
        )
    dtype, channels = IMAGE_ENCODINGS[encoding]
    expected_dims = 2 if channels == 1 else 3
    if pixels.ndim != expected_dims or (channels > 1 and pixels.shape[2] != channels):
        raise ConversionError(
            f"{encoding} needs an array of shape (H, W{'' if channels == 1 else f', {channels}'}), "
            f"got {pixels.shape}"
        )
    if pixels.dtype != dtype:
        raise ConversionError(f"{encoding} needs dtype {dtype}, got {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(np.little_endian is False)
    msg.step = int(pixels.shape[1] * channels * dtype.itemsize)
    msg.data = array_of("B", pixels)
    return msg
