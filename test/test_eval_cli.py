"""``gausstr-eval`` in-process on two synthetic scenes written by the generator: a checkpoint and both
baselines produce the full report; bad arguments give clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gausstr_core.evaluation.cli import main

SET = ["--set", "model.image_size=[48, 88]"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from gausstr_core.data.synthetic.samples import SyntheticConfig
    from gausstr_core.data.synthetic.targets import FeatureTargetConfig, name_embeddings
    from gausstr_core.data.synthetic.writer import write_dataset
    from gausstr_core.presets import tiny_text

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("synth_eval")
    config = SyntheticConfig(image_size=(48, 88), features=FeatureTargetConfig(patch_size=8))
    write_dataset(
        out,
        2,
        seed=3,
        config=config,
        embeddings=name_embeddings(tiny_text()),
        val_fraction=0.5,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.config import TrainConfig
    from gausstr_core.train.data import save_deployment_checkpoint

    cfg = build_model_config(
        TrainConfig(overrides=["model.image_size=[48, 88]", "model.decoder.queries_per_view=8"])
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_deployment_checkpoint(GaussTR(cfg.model), cfg, path, step=0, metrics={}, vocabulary=["car", "road"])
    return path


def _report(out):
    result = json.loads((out / "metrics.json").read_text())
    for name in ("per_class.md", "confusion.png", "bev_000.png"):
        assert (out / name).is_file(), name
    return result


def test_checkpoint_and_baselines(synth, checkpoint, tmp_path, capsys):
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(synth),
                "--out",
                str(tmp_path / "m"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = _report(tmp_path / "m")
    assert result["summary"]["scenes"] == 1
    # the synthetic data's own vocabulary (17 Occ3D classes) is used, not the checkpoint's 2 names
    assert len(result["evaluated"]["categories"]) == 17
    assert "barrier" in result["occupancy"]["per_class_iou"]
    assert "IoU" in capsys.readouterr().out

    assert (
        main(
            [
                "--baseline",
                "all-free",
                "--data",
                str(synth),
                "--out",
                str(tmp_path / "f"),
                "--no-rayiou",
                *SET,
            ]
        )
        == 0
    )
    free = _report(tmp_path / "f")["summary"]
    assert free["iou"] == 0.0 and free["rayiou"] is None

    from gausstr_core.text.vocabulary import OCC3D_CATEGORIES

    assert (
        main(
            [
                "--baseline",
                "depth-unprojection",
                "--data",
                str(synth),
                "--out",
                str(tmp_path / "u"),
                "--categories",
                *OCC3D_CATEGORIES,
                *SET,
            ]
        )
        == 0
    )
    unproj = _report(tmp_path / "u")
    assert unproj["summary"]["iou"] > 5.0  # geometry from the depth targets alone
    assert unproj["evaluated"]["categories"] == list(OCC3D_CATEGORIES)

    assert (
        main(["--baseline", "init", "--data", str(synth), "--out", str(tmp_path / "i"), "--no-rayiou", *SET])
        == 0
    )
    init = _report(tmp_path / "i")
    assert init["summary"]["iou"] > 1.0  # untrained Gaussians at the input depth do mark some voxels
    assert "untrained Gaussians" in init["evaluated"]["what"]


def test_density_sweep_equals_separate_runs(synth, checkpoint, tmp_path):
    args = ["--checkpoint", str(checkpoint), "--data", str(synth), "--no-rayiou", "--bev", "0"]
    assert main([*args, "--out", str(tmp_path / "s"), "--density-sweep", "0.01", "0.3"]) == 0
    sweep = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert set(sweep) == {"0.01", "0.3"}
    for t in ("0.01", "0.3"):
        assert main([*args, "--out", str(tmp_path / t), "--set", f"inference.density_threshold={t}"]) == 0
        single = json.loads((tmp_path / t / "metrics.json").read_text())["occupancy"]
        for key in ("iou", "miou", "precision", "recall"):
            assert sweep[t][key] == single[key], (t, key)
    # the main metrics keep the configured threshold
    default = json.loads((tmp_path / "s" / "metrics.json").read_text())["summary"]
    assert main([*args, "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["summary"] == default


def test_errors(synth, checkpoint, tmp_path, capsys):
    assert main(["--data", str(synth), "--out", str(tmp_path)]) == 2
    assert "exactly one of --checkpoint or --baseline" in capsys.readouterr().err
    assert main(["--baseline", "all-free", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "neither a directory nor a 'synthetic:...' spec" in capsys.readouterr().err
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "missing.safetensors"),
                "--data",
                str(synth),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            ["--baseline", "all-free", "--data", str(synth), "--out", str(tmp_path), "--set", "model.nope=1"]
        )
        == 2
    )
    assert "unknown key 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "--baseline",
                "all-free",
                "--data",
                str(synth),
                "--out",
                str(tmp_path),
                "--categories",
                "car",
                "road",
            ]
        )
        == 2
    )
    assert "must name the 17 Occ3D classes in label order" in capsys.readouterr().err


def test_data_built_for_another_text_space_is_refused(synth):
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.config import TrainConfig
    from gausstr_core.train.data import build_dataset

    same = build_model_config(TrainConfig(overrides=["model.image_size=[48, 88]"]))
    assert len(build_dataset(str(synth), "train", same, training=True)) == 1
    other = build_model_config(
        TrainConfig(overrides=["model.image_size=[48, 88]", "text.random_init_seed=1"])
    )
    with pytest.raises(ValueError, match="other text embeddings"):
        build_dataset(str(synth), "train", other, training=True)


def test_scores_are_written_before_the_pictures(tmp_path, monkeypatch):
    """An evaluation stopped while it draws its pictures (a machine call's deadline sends SIGINT)
    still leaves metrics.json and per_class.md: the numbers are written first."""
    from types import SimpleNamespace

    from gausstr_core.evaluation import runner, visualize
    from gausstr_core.grid import VoxelGrid

    grid = VoxelGrid()
    gen = torch.Generator().manual_seed(0)
    shape = (1, *grid.shape)
    items = [
        (None, SimpleNamespace(semantics=torch.randint(0, 3, shape, generator=gen), mask_camera=None))
        for _ in range(2)
    ]
    labels = torch.randint(0, 3, shape, generator=gen)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(visualize, "save_bev_comparison", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(lambda batch: labels, items, ["car", "road"], grid, out_dir=tmp_path, rayiou=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["summary"]["scenes"] == 2
    assert saved["summary"]["iou"] is not None
    assert (tmp_path / "per_class.md").is_file()
    assert not (tmp_path / "bev_000.png").exists()


def test_no_use_depth_scores_the_depth_head(synth, checkpoint, tmp_path, monkeypatch):
    """``--no-use-depth`` hands the model batches without depth (its depth head lifts the
    Gaussians, as in the node's camera-only default) and says so in metrics.json."""
    from gausstr_core.inference.predictor import OccupancyPredictor

    seen = []
    predict = OccupancyPredictor.predict

    def spy(self, batch, *args, **kwargs):
        seen.append(batch.depth is None)
        return predict(self, batch, *args, **kwargs)

    monkeypatch.setattr(OccupancyPredictor, "predict", spy)
    common = ["--checkpoint", str(checkpoint), "--data", str(synth), "--threads", "1", "--no-rayiou"]
    assert main([*common, "--out", str(tmp_path / "dh"), "--no-use-depth", "--bev", "0"]) == 0
    assert seen == [True]
    saved = json.loads((tmp_path / "dh" / "metrics.json").read_text())
    assert saved["evaluated"]["depth"] == "the model's depth head"
    assert main([*common, "--out", str(tmp_path / "d"), "--bev", "0"]) == 0
    assert seen == [True, False]


def test_no_use_depth_needs_a_depth_head(synth, tmp_path, capsys):
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.config import TrainConfig
    from gausstr_core.train.data import save_deployment_checkpoint

    cfg = build_model_config(
        TrainConfig(
            overrides=[
                "model.image_size=[48, 88]",
                "model.decoder.queries_per_view=8",
                "model.depth_head.enabled=false",
            ]
        )
    )
    path = tmp_path / "no_head.safetensors"
    save_deployment_checkpoint(GaussTR(cfg.model), cfg, path, step=0, metrics={}, vocabulary=["car", "road"])
    args = ["--data", str(synth), "--out", str(tmp_path / "e"), "--no-use-depth"]
    assert main(["--checkpoint", str(path), *args]) == 2
    assert "has no depth head" in capsys.readouterr().err
    assert main(["--baseline", "depth-unprojection", *args]) == 2
    assert "baselines need the data's depth" in capsys.readouterr().err


def test_depth_head_gap_script(synth, checkpoint, tmp_path):
    """scripts/depth_head_gap.py: its measured-depth row is gausstr-eval's score of the same model,
    its depth-head row is gausstr-eval --no-use-depth's, and pooling keeps a constant depth."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "depth_head_gap.py"
    spec = importlib.util.spec_from_file_location("depth_head_gap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    flat = torch.full((1, 2, 12, 20), 7.0)
    torch.testing.assert_close(module.pooled_depth(flat, 4, 51.2), flat)
    torch.testing.assert_close(module.pooled_depth(flat * 10, 4, 51.2), torch.full_like(flat, 51.2))

    result = module.depth_head_gap(str(checkpoint), str(synth), "all", pools=(4,), threads=1)
    assert set(result) == {
        "the data's depth",
        "the data's depth averaged over 4 x 4 pixels",
        "the depth head's prediction",
        "abs_rel",
        "abs_rel_by_depth",
    }
    assert result["abs_rel"] > 0
    bins = result["abs_rel_by_depth"]
    assert abs(sum(b["share"] for b in bins.values()) - 1) < 1e-9
    # per bin: pixel-weighted sums, bins by the data's depth, the last one open
    predicted = torch.tensor([[4.0, 6.0, 60.0, 30.0]])
    depth = torch.tensor([[2.0, 8.0, 80.0, 0.0]])  # the 0 is invalid: counted nowhere
    sums = module.depth_error_sums(predicted, depth, 51.2, edges=(0.0, 5.0, 35.0))
    expect = [[1, 1.0, 2.0], [1, 0.25, -2.0], [1, 0.0, 0.0]]
    torch.testing.assert_close(sums, torch.tensor(expect, dtype=torch.float64))
    common = ["--checkpoint", str(checkpoint), "--data", str(synth), "--split", "all", "--threads", "1"]
    common += ["--no-rayiou", "--bev", "0"]
    for flag, name in (([], "the data's depth"), (["--no-use-depth"], "the depth head's prediction")):
        assert main([*common, *flag, "--out", str(tmp_path / name.split()[1])]) == 0
        saved = json.loads((tmp_path / name.split()[1] / "metrics.json").read_text())["summary"]
        assert result[name] == {"iou": saved["iou"], "miou": saved["miou"]}, name


def test_gaussian_stats_script(synth, checkpoint, tmp_path, capsys):
    """scripts/gaussian_stats.py: hand-computed statistics, and on a checkpoint the Gaussians it
    counts are the predictor's (queries x views per scene, visible = opacity above the trainer's
    cut)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gaussian_stats.py"
    spec = importlib.util.spec_from_file_location("gaussian_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    opacities = torch.tensor([0.01, 0.04, 0.5, 0.9])
    scales = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [4.0, 1.0, 1.0], [0.1, 0.2, 0.1]])
    means = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [6.0, 8.0, 0.0], [0.0, 0.0, 20.0]])
    free = torch.tensor([True, False, False, False])
    stats = module.gaussian_statistics(opacities, scales, means, free)
    assert stats["gaussians"] == 4 and stats["visible_fraction"] == 0.5
    assert stats["free_prompt_fraction"] == 0.25
    assert stats["opacity_quantiles"][1] == pytest.approx(0.27)  # median of 0.04 and 0.5
    assert stats["distance_quantiles"][1] == pytest.approx(7.5)  # distances 5, 1, 10, 20
    assert stats["visible_distance_quantiles"][1] == pytest.approx(15.0)  # 10 and 20
    assert stats["scale_max_axis_quantiles"][1] == pytest.approx(1.75)  # 3, 0.5, 4, 0.2
    out = tmp_path / "stats.json"
    args = ["--checkpoint", str(checkpoint), "--data", str(synth), "--split", "all", "--threads", "1"]
    assert module.main([*args, "--max-scenes", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    from gausstr_core.io.checkpoint import read_full_config

    decoder = read_full_config(checkpoint).model.decoder
    views = 6  # the synthetic rig's cameras
    assert saved["gaussians"] == decoder.queries_per_view * views and saved["scenes"] == 1
    assert 0.0 <= saved["visible_fraction"] <= 1.0
    assert "visible (opacity > 0.05)" in capsys.readouterr().out


def test_a_model_override_on_a_checkpoint_is_refused_not_ignored(synth, checkpoint, tmp_path, capsys):
    """A checkpoint's model is built from its stored config, so ``--set model.*`` cannot change it:
    the run must stop with the reason, not score the unchanged model under the override's name."""
    base = ["--checkpoint", str(checkpoint), "--data", str(synth), "--out", str(tmp_path / "e")]
    for override in ("model.head.scale_multiplier=1.0", "text.random_init_seed=3", "loss.depth_weight=0"):
        assert main([*base, "--set", override]) == 2
        err = capsys.readouterr().err
        assert f"--set '{override}'" in err and "inference.* and grid.*" in err
    assert not (tmp_path / "e" / "metrics.json").exists()
    # inference settings still apply (the density sweep test checks that they change the scores)
    assert main([*base, "--max-scenes", "1", "--set", "inference.density_threshold=0.2", "--bev", "0"]) == 0


def test_occupancy_errors_script(synth, checkpoint, tmp_path, capsys):
    """scripts/occupancy_errors.py: hand-counted TP/FP/FN by distance bin and height layer (masked
    voxels count nowhere), and on a checkpoint both columns count the same ground truth."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "occupancy_errors.py"
    spec = importlib.util.spec_from_file_location("occupancy_errors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    free = 5
    semantics = torch.full((2, 2, 2), free)
    labels = torch.full((2, 2, 2), free)
    semantics[0, 0, 0] = semantics[0, 1, 0] = semantics[1, 1, 1] = 1
    labels[0, 0, 0] = labels[0, 0, 1] = labels[1, 0, 0] = labels[1, 1, 1] = 2  # wrong class: still occupied
    mask = torch.ones(2, 2, 2, dtype=torch.bool)
    mask[1, 1, 1] = False
    distance = torch.tensor([[5.0, 15.0], [25.0, 50.0]], dtype=torch.float64)
    counts = module.occupancy_error_counts(labels, semantics, mask, free, distance)
    # columns: (0,0) at 5 m: TP + FP; (0,1) at 15 m: FN; (1,0) at 25 m: FP; (1,1) at 50 m: masked
    assert counts["by_distance"].tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert counts["by_height"].tolist() == [[1, 1, 1], [0, 1, 0]]
    first = module.rates(counts["by_distance"])[0]
    assert (first["iou"], first["precision"], first["recall"]) == (50.0, 50.0, 100.0)
    assert module.rates(counts["by_distance"])[3]["iou"] is None
    with pytest.raises(ValueError, match="differ"):
        module.occupancy_error_counts(labels[:1], semantics, mask, free, distance)

    # by class (labels 0..5, free = 5): ground truth class 1 has two visible voxels, one predicted as
    # class 2 and one free; class 2 is predicted on 4 voxels, 2 of them free in the ground truth
    confusion = module.class_confusion(labels, semantics, mask, free + 1)
    assert confusion.sum() == 7 and confusion[1].tolist() == [0, 0, 1, 0, 0, 1]
    assert confusion[:, 2].tolist() == [0, 1, 0, 0, 0, 2]
    outcomes = {r["class"]: r for r in module.class_outcomes(confusion, free)}
    assert set(outcomes) == {0, 1, 2, 3, 4}
    one = outcomes[1]
    assert (one["voxels"], one["same"], one["free"], one["other"], one["top_other"]) == (
        2,
        0.0,
        50.0,
        50.0,
        2,
    )
    assert (outcomes[2]["voxels"], outcomes[2]["predicted"], outcomes[2]["predicted_on_free"]) == (0, 3, 66.7)
    assert outcomes[0]["same"] is None and outcomes[0]["top_other"] is None
    with pytest.raises(ValueError, match="differ"):
        module.class_confusion(labels[:1], semantics, mask, free + 1)

    out = tmp_path / "errors.json"
    args = ["--checkpoint", str(checkpoint), "--data", str(synth), "--split", "all", "--threads", "1"]
    assert module.main([*args, "--max-scenes", "1", "--density", "0.1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["columns"] == ["model", "unprojection"]
    for model, unprojection in saved["by_distance"].values():
        assert model["tp"] + model["fn"] == unprojection["tp"] + unprojection["fn"]  # the same ground truth
    assert len(saved["by_height"]) == 16
    for model, unprojection in saved["by_class"].values():
        assert model["voxels"] == unprojection["voxels"]  # the same ground truth, class by class
    printed = capsys.readouterr().out
    assert "| distance |" in printed and "| class | voxels |" in printed


def test_surface_spill_script(synth, checkpoint, tmp_path, capsys):
    """scripts/surface_spill.py: a run of flat-class voxels keeps the voxels with at least the given
    fraction of the run's peak density (other classes and other runs untouched), and on a
    checkpoint a fraction of 0 scores the unthinned prediction."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "surface_spill.py"
    spec = importlib.util.spec_from_file_location("surface_spill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    free, road, sidewalk, car = 4, 1, 2, 0
    surface = torch.tensor([False, True, True, False, False])
    labels = torch.tensor([free, road, road, sidewalk, car, road, free, road, road]).reshape(1, 1, 1, 9)
    density = torch.tensor([0.0, 0.5, 0.9, 0.3, 2.0, 0.1, 0.0, 0.7, 0.7]).reshape(1, 1, 1, 9)
    peak = module.run_peak(labels, density, surface)[0, 0, 0]
    expected = torch.tensor([-math.inf, 0.9, 0.9, 0.9, -math.inf, 0.1, -math.inf, 0.7, 0.7])
    assert torch.equal(peak, expected), peak
    thin = lambda keep: module.thin_runs(labels, density, surface, keep, free)[0, 0, 0].tolist()
    assert thin(1.0) == [free, free, road, free, car, road, free, road, road]
    assert thin(0.5) == [free, road, road, free, car, road, free, road, road]
    assert thin(0.0) == labels[0, 0, 0].tolist()

    out = tmp_path / "spill.json"
    args = ["--checkpoint", str(checkpoint), "--data", str(synth), "--split", "all", "--threads", "1"]
    assert (
        module.main([*args, "--max-scenes", "1", "--density", "0.1", "--keep", "0", "1", "--json", str(out)])
        == 0
    )
    saved = json.loads(out.read_text())
    assert saved["false_voxels_flat"] <= saved["false_voxels"]
    assert len(saved["flat_density_by_layer"]) == 16 and set(saved["keep_fraction"]) == {"0", "1"}
    eval_args = ["--out", str(tmp_path / "e"), "--max-scenes", "1", "--no-rayiou", "--bev", "0"]
    assert main([*args, *eval_args, "--set", "inference.density_threshold=0.1"]) == 0
    plain = json.loads((tmp_path / "e" / "metrics.json").read_text())["occupancy"]
    assert saved["keep_fraction"]["0"]["iou"] == pytest.approx(plain["iou"], abs=1e-3)
    assert "run peak" in capsys.readouterr().out
