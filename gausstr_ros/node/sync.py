"""Approximate-time synchronization of N message streams (message_filters semantics, no rclpy).

``ApproximateTimeSynchronizer`` reproduces the Python ``message_filters.ApproximateTimeSynchronizer``
of ROS 2 (ros2/message_filters), so that the node behaves the same whether or not message_filters is
installed:

* every input keeps a queue of its newest ``queue_size`` messages, keyed by header stamp (a message
  with a stamp already queued replaces it; beyond ``queue_size`` the oldest stamp is evicted);
* when a message arrives on input i, each other input's queued stamps within ``slop`` of its stamp
  (|dt| <= slop) are candidates, ordered by |dt| (ties: arrival order); if an input has none, nothing
  is emitted;
* the candidate combinations are visited in ``itertools.product`` order (the first other input
  varies slowest) and the first one whose stamps span strictly less than ``slop`` (max - min < slop)
  is emitted and its messages are removed from their queues.

message_filters enumerates the whole product, which is exponential in the number of inputs (12 or 18
topics for 6 cameras). Here the same product order is walked depth-first and a branch is pruned as
soon as its partial span reaches ``slop`` (adding stamps can only widen a span), so the first
valid combination, and hence every output, is identical, at a fraction of the cost.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Any


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time-like object (``sec``, ``nanosec``)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateTimeSynchronizer:
    """Approximate-time synchronizer of ``num_inputs`` streams; thread-safe.

    Args:
        num_inputs: number of streams (>= 1).
        queue_size: messages kept per stream (>= 1).
        slop_s: largest stamp difference [s] inside one emitted set (> 0).
        callback: called with the list of ``num_inputs`` messages of each synchronized set (outside
            the internal lock, in the thread that called ``add``).
    """

    def __init__(
        self, num_inputs: int, queue_size: int, slop_s: float, callback: Callable[[list[Any]], None]
    ):
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop_s > 0:
            raise ValueError(f"slop must be > 0 s, got {slop_s}")
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.slop_ns = round(slop_s * 1e9)
        self.callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, msg: Any, stamp_ns: int | None = None) -> bool:
        """Queue a message of input ``index``; emit a set if one is complete.

        Args:
            index: input index in [0, num_inputs).
            msg: the message; its ``header.stamp`` is used unless ``stamp_ns`` is given.
            stamp_ns: the message's stamp [ns] (for header-less items).
        Returns:
            True if a synchronized set was emitted.
        """
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"input index {index} out of range [0, {self.num_inputs})")
        stamp = stamp_to_ns(msg.header.stamp) if stamp_ns is None else int(stamp_ns)
        with self._lock:
            own = self._queues[index]
            own[stamp] = msg
            while len(own) > self.queue_size:
                del own[min(own)]
            if stamp not in own:  # evicted at once: older than everything queued
                return False
            chosen = self._search(index, stamp)
            if chosen is None:
                return False
            msgs = []
            for queue, s in zip(self._queues, chosen):
                msgs.append(queue.pop(s))
        self.callback(msgs)
        return True

    def _search(self, index: int, stamp: int) -> list[int] | None:
        """Stamps (one per input) of the first valid combination in product order, or None."""
        candidates: list[list[int]] = []
        for i, queue in enumerate(self._queues):
            if i == index:
                continue
            near = [(abs(s - stamp), s) for s in queue if abs(s - stamp) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda d: d[0])  # stable: ties keep arrival (dict) order
            candidates.append([s for _, s in near])

        chosen: list[int] = []

        def visit(depth: int, lo: int, hi: int) -> bool:
            if depth == len(candidates):
                return True
            for s in candidates[depth]:
                new_lo, new_hi = min(lo, s), max(hi, s)
                if new_hi - new_lo >= self.slop_ns:
                    continue  # this span can only grow deeper down
                chosen.append(s)
                if visit(depth + 1, new_lo, new_hi):
                    return True
                chosen.pop()
            return False

        if not visit(0, stamp, stamp):
            return None
        chosen.insert(index, stamp)
        return chosen

    def clear(self) -> None:
        """Forget every queued message (e.g. after time jumped backwards)."""
        with self._lock:
            for queue in self._queues:
                queue.clear()

    def queue_lengths(self) -> list[int]:
        """Messages queued per input."""
        with self._lock:
            return [len(q) for q in self._queues]


class MessageFiltersSynchronizer:
    """The same interface on top of ``message_filters.ApproximateTimeSynchronizer`` (ROS machines).

    Each input is a ``message_filters.SimpleFilter`` the node feeds after its own checks, so the node
    keeps one subscription per topic (its QoS, callback group and bad-input handling) either way.
    """

    def __init__(
        self, num_inputs: int, queue_size: int, slop_s: float, callback: Callable[[list[Any]], None]
    ):
        import message_filters

        if num_inputs < 1 or queue_size < 1 or not slop_s > 0:
            raise ValueError(
                f"need num_inputs >= 1, queue_size >= 1, slop > 0; got {num_inputs}, {queue_size}, {slop_s}"
            )
        self.num_inputs = num_inputs
        self._inputs = [message_filters.SimpleFilter() for _ in range(num_inputs)]
        self._sync = message_filters.ApproximateTimeSynchronizer(self._inputs, queue_size, slop_s)
        self._emitted = False

        def emit(*msgs):
            self._emitted = True
            callback(list(msgs))

        self._sync.registerCallback(emit)

    def add(self, index: int, msg: Any, stamp_ns: int | None = None) -> bool:
        if stamp_ns is not None:
            raise ValueError("message_filters synchronizes by header.stamp only")
        self._emitted = False
        self._inputs[index].signalMessage(msg)
        return self._emitted

    def clear(self) -> None:
        with self._sync.lock:
            for queue in self._sync.queues:
                queue.clear()

    def queue_lengths(self) -> list[int]:
        with self._sync.lock:
            return [len(q) for q in self._sync.queues]


def message_filters_available() -> bool:
    return importlib.util.find_spec("message_filters") is not None


def make_synchronizer(
    kind: str, num_inputs: int, queue_size: int, slop_s: float, callback: Callable[[list[Any]], None]
):
    """A synchronizer by name.

    Args:
        kind: "auto" (the built-in one: the same sets as message_filters, test_sync.py and
            test_ros_parity.py, without its exponential search over 12 or 18 topics), "message_filters"
            or "builtin".
    Returns:
        An object with ``add(index, msg)``, ``clear()``, ``queue_lengths()``.
    """
    if kind not in ("auto", "message_filters", "builtin"):
        raise ValueError(f"synchronizer must be 'auto', 'message_filters' or 'builtin', got {kind!r}")
    if kind == "message_filters":
        if not message_filters_available():
            raise ValueError("synchronizer 'message_filters' requested but message_filters is not installed")
        return MessageFiltersSynchronizer(num_inputs, queue_size, slop_s, callback)
    return ApproximateTimeSynchronizer(num_inputs, queue_size, slop_s, callback)
