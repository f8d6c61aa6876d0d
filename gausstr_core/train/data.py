"""What the trainer and the evaluator need from the data side: datasets from a data spec, collate
functions, the evaluation vocabulary, and the deployment checkpoint.

Data specs (``--data``):

* a directory in the nuScenes / Occ3D layout (written by ``gausstr-synth`` or real nuScenes with
  Occ3D ground truth and precomputed targets): ``OccupancyDataset`` over one of its splits;
* ``synthetic:scenes=N,seed=S[,first_scene=F,image_size=[H,W],samples_per_scene=K]``: worlds of
  the synthetic world generated in memory (``SyntheticWorldDataset``; cached, so a few dozen scenes
  cost their generation once), feature targets from the model's own text encoder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gausstr_core.batch import CameraBatch


def parse_synthetic_spec(spec: str) -> dict[str, Any]:
    """``synthetic:scenes=8,seed=3`` -> {"scenes": 8, "seed": 3} (values parsed as YAML scalars)."""
    import yaml

    if not spec.startswith("synthetic:"):
        raise ValueError(f"not a synthetic data spec: {spec!r}")
    out: dict[str, Any] = {}
    body = spec[len("synthetic:") :].strip()
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise ValueError(
                f"synthetic data spec {spec!r}: {part!r} must look like key=value "
                f"(e.g. synthetic:scenes=64,seed=0)"
            )
        key, value = part.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_dataset(spec: str, split: str, model_config, training: bool) -> Dataset:
    """The dataset a data spec names (see the module docstring).

    Args:
        spec: a directory or ``synthetic:...``.
        split: the split of a directory ("train", "val"); for ``synthetic:`` specs "val" takes
            held-out worlds (``first_scene`` = 1,000,000 unless the spec sets it).
        model_config: the GaussTRConfig (input size, text encoder of the synthetic targets).
        training: training items (images, cameras, targets; never 3D labels) or evaluation items
            (with ground truth). A model with segmentation heads (``model.head.segment_classes``,
            the featup preset) trains them on the dataset's 2D labels (Grounded SAM 2 in the official
            layout), which a training dataset then must have.
    """
    from gausstr_core.data import datasets

    size = tuple(model_config.model.image_size)
    segment_heads = training and model_config.model.head.segment_classes > 0
    if segment_heads and spec.startswith("synthetic:"):
        raise ValueError(
            f"the model has segmentation heads (model.head.segment_classes="
            f"{model_config.model.head.segment_classes}, the official featup model's auxiliary head), "
            f"which train on 2D labels (Grounded SAM 2); the in-memory synthetic world {spec!r} has "
            f"none: write the world with `gausstr-synth --segmentation-labels` and train on that "
            f"directory, or pass --set model.head.segment_classes=0"
        )
    if spec.startswith("synthetic:"):
        from gausstr_core.data.synthetic.samples import SyntheticConfig
        from gausstr_core.data.synthetic.targets import name_embeddings

        kw = parse_synthetic_spec(spec)
        allowed = {"scenes", "seed", "first_scene", "image_size", "samples_per_scene"}
        unknown = sorted(set(kw) - allowed)
        if unknown:
            raise ValueError(
                f"synthetic data spec {spec!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"
            )
        first = kw.get("first_scene", 1_000_000 if split == "val" else 0)
        config = SyntheticConfig(
            image_size=tuple(kw.get("image_size", size)),
            samples_per_scene=int(kw.get("samples_per_scene", 1)),
        )
        return datasets.SyntheticWorldDataset(
            seed=int(kw.get("seed", 0)),
            num_scenes=int(kw.get("scenes", 16)),
            config=config,
            input_size=size,
            embeddings=name_embeddings(dataclasses.replace(model_config.text, device="cpu")),
            with_ground_truth=not training,
            first_scene=first,
        )
    root = dataroot(spec)
    check_text_space(root, model_config.text)
    try:
        return datasets.OccupancyDataset(
            root,
            split=split,
            input_size=size,
            with_ground_truth=not training,
            load_segmentation=segment_heads,
        )
    except datasets.MissingSegmentationLabels as error:
        raise datasets.MissingSegmentationLabels(
            f"{error}. The model has segmentation heads (model.head.segment_classes="
            f"{model_config.model.head.segment_classes}, the official featup model's auxiliary "
            f"head); without 2D labels train it with --set model.head.segment_classes=0"
        ) from error


def dataroot(spec: str | Path) -> Path:
    """The nuScenes dataroot of a data directory: the directory itself, or its ``nuscenes/`` (the
    official ``data/`` layout that ``gausstr-synth --out`` writes)."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise ValueError(f"data {str(spec)!r} is neither a directory nor a 'synthetic:...' spec")
    if (root / "nuscenes").is_dir() and not any(root.glob("v1.0-*")):
        root = root / "nuscenes"
    return root


def check_text_space(root: Path, text_config) -> None:
    """Synthetic data on disk records the text embeddings its feature targets were built from; a
    model whose text encoder embeds the names differently would learn features its prototypes
    cannot read, so that is refused here rather than discovered as a near-zero mIoU."""
    from gausstr_core.data.synthetic.writer import EMBEDDINGS_FILE

    path = root / EMBEDDINGS_FILE
    if not path.is_file():
        return
    from safetensors.torch import load_file

    from gausstr_core.data.synthetic.targets import name_embeddings

    stored = load_file(str(path))["embeddings"].float()
    # On the CPU, as the generator computed them (GPU matmuls may differ in the last bits); a
    # different text space differs by O(1) on unit vectors, so the tolerance can be loose.
    ours = name_embeddings(dataclasses.replace(text_config, device="cpu"))
    if stored.shape != ours.shape or not torch.allclose(stored, ours, atol=1e-3):
        raise ValueError(
            f"{root}'s feature targets were built from other text embeddings ({path}, "
            f"shape {tuple(stored.shape)}) than this model's text encoder gives "
            f"({tuple(ours.shape)}); regenerate the data with the model's text preset, or "
            f"change the model's text config"
        )


def is_synthetic(dataset: Dataset | None) -> bool:
    from gausstr_core.data.datasets import OccupancyDataset, SyntheticWorldDataset
    from gausstr_core.data.synthetic.writer import METADATA_FILE

    if isinstance(dataset, SyntheticWorldDataset):
        return True
    return isinstance(dataset, OccupancyDataset) and (dataset.layout.dataroot / METADATA_FILE).is_file()


def build_eval_dataset(cfg, model_config) -> Dataset | None:
    """The validation dataset of a TrainConfig: ``val_data``, else the val split of ``data`` (a
    directory's val scenes, or held-out worlds of a synthetic spec)."""
    spec = cfg.val_data or cfg.data
    return build_dataset(spec, cfg.val_split, model_config, training=False)


def collate_training(items: list) -> CameraBatch:
    """Training items (``SceneItem`` or single-scene ``CameraBatch``) -> one CameraBatch of B scenes."""
    if all(isinstance(i, CameraBatch) for i in items):
        return concatenate_batches(items)
    from gausstr_core.data.datasets import collate_scenes

    return collate_scenes(items).cameras


def collate_evaluation(items: list) -> tuple[CameraBatch, Any]:
    """Evaluation items -> (CameraBatch, ground truth with ``semantics`` / ``mask_camera`` (B, X, Y, Z))."""
    if all(isinstance(i, tuple) and isinstance(i[0], CameraBatch) for i in items):
        from types import SimpleNamespace

        batch = concatenate_batches([i[0] for i in items])
        gts = [i[1] for i in items]
        gt = SimpleNamespace(
            semantics=torch.cat([g.semantics for g in gts]),
            mask_camera=None if gts[0].mask_camera is None else torch.cat([g.mask_camera for g in gts]),
        )
        return batch, gt
    from gausstr_core.data.datasets import collate_scenes

    batch = collate_scenes(items)
    if batch.ground_truth is None:
        raise ValueError("evaluation needs a dataset built with ground truth (with_ground_truth=True)")
    return batch.cameras, batch.ground_truth


def concatenate_batches(batches: list[CameraBatch]) -> CameraBatch:
    """Concatenate CameraBatches along B (optional fields must be all present or all None)."""

    def cat(name: str) -> Tensor | None:
        values = [getattr(b, name) for b in batches]
        if all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ValueError(f"cannot batch scenes where only some have {name}")
        return torch.cat(values)

    return CameraBatch(**{f.name: cat(f.name) for f in dataclasses.fields(CameraBatch)})


def categories_for(dataset: Dataset | None) -> list[str]:
    """The evaluation vocabulary of a dataset: for the synthetic world Occ3D's 17 classes as groups
    of the synthetic names (``synthetic_vocabulary``), else Occ3D's categories; both in Occ3D label
    order, so predicted labels are Occ3D ids."""
    if dataset is not None and is_synthetic(dataset):
        from gausstr_core.data.synthetic.vocabulary import synthetic_vocabulary

        return list(synthetic_vocabulary())
    from gausstr_core.text.vocabulary import OCC3D_CATEGORIES

    return list(OCC3D_CATEGORIES)


def save_deployment_checkpoint(
    model,
    model_config,
    path: str | Path,
    step: int,
    metrics: dict | None,
    vocabulary: list[str],
    training: dict | None = None,
) -> Path:
    """The model as a safetensors checkpoint (gausstr_core.io.checkpoint) with its full config, the
    vocabulary it was evaluated with and how it was trained (``training``: the command line, the
    TrainConfig, the training minutes); ``OccupancyPredictor.from_checkpoint`` loads it."""
    from gausstr_core.io.checkpoint import save_model_checkpoint

    meta = {
        "preset": model_config.preset,
        "step": int(step),
        "vocabulary": list(vocabulary),
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
        "text_encoder_fingerprint": text_fingerprint(model_config.text),
    }
    if training:
        meta["training"] = training
    return save_model_checkpoint(path, model, model_config, meta)


def text_fingerprint(text_config) -> str:
    """Identifies the text embedding space (model, weights, seed, templates, projection)."""
    import hashlib

    from gausstr_core.config import to_dict

    data = {k: v for k, v in to_dict(text_config).items() if k not in ("device", "batch_size")}
    return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
