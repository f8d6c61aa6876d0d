"""The node's input rules without rclpy: stamps (out of order, time jumps confirmed by several topics,
isolated outliers), counting the frame sets that never complete, and image_transport-style topics."""

from __future__ import annotations

import pytest

from gausstr_ros.node.stamps import SetAccounting, StampGate
from gausstr_ros.node.sync import ApproximateTimeSynchronizer
from gausstr_ros.node.transport import (
    choose_reliability,
    message_type_name,
    topic_transport,
    with_transport,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S
MS = 1_000_000


class Inputs:
    """StampGate + SetAccounting + the built-in synchronizer wired like CameraInputs does."""

    def __init__(self, n: int, threshold_s: float = 1.0, queue: int = 10, slop_s: float = 0.05):
        self.topics = [f"/t{i}" for i in range(n)]
        self.gate = StampGate(self.topics, lambda: threshold_s)
        self.accounting = SetAccounting(self.topics, queue, slop_s)
        self.sync = ApproximateTimeSynchronizer(n, queue, slop_s, self._emitted)
        self.sets: list[list[int]] = []
        self.rejected: list[tuple[str, str]] = []
        self.resets: list[str] = []

    def _emitted(self, stamps):
        self.sets.append(stamps)
        self.rejected += self.accounting.emitted(stamps)

    def add(self, index: int, stamp: int) -> None:
        result = self.gate.offer(index, stamp, stamp)
        self.rejected += result.rejected
        if result.reset:
            self.resets.append(result.reset)
            self.rejected += self.accounting.clear()
            self.sync.clear()
        for i, s, item in result.accept:
            self.rejected += self.accounting.added(i, s)
            self.sync.add(i, item, stamp_ns=s)

    def frame(self, stamp: int, skip=(), override=None) -> None:
        for i in range(len(self.topics)):
            if i not in skip:
                self.add(i, (override or {}).get(i, stamp))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.rejected]


def test_a_single_outlier_stamp_does_not_wipe_the_other_cameras():
    """Stamp 0 on one camera (a driver glitch) is refused and counted; the other cameras' queued
    messages stay, and the frame set it belonged to counts as incomplete once."""
    inputs = Inputs(6)
    for k in range(3):
        inputs.frame(T0 + k * 100 * MS)
    # Frame 3: camera 2 sends stamp 0, and the other cameras' messages arrive first and wait.
    inputs.frame(T0 + 300 * MS, override={2: 0})
    assert inputs.sync.queue_lengths() == [1, 1, 0, 1, 1, 1]  # nothing was cleared
    assert not inputs.resets
    inputs.frame(T0 + 400 * MS)
    inputs.frame(T0 + 500 * MS)
    assert [s[0] for s in inputs.sets] == [T0 + k * 100 * MS for k in (0, 1, 2, 4, 5)]
    assert inputs.kinds() == ["stamp", "incomplete"]
    stamp_reason, incomplete_reason = (r for _, r in inputs.rejected)
    assert "/t2: stamp 0.000 s" in stamp_reason and "isolated outlier" in stamp_reason
    assert "never completed: no message from ['/t2']" in incomplete_reason


def test_a_time_jump_of_every_topic_resets_once_enough_topics_agree():
    inputs = Inputs(6)
    for k in range(3):
        inputs.frame(T0 + 10 * S + k * 100 * MS)
    inputs.add(0, T0)
    inputs.add(1, T0 + 2 * MS)
    assert not inputs.resets  # two of six topics: not yet
    inputs.add(2, T0 + 3 * MS)
    assert len(inputs.resets) == 1 and "time jumped back by 10.197 s" in inputs.resets[0]
    assert "on 3 of 6 input topics" in inputs.resets[0]
    for i in range(3, 6):
        inputs.add(i, T0 + 4 * MS)
    assert inputs.sets[-1] == [T0, T0 + 2 * MS, T0 + 3 * MS, T0 + 4 * MS, T0 + 4 * MS, T0 + 4 * MS]
    assert inputs.kinds() == []  # nothing refused, nothing lost


def test_a_time_reset_counts_the_partial_sets_it_discards():
    inputs = Inputs(3)
    inputs.frame(T0 + 10 * S)
    inputs.frame(T0 + 10 * S + 100 * MS, skip={2})  # a partial set waits in the queues
    inputs.frame(T0)
    assert len(inputs.resets) == 1
    assert inputs.kinds() == ["time_reset"]
    assert "lacked ['/t2']" in inputs.rejected[0][1]
    assert inputs.sets[-1] == [T0, T0, T0]


def test_a_single_topic_needs_two_messages_on_the_new_time():
    inputs = Inputs(1)
    inputs.add(0, T0 + 10 * S)
    inputs.add(0, T0)  # held: an outlier or a jump?
    assert not inputs.resets and len(inputs.sets) == 1
    inputs.add(0, T0 + 100 * MS)  # a second one on the new time: a jump
    assert len(inputs.resets) == 1 and [s[0] for s in inputs.sets] == [T0 + 10 * S, T0, T0 + 100 * MS]
    inputs.add(0, 5)  # an outlier this time: the next message is back on time
    inputs.add(0, T0 + 200 * MS)
    assert inputs.kinds() == ["stamp"] and len(inputs.resets) == 1


def test_a_previous_outlier_ahead_of_the_others_is_left_behind():
    """A camera that sent one stamp far in the future would otherwise refuse every later message as
    'out of order' (each looks like a jump back nobody confirms)."""
    inputs = Inputs(3)
    inputs.frame(T0)
    inputs.frame(T0 + 100 * MS, override={1: T0 + 3600 * S})
    inputs.frame(T0 + 200 * MS)
    inputs.frame(T0 + 300 * MS)
    assert [s[0] for s in inputs.sets] == [T0, T0 + 200 * MS, T0 + 300 * MS]
    assert not inputs.resets
    assert inputs.kinds() == ["incomplete"]  # frame 1: /t1's message was the outlier


def test_out_of_order_and_duplicates_are_refused_and_zero_threshold_disables_jumps():
    inputs = Inputs(2, threshold_s=0.0)
    inputs.frame(T0 + 10 * S)
    inputs.add(0, T0 + 10 * S)
    inputs.add(1, T0 + 9 * S)
    inputs.add(0, T0)
    assert inputs.kinds() == ["stamp"] * 3 and not inputs.resets
    assert "duplicate" in inputs.rejected[0][1] and "1000.0 ms back" in inputs.rejected[1][1]


def test_lost_messages_make_incomplete_sets_counted_once_with_the_missing_topics():
    inputs = Inputs(4, queue=5)
    for k in range(20):
        skip = {k % 4} if k % 5 == 2 else set()
        inputs.frame(T0 + k * 100 * MS, skip=skip)
    complete = [k for k in range(20) if k % 5 != 2]
    assert [s[0] for s in inputs.sets] == [T0 + k * 100 * MS for k in complete]
    assert inputs.kinds() == ["incomplete"] * 4
    assert [r.split("from ")[1].split("]")[0] + "]" for _, r in inputs.rejected] == [
        "['/t2']",
        "['/t3']",
        "['/t0']",
        "['/t1']",
    ]


def test_a_camera_that_stops_counts_one_incomplete_set_per_frame():
    inputs = Inputs(3, queue=4)
    inputs.frame(T0)
    for k in range(1, 11):
        inputs.frame(T0 + k * 100 * MS, skip={1})
    # Messages leave the synchronizer's queues (size 4) one set at a time: each counted once.
    assert inputs.kinds() == ["incomplete"] * 6


@pytest.mark.parametrize(
    ("topic", "transport", "expected"),
    [
        ("/cam/image_rect", "raw", "/cam/image_rect"),
        ("/cam/image_rect", "compressed", "/cam/image_rect/compressed"),
        ("/cam/image_rect/compressed", "compressed", "/cam/image_rect/compressed"),
        ("/cam/image_rect/compressed", "raw", "/cam/image_rect/compressed"),
        ("cam/depth", "compressedDepth", "cam/depth/compressedDepth"),
    ],
)
def test_image_transport_topic_names(topic, transport, expected):
    assert with_transport(topic, transport) == expected
    assert with_transport(expected, transport) == expected  # idempotent


def test_message_types_and_transports_of_topics():
    assert topic_transport("/a/compressed") == "compressed"
    assert topic_transport("/a/compressedDepth") == "compressedDepth"
    assert topic_transport("/compressed_cam/image") == "raw"
    assert message_type_name("/a/image") == "sensor_msgs/msg/Image"
    assert message_type_name("/a/image/compressed") == "sensor_msgs/msg/CompressedImage"
    with pytest.raises(ValueError, match="transport must be one of"):
        with_transport("/a", "theora")


def test_image_qos_auto_follows_the_publishers():
    assert choose_reliability("auto", []) == "reliable"
    assert choose_reliability("auto", ["reliable", "reliable"]) == "reliable"
    assert choose_reliability("auto", ["reliable", "best_effort"]) == "best_effort"
    assert choose_reliability("reliable", ["best_effort"]) == "reliable"
    assert choose_reliability("sensor_data", ["reliable"]) == "best_effort"
    with pytest.raises(ValueError, match="image_qos"):
        choose_reliability("fast", [])


def test_node_config_resolves_transports_into_the_topics():
    from gausstr_ros.node.params import NodeConfig

    config = NodeConfig.defaults()
    config.image_transport, config.depth_transport = "compressed", "compressedDepth"
    config.image_topics[1] = "/cam_front_right/image_color/compressed"
    config.validate()
    assert config.image_topics[0] == "/cam_front/image_rect/compressed"
    assert config.image_topics[1] == "/cam_front_right/image_color/compressed"
    assert config.depth_topics[0] == "/cam_front/depth/compressedDepth"
    config.validate()
    assert config.image_topics[0] == "/cam_front/image_rect/compressed"
