"""Datasets and collation: CameraBatches for training, ground truth only for evaluation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gausstr_core.batch import CameraBatch
from gausstr_core.data import datasets as ds
from gausstr_core.data.datasets import OccupancyDataset, SceneItem, SyntheticWorldDataset, collate_scenes
from gausstr_core.data.nuscenes import image_stem
from gausstr_core.data.synthetic import FeatureTargetConfig, SyntheticConfig, name_strings, random_embeddings
from gausstr_core.data.synthetic.writer import write_dataset
from gausstr_core.data.transforms import resize_matrix

SEED = 5
CONFIG = SyntheticConfig(
    image_size=(48, 80),
    samples_per_scene=2,
    visibility_spacing=(3.0, 3.0),
    features=FeatureTargetConfig(patch_size=8),
)
EMB = random_embeddings(len(name_strings()), 8, seed=2)
INPUT = (24, 40)
# What a training item may carry: the model input and the label-free targets.
TRAINING_TENSORS = {"images", "intrinsics", "cam_to_ego", "image_aug", "depth", "features", "ego_to_global"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return write_dataset(
        out, 2, seed=SEED, config=CONFIG, embeddings=EMB, image_format="png", val_fraction=0.5, progress=False
    ).dataroot


def test_training_items_are_model_inputs_and_targets(root):
    data = OccupancyDataset(root, "all", input_size=INPUT)
    assert len(data) == 4
    item = data[0]
    assert item.images.shape == (6, 3, 24, 40) and item.images.dtype == torch.float32
    assert float(item.images.min()) >= 0 and float(item.images.max()) <= 1
    assert item.depth.shape == (6, 24, 40) and item.features.shape == (6, 8, 6, 10)
    torch.testing.assert_close(item.image_aug[0], resize_matrix((48, 80), INPUT))
    torch.testing.assert_close(item.intrinsics, CONFIG.rig().intrinsics())
    assert item.ground_truth is None and item.scene == "synth-5-00000"


def test_labels_never_reach_the_trainer(root, tmp_path, monkeypatch):
    # 1. A training item holds nothing but model inputs and label-free targets.
    for data in (
        OccupancyDataset(root, "all", input_size=INPUT),
        SyntheticWorldDataset(SEED, 1, CONFIG, input_size=INPUT, embeddings=EMB),
    ):
        item = data[1]
        tensors = {k for k, v in vars(item).items() if isinstance(v, torch.Tensor)}
        assert tensors == TRAINING_TENSORS, tensors
        assert item.ground_truth is None
        others = {k: v for k, v in vars(item).items() if k not in tensors}
        assert all(isinstance(v, str) or v is None for v in others.values()), others
    # 2. A training dataset never opens a ground-truth file ...
    opened = []
    real_load = np.load
    monkeypatch.setattr(
        np, "load", lambda path, *a, **k: (opened.append(str(path)), real_load(path, *a, **k))[1]
    )
    monkeypatch.setattr(ds, "load_labels", lambda *a, **k: pytest.fail("a training dataset read labels"))
    items = [OccupancyDataset(root, "all", input_size=INPUT)[i] for i in range(4)]
    assert opened and not any("labels.npz" in p or "/gts/" in p for p in opened)
    monkeypatch.undo()
    # 3. ... so its items are identical when the ground truth is not on disk at all.
    copy = tmp_path / "nuscenes"
    shutil.copytree(root, copy)
    for name in ("nuscenes_metric3d", "nuscenes_featup"):
        shutil.copytree(root.with_name(name), tmp_path / name)
    shutil.rmtree(copy / "gts")
    without = OccupancyDataset(copy, "all", input_size=INPUT)
    for i, item in enumerate(items):
        other = without[i]
        for name in TRAINING_TENSORS:
            assert torch.equal(getattr(item, name), getattr(other, name)), name
    with pytest.raises(FileNotFoundError, match="labels"):
        OccupancyDataset(copy, "all", input_size=INPUT, with_ground_truth=True)[0]


def test_in_memory_worlds_equal_the_written_dataset(root):
    disk = OccupancyDataset(root, "all", input_size=INPUT)
    memory = SyntheticWorldDataset(SEED, 2, CONFIG, input_size=INPUT, embeddings=EMB)
    assert len(memory) == len(disk) == 4
    for i in (0, 3):
        a, b = disk[i], memory[i]
        assert a.token == b.token and a.scene == b.scene
        for name in TRAINING_TENSORS:
            torch.testing.assert_close(
                getattr(a, name).double(), getattr(b, name).double(), rtol=1e-6, atol=1e-6, msg=name
            )
    assert memory[0] is memory[0]  # cached


def test_evaluation_items_carry_occ3d_ground_truth(root):
    data = OccupancyDataset(root, "val", input_size=INPUT, with_ground_truth=True)
    assert len(data) == 2 and {f.scene_name for f in data.frames} == {"synth-5-00001"}
    gt = data[0].ground_truth
    assert gt.semantics.shape == (200, 200, 16) and gt.semantics.dtype == torch.uint8
    assert gt.mask_camera.dtype == torch.bool and bool(gt.mask_camera.any())
    memory = SyntheticWorldDataset(
        SEED, 1, CONFIG, input_size=INPUT, embeddings=EMB, with_ground_truth=True, first_scene=1
    )
    assert torch.equal(memory[0].ground_truth.semantics, gt.semantics)


def test_collate_makes_camera_batches(root):
    loader = DataLoader(
        OccupancyDataset(root, "all", input_size=INPUT, with_ground_truth=True),
        batch_size=2,
        collate_fn=collate_scenes,
    )
    batch = next(iter(loader))
    assert isinstance(batch.cameras, CameraBatch)
    assert batch.cameras.images.shape == (2, 6, 3, 24, 40)
    assert batch.cameras.depth.shape == (2, 6, 24, 40) and batch.cameras.features.shape == (2, 6, 8, 6, 10)
    assert batch.ground_truth.semantics.shape == (2, 200, 200, 16)
    assert batch.ego_to_global.shape == (2, 4, 4) and len(batch.tokens) == 2
    moved = batch.to(torch.float64)
    assert moved.cameras.images.dtype == torch.float64
    train = collate_scenes([OccupancyDataset(root, "all", input_size=INPUT)[0]])
    assert train.ground_truth is None


def test_optional_targets_and_feature_resampling(root):
    data = OccupancyDataset(root, "all", input_size=INPUT, load_depth=False, load_features=False)
    item = data[0]
    assert item.depth is None and item.features is None
    assert collate_scenes([item, data[1]]).cameras.depth is None
    resampled = OccupancyDataset(root, "all", input_size=INPUT, feature_size=(3, 5))[0]
    assert resampled.features.shape == (6, 8, 3, 5)
    native = OccupancyDataset(root, "all")[0]
    assert native.images.shape == (6, 3, 48, 80)
    torch.testing.assert_close(native.image_aug, torch.eye(3).expand(6, 3, 3))


def test_bad_input_gets_clear_errors(root, tmp_path):
    with pytest.raises(ValueError, match="input_size"):
        OccupancyDataset(root, "all", input_size=(0, 40))
    with pytest.raises(FileNotFoundError, match="depth directory not found"):
        OccupancyDataset(root, "all", depth_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown split"):
        OccupancyDataset(root, "test_split_that_does_not_exist")
    with pytest.raises(ValueError, match="synthetic names"):
        SyntheticWorldDataset(0, 1, CONFIG, embeddings=torch.zeros(3, 8))
    data = OccupancyDataset(root, "all", input_size=INPUT)
    a, b = data[0], data[1]
    b_small = SceneItem(**{**vars(b), "images": b.images[..., :20]})
    with pytest.raises(ValueError, match="same views and input size"):
        collate_scenes([a, b_small])
    with pytest.raises(ValueError, match="only some have features"):
        collate_scenes([a, SceneItem(**{**vars(b), "features": None})])
    # An image whose size disagrees with its calibration.
    copy = tmp_path / "nuscenes"
    shutil.copytree(root, copy)
    for name in ("nuscenes_metric3d", "nuscenes_featup"):
        shutil.copytree(root.with_name(name), tmp_path / name)
    from PIL import Image

    broken = OccupancyDataset(copy, "all")
    path = broken.frames[0].image_paths[2]
    Image.new("RGB", (10, 10)).save(path, format="PNG")
    with pytest.raises(ValueError, match="sample_data"):
        broken[0]


def _write_labels(root, directory, size, dtype=np.uint8):
    """One (H, W) label map per camera image: a pattern of the pixel row and column, so that a resize
    can be checked against a nearest-neighbour pick."""
    directory.mkdir(exist_ok=True)
    data = OccupancyDataset(root, "all")
    h, w = size
    rows = np.arange(h)[:, None] * 7 // h
    cols = np.arange(w)[None, :] * 3 // w
    for frame in data.frames:
        for path in frame.image_paths:
            np.save(directory / (image_stem(path) + ".npy"), (1 + rows * 3 + cols).astype(dtype))


def test_grounded_sam_labels_are_resized_by_nearest_neighbour_and_batched(root, tmp_path):
    labels_dir = tmp_path / "sam"
    _write_labels(root, labels_dir, (96, 160))  # twice the 48 x 80 images
    data = OccupancyDataset(
        root, "all", input_size=INPUT, load_segmentation=True, segmentation_dir=labels_dir
    )
    item = data[0]
    assert item.segmentation.shape == (6, *INPUT) and item.segmentation.dtype == torch.int64
    full = torch.from_numpy(np.load(next(labels_dir.iterdir())).astype(np.int64))
    want = torch.nn.functional.interpolate(full[None, None].float(), size=INPUT, mode="nearest-exact")[0, 0]
    assert torch.equal(item.segmentation[0], want.long())
    assert set(item.segmentation.unique().tolist()) <= set(range(1, 22))
    batch = collate_scenes([item, data[1]]).cameras
    assert batch.segmentation.shape == (2, 6, *INPUT)
    # training items without the flag carry none (the label-free default)
    assert OccupancyDataset(root, "all", input_size=INPUT)[0].segmentation is None


def test_bad_grounded_sam_labels_get_clear_errors(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="segmentation label directory not found"):
        OccupancyDataset(root, "all", load_segmentation=True, segmentation_dir=tmp_path / "none")
    # the official generator's float masks of whole numbers load; fractions do not
    floats = tmp_path / "floats"
    _write_labels(root, floats, (48, 80), dtype=np.float32)
    item = OccupancyDataset(root, "all", load_segmentation=True, segmentation_dir=floats)[0]
    assert item.segmentation.dtype == torch.int64 and int(item.segmentation.max()) == 21
    for path in floats.iterdir():
        np.save(path, np.load(path) + 0.5)
    with pytest.raises(ValueError, match="whole numbers"):
        OccupancyDataset(root, "all", load_segmentation=True, segmentation_dir=floats)[0]
    squashed = tmp_path / "squashed"
    _write_labels(root, squashed, (48, 48))
    with pytest.raises(ValueError, match="aspect ratio"):
        OccupancyDataset(root, "all", load_segmentation=True, segmentation_dir=squashed)[0]
    with pytest.raises(ValueError, match="segmentation must be"):
        CameraBatch(
            torch.zeros(1, 6, 3, 8, 8),
            torch.eye(3).expand(1, 6, 3, 3),
            torch.eye(4).expand(1, 6, 4, 4),
            torch.eye(3).expand(1, 6, 3, 3),
            segmentation=torch.zeros(1, 6, 4, 4, dtype=torch.int64),
        )


def test_the_generator_writes_2d_labels_that_the_dataset_reads_from_their_default_place(tmp_path):
    from gausstr_core.data.synthetic import generate_sample
    from gausstr_core.data.synthetic.targets import segmentation_targets

    layout = write_dataset(
        tmp_path,
        1,
        seed=SEED,
        config=CONFIG,
        embeddings=EMB,
        image_format="png",
        progress=False,
        segmentation_labels=True,
    )
    assert layout.segmentation_dir == tmp_path / "nuscenes_grounded_sam2"
    assert len(list(layout.segmentation_dir.glob("*.npy"))) == 6 * CONFIG.samples_per_scene
    data = OccupancyDataset(layout.dataroot, "all", input_size=CONFIG.image_size, load_segmentation=True)
    item = data[0]
    want = segmentation_targets(generate_sample(SEED, 0, 0, CONFIG, None, with_labels=False).views.occ_class)
    assert torch.equal(item.segmentation, want.long())
    # without the flag nothing is written (the label-free default)
    plain = write_dataset(tmp_path / "plain", 1, seed=SEED, config=CONFIG, image_format="png", progress=False)
    assert not plain.segmentation_dir.exists()


def test_a_model_with_segmentation_heads_needs_2d_labels_to_train(root, tmp_path):
    from gausstr_core.data.synthetic.writer import EMBEDDINGS_FILE
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.config import TrainConfig
    from gausstr_core.train.data import build_dataset

    heads = build_model_config(
        TrainConfig(
            preset="tiny",
            overrides=["model.head.segment_classes=5", "model.head.segment_input_dim=32"],
        )
    )
    with pytest.raises(ValueError, match="segment_classes=0"):
        build_dataset("synthetic:scenes=1,seed=0", "train", heads, training=True)
    # a copy without the synthetic text record, as real nuScenes without Grounded SAM 2 labels
    copy = tmp_path / "nuscenes"
    shutil.copytree(root, copy)
    (copy / EMBEDDINGS_FILE).unlink()
    for name in ("nuscenes_metric3d", "nuscenes_featup"):
        shutil.copytree(root.with_name(name), tmp_path / name)
    with pytest.raises(FileNotFoundError, match="segment_classes=0"):
        build_dataset(str(copy), "all", heads, training=True)
    # evaluation never reads them
    assert build_dataset(str(copy), "all", heads, training=False)[0].segmentation is None
    _write_labels(copy, tmp_path / "nuscenes_grounded_sam2", (48, 80))
    item = build_dataset(str(copy), "all", heads, training=True)[0]
    assert item.segmentation.shape == (6, *heads.model.image_size)
