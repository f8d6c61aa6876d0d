"""How camera images reach the node: image_transport-style topic names (raw, ``/compressed``,
``/compressedDepth``), the image subscriptions' QoS (``image_qos``: auto, reliable, sensor_data), and
the middleware's events about them (incompatible QoS, lost messages).

Why ``image_qos: auto`` (docs/node.md, "Full-size images"): with Fast DDS's default transports, a
best-effort subscription in another process receives almost none of a 1600x900 camera's images (each
4.3 MB overruns the publisher's 512 KiB shared-memory segment and best effort never repairs a lost
fragment), while a reliable subscription of depth >= 4 receives all of them. A reliable subscription
gets nothing from a best-effort publisher, though. So ``auto`` subscribes reliable when every
publisher of the topic offers reliable (most drivers, ``ros2 bag play``) and best effort when any
offers best effort, and re-checks whenever publishers change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RAW = "raw"
COMPRESSED = "compressed"
COMPRESSED_DEPTH = "compressedDepth"
TRANSPORTS = (RAW, COMPRESSED, COMPRESSED_DEPTH)
IMAGE_QOS_CHOICES = ("auto", "reliable", "sensor_data")
RELIABLE = "reliable"
BEST_EFFORT = "best_effort"
# Fast DDS's default shared-memory segment (Fast DDS 2.14 docs: segment_size 512 KiB): images larger
# than this are unlikely to reach a best-effort subscription of another process.
FASTDDS_DEFAULT_SHM_SEGMENT = 512 * 1024
PROFILE_HINT = (
    "run the camera drivers or `ros2 bag play` with the package's Fast DDS profile "
    "(FASTRTPS_DEFAULT_PROFILES_FILE=<gausstr_ros share>/config/fastdds_large_images.xml), let them "
    "publish reliable (image_qos: auto then subscribes reliable), or use compressed image topics; "
    "docs/node.md, 'Full-size images'"
)


def topic_transport(topic: str) -> str:
    """The image_transport of a topic name: ``.../compressed``, ``.../compressedDepth`` or raw."""
    last = topic.rstrip("/").rsplit("/", 1)[-1]
    return last if last in (COMPRESSED, COMPRESSED_DEPTH) else RAW


def with_transport(topic: str, transport: str) -> str:
    """``topic`` as image_transport names it for ``transport`` (unchanged for raw, or when the topic
    already names a transport: a per-topic suffix wins over the parameter)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    if transport == RAW or topic_transport(topic) != RAW:
        return topic
    return f"{topic.rstrip('/')}/{transport}"


def message_type_name(topic: str) -> str:
    """ROS type of an image input topic: CompressedImage for the compressed transports, else Image."""
    return "sensor_msgs/msg/Image" if topic_transport(topic) == RAW else "sensor_msgs/msg/CompressedImage"


def message_class(topic: str):
    from sensor_msgs.msg import CompressedImage, Image

    return Image if topic_transport(topic) == RAW else CompressedImage


def choose_reliability(policy: str, publisher_reliabilities: list[str]) -> str:
    """The subscription reliability for ``image_qos`` = ``policy`` given the offered reliabilities of
    the topic's publishers ("reliable" / "best_effort"; none known yet = []).

    auto: reliable unless some publisher is best effort (a reliable reader gets nothing from it).
    """
    if policy == "sensor_data":
        return BEST_EFFORT
    if policy == "reliable":
        return RELIABLE
    if policy != "auto":
        raise ValueError(f"image_qos must be one of {IMAGE_QOS_CHOICES}, got {policy!r}")
    return BEST_EFFORT if BEST_EFFORT in publisher_reliabilities else RELIABLE


def qos_profile(reliability: str, depth: int):
    """Image subscription QoS: KEEP_LAST ``depth``, volatile, the given reliability."""
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy

    return QoSProfile(
        depth=depth,
        history=QoSHistoryPolicy.KEEP_LAST,
        durability=QoSDurabilityPolicy.VOLATILE,
        reliability=QoSReliabilityPolicy.RELIABLE
        if reliability == RELIABLE
        else QoSReliabilityPolicy.BEST_EFFORT,
    )


def publisher_reliabilities(node, topic: str) -> list[str]:
    """Offered reliability of every publisher of ``topic`` now ("reliable" / "best_effort")."""
    from rclpy.qos import QoSReliabilityPolicy

    out = []
    for info in node.get_publishers_info_by_topic(node.resolve_topic_name(topic)):
        if info.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT:
            out.append(BEST_EFFORT)
        else:
            out.append(RELIABLE)
    return out


def using_fast_dds() -> bool:
    try:
        from rclpy.utilities import get_rmw_implementation_identifier

        return "fastrtps" in get_rmw_implementation_identifier()
    except Exception:  # an unknown middleware: no Fast DDS-specific hints
        return False


class ImageSubscription:
    """The subscription of one image (or depth) input topic, with its QoS policy and events.

    * The message type follows the topic name (``/compressed``, ``/compressedDepth``: CompressedImage).
    * ``image_qos`` auto picks the reliability from the publishers (``choose_reliability``); ``refresh``
      re-checks them and re-creates the subscription when the choice changes.
    * An incompatible-QoS event logs which policy does not match (under auto, the next ``refresh``,
      within a second, re-subscribes).
    * A message-lost event counts the lost messages (``on_lost``) and logs a throttled warning with the
      fix (images too large for the publisher's shared-memory segment over best effort).

    Args:
        node: the rclpy node.
        topic: the input topic (relative names resolve in the node's namespace).
        policy: ``image_qos``.
        depth: history depth.
        callback: called with each message.
        on_lost: called with (topic, newly lost count).
        callback_group: of the subscription (and its events).
    """

    def __init__(
        self,
        node,
        topic: str,
        policy: str,
        depth: int,
        callback: Callable[[Any], None],
        on_lost: Callable[[str, int], None] | None = None,
        callback_group=None,
    ):
        self.node = node
        self.topic = topic
        self.policy = policy
        self.depth = depth
        self.msg_class = message_class(topic)
        self._callback = callback
        self._on_lost = on_lost
        self._group = callback_group
        self._logger = node.get_logger()
        self._fast_dds = using_fast_dds()
        self.lost = 0
        self.received = 0
        self.incompatible_events = 0
        self._size_checked = False
        self.reliability = choose_reliability(policy, publisher_reliabilities(node, topic))
        self.subscription = self._create()

    def _create(self):
        from rclpy.event_handler import SubscriptionEventCallbacks

        events = SubscriptionEventCallbacks(
            incompatible_qos=self._on_incompatible, message_lost=self._on_message_lost
        )
        return self.node.create_subscription(
            self.msg_class,
            self.topic,
            self._on_message,
            qos_profile(self.reliability, self.depth),
            callback_group=self._group,
            event_callbacks=events,
        )

    def _on_message(self, msg) -> None:
        self.received += 1
        if not self._size_checked:
            self._size_checked = True
            size = len(msg.data)
            if self.reliability == BEST_EFFORT and self._fast_dds and size > FASTDDS_DEFAULT_SHM_SEGMENT:
                self._logger.warning(
                    f"{self.subscription.topic_name}: {size / 1e6:.1f} MB images over a best-effort "
                    f"subscription: with Fast DDS's default transports most of them are lost between "
                    f"processes (this one arrived); {PROFILE_HINT}"
                )
        self._callback(msg)

    def _on_incompatible(self, info) -> None:
        self.incompatible_events += 1
        policy = getattr(info.last_policy_kind, "name", str(info.last_policy_kind)).replace(
            "RMW_QOS_POLICY_", ""
        )
        if self.policy == "auto":
            self._logger.warning(
                f"{self.subscription.topic_name}: a publisher offers an incompatible {policy} "
                f"(this subscription: {self.reliability}); image_qos auto re-subscribes within 1 s"
            )
        else:
            self._logger.error(
                f"{self.subscription.topic_name}: a publisher offers an incompatible {policy}, so no "
                f"images will arrive from it (image_qos: {self.policy} subscribes {self.reliability}); "
                f"set image_qos: auto (or sensor_data for best-effort cameras)"
            )

    def _on_message_lost(self, info) -> None:
        count = int(getattr(info, "total_count_change", 0) or 0)
        if count <= 0:
            return
        self.lost += count
        if self._on_lost is not None:
            self._on_lost(self.topic, count)
        hint = PROFILE_HINT if self.reliability == BEST_EFFORT else "the publisher's history is too short"
        self._logger.warning(
            f"{self.subscription.topic_name}: {self.lost} image(s) lost in transport so far "
            f"({self.reliability} subscription); {hint}",
            throttle_duration_sec=5.0,
        )

    def refresh(self) -> str | None:
        """Under ``image_qos: auto``: re-create the subscription when the publishers' reliability asks
        for another one. Returns a log line when it changed, else None."""
        if self.policy != "auto":
            return None
        offered = publisher_reliabilities(self.node, self.topic)
        wanted = choose_reliability(self.policy, offered)
        if wanted == self.reliability:
            return None
        old, self.reliability = self.reliability, wanted
        self.node.destroy_subscription(self.subscription)
        self.subscription = self._create()
        self._size_checked = False
        if wanted == BEST_EFFORT:
            reason = "a publisher offers best effort"
        else:
            reason = "every publisher is reliable" if offered else "no publisher left"
        return (
            f"{self.subscription.topic_name}: subscribed {wanted} instead of {old} ({reason}; image_qos auto)"
        )

    def destroy(self) -> None:
        self.node.destroy_subscription(self.subscription)
