"""A latest-only hand-off between the executor (producer) and the inference thread (consumer).

When inference falls behind, only the newest frame set waits; an older waiting one is replaced and
counted as dropped. Memory is bounded by one pending item whatever the input rate.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` replaces (and returns) the waiting one."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> T | None:
        """Offer an item; returns the item it replaced (a dropped frame) or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> T | None:
        """Take the waiting item, blocking up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the consumer for shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> bool:
        with self._cond:
            return self._item is not None


class TwoStageWorker(Generic[T]):
    """Two threads over the items of a ``LatestSlot``, in order: ``first(item)`` in one (the node:
    messages -> device, prediction queued), ``second(item, handle)`` in the other (the node: wait for
    the device, build and publish the messages), so that item n's second stage overlaps item n+1's
    first stage and its GPU work.

    Every item taken from the slot goes through ``first``, then (unless ``first`` raised) through
    ``second``, in the order taken; at most one handed-over item waits between the stages, so an
    item waits in the slot (and is replaced there, i.e. dropped and counted by the slot's producer)
    while both stages are busy. Exceptions of either stage go to ``on_error(item, exception)``; the
    worker keeps going.

    Args:
        slot: where items come from.
        first: item -> handle.
        second: (item, handle) -> None.
        on_error: (item, exception) -> None.
        name: thread name prefix.
    """

    def __init__(self, slot: LatestSlot[T], first, second, on_error, name: str = "worker"):
        import queue

        self._slot = slot
        self._first, self._second, self._on_error = first, second, on_error
        self._handoff: queue.Queue = queue.Queue(maxsize=1)
        self._running = False
        self._threads = [
            threading.Thread(target=self._run_first, name=f"{name}_prepare", daemon=True),
            threading.Thread(target=self._run_second, name=f"{name}_publish", daemon=True),
        ]

    def start(self) -> None:
        self._running = True
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads (items still in flight are abandoned) and wait for them."""
        self._running = False
        self._slot.close()
        for thread in self._threads:
            if thread.is_alive() and threading.current_thread() is not thread:
                thread.join(timeout=timeout)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _run_first(self) -> None:
        import queue

        while self._running:
            item = self._slot.get(timeout=0.1)
            if item is None:
                continue
            try:
                handle = self._first(item)
            except Exception as exc:  # one bad item must not stop the worker
                self._on_error(item, exc)
                continue
            while self._running:
                try:
                    self._handoff.put((item, handle), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _run_second(self) -> None:
        import queue

        while self._running:
            try:
                item, handle = self._handoff.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._second(item, handle)
            except Exception as exc:
                self._on_error(item, exc)
