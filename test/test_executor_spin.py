"""The node's executor keeps spinning when an entity is destroyed while the executor collects it
(rclpy's destruction race; ``gausstr_ros.node.executor.spin``). The race is provoked the way the node
meets it: subscriptions with QoS event handlers re-created from another thread while a busy
MultiThreadedExecutor waits (``image_qos: auto`` re-subscribing), here many times in a row."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.ros


class _Races:
    """A logger stand-in that counts the races ``spin`` survived."""

    def __init__(self):
        self.count = 0

    def debug(self, _text: str) -> None:
        self.count += 1


def test_spin_survives_subscriptions_destroyed_while_the_executor_waits(ros_context):
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from gausstr_ros.node.executor import spin

    node = None
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    try:
        node = rclpy.create_node("spin_race", context=ros_context)
        executor.add_node(node)
        publisher = node.create_publisher(String, "race", 10)
        ticks = []
        # A fast timer keeps the executor rebuilding its wait set, which is where the race sits.
        node.create_timer(0.0005, lambda: (ticks.append(1), publisher.publish(String(data="x"))))
        races = _Races()
        failures = []

        def run():
            try:
                spin(executor, races)
            except Exception as exc:  # the test reports it below
                failures.append(repr(exc))

        spinner = threading.Thread(target=run, daemon=True)
        spinner.start()
        for i in range(150):  # without the fix the executor stops after ~30-50
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda info: None, message_lost=lambda info: None
            )
            reliability = ReliabilityPolicy.BEST_EFFORT if i % 2 else ReliabilityPolicy.RELIABLE
            sub = node.create_subscription(
                String,
                "race",
                lambda msg: None,
                QoSProfile(depth=10, reliability=reliability),
                event_callbacks=events,
            )
            time.sleep(0.001)
            node.destroy_subscription(sub)
            assert spinner.is_alive(), f"the executor stopped after {i + 1} re-subscriptions: {failures}"
        received = []
        node.create_subscription(String, "race", received.append, 10)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spinner.is_alive() and not failures, failures
        assert received, f"no message after the re-subscriptions ({races.count} races survived)"
        # A stopped timer never ticks again; a starved one (a loaded 2-core CI machine: one CI run
        # saw no tick within 0.2 s) ticks within seconds.
        before = len(ticks)
        deadline = time.monotonic() + 5
        while len(ticks) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(ticks) > before, "the timer stopped (no tick in 5 s)"
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()


def test_the_coalescing_executor_takes_a_burst_of_messages_in_fewer_waits(ros_context):
    """``executor_coalesce_ms``: the executor sleeps before each wait, so a burst of messages on many
    topics (a frame set's images, a few ms apart) is taken from fewer waits than one per message, and
    every message still arrives; 0 gives rclpy's plain single-threaded executor. (rclpy takes one
    message per ready subscription and wait, so the gain is across topics, as in a frame set.)"""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from gausstr_ros.node.executor import make_executor, spin

    assert type(make_executor(ros_context)) is SingleThreadedExecutor
    executor = make_executor(ros_context, coalesce_s=0.03)
    node = rclpy.create_node("coalesce", context=ros_context)
    got: list[str] = []
    topics = [f"burst{i}" for i in range(12)]
    try:
        for topic in topics:
            node.create_subscription(String, topic, lambda m: got.append(m.data), 5)
        publishers = [node.create_publisher(String, topic, 5) for topic in topics]
        executor.add_node(node)
        spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
        spinner.start()
        time.sleep(0.3)  # discovery, and the executor settled in its wait
        waits_before = executor.waits
        for i, publisher in enumerate(publishers):  # one "frame set": 12 topics, 1 ms apart
            publisher.publish(String(data=str(i)))
            time.sleep(0.001)
        deadline = time.monotonic() + 5
        while len(got) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(got, key=int) == [str(i) for i in range(12)]
        # a plain executor waits about once per message here; 30 ms of sleep per wait takes them in a few
        assert executor.waits - waits_before <= 6, executor.waits - waits_before
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
