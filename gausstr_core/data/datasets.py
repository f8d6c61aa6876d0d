"""Torch datasets of multi-camera key frames and the collate function that makes ``CameraBatch``es.

* ``OccupancyDataset``: a dataset on disk in the nuScenes / Occ3D / official-GaussTR layout
  (``gausstr_core.data.nuscenes``): real nuScenes or written by ``gausstr-synth``.
* ``SyntheticWorldDataset``: synthetic key frames generated on the fly (and cached in memory).

Items are ``SceneItem``s: images resized to the network input, the camera model, and the training
targets (metric depth, foundation-model features). Ground truth (Occ3D semantics and visibility
masks) is only attached when a dataset is built with ``with_ground_truth=True`` (evaluation); a
training dataset never opens a ground-truth file and never carries a label, so that the training
signal is provably label-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gausstr_core.batch import CameraBatch
from gausstr_core.data.nuscenes import CAMERA_CHANNELS, DatasetLayout, KeyFrame, NuScenesIndex
from gausstr_core.data.occ3d import Occ3DLabels, load_labels
from gausstr_core.data.transforms import resize_nearest, resize_views
from gausstr_core.grid import VoxelGrid


@dataclass
class SceneItem:
    """One key frame, ready for the model.

    Attributes:
        images: (V, 3, H, W) float32 RGB in [0, 1] at the network input size.
        intrinsics: (V, 3, 3) pinhole matrices of the original images.
        cam_to_ego: (V, 4, 4) camera -> ego transforms.
        image_aug: (V, 3, 3) original -> input pixel maps.
        depth: (V, H, W) float32 metric depth target [m] (0 = invalid; a metric-depth network's far
            field is a large depth, see gausstr_core.data.depth), or None.
        features: (V, C, h, w) float32 foundation-model features, or None.
        segmentation: (V, H, W) int64 2D labels at the network input size (the official featup
            model's Grounded SAM 2 labels; 0 = unlabelled), or None.
        ego_to_global: (4, 4) float64 ego pose (for multi-frame metrics); identity when unknown.
        token: sample token; scene: scene name.
        ground_truth: Occ3D labels (evaluation datasets only), else None.
    """

    images: Tensor
    intrinsics: Tensor
    cam_to_ego: Tensor
    image_aug: Tensor
    depth: Tensor | None
    features: Tensor | None
    ego_to_global: Tensor
    token: str
    scene: str
    ground_truth: Occ3DLabels | None = None
    segmentation: Tensor | None = None


@dataclass
class OccupancyGroundTruth:
    """Batched Occ3D ground truth.

    Attributes:
        semantics: (B, X, Y, Z) uint8 (17 = free).
        mask_camera: (B, X, Y, Z) bool.
        mask_lidar: (B, X, Y, Z) bool.
    """

    semantics: Tensor
    mask_camera: Tensor
    mask_lidar: Tensor

    def to(self, *args, **kwargs) -> OccupancyGroundTruth:
        return OccupancyGroundTruth(*(getattr(self, f.name).to(*args, **kwargs) for f in fields(self)))

    def pin_memory(self) -> OccupancyGroundTruth:
        return OccupancyGroundTruth(*(getattr(self, f.name).pin_memory() for f in fields(self)))


@dataclass
class SceneBatch:
    """A collated batch: the model input, optional ground truth, and which key frames it holds."""

    cameras: CameraBatch
    ground_truth: OccupancyGroundTruth | None
    ego_to_global: Tensor
    tokens: list[str]
    scenes: list[str]

    def to(self, *args, **kwargs) -> SceneBatch:
        gt = self.ground_truth.to(*args, **kwargs) if self.ground_truth is not None else None
        return SceneBatch(self.cameras.to(*args, **kwargs), gt, self.ego_to_global, self.tokens, self.scenes)

    def pin_memory(self) -> SceneBatch:
        cams = self.cameras
        pinned = CameraBatch(
            **{
                f.name: (
                    getattr(cams, f.name).pin_memory()
                    if isinstance(getattr(cams, f.name), Tensor)
                    else getattr(cams, f.name)
                )
                for f in fields(cams)
            }
        )
        gt = self.ground_truth.pin_memory() if self.ground_truth is not None else None
        return SceneBatch(pinned, gt, self.ego_to_global, self.tokens, self.scenes)


def _stack_optional(items: list[SceneItem], name: str) -> Tensor | None:
    values = [getattr(i, name) for i in items]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"cannot batch items where only some have {name}")
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) != 1:
        raise ValueError(f"cannot batch {name} of different shapes {sorted(shapes)}")
    return torch.stack(values)


def collate_scenes(items: list[SceneItem]) -> SceneBatch:
    """Stack ``SceneItem``s into a ``SceneBatch`` (a ``CameraBatch`` plus optional ground truth)."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    sizes = {tuple(i.images.shape) for i in items}
    if len(sizes) != 1:
        raise ValueError(f"all items of a batch need the same views and input size, got {sorted(sizes)}")
    cameras = CameraBatch(
        images=torch.stack([i.images for i in items]),
        intrinsics=torch.stack([i.intrinsics for i in items]),
        cam_to_ego=torch.stack([i.cam_to_ego for i in items]),
        image_aug=torch.stack([i.image_aug for i in items]),
        depth=_stack_optional(items, "depth"),
        features=_stack_optional(items, "features"),
        segmentation=_stack_optional(items, "segmentation"),
    )
    gts = [i.ground_truth for i in items]
    ground_truth = None
    if any(g is not None for g in gts):
        if not all(g is not None for g in gts):
            raise ValueError("cannot batch items where only some have ground truth")
        ground_truth = OccupancyGroundTruth(
            semantics=torch.stack([g.semantics for g in gts]),
            mask_camera=torch.stack([g.mask_camera for g in gts]),
            mask_lidar=torch.stack([g.mask_lidar for g in gts]),
        )
    return SceneBatch(
        cameras,
        ground_truth,
        torch.stack([i.ego_to_global for i in items]),
        [i.token for i in items],
        [i.scene for i in items],
    )


def _resize_features(features: Tensor, size: tuple[int, int] | None) -> Tensor:
    if size is None or tuple(features.shape[-2:]) == tuple(size):
        return features
    # Area averaging when shrinking (a patch of the target grid is the mean of what it covers),
    # bilinear when enlarging.
    shrink = features.shape[-2] >= size[0] and features.shape[-1] >= size[1]
    if shrink:
        return F.adaptive_avg_pool2d(features, size)
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def _check_size(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (H, W) with H, W >= 1, got {input_size}")
    return int(input_size[0]), int(input_size[1])


class MissingSegmentationLabels(FileNotFoundError):
    """A dataset asked for 2D segmentation labels has no label directory."""


class OccupancyDataset(Dataset):
    """Key frames of a nuScenes / Occ3D / precomputed-targets dataset on disk.

    Args:
        root: the nuScenes dataroot (``data/nuscenes``), real or synthetic.
        split: split name ("train", "val", "mini_train", "all", or one of ``<version>/splits.json``).
        input_size: (H, W) network input; images are resized with exact intrinsics (``image_aug``).
            None keeps the stored size.
        with_ground_truth: attach the Occ3D labels (evaluation). Training datasets leave it False:
            they never read a label file.
        load_depth: read ``<depth_dir>/<stem>.npy`` metric depth targets.
        load_features: read ``<feature_dir>/<stem>.npy`` feature targets.
        load_segmentation: read ``<segmentation_dir>/<stem>.npy`` (H, W) integer 2D labels (the
            official featup model's Grounded SAM 2 labels), resized to the input by nearest neighbour.
        version: nuScenes table directory (None: the only one in ``root``).
        depth_dir, feature_dir, segmentation_dir: None = ``<root>_metric3d``, ``<root>_featup`` and
            ``<root>_grounded_sam2`` (official layout).
        feature_size: (h, w) to resample features to (None = as stored).
        cache: keep loaded items in memory (per process; for small datasets read many times).
        channels: camera channels in batch order.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        input_size: tuple[int, int] | None = None,
        with_ground_truth: bool = False,
        load_depth: bool = True,
        load_features: bool = True,
        load_segmentation: bool = False,
        version: str | None = None,
        depth_dir: str | os.PathLike | None = None,
        feature_dir: str | os.PathLike | None = None,
        segmentation_dir: str | os.PathLike | None = None,
        feature_size: tuple[int, int] | None = None,
        cache: bool = False,
        channels: tuple[str, ...] = CAMERA_CHANNELS,
    ):
        self.layout = DatasetLayout.create(root, version, depth_dir, feature_dir, segmentation_dir)
        self.index = NuScenesIndex(self.layout, split, channels)
        if len(self.index) == 0:
            raise ValueError(f"split {split!r} of {self.layout.table_dir} has no key frames")
        self.input_size = _check_size(input_size)
        self.with_ground_truth = with_ground_truth
        self.load_depth = load_depth
        self.load_features = load_features
        self.load_segmentation = load_segmentation
        self.feature_size = _check_size(feature_size)
        for flag, directory, what in (
            (load_depth, self.layout.depth_dir, "depth"),
            (load_features, self.layout.feature_dir, "feature"),
        ):
            if flag and not directory.is_dir():
                raise FileNotFoundError(
                    f"{what} directory not found: {directory} (pass {what}_dir=..., or "
                    f"load_{'features' if what == 'feature' else 'depth'}=False)"
                )
        if load_segmentation and not self.layout.segmentation_dir.is_dir():
            raise MissingSegmentationLabels(
                f"segmentation label directory not found: {self.layout.segmentation_dir} (the official "
                f"featup model's Grounded SAM 2 labels, one <image stem>.npy of (H, W) integer labels per "
                f"camera image; pass segmentation_dir=..., or load_segmentation=False)"
            )
        self._cache: dict[int, SceneItem] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def frames(self) -> list[KeyFrame]:
        return self.index.frames

    def __getitem__(self, index: int) -> SceneItem:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self._load(self.index[index])
        if self._cache is not None:
            self._cache[index] = item
        return item

    def _load(self, frame: KeyFrame) -> SceneItem:
        from PIL import Image

        images, depths, augs, feats, labels = [], [], [], [], []
        for v, path in enumerate(frame.image_paths):
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
            if array.shape[:2] != frame.image_sizes[v]:
                raise ValueError(
                    f"{path} is {array.shape[1]}x{array.shape[0]} but its sample_data (and "
                    f"intrinsics) say {frame.image_sizes[v][1]}x{frame.image_sizes[v][0]}"
                )
            image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None]
            depth = None
            if self.load_depth:
                depth_path = self.layout.depth_path(path)
                depth = _load_npy(depth_path, "depth")
                if depth.dim() != 2 or tuple(depth.shape) != frame.image_sizes[v]:
                    raise ValueError(
                        f"{depth_path}: depth must be (H, W) = {frame.image_sizes[v]} like its "
                        f"image, got {tuple(depth.shape)}"
                    )
                depth = depth[None]
            size = self.input_size or frame.image_sizes[v]
            image, depth, aug = resize_views(image, size, depth)
            images.append(image[0])
            augs.append(aug[0])
            if depth is not None:
                depths.append(depth[0])
            if self.load_segmentation:
                labels.append(self._load_segmentation(self.layout.segmentation_path(path), frame, v, size))
            if self.load_features:
                feature_path = self.layout.feature_path(path)
                feature = _load_npy(feature_path, "feature")
                if feature.dim() != 3:
                    raise ValueError(
                        f"{feature_path}: features must be (C, h, w), got {tuple(feature.shape)}"
                    )
                feats.append(feature)
        features = None
        if feats:
            shapes = {tuple(f.shape) for f in feats}
            if len(shapes) != 1:
                raise ValueError(f"feature maps of sample {frame.token} differ in shape: {sorted(shapes)}")
            features = _resize_features(torch.stack(feats), self.feature_size)
        ground_truth = None
        if self.with_ground_truth:
            ground_truth = load_labels(self.layout.gt_path(frame.scene_name, frame.token), VoxelGrid().shape)
        return SceneItem(
            images=torch.stack(images),
            intrinsics=frame.intrinsics.clone(),
            cam_to_ego=frame.cam_to_ego.clone(),
            image_aug=torch.stack(augs),
            depth=torch.stack(depths) if depths else None,
            features=features,
            ego_to_global=frame.ego_to_global.clone(),
            token=frame.token,
            scene=frame.scene_name,
            ground_truth=ground_truth,
            segmentation=torch.stack(labels) if labels else None,
        )

    @staticmethod
    def _load_segmentation(path: Path, frame: KeyFrame, view: int, size: tuple[int, int]) -> Tensor:
        """(H, W) integer labels of one camera image, resized to the input by nearest neighbour (a
        label map at any resolution of the image's aspect ratio is accepted, as the official loader
        scales it with the image). The official generator saves SAM 2's float masks filled with the
        class numbers, so float arrays of whole numbers are accepted too."""
        if not path.is_file():
            raise FileNotFoundError(f"segmentation labels not found: {path}")
        array = np.load(path, allow_pickle=False)
        whole = np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_
        if np.issubdtype(array.dtype, np.floating):
            whole = bool(np.all(np.isfinite(array)) and np.all(array == np.floor(array)))
        if array.ndim != 2 or not whole or (array.size and array.min() < 0):
            raise ValueError(
                f"{path}: labels must be a (H, W) array of non-negative whole numbers, got "
                f"{array.dtype} {array.shape}"
            )
        h, w = frame.image_sizes[view]
        if abs(array.shape[0] * w - array.shape[1] * h) > max(h, w):
            raise ValueError(
                f"{path}: labels of {array.shape[1]}x{array.shape[0]} do not have the aspect ratio of "
                f"their {w}x{h} image"
            )
        return resize_nearest(torch.from_numpy(array.astype(np.int64)), size)


def _load_npy(path: Path, what: str) -> Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    array = np.load(path, allow_pickle=False)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: {what} must be a float array, got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array)).float()


class SyntheticWorldDataset(Dataset):
    """Synthetic key frames generated on the fly (deterministic per seed), optionally cached.

    Item i is key frame ``i % samples_per_scene`` of scene ``i // samples_per_scene`` of the same
    worlds ``gausstr-synth`` writes with this seed and config, so the in-memory and on-disk datasets
    agree.

    Args:
        seed: dataset seed.
        num_scenes: number of worlds.
        config: ``SyntheticConfig`` (image size, content, target noise); default 225 x 400 images.
        input_size: (H, W) network input (None = the rendered size).
        embeddings: (K, D) embeddings of ``vocabulary.name_strings()`` for feature targets; None =
            no features.
        with_ground_truth: attach the Occ3D labels (evaluation only).
        feature_size: (h, w) to resample features to (None = as generated).
        cache: keep generated items in memory (generation costs seconds per key frame).
        first_scene: index of the first scene (to take a disjoint range of worlds as a held-out set).
    """

    def __init__(
        self,
        seed: int,
        num_scenes: int,
        config=None,
        input_size: tuple[int, int] | None = None,
        embeddings: Tensor | None = None,
        with_ground_truth: bool = False,
        feature_size: tuple[int, int] | None = None,
        cache: bool = True,
        first_scene: int = 0,
    ):
        from gausstr_core.data.synthetic.samples import SyntheticConfig
        from gausstr_core.data.synthetic.vocabulary import name_strings

        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
        self.seed, self.num_scenes, self.first_scene = seed, num_scenes, first_scene
        self.config = config or SyntheticConfig()
        if embeddings is not None and (embeddings.dim() != 2 or embeddings.shape[0] != len(name_strings())):
            raise ValueError(
                f"embeddings must be (K, D) with K = {len(name_strings())} synthetic names, "
                f"got {tuple(embeddings.shape)}"
            )
        self.embeddings = embeddings.detach().float().cpu() if embeddings is not None else None
        self.input_size = _check_size(input_size)
        self.feature_size = _check_size(feature_size)
        self.with_ground_truth = with_ground_truth
        self._cache: dict[int, SceneItem] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_scenes * self.config.samples_per_scene

    def __getitem__(self, index: int) -> SceneItem:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self._generate(index)
        if self._cache is not None:
            self._cache[index] = item
        return item

    def _generate(self, index: int) -> SceneItem:
        from gausstr_core.data.synthetic.samples import generate_sample
        from gausstr_core.data.synthetic.writer import scene_name, token

        scene = self.first_scene + index // self.config.samples_per_scene
        k = index % self.config.samples_per_scene
        sample = generate_sample(
            self.seed, scene, k, self.config, self.embeddings, with_labels=self.with_ground_truth
        )
        size = self.input_size or self.config.image_size
        images, depth, aug = resize_views(sample.views.rgb, size, sample.depth_target)
        features = sample.features.float() if sample.features is not None else None
        if features is not None:
            features = _resize_features(features, self.feature_size)
        # Only the model inputs and the label-free targets leave this function: the rendered
        # per-pixel classes (sample.views.occ_class / name_id) and the true depth stay behind.
        return SceneItem(
            images=images,
            intrinsics=sample.rig.intrinsics(),
            cam_to_ego=sample.rig.cam_to_ego(),
            image_aug=aug,
            depth=depth,
            features=features,
            ego_to_global=sample.ego_to_world,
            token=token("sample", self.seed, scene, k),
            scene=scene_name(self.seed, scene),
            ground_truth=sample.labels if self.with_ground_truth else None,
        )
