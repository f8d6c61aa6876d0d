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
