"""Frame sets from a stream of recorded messages, with the node's input rules but without rclpy.

``FrameAssembler`` does for bag messages what the node's ``gausstr_ros.node.inputs.CameraInputs`` does for
subscriptions: the same stamp rules (``gausstr_ros.node.stamps.StampGate``: out-of-order stamps refused,
a time jump confirmed by several topics clears the queues, an isolated outlier stamp is refused), the
same approximate-time
synchronizer (``gausstr_ros.node.sync.make_synchronizer`` with the node's parameters), the latest
CameraInfo per camera, and ``max_rate_hz``. It emits the node's own ``FrameSet``s; the bag's log
time stands in for the arrival time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gausstr_ros.node.inputs import Arrival, FrameSet
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.stamps import StampGate
from gausstr_ros.node.sync import make_synchronizer, stamp_to_ns


class FrameAssembler:
    """Synchronizes recorded camera messages into frame sets.

    Args:
        config: the node configuration (topics, use_depth, sync and rate parameters).
        on_reject: called with (kind, reason) for a refused message (kind "stamp").
        on_time_reset: called with a reason when a topic's time jumped back (queues were cleared).
    """

    def __init__(
        self,
        config: NodeConfig,
        on_reject: Callable[[str, str], None] | None = None,
        on_time_reset: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.topics: list[str] = list(config.image_topics) + (
            list(config.depth_topics) if config.use_depth else []
        )
        self._index = {t: i for i, t in enumerate(self.topics)}
        self._info_index = {t: i for i, t in enumerate(config.camera_info_topics)}
        self._on_reject = on_reject or (lambda kind, reason: None)
        self._on_time_reset = on_time_reset or (lambda reason: None)
        self._infos: list[Any | None] = [None] * len(config.camera_names)
        self._gate = StampGate(self.topics, lambda: self.config.time_jump_reset_s)
        self._last_emitted: int | None = None
        self._ready: list[FrameSet] = []
        self.sets_emitted = 0
        self.sets_rate_limited = 0
        self.synchronizer = make_synchronizer(
            config.synchronizer, len(self.topics), config.sync_queue_size, config.sync_slop_s, self._on_synced
        )

    @property
    def input_topics(self) -> list[str]:
        """Every topic the assembler consumes: images (+ depth) and CameraInfo."""
        return self.topics + list(self.config.camera_info_topics)

    def add(self, topic: str, msg: Any, arrival: float) -> list[FrameSet]:
        """Feed one message (any input topic); returns the frame sets it completed (usually 0 or 1).

        Args:
            arrival: when it arrived [s] (the bag's log time for recorded messages).
        """
        if topic in self._info_index:
            self._infos[self._info_index[topic]] = msg
            return []
        index = self._index.get(topic)
        if index is None:
            raise KeyError(f"{topic} is not an input topic of this configuration")
        result = self._gate.offer(index, stamp_to_ns(msg.header.stamp), Arrival(msg, arrival))
        for kind, reason in result.rejected:
            self._on_reject(kind, reason)
        if result.reset is not None:
            self._last_emitted = None
            self.synchronizer.clear()
            self._on_time_reset(result.reset)
        for i, _, item in result.accept:
            self.synchronizer.add(i, item)
        ready, self._ready = self._ready, []
        return ready

    def _on_synced(self, items: list[Arrival]) -> None:
        v = len(self.config.camera_names)
        images = [a.msg for a in items[:v]]
        depths = [a.msg for a in items[v:]] if self.config.use_depth else None
        stamp = stamp_to_ns(images[0].header.stamp)
        rate = self.config.max_rate_hz
        if (
            self._last_emitted is not None
            and rate > 0
            and (stamp - self._last_emitted) / 1e9 < 1.0 / rate - 1e-6
        ):
            self.sets_rate_limited += 1
            return
        self._last_emitted = stamp
        self.sets_emitted += 1
        self._ready.append(FrameSet(stamp, max(a.arrival for a in items), images, depths, list(self._infos)))
