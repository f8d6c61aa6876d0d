"""Subprocess side of test_full_size_images.py: a camera driver publishing full-size surround cameras.

    python -m gausstr_testing.full_size_cameras --sets 10 --rate 5 --reliability reliable \
        --start-ns 1700000000000000000 [--height 900 --width 1600] [--format raw|jpeg]

Publishes /tf_static (the nuScenes-like rig, latched), then per set each camera's CameraInfo and image
(rgb8, or CompressedImage JPEG on ``<topic>/compressed``) with one stamp per set, like six drivers in
one process (``ros2 bag play`` publishes the same way). It waits until the node's subscriptions match
every image topic (image_qos auto may switch the node's reliability first) and, for reliable QoS,
until every image was acknowledged. Prints one JSON line: the stamps sent and the publish times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sets", type=int, required=True)
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    p.add_argument("--start-ns", type=int, required=True)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw")
    p.add_argument("--match-timeout", type=float, default=30.0)
    args = p.parse_args(argv)

    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from tf2_msgs.msg import TFMessage

    from gausstr_testing.ros_frames import SyntheticCameras, topics

    cams = SyntheticCameras(height=args.height, width=args.width)
    rclpy.init()
    node = rclpy.create_node("full_size_cameras")
    reliability = (
        QoSReliabilityPolicy.RELIABLE if args.reliability == "reliable" else QoSReliabilityPolicy.BEST_EFFORT
    )
    qos = QoSProfile(depth=10, reliability=reliability)
    latched = QoSProfile(
        depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
    )
    suffix = "/compressed" if args.format == "jpeg" else ""
    msg_type = CompressedImage if args.format == "jpeg" else Image
    image_pubs = [node.create_publisher(msg_type, "/" + topics(n)["image"] + suffix, qos) for n in cams.names]
    info_pubs = [node.create_publisher(CameraInfo, "/" + topics(n)["info"], qos) for n in cams.names]
    tf_pub = node.create_publisher(TFMessage, "/tf_static", latched)
    tf_pub.publish(cams.static_transforms())
    # One image per camera, reused for every set (drawing 6 x 1600 x 900 noisy images per set would cost
    # more than publishing them).
    pixels = [cams.rgb(k, 0) for k in range(len(cams.names))]

    deadline = time.monotonic() + args.match_timeout
    # The CameraInfo topics too: with the node's input process, its CameraInfo readers can match
    # after its image readers on a loaded machine, and a set that comes before its cameras' CameraInfo
    # is refused ("camera_info"), as it should be. The same for /tf_static: a set that comes before
    # the node's TF reader has matched is refused ("transform"); CI saw that once on a loaded machine.
    while any(pub.get_subscription_count() == 0 for pub in image_pubs + info_pubs + [tf_pub]):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the node's camera subscriptions did not match"}), flush=True)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    # A driver publishes CameraInfo all the time: do so for a second before the first set, so that the
    # node's best-effort CameraInfo readers (which may match a little after this side sees them) have it.
    for _ in range(20):
        for k, pub in enumerate(info_pubs):
            pub.publish(cams.info_msg(k, args.start_ns))
        time.sleep(0.05)

    stamps, publish_ms = [], []
    period = 1.0 / args.rate
    start = time.monotonic()
    for s in range(args.sets):
        stamp = args.start_ns + round(s * period * 1e9)
        for k, pub in enumerate(info_pubs):
            pub.publish(cams.info_msg(k, stamp))
        t0 = time.perf_counter()
        for k, pub in enumerate(image_pubs):
            if args.format == "jpeg":
                pub.publish(cams.messages.compressed_image(k, pixels[k], stamp, "jpeg"))
            else:
                pub.publish(cams.image_msg(k, 0, stamp, pixels=pixels[k]))
        publish_ms.append(1e3 * (time.perf_counter() - t0))
        stamps.append(stamp)
        wait = start + (s + 1) * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    if args.reliability == "reliable":
        for pub in image_pubs:
            pub.wait_for_all_acked(Duration(seconds=10))
    else:
        time.sleep(1.0)
    print(json.dumps({"stamps": stamps, "publish_ms": publish_ms}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
