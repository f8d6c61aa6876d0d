"""The built-in default model and bag: shipped (not git-ignored, under 30 MB together), used when nothing
is given, and the offline evaluation of the built-in bag reproduces the recorded metrics within the
recorded tolerance (``tolerance_points`` IoU points: the same code on another CPU or BLAS may round a
few voxels differently)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gausstr_ros.assets import (
    DEFAULT_BAG,
    DEFAULT_BAG_METRICS,
    DEFAULT_CHECKPOINT,
    checkpoint_vocabulary,
    recorded_metrics,
)
from gausstr_ros.bag.build_defaults import SIZE_LIMIT_BYTES, sha256
from gausstr_ros.bag.options import BagEvalOptions, resolve_setup
from gausstr_ros.node.params import DEFAULT_CATEGORIES, NodeConfig
from gausstr_ros.predictor import effective_categories

ROOT = Path(__file__).resolve().parents[1]


def test_the_assets_are_shipped_small_and_recorded():
    for path in (DEFAULT_CHECKPOINT, DEFAULT_BAG, DEFAULT_BAG_METRICS):
        assert path.is_file(), path
    assert DEFAULT_CHECKPOINT.stat().st_size + DEFAULT_BAG.stat().st_size < SIZE_LIMIT_BYTES
    metrics = recorded_metrics()
    assert metrics["checkpoint_sha256"] == sha256(DEFAULT_CHECKPOINT)
    assert metrics["bag_sha256"] == sha256(DEFAULT_BAG)
    assert (
        metrics["training_command"].startswith("gausstr-synth")
        and "gausstr-train" in metrics["training_command"]
    )
    assert metrics["scores"]["num_frames"] == metrics["frames"]["sets"] == 20


def test_the_assets_are_not_git_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [str(p.relative_to(ROOT)) for p in (DEFAULT_CHECKPOINT, DEFAULT_BAG, DEFAULT_BAG_METRICS)]
    result = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "", f"git ignores {result.stdout.split()}"


def test_nothing_given_means_the_built_in_model_bag_and_vocabulary():
    setup = resolve_setup(BagEvalOptions())
    assert Path(setup.config.checkpoint) == DEFAULT_CHECKPOINT and setup.bag == DEFAULT_BAG
    assert setup.config.categories == checkpoint_vocabulary(DEFAULT_CHECKPOINT)
    # The node's rule: its default categories with the built-in model mean the model's own vocabulary.
    config = NodeConfig.defaults()
    assert effective_categories(
        config.categories, config.checkpoint, config.model_preset
    ) == checkpoint_vocabulary(DEFAULT_CHECKPOINT)
    assert effective_categories(["car", "road"], "", "") == ["car", "road"]
    assert effective_categories(list(DEFAULT_CATEGORIES), "/elsewhere.safetensors", "") == list(
        DEFAULT_CATEGORIES
    )
    with_params = resolve_setup(BagEvalOptions(params=ROOT / "config" / "occupancy.yaml"))
    assert with_params.config.categories == checkpoint_vocabulary(DEFAULT_CHECKPOINT)


@pytest.mark.ros
def test_the_node_loads_the_built_in_model_by_default():
    from gausstr_ros.predictor import load_predictor

    predictor = load_predictor(NodeConfig.defaults())
    assert predictor.input_size == (112, 200)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["scores", "scores_depth_head"])
def test_evaluating_the_built_in_bag_reproduces_the_recorded_metrics(tmp_path, key):
    """``scores``: the demo's setting (the bag's depth topics); ``scores_depth_head``: the node's
    default on a camera-only robot (the model's own depth head)."""
    from gausstr_ros.bag.evaluate import evaluate_bag

    recorded = recorded_metrics()
    use_depth = recorded["use_depth"] if key == "scores" else False
    # The recorded scores were measured on the CPU (the PyTorch reference voxelizer); see the gpu test below.
    summary = evaluate_bag(
        BagEvalOptions(out=tmp_path / "report", pictures=1, device="cpu", progress=False, use_depth=use_depth)
    )
    assert summary["bag_source"] == "built-in default" and summary["checkpoint_source"] == "built-in default"
    assert summary["frames"]["predicted"] == recorded["frames"]["predicted"]
    tolerance = recorded["tolerance_points"]
    got, want = summary["scores"], recorded[key]
    assert got["iou"] == pytest.approx(want["iou"], abs=tolerance)
    assert got["miou"] == pytest.approx(want["miou"], abs=tolerance)
    for name, value in want["per_class_iou"].items():
        if value is None:
            assert got["per_class_iou"][name] is None, name
        else:
            assert got["per_class_iou"][name] == pytest.approx(value, abs=max(tolerance, 0.5)), name
    json.loads((tmp_path / "report" / "summary.json").read_text())


@pytest.mark.gpu
def test_the_built_in_bag_on_cuda_scores_like_the_recorded_cpu_metrics(tmp_path):
    """On CUDA (the voxelizer kernel, gsplat) the built-in model scores the built-in bag like on the CPU.

    The CUDA voxelizer accumulates in another order than the reference, so a few voxels at the density
    threshold may flip: 1 IoU point is allowed, and the difference is printed for docs/bags.md."""
    from gausstr_ros.bag.evaluate import evaluate_bag

    metrics = recorded_metrics()
    recorded = metrics["scores"]
    summary = evaluate_bag(
        BagEvalOptions(
            out=tmp_path / "report", pictures=0, device="cuda", progress=False, use_depth=metrics["use_depth"]
        )
    )
    got = summary["scores"]
    print(
        f"built-in bag on CUDA: IoU {got['iou']:.4f} mIoU {got['miou']:.4f} "
        f"(CPU recorded {recorded['iou']:.4f} / {recorded['miou']:.4f}); "
        f"predict p50 {summary['latency_ms']['predict']['p50']:.1f} ms"
    )
    assert got["iou"] == pytest.approx(recorded["iou"], abs=1.0)
    assert got["miou"] == pytest.approx(recorded["miou"], abs=1.0)
