"""The node's executor (``make_executor``) and spinning it through rclpy's destruction race."""

from __future__ import annotations

import time
from typing import Any


def make_executor(context: Any = None, coalesce_s: float = 0.0) -> Any:
    """The executor the occupancy node spins on (its ``main``, the benchmarks and the ROS tests).

    Single-threaded on purpose. Every callback of the node is short (a message stored, a stamp checked,
    a transform cached, a timer's status); inference runs in the node's own worker threads. With
    rclpy's ``MultiThreadedExecutor`` frame sets stop completing at camera rates: the per-topic DDS
    queues overflow independently, so each set misses a different image. Most likely the threads that
    find the input callback group busy wait again on entities that are still ready, return at once
    and spin, holding the interpreter lock the one thread taking messages needs (not profiled).
    Measured with ``benchmarks/node_inputs.py`` (12 images of 504 x 896 per set from another process,
    2 CPU cores, 2026-12-06): at 30 Hz 4 threads completed 17-24 of 150 sets, one thread 150 of 150,
    also with another thread holding the interpreter lock for 10 or 20 ms of every 33
    (docs/benchmarks.md, "Node input side").

    Args:
        context: the rclpy Context (None: the default one).
        coalesce_s: > 0: a ``CoalescingExecutor`` that waits this long before each wait for work
            (the node's ``executor_coalesce_ms``).

    Returns:
        a ``rclpy.executors.SingleThreadedExecutor`` (or the coalescing subclass).
    """
    from rclpy.executors import SingleThreadedExecutor

    if coalesce_s > 0:
        return coalescing_executor_class()(coalesce_s, context=context)
    return SingleThreadedExecutor(context=context)


def coalescing_executor_class() -> type:
    """``CoalescingExecutor``, defined on first use (rclpy is imported only where it exists)."""
    global _COALESCING
    if _COALESCING is None:
        from rclpy.executors import SingleThreadedExecutor

        class CoalescingExecutor(SingleThreadedExecutor):
            """A single-threaded executor that sleeps ``coalesce_s`` before each wait for work.

            Why: rclpy rebuilds its wait set in Python for every wait, under the interpreter lock
            the node's inference threads need. The images of one frame set arrive a few ms apart,
            so a plain executor wakes once per image; sleeping a little first (the lock released)
            lets the set's other images arrive and be taken from one wait. Measured with
            ``benchmarks/node_latency.py --mode ros --lock-profile`` on the 2-core CPU machine
            (simulated device, 12 images of 504 x 896 per set at 30 Hz): 3 ms halved rclpy's own
            share of the lock (13-16 % -> 7-8 % of the time), but the sets published stayed within
            the noise (53-58 of 180 against 54-55), for 4-6 ms more from image to frame set; on a
            GPU host it is not measured yet, so the node's default is off. The sleep happens
            before the wait, so an idle node still blocks in the wait, and a callback is at most
            ``coalesce_s`` later than without it.

            Overrides rclpy's ``Executor._wait_for_ready_callbacks`` (a generator: its first
            ``next`` waits); ``waits`` counts them.
            """

            def __init__(self, coalesce_s: float, context: Any = None):
                super().__init__(context=context)
                self.coalesce_s = float(coalesce_s)
                self.waits = 0

            def _wait_for_ready_callbacks(self, *args, **kwargs):
                self.waits += 1
                time.sleep(self.coalesce_s)
                yield from super()._wait_for_ready_callbacks(*args, **kwargs)

        _COALESCING = CoalescingExecutor
    return _COALESCING


_COALESCING: type | None = None


# More races than this within one second is no longer the race but a broken entity: re-raise.
_MAX_RACES_PER_SECOND = 100


def spin(executor: Any, logger: Any = None) -> None:
    """``executor.spin()`` that survives an entity destroyed while the executor was collecting it.

    rclpy (Jazzy 7.1.x) collects the nodes' waitables and then adds them to a wait set. When another
    thread destroys a subscription in between (``image_qos: auto`` re-subscribes from a timer while
    the other executor threads wait; a test harness destroys its publishers), the destroyed
    entity's QoS event handlers raise ``InvalidHandle`` in ``add_to_wait_set``. That exception ends
    ``spin()``: the node silently stops answering (ros2/rclpy#1206 and #1284; rclpy#1629 changes
    destruction upstream). The next wait collects the entities again without the destroyed one, so
    spinning on is correct.

    Args:
        executor: an rclpy executor with its nodes added.
        logger: an rclpy logger (``debug`` is called once per race), or None.

    Raises:
        InvalidHandle: more than ``_MAX_RACES_PER_SECOND`` in one second (not the race).
    """
    from rclpy.exceptions import InvalidHandle

    window_start, in_window = time.monotonic(), 0
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle as exc:
            now = time.monotonic()
            if now - window_start > 1.0:
                window_start, in_window = now, 0
            in_window += 1
            if in_window > _MAX_RACES_PER_SECOND:
                raise
            if logger is not None:
                logger.debug(f"an entity was destroyed while the executor collected it ({exc}); spinning on")
