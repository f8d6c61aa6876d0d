"""The on-disk layout: written by the synthetic writer, read back by nuscenes-devkit and our index."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gausstr_core.data.nuscenes import CAMERA_CHANNELS, DatasetLayout, NuScenesIndex, image_stem, split_scenes
from gausstr_core.data.occ3d import Occ3DLabels, load_labels, save_labels
from gausstr_core.data.synthetic import (
    FeatureTargetConfig,
    SyntheticConfig,
    generate_sample,
    name_strings,
    random_embeddings,
)
from gausstr_core.data.synthetic.writer import EMBEDDINGS_FILE, NUSCENES_TABLES, write_dataset

SEED = 3
CONFIG = SyntheticConfig(
    image_size=(48, 80),
    samples_per_scene=2,
    visibility_spacing=(3.0, 3.0),
    features=FeatureTargetConfig(patch_size=8),
)
EMB = random_embeddings(len(name_strings()), 8, seed=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    layout = write_dataset(
        out, 2, seed=SEED, config=CONFIG, embeddings=EMB, image_format="png", val_fraction=0.5, progress=False
    )
    return layout


def test_layout_is_the_official_one(dataset):
    root = dataset.dataroot
    assert dataset.depth_dir == root.with_name("nuscenes_metric3d")
    assert dataset.feature_dir == root.with_name("nuscenes_featup")
    for table in NUSCENES_TABLES:
        assert (root / "v1.0-trainval" / f"{table}.json").is_file()
    images = sorted((root / "samples").rglob("*.png"))
    assert len(images) == 2 * 2 * 6
    assert {p.parent.name for p in images} == set(CAMERA_CHANNELS)
    for image in images:  # every image has its depth and feature map named after it
        assert (dataset.depth_dir / f"{image_stem(image.name)}.npy").is_file()
        assert (dataset.feature_dir / f"{image_stem(image.name)}.npy").is_file()
    assert len(list((root / "gts").glob("*/*/labels.npz"))) == 4
    assert (root / EMBEDDINGS_FILE).is_file() and (root / "synthetic.json").is_file()


def test_devkit_loads_the_tables_and_gives_back_the_rig_and_images(dataset):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-trainval", str(dataset.dataroot), verbose=False)
    assert len(nusc.scene) == 2 and len(nusc.sample) == 4
    rig = CONFIG.rig()
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    assert sample["next"] and nusc.get("sample", sample["next"])["prev"] == sample["token"]
    expected = generate_sample(SEED, 0, 0, CONFIG, EMB)
    for v, channel in enumerate(CAMERA_CHANNELS):
        sd = nusc.get("sample_data", sample["data"][channel])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        cam = rig.camera(channel)
        np.testing.assert_allclose(cs["camera_intrinsic"], cam.intrinsics(torch.float64).numpy(), rtol=1e-12)
        np.testing.assert_allclose(cs["translation"], cam.translation)
        np.testing.assert_allclose(cs["rotation"], cam.rotation)
        path = nusc.get_sample_data_path(sd["token"])
        image = np.asarray(Image.open(path))
        assert np.array_equal(image, expected.views.rgb[v].permute(1, 2, 0).numpy())  # png: lossless
        depth = np.load(dataset.depth_path(path))
        assert np.array_equal(depth, expected.depth_target[v].numpy())
        feats = np.load(dataset.feature_path(path))
        assert feats.shape == (8, 6, 10) and np.array_equal(feats, expected.features[v].numpy())
    labels = load_labels(dataset.gt_path(scene["name"], sample["token"]))
    for name in ("semantics", "mask_camera", "mask_lidar"):
        assert torch.equal(getattr(labels, name), getattr(expected.labels, name))


def test_index_returns_key_frames_with_their_calibration(dataset):
    index = NuScenesIndex(DatasetLayout.create(dataset.dataroot), "all")
    assert len(index) == 4 and index.scene_names == ["synth-3-00000", "synth-3-00001"]
    rig = CONFIG.rig()
    frame = index[1]
    torch.testing.assert_close(frame.intrinsics, rig.intrinsics())
    torch.testing.assert_close(frame.cam_to_ego, rig.cam_to_ego(), atol=1e-6, rtol=0)
    assert frame.image_sizes == [(48, 80)] * 6
    assert [os.path.basename(os.path.dirname(p)) for p in frame.image_paths] == list(CAMERA_CHANNELS)
    # The ego moved forward between the two key frames of a scene.
    assert frame.ego_to_global[0, 3] > index[0].ego_to_global[0, 3] + 2.0
    assert index[0].timestamp < frame.timestamp


def test_splits_are_disjoint_and_complete(dataset):
    layout = DatasetLayout.create(dataset.dataroot)
    names = ["synth-3-00000", "synth-3-00001"]
    train, val = split_scenes(layout, "train", names), split_scenes(layout, "val", names)
    assert train == ["synth-3-00000"] and val == ["synth-3-00001"]
    assert split_scenes(layout, "all", names) == names
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        split_scenes(layout, "nope", names)
    splits = json.loads((layout.table_dir / "splits.json").read_text())
    assert set(splits) == {"train", "val"}


def test_rewriting_skips_finished_frames(dataset, tmp_path):
    image = next((dataset.dataroot / "samples" / "CAM_FRONT").glob("*.png"))
    before = image.stat().st_mtime_ns
    tables = (dataset.table_dir / "sample_data.json").read_text()
    write_dataset(
        dataset.dataroot.parent,
        2,
        seed=SEED,
        config=CONFIG,
        embeddings=EMB,
        image_format="png",
        val_fraction=0.5,
        progress=False,
    )
    assert image.stat().st_mtime_ns == before
    assert (dataset.table_dir / "sample_data.json").read_text() == tables


def test_version_is_detected_or_must_be_named(dataset, tmp_path):
    assert DatasetLayout.create(dataset.dataroot).version == "v1.0-trainval"
    with pytest.raises(FileNotFoundError, match="dataroot not found"):
        DatasetLayout.create(tmp_path / "missing")
    (tmp_path / "v1.0-a").mkdir()
    (tmp_path / "v1.0-a" / "sample.json").write_text("[]")
    (tmp_path / "v1.0-b").mkdir()
    (tmp_path / "v1.0-b" / "sample.json").write_text("[]")
    with pytest.raises(ValueError, match="exactly one table directory"):
        DatasetLayout.create(tmp_path)


def test_labels_npz_round_trip_and_validation(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = Occ3DLabels(
        torch.randint(0, 18, (200, 200, 16), generator=g, dtype=torch.uint8),
        torch.rand(200, 200, 16, generator=g) > 0.5,
        torch.rand(200, 200, 16, generator=g) > 0.5,
    )
    path = save_labels(tmp_path / "scene" / "token", labels)
    assert path.name == "labels.npz"
    with np.load(path) as raw:  # Occ3D's dtypes: uint8 everywhere
        assert raw["semantics"].dtype == np.uint8 and raw["mask_camera"].dtype == np.uint8
    back = load_labels(path.parent)
    assert torch.equal(back.semantics, labels.semantics) and torch.equal(back.mask_camera, labels.mask_camera)
    np.savez(
        tmp_path / "bad.npz",
        semantics=np.full((200, 200, 16), 18, np.uint8),
        mask_lidar=np.zeros((200, 200, 16), np.uint8),
        mask_camera=np.zeros((200, 200, 16), np.uint8),
    )
    with pytest.raises(ValueError, match=r"semantics must be in \[0, 17\]"):
        load_labels(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", semantics=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(ValueError, match="missing arrays"):
        load_labels(tmp_path / "short.npz")
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "none.npz")


def test_cli_writes_a_loadable_dataset_with_a_preview(tmp_path, capsys):
    from gausstr_core.data.synthetic.cli import main

    code = main(
        ["--out", str(tmp_path), "--scenes", "1", "--resolution", "48", "80", "--patch-size", "8", "--quiet"]
    )
    assert code == 0
    assert "wrote 1 key frames" in capsys.readouterr().out
    preview = Image.open(tmp_path / "preview.png")
    assert preview.size[0] > preview.size[1] > 48
    meta = json.loads((tmp_path / "nuscenes" / "synthetic.json").read_text())
    assert meta["text"]["preset"] == "tiny" and meta["config"]["image_size"] == [48, 80]
    index = NuScenesIndex(DatasetLayout.create(tmp_path / "nuscenes"), "all")
    assert len(index) == 1
    feats = np.load(DatasetLayout.create(tmp_path / "nuscenes").feature_path(index[0].image_paths[0]))
    assert feats.shape == (64, 6, 10)  # the tiny text encoder's 64-d space, 48x80 / 8


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from gausstr_core.data.synthetic.cli import main

    assert main(["--out", str(tmp_path), "--scenes", "1", "--resolution", "4", "4"]) == 2
    assert "image_size" in capsys.readouterr().err
    args = ["--out", str(tmp_path), "--scenes", "1", "--resolution", "32", "32", "--patch-size", "64"]
    assert main(args) == 2
    assert "smaller than one" in capsys.readouterr().err
