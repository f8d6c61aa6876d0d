"""benchmarks/node_latency.py --mode ros end to end on the CPU: the real node in this process's child,
the feeder (cameras + every output subscribed) in its own process, the pipe protocol between them,
and the measurements it reports (the GPU numbers in docs/benchmarks.md come from this code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[1]


HELPERS = ("--input-process", "--output-process", "always")


@pytest.mark.parametrize(
    "feeder, extra",
    [("process", ()), ("thread", ()), ("process", HELPERS), ("process", ("--subscribers", "feeder"))],
    ids=["process", "thread", "helper_processes", "subscribers_with_the_cameras"],
)
def test_ros_mode_measures_every_closed_loop_set(tmp_path, feeder, extra):
    helpers = extra == HELPERS
    pytest.importorskip("rclpy", reason="needs rclpy (the ROS 2 wheels or a ROS install)")
    pytest.importorskip("gausstr_ros.msg", reason="needs the package's generated messages")
    out = tmp_path / "ros.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "node_latency.py"),
        "--random-init",
        "--mode",
        "ros",
        "--preset",
        "tiny",
        "--threads",
        "1",
        "--frames",
        "2",
        "--warmup",
        "1",
        "--rate",
        "2",
        "--duration",
        "2",
        "--feeder",
        feeder,
        "--json",
        str(out),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"node_latency failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["feeder"] == feeder and r["dds_profile"].endswith("fastdds_large_images.xml")
    assert r["subscribers"] == ("feeder" if "--subscribers" in extra else "process")
    # the node's helper processes, when on, and their CPU over the open loop
    assert r["input_process"] == r["output_process"] == bool(helpers)
    assert {h["name"] for h in r["helper_cpu"]} == ({"input process", "output process"} if helpers else set())
    assert len(r["latencies"]) == 2 and all(0 < v < 60_000 for v in r["latencies"]), r["latencies"]
    # the set is complete in the node after its first image was sent and before its occupancy comes
    # back (dds_in, from the last publish's return, can be a thread switch below zero with the thread
    # feeder: the feeder reads its clock only once it has the interpreter lock back; CI saw -1.3 ms)
    assert len(r["dds_in"]) == 2 and all(d < v for d, v in zip(r["dds_in"], r["latencies"])), r
    assert len(r["set_in"]) == 2 and all(d > 0 for d in r["set_in"]), r["set_in"]
    assert r["sent"] >= 3 and 1 <= r["outputs"] <= r["sent"]
    # the node's own account of the open-loop sets adds up: every completed set was published,
    # dropped while busy, or is still in flight when the feeder reports (at most one in the
    # latest-only slot and one in each of the two inference threads)
    o = r["open_loop"]
    assert o["published"] >= r["outputs"], (o, r["outputs"])
    assert 0 <= o["sets_complete"] - o["published"] - o["dropped_busy"] <= 3, o
    # every output subscribed and built (closed loop alone answers 3 sets)
    for topic in ("occupancy_cloud", "gaussians", "gaussian_markers", "rendered_depth/CAM_FRONT"):
        assert r["outputs_seen"].get(topic, 0) >= 3, r["outputs_seen"]
    # the node's worker stages were timed for every set it handled
    stages = r["node_stages_ms"]
    assert len(stages["start"]) >= 3 and len(stages["publish"]) >= 3, stages
    assert all(v >= 0 for values in stages.values() for v in values)
    # each answered set's latency split into consecutive segments: one per closed-loop set, adding
    # up to the latency the feeder measured, and open-loop sets too
    closed_timeline = r["timeline_ms"]["closed"]
    assert closed_timeline["sets"] == 2, closed_timeline
    assert closed_timeline["total"]["mean"] == pytest.approx(sum(r["latencies"]) / 2, rel=1e-6)
    segments = ("dds_in", "queue", "stage1", "handoff", "device", "outputs")
    assert sum(closed_timeline[k]["mean"] for k in segments) == pytest.approx(
        closed_timeline["total"]["mean"], rel=1e-6
    )
    # all but dds_in are intervals of one process's clock in order; dds_in as above
    assert all(closed_timeline[k]["p50"] >= 0 for k in segments[1:]), closed_timeline
    assert r["timeline_ms"]["open"]["sets"] >= 1, r["timeline_ms"]["open"]
    # the outputs' segment split where the occupancy went to rclpy (in the node or its output
    # process: one CLOCK_MONOTONIC for every process)
    for key in ("outputs_published", "outputs_delivery"):
        assert closed_timeline[key]["p50"] >= 0, closed_timeline
    # the threads' CPU time per stage, one per set, never more than the wall time (1 ms: clocks)
    for key in ("start", "publish"):
        assert len(stages[f"{key}_cpu"]) == len(stages[key]), key
        assert all(c <= w + 1.0 for c, w in zip(stages[f"{key}_cpu"], stages[key])), key


def test_simulated_device_is_an_in_order_queue_and_waits_without_the_lock():
    """benchmarks/simulated_device.py: set k of a burst ends k device times after the first started;
    check() waits (sleeping, so another thread runs meanwhile); the eager call waits in predict."""
    import dataclasses
    import threading
    import time
    from types import SimpleNamespace

    from benchmarks.simulated_device import SimulatedDevicePredictor

    @dataclasses.dataclass
    class Prediction:
        rendered_depth: object
        deferred_check: object = None

        def check(self):
            if self.deferred_check is not None:
                check, self.deferred_check = self.deferred_check, None
                check()

    class Real:
        def __init__(self):
            self.config = SimpleNamespace(render_depth=True)
            self.class_names = ["car"]

        def predict(self, batch, render_depth=True):
            return Prediction(rendered_depth="depth" if render_depth else None)

    sim = SimulatedDevicePredictor(Real(), batch=None, device_ms=60)
    assert sim.class_names == ["car"]  # everything but predict is the real predictor's
    t0 = time.perf_counter()
    first = sim.predict(None, defer_checks=True)
    second = sim.predict(None, render_depth=False, defer_checks=True)
    assert time.perf_counter() - t0 < 0.03  # queued, not waited for
    assert first.rendered_depth == "depth" and second.rendered_depth is None
    # the pipeline renders late (FramePipeline defers to render_depth): the held depth, no device work
    assert sim.render_depth(None, None, None, (1, 1)) == "depth"
    ticks = []
    ticker = threading.Thread(target=lambda: [ticks.append(time.sleep(0.005)) for _ in range(10)])
    ticker.start()
    second.check()
    ticker.join()
    waited = time.perf_counter() - t0
    assert 0.115 <= waited < 0.3, waited  # two device times: the second set queued behind the first
    assert len(ticks) == 10
    first.check()  # already over: returns at once
    t1 = time.perf_counter()
    sim.predict(None)  # eager: waits inside predict
    assert 0.055 <= time.perf_counter() - t1 < 0.25
    with pytest.raises(ValueError, match="positive"):
        SimulatedDevicePredictor(Real(), None, 0)


def test_set_timeline_splits_each_set_and_leaves_out_unfinished_ones():
    sys.path.insert(0, str(ROOT))
    from benchmarks.set_timeline import TIMELINE, set_timeline, summarize_timeline, timeline_line

    published = {1: 10.000, 2: 10.100, 3: 10.200}
    arrivals = {1: 10.002, 2: 10.103, 3: 10.201}
    marks = {
        1: {"taken": 10.004, "prepared": 10.014, "handed": 10.015, "ready": 10.040},
        2: {"taken": 10.110, "prepared": 10.120, "handed": 10.130, "ready": 10.160},
        3: {"taken": 10.205},  # still in stage 1 when the feeder reported: left out
    }
    received = {1: 10.050, 2: 10.175}
    t = set_timeline([1, 2, 3], published, arrivals, marks, received)
    assert len(t["total"]) == 2
    assert t["total"] == pytest.approx([50.0, 75.0])
    assert t["dds_in"] == pytest.approx([2.0, 3.0])
    assert t["queue"] == pytest.approx([2.0, 7.0])
    assert t["stage1"] == pytest.approx([10.0, 10.0])
    assert t["handoff"] == pytest.approx([1.0, 10.0])
    assert t["device"] == pytest.approx([25.0, 30.0])
    assert t["outputs"] == pytest.approx([10.0, 15.0])
    for i in range(2):
        assert sum(t[name][i] for name, _ in TIMELINE) == pytest.approx(t["total"][i])
    summary = summarize_timeline(t)
    assert summary["sets"] == 2 and summary["device"]["mean"] == pytest.approx(27.5)
    line = timeline_line(summary, "at 30 Hz input")
    assert "device 27.5" in line and "end-to-end mean 62.5" in line
    assert summarize_timeline(set_timeline([3], published, arrivals, marks, received)) == {"sets": 0}
    assert timeline_line({"sets": 0}, "x") is None


def test_set_timeline_splits_the_outputs_where_the_node_reported_the_occupancy_going_out():
    """The "occupancy_out" mark (the node's on_occupancy_published time) splits the outputs' segment
    into publishing and delivery, beside the segments (which still add up to the total); a run
    without the mark reads as before."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.set_timeline import set_timeline, summarize_timeline, timeline_line

    published, arrivals, received = {1: 10.000, 2: 10.100}, {1: 10.002, 2: 10.103}, {1: 10.050, 2: 10.175}
    marks = {
        1: {"taken": 10.004, "prepared": 10.014, "handed": 10.015, "ready": 10.040, "occupancy_out": 10.044},
        2: {"taken": 10.110, "prepared": 10.120, "handed": 10.130, "ready": 10.160},  # no mark: not split
    }
    t = set_timeline([1, 2], published, arrivals, marks, received)
    assert t["outputs"] == pytest.approx([10.0, 15.0]) and len(t["total"]) == 2
    assert t["outputs_published"] == pytest.approx([4.0]) and t["outputs_delivery"] == pytest.approx([6.0])
    line = timeline_line(summarize_timeline(t), "at 30 Hz input")
    assert (
        "outputs to the subscriber 12.5 (occupancy published after 4.0, then DDS and the subscriber 6.0)"
        in line
    )
    del marks[1]["occupancy_out"]
    t = set_timeline([1, 2], published, arrivals, marks, received)
    assert "outputs_published" not in t
    assert "occupancy published" not in timeline_line(summarize_timeline(t), "x")
