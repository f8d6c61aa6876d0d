"""Deterministic SemanticOccupancy / GaussianArray samples shared by in- and cross-process tests."""

from __future__ import annotations

import numpy as np


def occupancy_sample(seq: int):
    from gausstr_ros.msg import SemanticOccupancy

    rng = np.random.default_rng(seq)
    msg = SemanticOccupancy()
    msg.header.frame_id = "base_link"
    msg.header.stamp.sec = 1_700_000_000 + seq
    msg.header.stamp.nanosec = 123_000_000
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = -40.0, -40.0, -1.0
    msg.origin.orientation.w = 1.0
    msg.resolution = 0.4
    msg.size_x, msg.size_y, msg.size_z = 200, 200, 16
    msg.labels = rng.integers(0, 18, 200 * 200 * 16, dtype=np.uint8)
    msg.confidence = rng.random(200 * 200 * 16, dtype=np.float32)
    msg.free_label = 17
    msg.class_names = [f"class_{k}" for k in range(17)]
    return msg


def gaussian_sample(seq: int, n: int = 1800):
    from gausstr_ros.msg import GaussianArray

    rng = np.random.default_rng(1000 + seq)
    msg = GaussianArray()
    msg.header.frame_id = "base_link"
    msg.header.stamp.sec = 1_700_000_000 + seq
    msg.means = rng.normal(size=3 * n).astype(np.float32)
    msg.scales = rng.random(3 * n, dtype=np.float32)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    msg.rotations = (q / np.linalg.norm(q, axis=1, keepdims=True)).ravel()
    msg.opacities = rng.random(n, dtype=np.float32)
    msg.labels = rng.integers(0, 17, n, dtype=np.uint8)
    msg.confidence = rng.random(n, dtype=np.float32)
    msg.class_names = ["car", "road", "tree"]
    return msg


def assert_same_occupancy(a, b) -> None:
    assert a.header.frame_id == b.header.frame_id
    assert (a.header.stamp.sec, a.header.stamp.nanosec) == (b.header.stamp.sec, b.header.stamp.nanosec)
    assert (a.size_x, a.size_y, a.size_z, a.free_label) == (b.size_x, b.size_y, b.size_z, b.free_label)
    assert np.float32(a.resolution) == np.float32(b.resolution)
    assert a.origin == b.origin
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
    np.testing.assert_array_equal(np.asarray(a.confidence), np.asarray(b.confidence))
    assert list(a.class_names) == list(b.class_names)


def assert_same_gaussians(a, b) -> None:
    assert a.header == b.header
    for field in ("means", "scales", "rotations", "opacities", "labels", "confidence"):
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), field)
    assert list(a.class_names) == list(b.class_names)
