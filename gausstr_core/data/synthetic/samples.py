"""One synthetic key frame end to end: world -> camera images, depth, semantics, Occ3D ground truth
and the foundation-model stand-in targets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from gausstr_core.data.occ3d import Occ3DLabels
from gausstr_core.data.synthetic.occupancy import occupancy_labels
from gausstr_core.data.synthetic.raycast import RenderedViews, render_views
from gausstr_core.data.synthetic.rig import CameraRig, nuscenes_rig
from gausstr_core.data.synthetic.targets import (
    DepthTargetConfig,
    FeatureTargetConfig,
    depth_targets,
    feature_targets,
    sample_generator,
)
from gausstr_core.data.synthetic.world import World, WorldConfig, generate_world
from gausstr_core.grid import VoxelGrid


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that decides what a synthetic dataset contains (besides the seed).

    Attributes:
        image_size: (H, W) of the rendered camera images (the nuScenes rig scaled to it).
        samples_per_scene: key frames per world (the ego drives a few metres between them).
        world: street layout parameters.
        features: synthetic foundation-model feature maps.
        depth: synthetic metric-depth predictions.
        subsamples: occupancy sub-samples per voxel edge.
        antialias: odd RGB supersampling factor (depth and labels stay at pixel centres).
        visibility_spacing: (spacing, ground_spacing) of the ``mask_camera`` rays in voxels
            (``occupancy.visibility_rays``); larger is faster and misses more grazing voxels.
        grid: the occupancy grid (Occ3D-nuScenes by default).
    """

    image_size: tuple[int, int] = (225, 400)
    samples_per_scene: int = 1
    world: WorldConfig = field(default_factory=WorldConfig)
    features: FeatureTargetConfig = field(default_factory=FeatureTargetConfig)
    depth: DepthTargetConfig = field(default_factory=DepthTargetConfig)
    subsamples: int = 2
    antialias: int = 1
    visibility_spacing: tuple[float, float] = (0.8, 0.6)
    grid: VoxelGrid = field(default_factory=VoxelGrid)

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (H, W) with both >= 8, got {self.image_size}")
        if self.samples_per_scene < 1:
            raise ValueError(f"samples_per_scene must be >= 1, got {self.samples_per_scene}")

    def rig(self) -> CameraRig:
        return nuscenes_rig(*self.image_size)


@dataclass
class SyntheticSample:
    """A rendered key frame with its ground truth and targets.

    Attributes:
        scene_index, sample_index: position in the dataset.
        rig: the cameras (intrinsics of the ``image_size`` images, poses in the ego frame).
        ego_to_world: (4, 4) float64 pose of the ego in the world frame.
        views: RGB, true depth, per-pixel Occ3D class and synthetic name id.
        labels: Occ3D semantics, mask_lidar, mask_camera in the ego frame (None when not made).
        depth_target: (V, H, W) float32 synthetic metric-depth prediction (0 = invalid).
        features: (V, D, h, w) synthetic foundation-model features, or None without embeddings.
    """

    scene_index: int
    sample_index: int
    rig: CameraRig
    ego_to_world: Tensor
    views: RenderedViews
    labels: Occ3DLabels | None
    depth_target: Tensor
    features: Tensor | None


def world_seed(seed: int, scene_index: int) -> int:
    """The seed of scene ``scene_index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, scene_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_world(seed: int, scene_index: int, config: SyntheticConfig) -> World:
    return generate_world(world_seed(seed, scene_index), config.world, config.samples_per_scene)


def generate_sample(
    seed: int,
    scene_index: int,
    sample_index: int,
    config: SyntheticConfig,
    embeddings: Tensor | None,
    world: World | None = None,
    with_labels: bool = True,
) -> SyntheticSample:
    """Render key frame ``sample_index`` of scene ``scene_index``; deterministic per arguments.

    Args:
        seed: dataset seed.
        scene_index, sample_index: which key frame.
        config: what to generate.
        embeddings: (K, D) embedding of every synthetic name (``vocabulary.name_strings()`` order),
            or None to skip the feature targets.
        world: the scene's world when already generated (else generated here).
        with_labels: compute the Occ3D ground truth (semantics and visibility masks); False leaves
            ``labels`` None, to save time when only training targets are needed.
    """
    world = world or make_world(seed, scene_index, config)
    rig = config.rig()
    scene = world.sample(sample_index)
    views = render_views(scene, rig, antialias=config.antialias)
    labels = None
    if with_labels:
        labels = occupancy_labels(scene, rig, config.grid, config.subsamples, *config.visibility_spacing)
    depth = depth_targets(views.depth, config.depth, sample_generator(seed, scene_index, sample_index, 0))
    features = None
    if embeddings is not None:
        features = feature_targets(
            views.name_id, embeddings, config.features, sample_generator(seed, scene_index, sample_index, 1)
        )
    return SyntheticSample(
        scene_index, sample_index, rig, world.ego_to_world(sample_index), views, labels, depth, features
    )
