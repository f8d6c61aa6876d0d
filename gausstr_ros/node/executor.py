"""The node's executor (``make_executor``) and spinning it through rclpy's destruction race."""

from __future__ import annotations

import time
from typing import Any


def make_executor(context: Any = None) -> Any:
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

    Returns:
        a ``rclpy.executors.SingleThreadedExecutor``.
    """
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context)


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
