"""Subprocess side of test_messages.py: publishes the deterministic samples until told to stop.

Usage: python -m gausstr_testing.publish_samples <count>   (publishes samples 0..count-1 in a loop)
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from gausstr_ros.msg import GaussianArray, SemanticOccupancy
from gausstr_testing.message_samples import gaussian_sample, occupancy_sample


def main() -> None:
    count = int(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    qos = QoSProfile(
        depth=count, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE
    )
    occ_pub = node.create_publisher(SemanticOccupancy, "test_occupancy", qos)
    gauss_pub = node.create_publisher(GaussianArray, "test_gaussians", qos)
    samples = [(occupancy_sample(i), gaussian_sample(i)) for i in range(count)]
    deadline = time.monotonic() + 60.0
    # Keep publishing (the subscriber may not be matched yet) until the parent kills us.
    while time.monotonic() < deadline:
        for occ, gauss in samples:
            occ_pub.publish(occ)
            gauss_pub.publish(gauss)
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
