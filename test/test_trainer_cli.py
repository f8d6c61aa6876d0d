"""``gausstr-train`` / ``gausstr-eval`` as real processes on a small synthetic dataset written by the
generator: kill -9 mid-run and resume (at most one checkpoint interval lost, the result identical to
an uninterrupted run), a 2-process DDP run with gloo, and evaluation of the trained checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gausstr_core.train.state import load_state
from gausstr_core.train.trainer import STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
MODEL_SET = [
    "--set",
    "model.image_size=[48, 88]",
    "--set",
    "loss.pca_dims=16",
    "--set",
    "model.decoder.queries_per_view=8",
]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """5 scenes (4 train, 1 val) at 48 x 88 with 64-d tiny-text features at patch 8."""
    out = tmp_path_factory.mktemp("synth")
    cmd = [
        sys.executable,
        "-m",
        "gausstr_core.data.synthetic.cli",
        "--out",
        str(out),
        "--scenes",
        "5",
        "--resolution",
        "48",
        "88",
        "--patch-size",
        "8",
        "--quiet",
        "--no-preview",
    ]
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, timeout=600)
    return out


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gausstr_core.train.cli",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "100",
        "--max-steps",
        "16",
        "--checkpoint-every",
        "2",
        "--warmup-steps",
        "2",
        "--log-every",
        "2",
        "--image-every",
        "0",
        "--threads",
        "1",
        "--no-eval",
        *MODEL_SET,
        *extra,
    ]


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_kill_9_and_resume_loses_at_most_one_interval(synth, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(synth, out), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    chunks: list[bytes] = []
    read = lambda: os.read(proc.stdout.fileno(), 4096)
    reader = threading.Thread(target=lambda: chunks.extend(iter(read, b"")), daemon=True)
    reader.start()
    progress = re.compile(r"\| (\d+)/16 \[")
    steps_done = lambda: max(
        (int(m) for m in progress.findall(b"".join(chunks).decode(errors="replace"))), default=0
    )
    deadline = time.time() + 600
    try:
        # Kill once a checkpoint is on disk and the run is past step 7 (mid-interval or not).
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if (out / STATE_FILE).is_file() and steps_done() >= 7:
                break
        assert proc.poll() is None, f"the run ended before it could be killed:\n{b''.join(chunks)[-2000:]}"
        seen = steps_done()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    seen = max(seen, steps_done())
    saved = int(load_state(out / STATE_FILE)["step"])  # a kill never leaves a torn file
    assert saved < 16 and saved % 2 == 0
    assert saved >= seen - 2, f"lost more than one interval: saved step {saved}, {seen} steps were done"
    assert not (out / "model.safetensors").exists()

    resumed = subprocess.run(
        _train_cmd(synth, out, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"from step {saved}" in resumed.stdout
    assert int(load_state(out / STATE_FILE)["step"]) == 16

    straight = subprocess.run(
        _train_cmd(synth, tmp_path / "straight"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = _safetensors(out / "model.safetensors"), _safetensors(tmp_path / "straight" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: the resumed run differs from the uninterrupted one"
    from gausstr_core.io.checkpoint import read_checkpoint_header

    # the deployment checkpoint records how it was trained
    training = json.loads(read_checkpoint_header(tmp_path / "straight" / "model.safetensors")["metadata"])[
        "training"
    ]
    assert training["command"].startswith("gausstr-train --preset tiny"), training["command"]
    assert training["train_config"]["max_steps"] == 16

    # Resuming with a flag that changes the run is refused with a clear message.
    bad = subprocess.run(
        _train_cmd(synth, out, "--resume", "--lr", "0.5"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "lr" in bad.stderr and "--resume continues the saved run" in bad.stderr


@pytest.mark.slow
def test_two_process_ddp_gloo_then_eval(synth, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gausstr_core.train.cli",
        "--preset",
        "tiny",
        "--data",
        str(synth),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--checkpoint-every",
        "2",
        "--warmup-steps",
        "1",
        "--log-every",
        "1",
        "--image-every",
        "2",
        "--threads",
        "1",
        "--eval-scenes",
        "1",
        *MODEL_SET,
    ]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    state = load_state(out / STATE_FILE)
    # 4 training scenes over 2 processes at 1 scene each = 2 steps per epoch, 3 epochs.
    assert state["world_size"] == 2 and int(state["step"]) == 6
    metrics = json.loads((out / "eval" / "final" / "metrics.json").read_text())
    assert metrics["summary"]["scenes"] == 1
    assert run.stdout.count("training 6 steps") == 1  # only rank 0 prints

    # gausstr-eval on the DDP checkpoint, and the two baselines, write the full report.
    runs = (
        (["--checkpoint", str(out / "model.safetensors")], "model"),
        (["--baseline", "all-free"], "free"),
        (["--baseline", "depth-unprojection", "--set", "model.image_size=[48, 88]"], "unproj"),
    )
    for args, name in runs:
        ev = subprocess.run(
            [
                sys.executable,
                "-m",
                "gausstr_core.evaluation.cli",
                *args,
                "--data",
                str(synth),
                "--out",
                str(tmp_path / name),
                "--threads",
                "1",
            ],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-2000:]
        result = json.loads((tmp_path / name / "metrics.json").read_text())
        assert result["summary"]["scenes"] == 1
        for f in ("per_class.md", "confusion.png", "bev_000.png"):
            assert (tmp_path / name / f).is_file(), f
    free = json.loads((tmp_path / "free" / "metrics.json").read_text())["summary"]
    unproj = json.loads((tmp_path / "unproj" / "metrics.json").read_text())["summary"]
    assert free["iou"] == 0.0 and free["miou"] == 0.0
    assert unproj["iou"] > 5.0 and unproj["miou"] > 5.0  # the targets alone carry real signal
