"""Byte buffers of ROS messages: numpy views of a message's ``data`` and ``array.array`` copies for
message fields (rclpy stores those without per-element checks)."""

from __future__ import annotations

import array

import numpy as np


def message_bytes(data) -> np.ndarray:
    """(n,) uint8 view of a message's ``data`` (array.array, bytes, bytearray, numpy, list)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.view(np.uint8).ravel()
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8)  # a plain list: one copy, only in tests


def array_of(typecode: str, values: np.ndarray) -> array.array:
    """array.array of a contiguous numpy array's bytes: rclpy stores it without per-element checks.
    One copy (``frombytes`` reads the array's buffer; ``tobytes`` first would copy twice: 0.28 against
    0.14 ms for a 504 x 896 float32 depth image)."""
    out = array.array(typecode)
    out.frombytes(memoryview(np.ascontiguousarray(values).reshape(-1)).cast("B"))
    return out
