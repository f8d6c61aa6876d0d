"""Smoke test of the ROS 2 Jazzy runtime for Python 3.12 (no torch): this package's messages and
tf2_msgs round-trip through real rclpy/DDS in one process."""
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
got = {}
for name, kind in (("occ", SemanticOccupancy), ("img", Image), ("tf", TFMessage), ("status", InferenceStatus)):
    node.create_subscription(kind, f"smoke_{name}", lambda m, n=name: got.__setitem__(n, m), qos)
pubs = {n: node.create_publisher(k, f"smoke_{n}", qos) for n, k in (("occ", SemanticOccupancy), ("img", Image), ("tf", TFMessage), ("status", InferenceStatus))}
msgs = {"occ": SemanticOccupancy(), "img": Image(width=896, height=504, encoding="rgb8", step=896 * 3, data=bytes(896 * 504 * 3)), "tf": TFMessage(), "status": InferenceStatus(device="smoke")}
deadline = time.monotonic() + 10
while len(got) < 4 and time.monotonic() < deadline:
    for n, p in pubs.items():
        if n not in got:
            p.publish(msgs[n])
    rclpy.spin_once(node, timeout_sec=0.05)
node.destroy_node()
rclpy.shutdown()
print(f"python {sys.version.split()[0]}, rclpy ok, received {sorted(got)} of 4 ({GaussianArray.__name__} imports)")
sys.exit(0 if len(got) == 4 else 1)
