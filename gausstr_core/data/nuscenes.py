"""nuScenes + Occ3D-nuScenes + precomputed targets on disk: the layout and an index of key frames.

The layout is that of the official GaussTR pipeline (``data/`` next to the code):

```
data/nuscenes/                          the nuScenes dataroot
    v1.0-trainval/*.json                devkit tables (sample, sample_data, calibrated_sensor, ...)
    v1.0-trainval/splits.json           optional custom splits {"train": [scene names], ...}
    samples/CAM_FRONT/<stem>.jpg        key-frame images (one directory per camera)
    gts/<scene name>/<sample token>/labels.npz      Occ3D ground truth
data/nuscenes_metric3d/<stem>.npy       (H, W) float metric depth per image (tools/generate_depth.py)
data/nuscenes_featup/<stem>.npy         (C, h, w) float features per image (tools/generate_featup.py)
```

``<stem>`` is the image file name up to its first dot, as the official ``LoadFeatMaps`` derives it.
The feature and depth directories default to the dataroot's siblings ``<dataroot>_featup`` and
``<dataroot>_metric3d``.

``NuScenesIndex`` reads the tables once through nuscenes-devkit and keeps only plain per-key-frame
records (paths, calibrations, poses), so DataLoader workers never copy the devkit's database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gausstr_core.geometry import quaternion_to_matrix

CAMERA_CHANNELS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
"""Camera order of every batch (mmdetection3d's nuScenes info order, the official pipeline's)."""

DEPTH_SUFFIX = "_metric3d"
FEATURE_SUFFIX = "_featup"
# the official featup model's optional auxiliary labels (Grounded SAM 2, tools/generate_grounded_sam2.py)
SEGMENTATION_SUFFIX = "_grounded_sam2"
SPLITS_FILE = "splits.json"


def image_stem(filename: str) -> str:
    """The official pipeline's per-image key: base name up to the first dot."""
    return os.path.basename(filename).split(".")[0]


@dataclass(frozen=True)
class DatasetLayout:
    """Where the parts of a nuScenes/Occ3D dataset live.

    Attributes:
        dataroot: the nuScenes root (holds ``<version>/``, ``samples/``, ``gts/``).
        version: the table directory name ("v1.0-trainval", "v1.0-mini", ...).
        depth_dir: flat directory of ``<stem>.npy`` depth maps.
        feature_dir: flat directory of ``<stem>.npy`` feature maps.
        segmentation_dir: flat directory of ``<stem>.npy`` (H, W) integer 2D label maps (the
            official featup model's Grounded SAM 2 labels, 0 = unlabelled), or None.
    """

    dataroot: Path
    version: str
    depth_dir: Path
    feature_dir: Path
    segmentation_dir: Path | None = None

    @staticmethod
    def create(
        dataroot: str | os.PathLike,
        version: str | None = None,
        depth_dir: str | os.PathLike | None = None,
        feature_dir: str | os.PathLike | None = None,
        segmentation_dir: str | os.PathLike | None = None,
    ) -> DatasetLayout:
        """A layout with the official defaults for anything not given.

        Args:
            dataroot: nuScenes root directory.
            version: table directory; None = the only ``v1.0-*`` directory in the dataroot.
            depth_dir, feature_dir, segmentation_dir: None = ``<dataroot>_metric3d`` /
                ``<dataroot>_featup`` / ``<dataroot>_grounded_sam2``.
        """
        root = Path(dataroot)
        if version is None:
            version = detect_version(root)
        depth = Path(depth_dir) if depth_dir is not None else root.with_name(root.name + DEPTH_SUFFIX)
        feature = Path(feature_dir) if feature_dir is not None else root.with_name(root.name + FEATURE_SUFFIX)
        segmentation = (
            Path(segmentation_dir)
            if segmentation_dir is not None
            else root.with_name(root.name + SEGMENTATION_SUFFIX)
        )
        return DatasetLayout(root, version, depth, feature, segmentation)

    @property
    def table_dir(self) -> Path:
        return self.dataroot / self.version

    def gt_path(self, scene_name: str, sample_token: str) -> Path:
        return self.dataroot / "gts" / scene_name / sample_token / "labels.npz"

    def depth_path(self, image_filename: str) -> Path:
        return self.depth_dir / (image_stem(image_filename) + ".npy")

    def feature_path(self, image_filename: str) -> Path:
        return self.feature_dir / (image_stem(image_filename) + ".npy")

    def segmentation_path(self, image_filename: str) -> Path:
        if self.segmentation_dir is None:
            raise ValueError("this dataset layout has no segmentation directory")
        return self.segmentation_dir / (image_stem(image_filename) + ".npy")


def detect_version(dataroot: Path) -> str:
    """The single ``v1.0-*`` table directory of a dataroot (ValueError when none or several)."""
    if not dataroot.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot not found: {dataroot}")
    found = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "sample.json").is_file())
    if len(found) != 1:
        raise ValueError(
            f"{dataroot}: expected exactly one table directory (e.g. v1.0-trainval/ with "
            f"sample.json), found {found or 'none'}; pass version= explicitly"
        )
    return found[0]


@dataclass
class KeyFrame:
    """One key frame of a nuScenes-layout dataset (plain data, cheap to pickle).

    Attributes:
        token: sample token.
        scene_name: scene name (the Occ3D ``gts/`` directory).
        timestamp: sample timestamp [us].
        image_paths: V absolute image paths in ``CAMERA_CHANNELS`` order.
        image_sizes: V (H, W) of the images as recorded in sample_data.
        intrinsics: (V, 3, 3) float32 camera matrices of the original images.
        cam_to_ego: (V, 4, 4) float32 camera (optical) -> ego at the camera's time.
        ego_to_global: (4, 4) float64 ego pose of the front camera's reading.
    """

    token: str
    scene_name: str
    timestamp: int
    image_paths: list[str]
    image_sizes: list[tuple[int, int]]
    intrinsics: Tensor
    cam_to_ego: Tensor
    ego_to_global: Tensor


def pose_matrix(rotation_wxyz, translation, dtype=torch.float64) -> Tensor:
    """(4, 4) rigid transform from a nuScenes (w, x, y, z) quaternion and a translation."""
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = quaternion_to_matrix(torch.tensor(rotation_wxyz, dtype=torch.float64))
    out[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return out.to(dtype)


def _load_nuscenes(layout: DatasetLayout):
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading nuScenes tables needs nuscenes-devkit: pip install nuscenes-devkit "
            "(see docs/data.md for installing it next to numpy 2)"
        ) from exc
    if not layout.table_dir.is_dir():
        raise FileNotFoundError(f"nuScenes tables not found: {layout.table_dir}")
    return NuScenes(version=layout.version, dataroot=str(layout.dataroot), verbose=False)


def split_scenes(layout: DatasetLayout, split: str, scene_names: list[str]) -> list[str]:
    """Scene names of ``split`` among ``scene_names`` (the scenes of the tables), in table order.

    Sources, in order: ``<dataroot>/<version>/splits.json`` (the devkit's custom-split file; the
    synthetic writer puts its split there), the devkit's predefined nuScenes splits ("train", "val",
    "test", "mini_train", "mini_val", ...), and "all".
    """
    custom = layout.table_dir / SPLITS_FILE
    if custom.is_file():
        splits = json.loads(custom.read_text())
        if split in splits:
            wanted = set(splits[split])
            return [s for s in scene_names if s in wanted]
    if split == "all":
        return list(scene_names)
    from nuscenes.utils.splits import create_splits_scenes

    predefined = create_splits_scenes()
    if split in predefined:
        wanted = set(predefined[split])
        return [s for s in scene_names if s in wanted]
    custom_names = set(json.loads(custom.read_text())) if custom.is_file() else set()
    known = sorted(set(predefined) | {"all"} | custom_names)
    raise ValueError(f"unknown split {split!r} for {layout.table_dir}; known: {known}")


class NuScenesIndex:
    """The key frames of one split of a nuScenes-layout dataset, in scene and time order.

    Args:
        layout: where the dataset lives.
        split: a split name (see ``split_scenes``).
        channels: camera channels, in batch order.
    """

    def __init__(
        self, layout: DatasetLayout, split: str = "train", channels: tuple[str, ...] = CAMERA_CHANNELS
    ):
        self.layout = layout
        self.split = split
        self.channels = tuple(channels)
        nusc = _load_nuscenes(layout)
        scene_by_name = {s["name"]: s for s in nusc.scene}
        names = split_scenes(layout, split, [s["name"] for s in nusc.scene])
        self.frames: list[KeyFrame] = []
        for name in names:
            token = scene_by_name[name]["first_sample_token"]
            while token:
                sample = nusc.get("sample", token)
                self.frames.append(self._key_frame(nusc, sample, name))
                token = sample["next"]

    def _key_frame(self, nusc, sample: dict, scene_name: str) -> KeyFrame:
        paths, sizes, ks, poses = [], [], [], []
        ego_to_global = None
        for channel in self.channels:
            if channel not in sample["data"]:
                raise ValueError(
                    f"sample {sample['token']} of {scene_name} has no {channel} image "
                    f"(has {sorted(sample['data'])})"
                )
            sd = nusc.get("sample_data", sample["data"][channel])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            if not cs["camera_intrinsic"]:
                raise ValueError(f"{channel} of sample {sample['token']} has no camera_intrinsic")
            paths.append(str(self.layout.dataroot / sd["filename"]))
            sizes.append((int(sd["height"]), int(sd["width"])))
            ks.append(torch.tensor(cs["camera_intrinsic"], dtype=torch.float64))
            poses.append(pose_matrix(cs["rotation"], cs["translation"]))
            if ego_to_global is None:
                ego = nusc.get("ego_pose", sd["ego_pose_token"])
                ego_to_global = pose_matrix(ego["rotation"], ego["translation"])
        return KeyFrame(
            sample["token"],
            scene_name,
            int(sample["timestamp"]),
            paths,
            sizes,
            torch.stack(ks).float(),
            torch.stack(poses).float(),
            ego_to_global,
        )

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> KeyFrame:
        return self.frames[index]

    @property
    def scene_names(self) -> list[str]:
        return list(dict.fromkeys(f.scene_name for f in self.frames))
