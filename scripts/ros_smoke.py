"""Smoke test of a ROS 2 Jazzy runtime (e.g. the Python 3.12 one of scripts/gpu_ros_setup.sh), no torch
needed: this package's messages, sensor_msgs and tf2_msgs round-trip through real rclpy/DDS in one
process. Exit code 0 when all four arrived within 10 s."""

import sys
import time

import rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage

from gausstr_ros.msg import GaussianArray, InferenceStatus, SemanticOccupancy

rclpy.init()
node = rclpy.create_node("gausstr_ros_smoke")
qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
messages = {
    "occ": SemanticOccupancy(),
    "img": Image(width=896, height=504, encoding="rgb8", step=896 * 3, data=bytes(896 * 504 * 3)),
    "tf": TFMessage(),
    "status": InferenceStatus(device="smoke"),
}
got = {}
publishers = {}
for name, msg in messages.items():
    node.create_subscription(type(msg), f"smoke_{name}", lambda m, n=name: got.__setitem__(n, m), qos)
    publishers[name] = node.create_publisher(type(msg), f"smoke_{name}", qos)
deadline = time.monotonic() + 10
while len(got) < len(messages) and time.monotonic() < deadline:
    for name, publisher in publishers.items():
        if name not in got:
            publisher.publish(messages[name])
    rclpy.spin_once(node, timeout_sec=0.05)
node.destroy_node()
rclpy.shutdown()
print(
    f"python {sys.version.split()[0]}, rclpy ok, received {sorted(got)} of {len(messages)} "
    f"({GaussianArray.__name__} imports)"
)
sys.exit(0 if len(got) == len(messages) else 1)
