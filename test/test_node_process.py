"""The node as its own process: started like a user starts it (console script, config/occupancy.yaml via
--ros-args --params-file), outputs received in the test process; and start-up refusing a missing or
corrupt checkpoint with a clear message."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gausstr_testing.ros_frames import TARGET_FRAME, SyntheticCameras
from gausstr_testing.ros_harness import Harness
from gausstr_testing.ros_predictor import TEST_GRID_RANGE, TEST_VOXEL_SIZE

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "occupancy.yaml"
S = 1_000_000_000
T0 = 1_700_000_000 * S


def node_command(*ros_args: str) -> list[str]:
    """The installed console script when present (what users run), else the module."""
    script = shutil.which("occupancy_node", path=str(Path(sys.executable).parent))
    launcher = [script] if script else [sys.executable, "-m", "gausstr_ros.node.occupancy_node"]
    return [*launcher, "--ros-args", *ros_args]


def node_env() -> dict:
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
    )


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("helpers", [False, True], ids=["one_process", "helper_processes"])
def test_node_process_from_the_params_file(ros_context, tiny_checkpoint, tmp_path, helpers):
    """Started as users start it; a Ctrl+C ends it cleanly. With the input and output processes the
    Ctrl+C reaches the whole process group, as from a terminal: the node still ends them itself,
    without tracebacks or crash reports, and none is left behind."""
    cams = SyntheticCameras()
    log = tmp_path / "node.log"
    cmd = node_command(
        "--params-file",
        str(PARAMS_FILE),
        "-p",
        f"checkpoint:={tiny_checkpoint}",
        "-p",
        f"grid_range:={TEST_GRID_RANGE}",
        "-p",
        f"voxel_size:={TEST_VOXEL_SIZE}",
        "-p",
        "status_period_s:=0.2",
        *(["-p", "input_process:=true", "-p", "output_process:=always"] if helpers else []),
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=helpers
        )
    children: list[int] = []
    harness = None
    executor = None
    try:
        import threading

        from rclpy.executors import MultiThreadedExecutor

        harness = Harness(ros_context, cams, namespace="/")
        executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
        executor.add_node(harness.node)
        threading.Thread(target=executor.spin, daemon=True).start()
        try:
            harness.wait_connected(timeout=90.0)
        except TimeoutError:
            pytest.fail(f"the node process did not come up; its output:\n{log.read_text()}")
        # Like a camera driver: CameraInfo with every image, until the node answers with every
        # output (a publisher in another process, the output process, can match a subscriber only
        # after the first sets went out)
        stamp, frame = T0, 0
        deadline = time.monotonic() + 60.0

        def every_output() -> bool:
            topics = ("occupancy", "occupancy_cloud", "gaussians", "rendered_depth/CAM_FRONT")
            return all(harness.messages(t) for t in topics)

        while not every_output() and time.monotonic() < deadline:
            harness.publish_infos()
            harness.publish_frame(frame, stamp)
            stamp += S // 2
            frame += 1
            time.sleep(0.5)
        assert harness.messages("occupancy"), f"no occupancy from the node process:\n{log.read_text()}"
        occ = harness.messages("occupancy")[0]
        assert occ.header.frame_id == TARGET_FRAME
        assert T0 <= occ.header.stamp.sec * S + occ.header.stamp.nanosec < stamp
        assert len(occ.class_names) == 17 and occ.free_label == 17  # the yaml's Occ3D vocabulary
        assert (occ.size_x, occ.size_y, occ.size_z) == (50, 50, 5)
        harness.wait_for(
            lambda: (
                harness.messages("occupancy_cloud")
                and harness.messages("gaussians")
                and harness.messages("rendered_depth/CAM_FRONT")
            ),
            30,
            "the other outputs",
        )
        status = harness.wait_for_status(lambda s: s.frames_processed >= 1)
        assert status.device == "cpu" and status.num_classes == 17
        children = children_of(proc.pid)
        assert len(children) == (2 if helpers else 0), children
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=5)
        if harness is not None:
            harness.destroy()
        if helpers:
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl+C: the node and its children
        else:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    assert rc == 0, f"the node did not exit cleanly on SIGINT (rc {rc}):\n{log.read_text()}"
    text = log.read_text()
    assert "Traceback" not in text and "exited with code" not in text, text
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a helper process was left behind"


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_a_bad_checkpoint_stops_startup_with_a_clear_message(case, tmp_path, seed):
    path = tmp_path / "model.safetensors"
    if case == "corrupt":
        path.write_bytes(np.random.default_rng(seed).bytes(1000))
    proc = subprocess.run(
        node_command("--params-file", str(PARAMS_FILE), "-p", f"checkpoint:={path}"),
        cwd=ROOT,
        env=node_env(),
        capture_output=True,
        timeout=120,
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 1, output
    assert "cannot start" in output
    expected = "does not exist" if case == "missing" else "not a safetensors file"
    assert expected in output, output


def test_invalid_parameters_stop_startup(tmp_path):
    proc = subprocess.run(
        node_command(
            "--params-file", str(PARAMS_FILE), "-p", "model_preset:=tiny", "-p", "image_topics:=[/a, /b]"
        ),
        cwd=ROOT,
        env=node_env(),
        capture_output=True,
        timeout=120,
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 1, output
    assert "image_topics needs one topic per camera" in output, output
