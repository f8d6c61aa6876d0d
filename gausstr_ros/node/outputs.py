"""The node's publishers: occupancy grid, occupancy cloud, Gaussians, Gaussian markers, rendered depth
and status. Messages nobody subscribes to are not built (each costs milliseconds in Python)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gausstr_ros.conversions.gaussians import (
    gaussian_array_message,
    gaussian_marker_array_cdr,
    gaussian_marker_data,
)
from gausstr_ros.conversions.images import array_to_image_message
from gausstr_ros.conversions.occupancy import occupancy_message, occupancy_points, pointcloud_message

if TYPE_CHECKING:
    from gausstr_ros.node.params import NodeConfig
    from gausstr_ros.node.stats import StatsSnapshot
    from gausstr_ros.pipeline import FrameResult

TOPIC_OCCUPANCY = "occupancy"
TOPIC_CLOUD = "occupancy_cloud"
TOPIC_GAUSSIANS = "gaussians"
TOPIC_MARKERS = "gaussian_markers"
TOPIC_DEPTH = "rendered_depth"  # + "/<camera name>"
TOPIC_STATUS = "status"


def depth_topic(camera_name: str) -> str:
    """The rendered depth topic of one camera (relative)."""
    return f"{TOPIC_DEPTH}/{_topic_safe(camera_name)}"


def output_names(camera_names: Sequence[str]) -> list[str]:
    """The outputs that count their subscribers, in a fixed order (the output process shares the
    counts in this order)."""
    return [TOPIC_OCCUPANCY, TOPIC_CLOUD, TOPIC_GAUSSIANS, TOPIC_MARKERS] + [
        depth_topic(n) for n in camera_names
    ]


@dataclass
class PublishSwitches:
    """Which outputs to publish (live parameters)."""

    occupancy: bool = True
    pointcloud: bool = True
    gaussians: bool = True
    markers: bool = True
    rendered_depth: bool = True
    max_markers: int = 2000
    marker_sigma: float = 2.0
    # The occupancy's dense confidence (4 of its 5 bytes per voxel): subscribers cannot be asked
    # whether they read it, so it is a switch of its own (docs/node.md: what it costs).
    occupancy_confidence: bool = True

    @classmethod
    def from_config(cls, c: NodeConfig) -> PublishSwitches:
        return cls(
            c.publish_occupancy,
            c.publish_pointcloud,
            c.publish_gaussians,
            c.publish_markers,
            c.publish_rendered_depth,
            c.max_gaussian_markers,
            c.marker_sigma,
            c.occupancy_confidence,
        )


class OutputPublishers:
    """Creates the output publishers (relative names, so they follow the node's namespace) and
    publishes a FrameResult.

    Args:
        node: the rclpy node.
        camera_names: V names; rendered depth goes to rendered_depth/<name>.
        target_frame: frame_id of the grid, cloud, Gaussians and markers.
        depth: history depth of the output QoS (reliable, volatile).
        topic_names: output name (``TOPIC_*``, ``depth_topic(camera)``) -> the topic to publish it
            on; None = the names themselves, resolved by the node (the output process passes the
            names the occupancy node resolved, remappings included).
        status: create the status publisher too (the output process leaves it to the node, so that
            the status goes on while the child is down).
    """

    def __init__(
        self,
        node,
        camera_names: Sequence[str],
        target_frame: str,
        depth: int = 5,
        topic_names: Mapping[str, str] | None = None,
        status: bool = True,
    ):
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from gausstr_ros.msg import GaussianArray, SemanticOccupancy

        qos = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
        self.target_frame = target_frame
        self.camera_names = list(camera_names)
        topic = (lambda name: name) if topic_names is None else topic_names.__getitem__
        self.occupancy = node.create_publisher(SemanticOccupancy, topic(TOPIC_OCCUPANCY), qos)
        self.cloud = node.create_publisher(PointCloud2, topic(TOPIC_CLOUD), qos)
        self.gaussians = node.create_publisher(GaussianArray, topic(TOPIC_GAUSSIANS), qos)
        self.markers = node.create_publisher(MarkerArray, topic(TOPIC_MARKERS), qos)
        self.depth = [node.create_publisher(Image, topic(depth_topic(n)), qos) for n in camera_names]
        self.status = StatusPublisher(node) if status else None

    @staticmethod
    def _wanted(switch: bool, publisher) -> bool:
        return switch and publisher.get_subscription_count() > 0

    def subscription_counts(self) -> dict[str, int]:
        """Output name (``TOPIC_*``, ``depth_topic(camera)``) -> subscribers matched."""
        publishers = [self.occupancy, self.cloud, self.gaussians, self.markers, *self.depth]
        return {
            name: p.get_subscription_count() for name, p in zip(output_names(self.camera_names), publishers)
        }

    def wants_rendered_depth(self, switches: PublishSwitches) -> bool:
        """Whether rendering depth is worth it: enabled and somebody subscribes to a camera's depth."""
        return switches.rendered_depth and any(p.get_subscription_count() > 0 for p in self.depth)

    def publish(
        self,
        result: FrameResult,
        camera_frames: Sequence[str],
        switches: PublishSwitches,
        on_occupancy_published: Callable[[float], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> list[str]:
        """Publish every enabled output of one frame; occupancy first (it defines the latency).

        Args:
            camera_frames: V optical frame ids (the rendered depth images' frame_id).
            on_occupancy_published: called with time.monotonic() right after the occupancy message is
                handed to rclpy (or would have been, when disabled).
            on_error: unused here (errors are raised); ``OutputProcess`` reports errors found after
                it returned through it.
        Returns:
            Names of the outputs published.
        """
        from std_msgs.msg import Header

        header = Header(frame_id=self.target_frame)
        header.stamp.sec, header.stamp.nanosec = divmod(result.stamp_ns, 1_000_000_000)
        published = []
        if self._wanted(switches.occupancy, self.occupancy):
            self.occupancy.publish(
                occupancy_message(
                    result.labels,
                    result.grid,
                    result.class_names,
                    result.free_label,
                    header,
                    result.confidence if switches.occupancy_confidence else None,
                )
            )
            published.append(TOPIC_OCCUPANCY)
        if on_occupancy_published is not None:
            on_occupancy_published(time.monotonic())
        if self._wanted(switches.pointcloud, self.cloud):
            points = occupancy_points(
                result.labels, result.grid, result.class_names, result.free_label, result.confidence
            )
            self.cloud.publish(pointcloud_message(points, header))
            published.append(TOPIC_CLOUD)
        want_gaussians = self._wanted(switches.gaussians, self.gaussians)
        want_markers = self._wanted(switches.markers, self.markers)
        if want_gaussians or want_markers:
            # Only the Gaussians that make the occupancy: those the voxelizer's filter dropped and those
            # a free-space prompt won carry the free label, which no class name describes.
            keep = result.gaussian_labels < result.free_label
            means, scales, rotations = result.means[keep], result.scales[keep], result.rotations[keep]
            opacities, labels = result.opacities[keep], result.gaussian_labels[keep]
        if want_gaussians:
            self.gaussians.publish(
                gaussian_array_message(
                    means,
                    scales,
                    rotations,
                    opacities,
                    labels,
                    result.gaussian_confidence[keep],
                    result.class_names,
                    header,
                )
            )
            published.append(TOPIC_GAUSSIANS)
        if want_markers:
            data = gaussian_marker_data(
                means,
                scales,
                rotations,
                opacities,
                labels,
                result.class_names,
                switches.max_markers,
                switches.marker_sigma,
            )
            self.markers.publish(gaussian_marker_array_cdr(data, header))  # serialised with numpy
            published.append(TOPIC_MARKERS)
        if result.rendered_depth is not None and switches.rendered_depth:
            for v, pub in enumerate(self.depth):
                if pub.get_subscription_count() == 0:
                    continue
                cam_header = Header(frame_id=camera_frames[v], stamp=header.stamp)
                pub.publish(array_to_image_message(result.rendered_depth[v], "32FC1", cam_header))
                published.append(depth_topic(self.camera_names[v]))
        return published

    def publish_status(self, snapshot: StatsSnapshot, stamp, device: str, num_classes: int) -> None:
        self.status.publish(snapshot, stamp, device, num_classes)


class StatusPublisher:
    """The status topic (InferenceStatus): the node's statistics, published by the node itself."""

    def __init__(self, node):
        from rclpy.qos import QoSProfile

        from gausstr_ros.msg import InferenceStatus

        self.publisher = node.create_publisher(InferenceStatus, TOPIC_STATUS, QoSProfile(depth=10))

    def publish(self, snapshot: StatsSnapshot, stamp, device: str, num_classes: int) -> None:
        from gausstr_ros.msg import InferenceStatus

        msg = InferenceStatus()
        msg.header.stamp = stamp
        msg.frames_processed = snapshot.processed
        msg.frames_dropped = snapshot.dropped
        msg.frames_rejected = snapshot.rejected
        reasons = sorted(snapshot.rejected_by_kind)
        msg.rejected_reasons = reasons
        msg.rejected_counts = [int(snapshot.rejected_by_kind[k]) for k in reasons]
        msg.images_lost = int(snapshot.images_lost)
        msg.latency_p50_ms = snapshot.latency_p50_ms
        msg.latency_p99_ms = snapshot.latency_p99_ms
        msg.rate_hz = snapshot.rate_hz
        msg.window_size = snapshot.window
        msg.device = device
        msg.num_classes = num_classes
        msg.last_error = snapshot.last_error
        self.publisher.publish(msg)


def _topic_safe(name: str) -> str:
    """A camera name usable as a topic token (letters, digits, underscores)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"cam_{out}"
