"""``gausstr-demo`` (``make demo``) runs end to end: the real node, the built-in bag replayed into it, the
report and pictures written, their location printed; its scores are the recorded offline ones (lockstep
replay answers every frame set, and the node runs the offline evaluator's code)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gausstr_ros.assets import recorded_metrics

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def demo_command() -> list[str]:
    script = shutil.which("gausstr-demo", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "gausstr_ros.demo"]


def test_demo_runs_and_prints_where_the_pictures_are(tmp_path):
    out = tmp_path / "demo"
    # The recorded scores are CPU scores (on a GPU machine the node would pick CUDA).
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    started = time.monotonic()
    proc = subprocess.run(
        [*demo_command(), "--out", str(out), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"Pictures: {out}/bev/" in output
    for name in ("summary.json", "frames.csv", "latency.png", "node.log", "per_class.md", "confusion.png"):
        assert (out / name).is_file(), name
    for folder in ("bev", "depth", "gaussians"):
        assert len(list((out / folder).glob("*.png"))) == 4, folder
    summary = json.loads((out / "summary.json").read_text())
    recorded = recorded_metrics()
    assert summary["mode"] == "live" and summary["frames"]["received"] == summary["frames"]["offered"] == 20
    tolerance = recorded["tolerance_points"]
    assert summary["scores"]["miou"] == pytest.approx(recorded["scores"]["miou"], abs=tolerance)
    assert summary["scores"]["iou"] == pytest.approx(recorded["scores"]["iou"], abs=tolerance)
    print(f"gausstr-demo took {wall:.0f} s (load average {os.getloadavg()[0]:.1f})")
