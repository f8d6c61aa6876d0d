"""The node's camera inputs: one subscription per topic, per-topic stamp checks, CameraInfo cache,
approximate-time synchronization into frame sets, and a watchdog for silent topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.sync import make_synchronizer, stamp_to_ns


@dataclass
class Arrival:
    """A message and when it arrived (monotonic [s]); ``header`` lets the synchronizers read its stamp."""

    msg: Any
    arrival: float

    @property
    def header(self):
        return self.msg.header


@dataclass
class FrameSet:
    """One synchronized set of camera messages.

    Attributes:
        stamp_ns: the set's stamp: that of the first camera's image [ns]; outputs carry it.
        arrival: monotonic time [s] the last message of the set arrived (latency origin).
        images: V Image messages in camera order; depths: V depth Images or None.
        infos: V CameraInfo messages (latest received per camera; None where none came yet).
    """

    stamp_ns: int
    arrival: float
    images: list[Any]
    depths: list[Any] | None
    infos: list[Any | None]


class CameraInputs:
    """Subscribes to every camera topic and emits synchronized ``FrameSet``s.

    Args:
        node: the rclpy node.
        config: the node configuration (topics, QoS, sync settings).
        on_frame_set: called with each complete set (in the subscription's callback thread).
        on_reject: called with (kind, reason) for messages refused before synchronization.
        on_time_reset: called when a topic's stamps jumped back by more than time_jump_reset_s.
        callback_group: group of the subscriptions.
    """

    def __init__(
        self,
        node,
        config: NodeConfig,
        on_frame_set: Callable[[FrameSet], None],
        on_reject: Callable[[str, str], None],
        on_time_reset: Callable[[str], None],
        callback_group=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        self.config = config
        self._on_frame_set = on_frame_set
        self._on_reject = on_reject
        self._on_time_reset = on_time_reset
        self._clock = clock
        self._lock = threading.Lock()
        v = len(config.camera_names)
        # Synchronized inputs: the V images, then the V depth images when used.
        self.topics: list[str] = list(config.image_topics)
        if config.use_depth:
            self.topics += list(config.depth_topics)
        self._last_stamp: list[int | None] = [None] * len(self.topics)
        self._last_arrival: list[float | None] = [None] * len(self.topics)
        self._previous_arrival: list[float | None] = [None] * len(self.topics)
        self._first_arrival: float | None = None
        self._infos: list[Any | None] = [None] * v
        self._last_emitted_stamp: int | None = None
        self.sets_emitted = 0
        self.sets_rate_limited = 0
        self.synchronizer = make_synchronizer(
            config.synchronizer, len(self.topics), config.sync_queue_size, config.sync_slop_s, self._on_synced
        )

        best_effort = QoSProfile(
            depth=config.queue_depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
            history=qos_profile_sensor_data.history,
        )
        if config.image_qos == "sensor_data":
            qos = best_effort
        else:
            qos = QoSProfile(depth=config.queue_depth, reliability=QoSReliabilityPolicy.RELIABLE)
        self._subscriptions = []
        for i, topic in enumerate(self.topics):
            self._subscriptions.append(
                node.create_subscription(
                    Image, topic, lambda msg, i=i: self.add(i, msg), qos, callback_group=callback_group
                )
            )
        for c, topic in enumerate(config.camera_info_topics):
            # Best effort matches reliable and best-effort publishers alike; only the latest counts.
            self._subscriptions.append(
                node.create_subscription(
                    CameraInfo,
                    topic,
                    lambda msg, c=c: self.set_camera_info(c, msg),
                    best_effort,
                    callback_group=callback_group,
                )
            )

    # -- message entry points (also called directly by tests) -------------------------------------

    def set_camera_info(self, camera: int, msg) -> None:
        with self._lock:
            self._infos[camera] = msg

    def add(self, index: int, msg) -> None:
        """Check a message's stamp against its topic's previous one and feed the synchronizer.

        A stamp not newer than the topic's previous one is refused (out of order or duplicate),
        unless it is older by more than ``time_jump_reset_s``: then time was reset (a bag looped, a
        simulator restarted), every queue is cleared and the message is taken.
        """
        now = self._clock()
        stamp = stamp_to_ns(msg.header.stamp)
        topic = self.topics[index]
        problem = reset = None
        with self._lock:
            if self._first_arrival is None:
                self._first_arrival = now
            self._previous_arrival[index] = self._last_arrival[index]
            self._last_arrival[index] = now
            last = self._last_stamp[index]
            if last is not None and stamp <= last:
                back_s = (last - stamp) / 1e9
                threshold = self.config.time_jump_reset_s
                if threshold > 0 and back_s > threshold:
                    reset = (
                        f"{topic}: time jumped back by {back_s:.3f} s (> time_jump_reset_s = "
                        f"{threshold} s): cleared the synchronizer and dynamic TF"
                    )
                    self._last_stamp = [None] * len(self.topics)
                    self._last_emitted_stamp = None
                else:
                    step = "duplicate" if back_s == 0 else f"{back_s * 1e3:.1f} ms back"
                    problem = (
                        f"{topic}: stamp {stamp / 1e9:.3f} s is not newer than the previous "
                        f"{last / 1e9:.3f} s ({step}); message skipped"
                    )
            if problem is None:
                self._last_stamp[index] = stamp
        if problem is not None:
            self._on_reject("stamp", problem)
            return
        if reset is not None:
            self.synchronizer.clear()
            self._on_time_reset(reset)
        self.synchronizer.add(index, Arrival(msg, now))

    def _on_synced(self, items: list[Arrival]) -> None:
        v = len(self.config.camera_names)
        images = [a.msg for a in items[:v]]
        depths = [a.msg for a in items[v:]] if self.config.use_depth else None
        stamp = stamp_to_ns(images[0].header.stamp)
        with self._lock:
            min_period = 1.0 / self.config.max_rate_hz if self.config.max_rate_hz > 0 else 0.0
            last = self._last_emitted_stamp
            if last is not None and min_period and (stamp - last) / 1e9 < min_period - 1e-6:
                self.sets_rate_limited += 1
                return
            self._last_emitted_stamp = stamp
            infos = list(self._infos)
            self.sets_emitted += 1
        self._on_frame_set(FrameSet(stamp, max(a.arrival for a in items), images, depths, infos))

    # -- watchdog ------------------------------------------------------------------------------

    def silent_topics(self, timeout_s: float) -> list[tuple[str, float | None]]:
        """Topics that stopped (or never started) while others kept publishing for longer than
        ``timeout_s``: (topic, seconds since its last message, or None if it never published).

        "Kept publishing" means another topic received at least two messages after this topic's
        last one: the messages of one frame set can arrive spread over more than ``timeout_s`` when
        the machine is loaded, and that is not a stopped camera. Nothing is reported when every
        topic stops together (end of a bag, camera driver down).
        """
        now = self._clock()
        with self._lock:
            arrivals = list(self._last_arrival)
            previous = list(self._previous_arrival)
            first = self._first_arrival
        known = [a for a in arrivals if a is not None]
        if not known or now - max(known) > timeout_s:
            return []
        newest = max(known)
        silent = []
        for i, (topic, a) in enumerate(zip(self.topics, arrivals)):
            since = first if a is None else a
            moved_on = any(p is not None and (a is None or p > a) for j, p in enumerate(previous) if j != i)
            if not moved_on:
                continue
            if a is None:
                if now - since > timeout_s:
                    silent.append((topic, None))
            elif newest - a > timeout_s:
                silent.append((topic, now - a))
        return silent

    def missing_camera_info(self) -> list[str]:
        with self._lock:
            return [t for t, info in zip(self.config.camera_info_topics, self._infos) if info is None]
