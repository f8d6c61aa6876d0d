"""Spinning an rclpy executor through rclpy's destruction race."""

from __future__ import annotations

import time
from typing import Any

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
