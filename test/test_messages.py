"""The package's messages are real ROS 2 messages: they cross rclpy in one process and between two."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gausstr_testing.message_samples import (
    assert_same_gaussians,
    assert_same_occupancy,
    gaussian_sample,
    occupancy_sample,
)

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def _spin_until(executor, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


def test_messages_cross_rclpy_in_one_process(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from gausstr_ros.msg import GaussianArray, SemanticOccupancy

    node = rclpy.create_node("message_roundtrip", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received_occ, received_gauss = [], []
    node.create_subscription(SemanticOccupancy, "roundtrip_occupancy", received_occ.append, 10)
    node.create_subscription(GaussianArray, "roundtrip_gaussians", received_gauss.append, 10)
    occ_pub = node.create_publisher(SemanticOccupancy, "roundtrip_occupancy", 10)
    gauss_pub = node.create_publisher(GaussianArray, "roundtrip_gaussians", 10)
    try:
        sent_occ, sent_gauss = occupancy_sample(3), gaussian_sample(3)

        def publish_and_check():
            if not received_occ:
                occ_pub.publish(sent_occ)
            if not received_gauss:
                gauss_pub.publish(sent_gauss)
            return bool(received_occ and received_gauss)

        assert _spin_until(executor, publish_and_check, timeout=10.0), "messages did not arrive"
        assert_same_occupancy(received_occ[0], sent_occ)
        assert_same_gaussians(received_gauss[0], sent_gauss)
        assert len(received_occ[0].labels) == 200 * 200 * 16
    finally:
        executor.shutdown()
        node.destroy_node()


def test_messages_cross_rclpy_between_processes(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from gausstr_ros.msg import GaussianArray, SemanticOccupancy

    count = 3
    path = [str(ROOT / "test"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gausstr_testing.publish_samples", str(count)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    node = rclpy.create_node("message_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    occ, gauss = {}, {}
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    node.create_subscription(
        SemanticOccupancy, "test_occupancy", lambda m: occ.setdefault(m.header.stamp.sec, m), qos
    )
    node.create_subscription(
        GaussianArray, "test_gaussians", lambda m: gauss.setdefault(m.header.stamp.sec, m), qos
    )
    try:
        ok = _spin_until(executor, lambda: len(occ) == count and len(gauss) == count, timeout=45.0)
        if not ok:
            proc.kill()
            output = proc.communicate()[0].decode(errors="replace")
            pytest.fail(
                f"received {len(occ)}/{count} occupancy and {len(gauss)}/{count} Gaussian "
                f"messages from the publisher process; its output:\n{output}"
            )
        for i in range(count):
            assert_same_occupancy(occ[1_700_000_000 + i], occupancy_sample(i))
            assert_same_gaussians(gauss[1_700_000_000 + i], gaussian_sample(i))
    finally:
        proc.kill()
        proc.wait()
        executor.shutdown()
        node.destroy_node()
