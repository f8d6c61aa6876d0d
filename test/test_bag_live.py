"""gausstr-bag-eval --live: the bag played into the real node (its own process, real rclpy) gives the same
labels as the offline evaluation on the same frames; real-time playback accounts for every frame set
(answered or dropped) and reports end-to-end latency."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import numpy as np
import pytest

from gausstr_ros.bag.evaluate import PREDICTION_TOPIC, evaluate_bag
from gausstr_ros.bag.make_bag import SyntheticBagConfig, write_synthetic_bag
from gausstr_ros.bag.options import BagEvalOptions
from gausstr_ros.bag.reader import BagSource
from gausstr_ros.node.sync import stamp_to_ns

pytestmark = [pytest.mark.ros, pytest.mark.slow]
BAG = SyntheticBagConfig(frames=3, image_size=(56, 100), seed=4)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bag") / "synthetic", BAG, progress=False)


def labels_by_stamp(bag: Path, topic: str) -> dict[int, np.ndarray]:
    with BagSource(bag) as source:
        return {stamp_to_ns(m.header.stamp): np.array(m.labels) for _, _, m in source.messages([topic])}


def namespace() -> str:
    return f"/bag_live_{uuid.uuid4().hex[:8]}"


def test_live_outputs_match_offline_outputs(bag, tiny_checkpoint, tmp_path):
    offline = evaluate_bag(
        BagEvalOptions(
            bag=bag,
            out=tmp_path / "offline",
            checkpoint=tiny_checkpoint,
            device="cpu",
            record=True,
            pictures=0,
            progress=False,
        )
    )
    live = evaluate_bag(
        BagEvalOptions(
            bag=bag,
            out=tmp_path / "live",
            checkpoint=tiny_checkpoint,
            device="cpu",
            live=True,
            rate=0,
            namespace=namespace(),
            pictures=1,
            progress=False,
        )
    )
    assert live["mode"] == "live" and live["rate"] == "lockstep"
    assert live["frames"]["offered"] == offline["frames"]["sets"] == BAG.frames
    assert live["frames"]["received"] == BAG.frames and live["frames"]["drop_rate"] == 0.0
    want = labels_by_stamp(tmp_path / "offline" / "predictions", PREDICTION_TOPIC)
    got = labels_by_stamp(tmp_path / "live" / "outputs", f"{live['namespace']}/occupancy")
    assert sorted(got) == sorted(want)
    for stamp in want:  # the same code on the same inputs: identical labels
        np.testing.assert_array_equal(got[stamp], want[stamp], err_msg=f"frame {stamp / 1e9:.3f} s")
    assert live["scores"] == offline["scores"]
    assert (
        live["latency_ms"]["end-to-end (last input published -> occupancy received)"]["count"] == BAG.frames
    )
    assert live["node_status"]["frames_processed"] == BAG.frames
    out = tmp_path / "live"
    for name in (
        "summary.json",
        "frames.csv",
        "latency.png",
        "node.log",
        "node_params.yaml",
        "outputs/metadata.yaml",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "bev").glob("*.png"))) == 1 and len(list((out / "depth").glob("*.png"))) == 1


def test_real_time_playback_accounts_for_every_frame_set(bag, tiny_checkpoint, tmp_path):
    summary = evaluate_bag(
        BagEvalOptions(
            bag=bag,
            out=tmp_path / "live",
            checkpoint=tiny_checkpoint,
            device="cpu",
            live=True,
            rate=1.0,
            namespace=namespace(),
            pictures=0,
            progress=False,
        )
    )
    frames = summary["frames"]
    assert frames["offered"] == BAG.frames
    assert frames["received"] + frames["dropped_or_rejected"] == frames["offered"]
    assert frames["received"] >= 1  # the last set at least is never replaced by a newer one
    assert frames["drop_rate"] == pytest.approx(1 - frames["received"] / frames["offered"], abs=1e-4)
    status = summary["node_status"]
    assert status["frames_processed"] == frames["received"]
    assert (
        status["frames_processed"] + status["frames_dropped"] + status["frames_rejected"] == frames["offered"]
    )
    with open(tmp_path / "live" / "frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == BAG.frames
    latencies = [float(r["e2e_latency_ms"]) for r in rows if r["status"] == "ok"]
    assert latencies and all(0 < v < 60_000 for v in latencies)


def test_live_mode_reports_a_node_that_cannot_start(bag, tiny_checkpoint, tmp_path):
    from gausstr_ros.bag.live import LiveError

    with pytest.raises(LiveError, match="exited with code 1 before it was ready") as info:
        evaluate_bag(
            BagEvalOptions(
                bag=bag,
                out=tmp_path / "r",
                checkpoint=tiny_checkpoint,
                live=True,
                device="cuda:7",
                namespace=namespace(),
                progress=False,
            )
        )
    assert "cannot start" in str(info.value)  # the node's own log line is in the message
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []
