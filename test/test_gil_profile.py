"""benchmarks/gil_profile.py: reading py-spy's interpreter-lock samples, and per-thread CPU time."""

import threading
import time

import pytest

from benchmarks.gil_profile import ThreadCpu, activity, summarize_lock_profile

SPIN = "spin (rclpy/executors.py:300)"
PUBLISH = "_run_second (gausstr_ros/node/worker.py:130)"
RAW = "\n".join(
    [
        f"thread (101): gausstr_publish;{PUBLISH};publish (gausstr_ros/node/outputs.py:109);"
        "publish (rclpy/publisher.py:70) 30",
        f"thread (101): gausstr_publish;{PUBLISH};result (gausstr_ros/pipeline.py:490) 5",
        f"thread (102): Thread-1 (spin);{SPIN};_take_subscription (rclpy/executors.py:396) 40",
        f"thread (102): Thread-1 (spin);{SPIN};_on_message (gausstr_ros/node/transport.py:190) 10",
        "thread (103): gausstr_prepare;_run_first (gausstr_ros/node/worker.py:104);to (torch/cuda.py:1) 15",
        "thread (104): MainThread 0",
    ]
)


def test_lock_samples_are_read_as_fractions_of_the_window():
    # 100 samples per second for 1 s: 100 would be the lock held the whole time
    out = summarize_lock_profile(RAW, rate=100, seconds=1.0)
    assert out["samples"] == 100 and out["held"] == pytest.approx(1.0)
    assert out["by_thread"] == pytest.approx(
        {"Thread-1 (spin)": 0.5, "gausstr_publish": 0.35, "gausstr_prepare": 0.15, "MainThread": 0.0}
    )
    acts = out["by_activity"]
    assert acts["stage 2: build and publish outputs"] == pytest.approx(0.30)
    assert acts["stage 2: wait, host copies, late depth render"] == pytest.approx(0.05)
    assert acts["executor: take and deserialize messages"] == pytest.approx(0.40)
    assert acts["executor: image callbacks and sync"] == pytest.approx(0.10)
    assert acts["stage 1: TF, conversion, queue the prediction"] == pytest.approx(0.15)
    assert out["top_frames"][0] == ("_take_subscription (rclpy/executors.py:396)", pytest.approx(0.4))
    # half the rate over the same samples: the lock "held" twice the window is impossible, and says
    # py-spy sampled faster than asked; the fraction is reported as measured, not clipped
    assert summarize_lock_profile(RAW, rate=50, seconds=1.0)["held"] == pytest.approx(2.0)


def test_a_frame_matches_by_function_and_file_not_by_substring():
    # "publish" of rclpy alone is not the node's publishing stage; "result" elsewhere is not stage 2
    assert activity(["publish (rclpy/publisher.py:70)"]) == "other"
    assert activity(["result (concurrent/futures/_base.py:449)"]) == "other"
    assert activity(["spin (rclpy/executors.py:300)", "wait (rclpy/executors.py:700)"]) == (
        "executor: other rclpy (wait set, dispatch)"
    )
    assert summarize_lock_profile("", rate=100, seconds=1.0)["held"] == 0.0
    assert summarize_lock_profile("garbage line without a count\n", rate=100, seconds=1.0)["samples"] == 0


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_thread_cpu_names_a_busy_python_thread():
    """A Python thread spinning over the window shows up by its threading name with its CPU time (a
    thread that ends inside the window is gone from /proc and is not counted)."""
    done = threading.Event()

    def spin_until_done():
        while not done.is_set():
            sum(range(1000))

    cpu = ThreadCpu()
    cpu.start()
    live = threading.Thread(target=spin_until_done, name="live_worker")
    live.start()
    time.sleep(0.4)
    rows = cpu.stop(seconds=0.4)
    done.set()
    live.join()
    mine = [r for r in rows if r["name"] == "live_worker"]
    assert mine and mine[0]["cpu_s"] >= 0.1, rows
    assert 0 <= mine[0]["sys_s"] <= mine[0]["cpu_s"] and mine[0]["share"] > 0.25
