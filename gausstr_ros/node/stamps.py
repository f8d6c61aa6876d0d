"""The stamp rules of the node's inputs (and of the bag tools, which follow the node), without rclpy.

``StampGate`` decides for each image / depth message whether it goes on to the synchronizer:

* **Out of order**: a stamp not newer than its topic's previous one is refused (a duplicate, or a
  message overtaken in transport), unless it is older by more than ``time_jump_reset_s``:
* **Time jump or outlier**: a stamp more than ``time_jump_reset_s`` older than its topic's previous
  one is held back. It is a **time jump** (a bag that loops, a simulator restart) once enough topics
  agree: at least half of the topics that have published (and at least two) jumped back to within
  ``time_jump_reset_s`` of each other, or, with a single input topic, two messages in a row. Then the
  synchronizer and the dynamic TF are cleared and the held messages go on in stamp order. It is an
  **isolated outlier** (a driver that sent stamp 0 once) when its topic's next message is back on the
  old time: the held message is refused and counted, and nobody else's queue is touched.
* **A previous outlier ahead**: when the held stamp of a topic agrees with the other topics' time
  (their median newest stamp) and only the topic's own previous stamp was far ahead, that previous
  stamp was the outlier (a stamp in the future): the message is taken and the topic follows the
  others again.

``time_jump_reset_s`` 0 turns the jump handling off: every step back is refused as out of order.

``SetAccounting`` counts the frame sets that never complete (a message lost in transport, a camera
that skipped a frame, an outlier stamp): messages the synchronizer can no longer match, grouped by
stamp into sets, each counted once as "incomplete" naming the topics it lacked.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HELD_PER_TOPIC = 32


@dataclass
class GateResult:
    """What to do with one offered message.

    Attributes:
        accept: (topic index, stamp [ns], item) to feed to the synchronizer, in this order.
        rejected: (kind, reason) of every message refused now (kind "stamp").
        reset: the reason of a confirmed time jump (clear the synchronizer and dynamic TF before
            feeding ``accept``), or None.
        notes: things worth a log line that refuse nothing (a previous outlier ahead of the others).
    """

    accept: list[tuple[int, int, Any]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    reset: str | None = None
    notes: list[str] = field(default_factory=list)


def _fmt(stamp_ns: int) -> str:
    return f"{stamp_ns / 1e9:.3f} s"


class StampGate:
    """Per-topic stamp checks with the time-jump / outlier rule (module docstring). Not thread-safe: the
    caller serialises ``offer`` (the node's input lock).

    Args:
        topics: the input topics (names for the reasons), in synchronizer order.
        threshold_s: returns ``time_jump_reset_s`` (read at every message: a live parameter).
    """

    def __init__(self, topics: list[str], threshold_s: Callable[[], float]):
        self.topics = list(topics)
        self._threshold_s = threshold_s
        self._last: list[int | None] = [None] * len(topics)
        self._held: list[list[tuple[int, Any]]] = [[] for _ in topics]

    @property
    def last_stamps(self) -> list[int | None]:
        return list(self._last)

    def offer(self, index: int, stamp: int, item: Any) -> GateResult:
        out = GateResult()
        threshold = round(self._threshold_s() * 1e9)
        topic = self.topics[index]
        last = self._last[index]
        if last is None or stamp > last:
            if self._held[index]:
                self._refuse_held(
                    index, out, f"its next message ({_fmt(stamp)}) is back on the previous time"
                )
            self._last[index] = stamp
            out.accept.append((index, stamp, item))
            return out
        back_ns = last - stamp
        if threshold <= 0 or back_ns <= threshold:
            step = "duplicate" if back_ns == 0 else f"{back_ns / 1e6:.1f} ms back"
            out.rejected.append(
                (
                    "stamp",
                    f"{topic}: stamp {_fmt(stamp)} is not newer than the previous {_fmt(last)} ({step}); "
                    f"message skipped",
                )
            )
            return out
        # More than time_jump_reset_s back: a time jump, an isolated outlier, or the previous stamp
        # was the outlier.
        others = sorted(s for j, s in enumerate(self._last) if j != index and s is not None)
        if others:
            reference = others[len(others) // 2]
            if abs(stamp - reference) <= threshold:
                out.notes.append(
                    f"{topic}: the previous stamp {_fmt(last)} was {(last - reference) / 1e9:.3f} s ahead of "
                    f"the other inputs (an outlier); following them again from {_fmt(stamp)}"
                )
                self._held[index].clear()
                self._last[index] = stamp
                out.accept.append((index, stamp, item))
                return out
        held = self._held[index]
        if held and abs(stamp - held[-1][0]) > threshold:
            self._refuse_held(index, out, f"its next message ({_fmt(stamp)}) is elsewhere in time")
        if held and stamp <= held[-1][0]:
            out.rejected.append(
                ("stamp", f"{topic}: stamp {_fmt(stamp)} is not newer than the previous {_fmt(held[-1][0])}")
            )
            return out
        held.append((stamp, item))
        if len(held) > HELD_PER_TOPIC:
            old, _ = held.pop(0)
            out.rejected.append(
                ("stamp", f"{topic}: stamp {_fmt(old)} held too long as a possible time jump")
            )
        agreeing = [j for j, h in enumerate(self._held) if h and abs(h[-1][0] - stamp) <= threshold]
        active = sum(1 for s in self._last if s is not None)
        needed = max(2, (active + 1) // 2)
        if len(agreeing) >= needed or (len(self.topics) == 1 and len(held) >= 2):
            out.reset = (
                f"{topic}: time jumped back by {back_ns / 1e9:.3f} s (> time_jump_reset_s = "
                f"{threshold / 1e9:g} s) on {len(agreeing)} of {len(self.topics)} input topics: cleared the "
                f"synchronizer and dynamic TF"
            )
            self._confirm(stamp, threshold, out)
        return out

    def _refuse_held(self, index: int, out: GateResult, why: str) -> None:
        topic, last = self.topics[index], self._last[index]
        for stamp, _ in self._held[index]:
            out.rejected.append(
                (
                    "stamp",
                    f"{topic}: stamp {_fmt(stamp)} is {(last - stamp) / 1e9:.3f} s behind the topic's "
                    f"previous stamp and no other input jumped with it, and {why}: an isolated outlier "
                    f"stamp, message skipped",
                )
            )
        self._held[index].clear()

    def _confirm(self, stamp: int, threshold: int, out: GateResult) -> None:
        """Move to the new time: every held message near it goes on (stamp order); the rest is refused."""
        pending = []
        for j, held in enumerate(self._held):
            for s, item in held:
                if abs(s - stamp) <= threshold:
                    pending.append((s, j, item))
                else:
                    out.rejected.append(
                        ("stamp", f"{self.topics[j]}: stamp {_fmt(s)} is neither on the old nor the new time")
                    )
            held.clear()
        self._last = [None] * len(self.topics)
        for s, j, item in sorted(pending, key=lambda p: (p[0], p[1])):
            if self._last[j] is not None and s <= self._last[j]:
                continue
            self._last[j] = s
            out.accept.append((j, s, item))


class SetAccounting:
    """Counts frame sets that never complete (module docstring). Not thread-safe (the caller's lock).

    Args:
        topics: the synchronized input topics.
        queue_size: the synchronizer's queue per topic (older messages are evicted there).
        slop_s: the synchronizer's slop: messages within it of each other belong to one set.
    """

    def __init__(self, topics: list[str], queue_size: int, slop_s: float):
        self.topics = list(topics)
        self.queue_size = queue_size
        self.slop_ns = round(slop_s * 1e9)
        self._pending: list[deque[int]] = [deque() for _ in topics]
        self._newest: list[int | None] = [None] * len(topics)
        self._counted: deque[int] = deque(maxlen=256)  # stamps of sets already counted incomplete

    def added(self, index: int, stamp: int) -> list[tuple[str, str]]:
        """A message went into the synchronizer; returns the sets that became hopeless: evicted from its
        queue, or passed by every topic (each has a message newer than the set's stamp + slop, and
        its later messages are newer still, so nothing can complete the set)."""
        queue = self._pending[index]
        queue.append(stamp)
        self._newest[index] = stamp if self._newest[index] is None else max(self._newest[index], stamp)
        dead = []
        while len(queue) > self.queue_size:
            dead.append((index, queue.popleft()))
        if all(n is not None for n in self._newest):
            horizon = min(self._newest) - self.slop_ns
            for i, q in enumerate(self._pending):
                while q and q[0] < horizon:
                    dead.append((i, q.popleft()))
        return self._count(dead, "incomplete")

    def emitted(self, stamps: list[int]) -> list[tuple[str, str]]:
        """A set (one stamp per topic) was emitted; returns the sets that can no longer complete: every
        message older than the set's oldest stamp by more than the slop (each topic's later messages
        are newer than its member of this set, so nothing can match them any more)."""
        for index, stamp in enumerate(stamps):
            with contextlib.suppress(ValueError):
                self._pending[index].remove(stamp)
        horizon = min(stamps) - self.slop_ns
        dead = []
        for index, queue in enumerate(self._pending):
            while queue and queue[0] < horizon:
                dead.append((index, queue.popleft()))
        return self._count(dead, "incomplete")

    def clear(self) -> list[tuple[str, str]]:
        """A time reset cleared the synchronizer: the partial sets in it are lost ("time_reset")."""
        dead = [(i, s) for i, queue in enumerate(self._pending) for s in queue]
        for queue in self._pending:
            queue.clear()
        self._counted.clear()
        self._newest = [None] * len(self.topics)
        return self._count(dead, "time_reset")

    def _count(self, dead: list[tuple[int, int]], kind: str) -> list[tuple[str, str]]:
        out = []
        for _, stamp in sorted(dead, key=lambda d: d[1]):
            if any(abs(stamp - c) <= self.slop_ns for c in self._counted):
                continue
            self._counted.append(stamp)
            present = {i for i, s in dead if abs(s - stamp) <= self.slop_ns}
            present |= {
                i for i, q in enumerate(self._pending) if any(abs(s - stamp) <= self.slop_ns for s in q)
            }
            missing = [t for i, t in enumerate(self.topics) if i not in present]
            if kind == "time_reset":
                reason = (
                    f"frame set near {_fmt(stamp)} discarded by a time reset (incomplete: lacked {missing})"
                )
            else:
                reason = (
                    f"frame set near {_fmt(stamp)} never completed: no message from {missing} within "
                    f"sync_slop_s (lost in transport, skipped by the camera, or refused)"
                )
            out.append((kind, reason))
        return out
