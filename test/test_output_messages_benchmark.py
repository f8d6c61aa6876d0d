"""benchmarks/output_messages.py: every output of the node is built and published once per row, and
the table adds them up (small sizes, real rclpy)."""

from __future__ import annotations

import pytest


@pytest.mark.ros
def test_the_output_messages_benchmark_times_every_output(tmp_path):
    pytest.importorskip("rclpy", reason="needs rclpy (the ROS 2 wheels or a ROS install)")
    pytest.importorskip("gausstr_ros.msg", reason="needs the package's generated messages")
    from benchmarks.output_messages import main

    doc = tmp_path / "bench.md"
    assert main(["--repeats", "2", "--gaussians", "50", "--size", "24", "40", "--output", str(doc)]) == 0
    text = doc.read_text()
    for output in ("occupancy (", "occupancy_cloud", "gaussians (", "gaussian_markers", "rendered_depth x 6"):
        assert output in text, output
    total = next(line for line in text.splitlines() if line.startswith("| all outputs"))
    assert float(total.split("|")[4]) > 0
