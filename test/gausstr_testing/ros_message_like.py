"""Message-like objects (``types.SimpleNamespace`` with the fields of sensor_msgs messages) for tests of
the readers that must work without rclpy, like rosbags-deserialised messages."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np


def image_like(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """An Image-like namespace holding ``pixels`` with ``pad`` bytes of padding per row."""
    h, w = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    data = array.array("B")
    data.frombytes(padded.tobytes())
    return SimpleNamespace(
        height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=padded.shape[1], data=data
    )


def camera_info_like(
    k=(500.0, 0, 320, 0, 510.0, 240, 0, 0, 1),
    p=None,
    d=(0.0,) * 5,
    width=640,
    height=480,
    binning=(0, 0),
    roi=(0, 0, 0, 0),
):
    p = p if p is not None else (k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0)
    return SimpleNamespace(
        width=width,
        height=height,
        k=list(k),
        p=list(p),
        d=list(d),
        distortion_model="plumb_bob",
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]),
    )
