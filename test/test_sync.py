"""The in-package approximate-time synchronizer reproduces message_filters' algorithm exactly (against a
brute-force transcription of it) and stays fast where the brute force explodes."""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from gausstr_ros.node.sync import ApproximateTimeSynchronizer, make_synchronizer, message_filters_available

MS = 1_000_000


def reference_sync(num_inputs: int, queue_size: int, slop_ns: int, events) -> list[list[int]]:
    """message_filters.ApproximateTimeSynchronizer.add, transcribed: full product enumeration.

    Args:
        events: (input index, stamp ns) in arrival order.
    Returns:
        The stamps of every emitted set, in order.
    """
    queues: list[dict[int, int]] = [{} for _ in range(num_inputs)]
    out = []
    for index, stamp in events:
        own = queues[index]
        own[stamp] = stamp
        while len(own) > queue_size:
            del own[min(own)]
        others = []
        for i, q in enumerate(queues):
            if i == index:
                continue
            near = sorted(((abs(s - stamp), s) for s in q if abs(s - stamp) <= slop_ns), key=lambda d: d[0])
            if not near:
                break
            others.append([s for _, s in near])
        else:
            for combo in itertools.product(*others):
                vv = list(combo)
                vv.insert(index, stamp)
                if max(vv) - min(vv) < slop_ns and all(t in q for q, t in zip(queues, vv)):
                    out.append(vv)
                    for q, t in zip(queues, vv):
                        del q[t]
                    break
    return out


def run_ours(num_inputs: int, queue_size: int, slop_ns: int, events) -> list[list[int]]:
    out = []
    sync = ApproximateTimeSynchronizer(num_inputs, queue_size, slop_ns / 1e9, out.append)
    for index, stamp in events:
        sync.add(index, stamp, stamp_ns=stamp)
    return out


def random_events(
    rng: np.random.Generator,
    num_inputs: int,
    frames: int,
    period_ms: float,
    jitter_ms: float,
    drop: float,
    shuffle_window: int,
):
    """Camera-like streams: each input publishes every period with jitter, some messages are lost and
    arrival order is locally shuffled (the network interleaves topics)."""
    events = []
    for f in range(frames):
        for i in range(num_inputs):
            if rng.random() < drop:
                continue
            stamp = int((f * period_ms + rng.normal(0, jitter_ms)) * MS) + 1_000_000_000_000
            events.append((i, stamp))
    # interleave: sort by stamp plus a random delay
    delays = rng.integers(0, shuffle_window + 1, len(events))
    order = np.argsort(np.arange(len(events)) + delays, kind="stable")
    return [events[k] for k in order]


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_message_filters_algorithm_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    num_inputs = int(rng.integers(2, 6))
    queue_size = int(rng.integers(1, 6))
    slop_ns = int(rng.integers(5, 60)) * MS
    events = random_events(
        rng,
        num_inputs,
        frames=60,
        period_ms=float(rng.choice([33.0, 50.0, 100.0])),
        jitter_ms=float(rng.uniform(0, 30)),
        drop=float(rng.uniform(0, 0.2)),
        shuffle_window=int(rng.integers(0, 8)),
    )
    ours = run_ours(num_inputs, queue_size, slop_ns, events)
    assert ours == reference_sync(num_inputs, queue_size, slop_ns, events)
    for stamps in ours:
        assert max(stamps) - min(stamps) < slop_ns


def test_basic_semantics():
    out = []
    sync = ApproximateTimeSynchronizer(3, 5, 0.010, lambda msgs: out.append(msgs))
    sync.add(0, "a0", stamp_ns=100 * MS)
    sync.add(1, "b0", stamp_ns=103 * MS)
    assert not out
    assert sync.add(2, "c0", stamp_ns=108 * MS)  # spread 8 ms < 10 ms
    assert out == [["a0", "b0", "c0"]]
    assert sync.queue_lengths() == [0, 0, 0]
    # spread == slop is not enough (strict), exactly like message_filters
    sync.add(0, "a1", stamp_ns=200 * MS)
    sync.add(1, "b1", stamp_ns=205 * MS)
    assert not sync.add(2, "c1", stamp_ns=210 * MS)
    assert len(out) == 1
    sync.clear()
    assert sync.queue_lengths() == [0, 0, 0]


def test_reads_header_stamps_and_bounds_queues():
    out = []
    sync = ApproximateTimeSynchronizer(2, 3, 0.001, lambda msgs: out.append(msgs))
    for k in range(1000):  # a burst on one input only: memory stays bounded
        msg = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=k, nanosec=0)))
        sync.add(0, msg)
    assert sync.queue_lengths() == [3, 0]
    msg = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=999, nanosec=0)))
    assert sync.add(1, msg)
    assert out[0][0].header.stamp.sec == 999


def test_many_inputs_stay_fast_where_the_product_explodes():
    """12 inputs with 6 near candidates each but no valid set: message_filters would walk 6^11
    combinations; pruning answers at once."""
    inputs, slop_ns = 12, 50 * MS
    sync = ApproximateTimeSynchronizer(inputs, 10, slop_ns / 1e9, lambda msgs: None)
    base = 10_000 * MS
    # Input 0 arrives at `base`. Input 1 holds 6 stamps 20..45 ms before it, inputs 2..11 hold 6 stamps
    # 30..50 ms after it: all within the slop of `base`, but every combination spans >= 50 ms.
    for i in range(1, inputs):
        offsets = [-45, -40, -35, -30, -25, -20] if i == 1 else [30, 34, 38, 42, 46, 50]
        for o in offsets:
            assert not sync.add(i, None, stamp_ns=base + o * MS)
    start = time.perf_counter()
    assert not sync.add(0, None, stamp_ns=base)
    assert time.perf_counter() - start < 0.5


def test_thread_safe_under_concurrent_producers():
    out = []
    inputs, frames = 4, 300
    # queues big enough that a producer running ahead never evicts: then every frame must match
    sync = ApproximateTimeSynchronizer(inputs, frames, 0.005, out.append)

    def produce(i):
        for f in range(frames):
            sync.add(i, (i, f), stamp_ns=(f * 100 + i) * MS // 10 + 1)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(inputs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == frames
    for msgs in out:
        assert len({f for _, f in msgs}) == 1


def test_factory():
    assert isinstance(make_synchronizer("builtin", 2, 1, 0.1, print), ApproximateTimeSynchronizer)
    with pytest.raises(ValueError, match="synchronizer must be"):
        make_synchronizer("exact", 2, 1, 0.1, print)
    with pytest.raises(ValueError, match="slop must be > 0"):
        ApproximateTimeSynchronizer(2, 1, 0.0, print)
    # auto is the built-in synchronizer even where message_filters is installed (same sets, faster)
    assert isinstance(make_synchronizer("auto", 2, 1, 0.1, print), ApproximateTimeSynchronizer)
    if not message_filters_available():
        with pytest.raises(ValueError, match="message_filters is not installed"):
            make_synchronizer("message_filters", 2, 1, 0.1, print)


@pytest.mark.skipif(
    not message_filters_available(),
    reason="message_filters is not installed (ROS 2 machines have it; PyPI does not)",
)
@pytest.mark.parametrize("seed", range(4))
def test_message_filters_adapter_agrees_with_builtin(seed):
    from gausstr_ros.node.sync import MessageFiltersSynchronizer

    rng = np.random.default_rng(100 + seed)
    events = random_events(rng, 3, frames=40, period_ms=50.0, jitter_ms=10.0, drop=0.1, shuffle_window=4)
    got = []
    sync = MessageFiltersSynchronizer(3, 4, 0.02, got.append)

    def msg(stamp):
        return SimpleNamespace(
            header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp // 10**9, nanosec=stamp % 10**9))
        )

    for index, stamp in events:
        sync.add(index, msg(stamp))
    got = [[m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs] for msgs in got]
    assert got == run_ours(3, 4, 20 * MS, events)
