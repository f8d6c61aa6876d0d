"""The node's camera inputs: one subscription per topic (Image or CompressedImage by topic name, QoS by
``image_qos``, ``gausstr_ros.node.transport``), the stamp rules (``gausstr_ros.node.stamps``), the
CameraInfo cache, approximate-time synchronization into frame sets, the count of sets that never
complete, and a watchdog for silent topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.stamps import SetAccounting, StampGate
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
        release: hands back what the set's messages live in (the input process's shared memory);
            called once by ``done()``; None in the node's own process.
    """

    stamp_ns: int
    arrival: float
    images: list[Any]
    depths: list[Any] | None
    infos: list[Any | None]
    release: Callable[[], None] | None = None

    def done(self) -> None:
        """The node is finished with this set (published, failed, or replaced while waiting)."""
        release, self.release = self.release, None
        if release is not None:
            release()


class CameraInputs:
    """Subscribes to every camera topic and emits synchronized ``FrameSet``s.

    Args:
        node: the rclpy node.
        config: the node configuration (topics, QoS, sync settings).
        on_frame_set: called with each complete set (in the subscription's callback thread).
        on_reject: called with (kind, reason) for messages refused before synchronization and for
            frame sets that never complete ("incomplete", "time_reset").
        on_time_reset: called when the input topics' stamps jumped back by more than time_jump_reset_s.
        callback_group: group of the subscriptions.
        on_lost: called with (topic, count) when the middleware reports lost images (message_lost).
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
        on_lost: Callable[[str, int], None] | None = None,
    ):
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo

        from gausstr_ros.node.transport import ImageSubscription

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
        self._logger = node.get_logger()
        self._gate = StampGate(self.topics, lambda: self.config.time_jump_reset_s)
        self._accounting = SetAccounting(self.topics, config.sync_queue_size, config.sync_slop_s)
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
        self.synchronizer_name = type(self.synchronizer).__name__

        best_effort = QoSProfile(
            depth=config.queue_depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
            history=qos_profile_sensor_data.history,
        )
        self.image_subscriptions = [
            ImageSubscription(
                node,
                topic,
                config.image_qos,
                config.queue_depth,
                lambda msg, i=i: self.add(i, msg),
                on_lost=on_lost,
                callback_group=callback_group,
            )
            for i, topic in enumerate(self.topics)
        ]
        self._subscriptions = []
        # image_qos auto follows the publishers' reliability as they come and go.
        self._qos_timer = (
            node.create_timer(1.0, self.refresh_qos, callback_group=callback_group)
            if config.image_qos == "auto"
            else None
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

    def refresh_qos(self) -> None:
        """Re-check the publishers of ``image_qos: auto`` subscriptions (a timer calls it every second)."""
        for sub in self.image_subscriptions:
            change = sub.refresh()
            if change:
                self._logger.info(change)

    def add(self, index: int, msg) -> None:
        """Apply the stamp rules (``gausstr_ros.node.stamps.StampGate``) and feed the synchronizer.

        A stamp not newer than the topic's previous one is refused (out of order or duplicate). One
        older by more than ``time_jump_reset_s`` is held: a time jump (a bag looped, a simulator
        restarted) once enough topics agree, which clears every queue and the dynamic TF; an isolated
        outlier, refused and counted, when its topic carries on with the old time.
        """
        now = self._clock()
        stamp = stamp_to_ns(msg.header.stamp)
        incomplete: list[tuple[str, str]] = []
        with self._lock:
            if self._first_arrival is None:
                self._first_arrival = now
            self._previous_arrival[index] = self._last_arrival[index]
            self._last_arrival[index] = now
            result = self._gate.offer(index, stamp, Arrival(msg, now))
            if result.reset is not None:
                self._last_emitted_stamp = None
                incomplete += self._accounting.clear()
            for i, s, _ in result.accept:
                incomplete += self._accounting.added(i, s)
        for kind, reason in result.rejected:
            self._on_reject(kind, reason)
        for note in result.notes:
            self._logger.warning(note)
        if result.reset is not None:
            self.synchronizer.clear()
            self._on_time_reset(result.reset)
        for kind, reason in incomplete:
            self._on_reject(kind, reason)
        for i, _, arrival in result.accept:
            self.synchronizer.add(i, arrival)

    def _on_synced(self, items: list[Arrival]) -> None:
        v = len(self.config.camera_names)
        images = [a.msg for a in items[:v]]
        depths = [a.msg for a in items[v:]] if self.config.use_depth else None
        stamp = stamp_to_ns(images[0].header.stamp)
        with self._lock:
            incomplete = self._accounting.emitted([stamp_to_ns(a.msg.header.stamp) for a in items])
        for kind, reason in incomplete:
            self._on_reject(kind, reason)
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

    @property
    def images_lost(self) -> int:
        """Images the middleware reported lost on the image and depth subscriptions, since start."""
        return sum(sub.lost for sub in self.image_subscriptions)

    def missing_camera_info(self) -> list[str]:
        with self._lock:
            return [t for t, info in zip(self.config.camera_info_topics, self._infos) if info is None]
