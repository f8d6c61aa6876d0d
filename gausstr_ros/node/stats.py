"""Thread-safe counters and latency/rate statistics for the node's status topic (no rclpy)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StatsSnapshot:
    """One consistent reading of the pipeline statistics.

    Attributes:
        processed, dropped, rejected: frame sets published / replaced while busy / refused, since start.
        latency_p50_ms, latency_p99_ms: over the window (0 when empty).
        rate_hz: published sets per second over the window (0 with fewer than two).
        window: number of latencies the statistics cover.
        rejected_by_kind: rejections per FrameRejected kind.
        last_error: the last problem, or "".
        images_lost: images the middleware reported lost, since start.
    """

    processed: int
    dropped: int
    rejected: int
    latency_p50_ms: float
    latency_p99_ms: float
    rate_hz: float
    window: int
    rejected_by_kind: dict[str, int]
    last_error: str
    images_lost: int = 0


class PipelineStats:
    """Counts frames and keeps the last ``window`` end-to-end latencies and publish times.

    Args:
        window: how many recent frames the latency percentiles and the rate are computed over.
        clock: monotonic clock [s] (injectable for tests).
    """

    def __init__(self, window: int = 100, clock=time.monotonic):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._clock = clock
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._published_at: deque[float] = deque(maxlen=window)
        self._processed = 0
        self._dropped = 0
        self._rejected: Counter[str] = Counter()
        self._last_error = ""
        self._lost = 0

    def record_published(self, latency_s: float) -> None:
        with self._lock:
            self._processed += 1
            self._latencies.append(latency_s)
            self._published_at.append(self._clock())

    def record_dropped(self, count: int = 1) -> None:
        with self._lock:
            self._dropped += count

    def record_lost(self, count: int) -> None:
        """Images the middleware reported lost (message_lost events)."""
        with self._lock:
            self._lost += count

    def record_rejected(self, kind: str, reason: str) -> None:
        with self._lock:
            self._rejected[kind] += 1
            self._last_error = reason

    def set_error(self, text: str) -> None:
        with self._lock:
            self._last_error = text

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64) * 1e3
            published = list(self._published_at)
            processed, dropped = self._processed, self._dropped
            rejected = dict(self._rejected)
            last_error = self._last_error
            lost = self._lost
        p50 = float(np.percentile(lat, 50)) if lat.size else 0.0
        p99 = float(np.percentile(lat, 99)) if lat.size else 0.0
        rate = 0.0
        if len(published) >= 2 and published[-1] > published[0]:
            rate = (len(published) - 1) / (published[-1] - published[0])
        return StatsSnapshot(
            processed,
            dropped,
            sum(rejected.values()),
            p50,
            p99,
            rate,
            int(lat.size),
            rejected,
            last_error,
            lost,
        )
