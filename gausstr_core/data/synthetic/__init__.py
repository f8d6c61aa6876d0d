"""The synthetic multi-camera driving world: procedural streets of analytic solids, a nuScenes-like
6-camera rig, exact ray-cast images/depth/semantics, Occ3D ground truth, synthetic foundation-model
targets, and a writer of the nuScenes / Occ3D / official-GaussTR on-disk layout (``gausstr-synth``).

Typical use:

    from gausstr_core.data.synthetic import SyntheticConfig, generate_sample, random_embeddings, name_strings
    sample = generate_sample(seed=0, scene_index=0, sample_index=0, config=SyntheticConfig(),
                             embeddings=random_embeddings(len(name_strings()), 64))
"""

from gausstr_core.data.synthetic.rig import CameraRig, CameraSpec, nuscenes_rig
from gausstr_core.data.synthetic.samples import SyntheticConfig, SyntheticSample, generate_sample, world_seed
from gausstr_core.data.synthetic.targets import (
    DepthTargetConfig,
    FeatureTargetConfig,
    name_embeddings,
    random_embeddings,
)
from gausstr_core.data.synthetic.vocabulary import SYNTHETIC_NAMES, name_strings, synthetic_vocabulary
from gausstr_core.data.synthetic.world import WorldConfig, generate_world

__all__ = [
    "SYNTHETIC_NAMES",
    "CameraRig",
    "CameraSpec",
    "DepthTargetConfig",
    "FeatureTargetConfig",
    "SyntheticConfig",
    "SyntheticSample",
    "WorldConfig",
    "generate_sample",
    "generate_world",
    "name_embeddings",
    "name_strings",
    "nuscenes_rig",
    "random_embeddings",
    "synthetic_vocabulary",
    "world_seed",
]
