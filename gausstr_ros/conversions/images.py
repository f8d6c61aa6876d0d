"""sensor_msgs/Image <-> numpy: decoding (rgb8, bgr8, mono8 colour; 32FC1 metres, 16UC1 millimetres
depth) without copies where possible, and encoding arrays into Image messages."""

from __future__ import annotations

import numpy as np

from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.buffers import array_of, message_bytes

# encoding -> (element dtype, channels). Only what the node consumes or produces.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEPTH_ENCODINGS = ("32FC1", "16UC1")


def image_to_array(msg) -> np.ndarray:
    """View of a sensor_msgs/Image's pixels, shaped by its encoding, without copying when possible.

    Args:
        msg: an Image-like object (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
            ``data``).
    Returns:
        (H, W, 3) uint8 for rgb8/bgr8 (channel order as encoded), (H, W) uint8 for mono8,
        (H, W) float32 for 32FC1, (H, W) uint16 for 16UC1. A view of ``msg.data`` unless the byte
        order differs from this machine's (then a converted copy).
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
    """(H, W, 3) uint8 RGB view of an rgb8, bgr8 or mono8 Image (no copy: bgr8 is a reversed-channel
    view, mono8 a broadcast).

    Raises:
        ConversionError: the encoding is not a colour encoding, or the data is malformed.
    """
    if str(msg.encoding) not in COLOR_ENCODINGS:
        raise ConversionError(
            f"colour image encoding {msg.encoding!r} is not supported; expected one of "
            f"{', '.join(COLOR_ENCODINGS)}"
        )
    pixels = image_to_array(msg)
    if msg.encoding == "bgr8":
        return pixels[..., ::-1]
    if msg.encoding == "mono8":
        return np.broadcast_to(pixels[..., None], (*pixels.shape, 3))
    return pixels


def depth_image_to_metres(msg) -> np.ndarray:
    """(H, W) float32 metric depth of a 32FC1 (metres: a view) or 16UC1 (millimetres: converted) Image.

    Non-finite and non-positive values are returned as they are; ``sanitize_depth`` marks them
    invalid (0).

    Raises:
        ConversionError: the encoding is not a depth encoding, or the data is malformed.
    """
    if str(msg.encoding) not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"depth image encoding {msg.encoding!r} is not supported; expected 32FC1 "
            f"(metres) or 16UC1 (millimetres)"
        )
    pixels = image_to_array(msg)
    if msg.encoding == "16UC1":
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
            f"{encoding} needs an array of shape (H, W{'' if channels == 1 else ', 3'}), got {pixels.shape}"
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
