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


@pytest.mark.parametrize("feeder", ["process", "thread"])
def test_ros_mode_measures_every_closed_loop_set(tmp_path, feeder):
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
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"node_latency failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["feeder"] == feeder and r["dds_profile"].endswith("fastdds_large_images.xml")
    assert len(r["latencies"]) == 2 and all(0 < v < 60_000 for v in r["latencies"]), r["latencies"]
    # the set is complete in the node before its occupancy comes back
    assert len(r["dds_in"]) == 2 and all(0 < d < v for d, v in zip(r["dds_in"], r["latencies"])), r
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
