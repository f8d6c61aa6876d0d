"""gausstr-bag-eval offline: the report is complete, the labels are those of the model run directly on the
same synthetic frames, scores agree with gausstr_core's metric, and Occ3D ground truth from a dataset
directory gives the same scores as the bag's SemanticOccupancy topic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gausstr_core.data.synthetic import generate_sample
from gausstr_core.data.synthetic.samples import make_world
from gausstr_core.evaluation.metrics import OccupancyMetric
from gausstr_ros.bag.evaluate import PREDICTION_TOPIC, evaluate_bag, format_summary, main
from gausstr_ros.bag.make_bag import (
    GROUND_TRUTH_TOPIC,
    SyntheticBagConfig,
    synthetic_config,
    write_synthetic_bag,
)
from gausstr_ros.bag.options import BagEvalOptions
from gausstr_ros.bag.reader import BagSource
from gausstr_ros.bag.writer import BagWriter
from gausstr_ros.node.sync import stamp_to_ns

ROOT = Path(__file__).resolve().parents[1]
BAG = SyntheticBagConfig(frames=2, image_size=(56, 100), seed=3)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bag") / "synthetic", BAG, progress=False)


@pytest.fixture(scope="module")
def offline(bag, tiny_checkpoint, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("reports") / "offline"
    summary = evaluate_bag(
        BagEvalOptions(
            bag=bag, out=out, checkpoint=tiny_checkpoint, device="cpu", record=True, progress=False
        )
    )
    return summary, out


def recorded_labels(report: Path) -> dict[int, np.ndarray]:
    with BagSource(report / "predictions") as source:
        return {
            stamp_to_ns(m.header.stamp): np.array(m.labels).reshape(m.size_x, m.size_y, m.size_z)
            for _, _, m in source.messages([PREDICTION_TOPIC])
        }


def test_the_report_is_complete(offline):
    summary, out = offline
    assert summary["mode"] == "offline" and summary["report"] == str(out)
    assert summary["frames"]["sets"] == 2 and summary["frames"]["predicted"] == 2
    assert summary["scores"]["num_frames"] == 2 and summary["ground_truth"]["frames_scored"] == 2
    assert summary["checkpoint_source"] == "--checkpoint"
    assert summary["categories_source"] == "the checkpoint's own vocabulary"
    for name in (
        "summary.json",
        "frames.csv",
        "latency.png",
        "per_class.md",
        "confusion.png",
        "bev/frame_0000.png",
        "depth/frame_0001.png",
        "gaussians/frame_0000.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["scores"] == summary["scores"]
    with open(out / "frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(float(r["predict_ms"]) > 0 and r["miou"] != "" for r in rows)
    # the total is the host's stages one after another; a late depth render lies inside to_host
    assert any(r.get("render_ms") for r in rows)  # a frame drawn with its depth rendered late
    for r in rows:
        stages = float(r["prepare_ms"]) + float(r["predict_ms"]) + float(r["to_host_ms"])
        assert abs(float(r["total_ms"]) - stages) <= 0.03, r
    assert summary["latency_ms"]["predict"]["count"] == 2
    text = format_summary(summary)
    assert f"{out}/bev/" in text and "mIoU" in text
    assert not list(out.parent.glob(".offline.partial-*"))


def test_labels_are_the_models_on_the_same_frames(offline, tiny_checkpoint):
    """Bag -> messages -> node pipeline gives the labels of OccupancyPredictor on the generator's tensors."""
    from gausstr_core.batch import CameraBatch
    from gausstr_core.data.transforms import resize_views
    from gausstr_core.inference.predictor import OccupancyPredictor

    summary, out = offline
    labels = recorded_labels(out)
    assert len(labels) == 2
    predictor = OccupancyPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    predictor.set_categories(summary["categories"])
    synthetic = synthetic_config(BAG)
    world = make_world(BAG.seed, BAG.scene, synthetic)
    metric = OccupancyMetric(summary["scores"]["per_class_iou"].keys())
    for k, stamp in enumerate(sorted(labels)):
        sample = generate_sample(BAG.seed, BAG.scene, k, synthetic, None, world=world)
        images, _, aug = resize_views(sample.views.rgb, predictor.input_size)
        batch = CameraBatch(
            images=images[None],
            intrinsics=sample.rig.intrinsics()[None],
            cam_to_ego=sample.rig.cam_to_ego()[None],
            image_aug=aug[None],
        )
        direct = predictor.predict(batch, render_depth=False).labels[0].numpy()
        agree = (direct == labels[stamp]).mean()
        # TF carries the camera poses as quaternions (float64 -> float32 rounding): a handful of voxels
        # on a decision boundary may flip.
        assert agree >= 0.999, f"frame {k}: only {100 * agree:.3f}% of voxels agree"
        metric.update(torch.from_numpy(labels[stamp]), sample.labels.semantics, sample.labels.mask_camera)
    expected = metric.compute().to_dict()
    assert summary["scores"]["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert summary["scores"]["iou"] == pytest.approx(expected["iou"], abs=1e-6)


def test_occ3d_directory_ground_truth_matches_the_topic(offline, bag, tiny_checkpoint, tmp_path):
    """An Occ3D dataset directory with the same labels, matched by sample timestamp, gives the same scores."""
    from gausstr_core.data.occ3d import Occ3DLabels, save_labels

    summary, _ = offline
    root = tmp_path / "nuscenes"
    tables = root / "v1.0-mini"
    tables.mkdir(parents=True)
    samples = []
    with BagSource(bag) as source:
        for i, (_, _, msg) in enumerate(source.messages([GROUND_TRUTH_TOPIC])):
            token = f"sample{i}"
            shape = (msg.size_x, msg.size_y, msg.size_z)
            mask = torch.from_numpy(np.array(msg.confidence).reshape(shape) > 0.5)
            save_labels(
                root / "gts" / "scene-0001" / token,
                Occ3DLabels(torch.from_numpy(np.array(msg.labels).reshape(shape)), mask.clone(), mask),
            )
            samples.append(
                {"token": token, "timestamp": stamp_to_ns(msg.header.stamp) // 1000, "scene_token": "s1"}
            )
    (tables / "sample.json").write_text(json.dumps(samples))
    (tables / "scene.json").write_text(json.dumps([{"token": "s1", "name": "scene-0001"}]))
    result = evaluate_bag(
        BagEvalOptions(
            bag=bag,
            out=tmp_path / "occ3d",
            checkpoint=tiny_checkpoint,
            device="cpu",
            occ3d=root,
            pictures=0,
            progress=False,
        )
    )
    assert result["scores"] == summary["scores"]
    assert "Occ3D labels" in result["ground_truth"]["source"]


def test_params_file_extra_topics_of_unknown_types_and_no_ground_truth(bag, tiny_checkpoint, tmp_path):
    """The node's own params file drives the evaluation; topics the evaluation does not need may have
    types nobody knows; without ground truth the report says so and draws the prediction alone."""
    import shutil

    from gausstr_ros.bag.reader import resolve_bag_path

    copy = tmp_path / "extra"
    with BagSource(bag) as source, BagWriter(copy) as w:
        for topic, msgtype, log_time, raw in source.raw_messages(list(source.topics)):
            if topic != GROUND_TRUTH_TOPIC:
                w.write_raw(topic, msgtype, raw, log_time)
        w._writer.add_connection(
            "/acme/status", "acme_msgs/msg/Status", msgdef="this ] is unknown", rihs01="RIHS01_" + "0" * 64
        )
        w._writer.write(w._writer.connections[-1], source.start_time_ns + 1, b"\x00\x01\x00\x00junk")
    assert resolve_bag_path(copy) == copy
    summary = evaluate_bag(
        BagEvalOptions(
            bag=copy,
            out=tmp_path / "r",
            checkpoint=tiny_checkpoint,
            device="cpu",
            max_frames=1,
            params=ROOT / "config" / "occupancy.yaml",
            progress=False,
        )
    )
    assert summary["frames"]["predicted"] == 1 and summary["scores"] is None
    assert summary["categories_source"].startswith("params file")  # the yaml's Occ3D categories
    assert any("no ground truth" in w for w in summary["warnings"])
    assert (tmp_path / "r" / "bev" / "frame_0000.png").is_file()
    shutil.rmtree(tmp_path / "r")


def test_cli(bag, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                str(bag),
                "--device",
                "cpu",
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--max-frames",
                "1",
                "--pictures",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed and "pictures:" in printed
    assert main([str(bag), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
