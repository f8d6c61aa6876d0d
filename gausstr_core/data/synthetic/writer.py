"""Write synthetic scenes in the nuScenes / Occ3D / official-GaussTR on-disk layout.

``write_dataset(out, ...)`` creates, like the official ``data/`` directory:

```
out/nuscenes/<version>/*.json            the 13 tables nuscenes-devkit's NuScenes loads; cameras only
out/nuscenes/<version>/splits.json       {"train": [...], "val": [...]} (the devkit's custom splits)
out/nuscenes/samples/CAM_*/<log>__<CAM>__<timestamp>.jpg
out/nuscenes/maps/<token>.png            a placeholder map mask (the devkit requires one)
out/nuscenes/gts/<scene>/<sample token>/labels.npz    Occ3D semantics, mask_lidar, mask_camera
out/nuscenes/synthetic.json              generator, seed, configuration, names
out/nuscenes/synthetic_text_embeddings.safetensors    the (K, D) name embeddings of the features
out/nuscenes_metric3d/<stem>.npy         (H, W) float32 synthetic metric depth (sky: 200 m)
out/nuscenes_featup/<stem>.npy           (D, h, w) synthetic foundation-model features
out/nuscenes_grounded_sam2/<stem>.npy    (H, W) uint8 2D labels (``segmentation_labels=True`` only)
```

Tables with no synthetic content (category, attribute, visibility, instance, sample_annotation)
are written empty. Every file is written atomically and an interrupted run resumes where it
stopped: key frames whose files all exist are not rendered again. Tokens, file names and
timestamps are deterministic per (seed, scene, key frame).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gausstr_core.data.nuscenes import SPLITS_FILE, DatasetLayout
from gausstr_core.data.occ3d import save_labels
from gausstr_core.data.synthetic.samples import SyntheticConfig, generate_sample, make_world
from gausstr_core.data.synthetic.targets import segmentation_targets
from gausstr_core.data.synthetic.vocabulary import name_strings
from gausstr_core.geometry import matrix_to_quaternion

NUSCENES_TABLES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
METADATA_FILE = "synthetic.json"
EMBEDDINGS_FILE = "synthetic_text_embeddings.safetensors"
_BASE_TIMESTAMP = 1_600_000_000_000_000  # [us]
_CAMERA_DELAY_US = 8_333  # successive cameras fire ~8 ms apart, as on the nuScenes car


def token(*parts) -> str:
    """A nuScenes-style 32-hex-digit token, deterministic in its parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def scene_name(seed: int, scene_index: int) -> str:
    return f"synth-{seed}-{scene_index:05d}"


def is_val_scene(scene_index: int, val_fraction: float) -> bool:
    """Whether a scene is held out: validation scenes are spread evenly (every 1/f-th scene)."""
    return math.floor((scene_index + 1) * val_fraction) > math.floor(scene_index * val_fraction)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _image_bytes(rgb: Tensor, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy())
    if image_format == "jpg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class _Job:
    out: DatasetLayout
    seed: int
    scene_index: int
    config: SyntheticConfig
    embeddings: Tensor | None
    image_format: str
    segmentation: bool = False


def _file_names(
    seed: int, scene_index: int, sample_index: int, channels: tuple[str, ...], image_format: str
) -> list[str]:
    ts = _timestamp(scene_index, sample_index)
    log = scene_name(seed, scene_index)
    return [
        f"samples/{c}/{log}__{c}__{ts + i * _CAMERA_DELAY_US}.{image_format}" for i, c in enumerate(channels)
    ]


def _timestamp(scene_index: int, sample_index: int) -> int:
    return _BASE_TIMESTAMP + scene_index * 1_000_000_000 + sample_index * 500_000


def _render_scene(job: _Job) -> list[dict]:
    """Render and write every key frame of one scene; returns per-key-frame records for the tables."""
    torch.set_num_threads(1)
    cfg = job.config
    world = make_world(job.seed, job.scene_index, cfg)
    rig = cfg.rig()
    name = scene_name(job.seed, job.scene_index)
    records = []
    for k in range(cfg.samples_per_scene):
        files = _file_names(job.seed, job.scene_index, k, rig.names, job.image_format)
        sample_token = token("sample", job.seed, job.scene_index, k)
        gt = job.out.gt_path(name, sample_token)
        outputs = [job.out.dataroot / f for f in files] + [job.out.depth_path(f) for f in files] + [gt]
        if job.embeddings is not None:
            outputs += [job.out.feature_path(f) for f in files]
        if job.segmentation:
            outputs += [job.out.segmentation_path(f) for f in files]
        if not all(p.is_file() for p in outputs):
            sample = generate_sample(job.seed, job.scene_index, k, cfg, job.embeddings, world=world)
            segmentation = segmentation_targets(sample.views.occ_class) if job.segmentation else None
            for v, f in enumerate(files):
                _atomic_write(job.out.dataroot / f, _image_bytes(sample.views.rgb[v], job.image_format))
                _atomic_write(job.out.depth_path(f), _npy_bytes(sample.depth_target[v].numpy()))
                if sample.features is not None:
                    _atomic_write(job.out.feature_path(f), _npy_bytes(sample.features[v].numpy()))
                if segmentation is not None:
                    _atomic_write(job.out.segmentation_path(f), _npy_bytes(segmentation[v].numpy()))
            save_labels(gt, sample.labels)
        records.append(
            {
                "scene_index": job.scene_index,
                "sample_index": k,
                "files": files,
                "ego_to_world": world.ego_to_world(k).tolist(),
            }
        )
    return records


def _tables(seed: int, num_scenes: int, config: SyntheticConfig, records: list[dict]) -> dict[str, list]:
    """The nuScenes tables of the written key frames."""
    rig = config.rig()
    tables: dict[str, list] = {t: [] for t in NUSCENES_TABLES}
    h, w = config.image_size
    for cam in rig.cameras:
        tables["sensor"].append(
            {"token": token("sensor", cam.name), "channel": cam.name, "modality": "camera"}
        )
    by_scene: dict[int, list[dict]] = {}
    for r in records:
        by_scene.setdefault(r["scene_index"], []).append(r)
    map_token = token("map", seed)
    for s in range(num_scenes):
        frames = sorted(by_scene.get(s, []), key=lambda r: r["sample_index"])
        if not frames:
            continue
        name = scene_name(seed, s)
        log_token, scene_token = token("log", seed, s), token("scene", seed, s)
        tables["log"].append(
            {
                "token": log_token,
                "logfile": name,
                "vehicle": "synthetic-ego",
                "date_captured": "2026-01-01",
                "location": "synthetic-city",
            }
        )
        calib = {}
        for cam in rig.cameras:
            calib[cam.name] = token("calibrated_sensor", seed, s, cam.name)
            tables["calibrated_sensor"].append(
                {
                    "token": calib[cam.name],
                    "sensor_token": token("sensor", cam.name),
                    "translation": list(cam.translation),
                    "rotation": list(cam.rotation),
                    "camera_intrinsic": cam.intrinsics(torch.float64).tolist(),
                }
            )
        sample_tokens = [token("sample", seed, s, r["sample_index"]) for r in frames]
        tables["scene"].append(
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": len(frames),
                "first_sample_token": sample_tokens[0],
                "last_sample_token": sample_tokens[-1],
                "name": name,
                "description": f"synthetic street world, seed {seed}, scene {s}",
            }
        )
        for i, r in enumerate(frames):
            k = r["sample_index"]
            tables["sample"].append(
                {
                    "token": sample_tokens[i],
                    "timestamp": _timestamp(s, k),
                    "prev": sample_tokens[i - 1] if i > 0 else "",
                    "next": sample_tokens[i + 1] if i + 1 < len(frames) else "",
                    "scene_token": scene_token,
                }
            )
            pose = torch.tensor(r["ego_to_world"], dtype=torch.float64)
            rotation = matrix_to_quaternion(pose[:3, :3]).tolist()
            for v, cam in enumerate(rig.cameras):
                ts = _timestamp(s, k) + v * _CAMERA_DELAY_US
                sd_token = token("sample_data", seed, s, k, cam.name)
                ego_token = token("ego_pose", seed, s, k, cam.name)
                tables["ego_pose"].append(
                    {
                        "token": ego_token,
                        "timestamp": ts,
                        "rotation": rotation,
                        "translation": pose[:3, 3].tolist(),
                    }
                )
                prev_k = frames[i - 1]["sample_index"] if i > 0 else None
                next_k = frames[i + 1]["sample_index"] if i + 1 < len(frames) else None
                tables["sample_data"].append(
                    {
                        "token": sd_token,
                        "sample_token": sample_tokens[i],
                        "ego_pose_token": ego_token,
                        "calibrated_sensor_token": calib[cam.name],
                        "timestamp": ts,
                        "fileformat": r["files"][v].rsplit(".", 1)[1],
                        "is_key_frame": True,
                        "height": h,
                        "width": w,
                        "filename": r["files"][v],
                        "prev": token("sample_data", seed, s, prev_k, cam.name) if prev_k is not None else "",
                        "next": token("sample_data", seed, s, next_k, cam.name) if next_k is not None else "",
                    }
                )
    tables["map"].append(
        {
            "token": map_token,
            "log_tokens": [r["token"] for r in tables["log"]],
            "category": "semantic_prior",
            "filename": f"maps/{map_token}.png",
        }
    )
    return tables


def _iter_jobs(jobs: list[_Job], workers: int) -> Iterator[list[dict]]:
    if workers <= 1:
        for job in jobs:
            yield _render_scene(job)
        return
    import multiprocessing

    # fork: workers inherit the imported modules and start in milliseconds; torch is only used
    # single-threaded inside them.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(_render_scene, jobs)


def write_dataset(
    out: str | os.PathLike,
    num_scenes: int,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    embeddings: Tensor | None = None,
    text_info: dict | None = None,
    version: str = "v1.0-trainval",
    image_format: str = "jpg",
    val_fraction: float = 0.2,
    workers: int = 1,
    progress: bool = True,
    segmentation_labels: bool = False,
) -> DatasetLayout:
    """Generate ``num_scenes`` synthetic scenes into ``out`` (see the module docstring for the layout).

    Args:
        out: output directory (the official pipeline's ``data/``); created if missing.
        num_scenes: number of worlds.
        seed: dataset seed; scene i uses world seed ``samples.world_seed(seed, i)``.
        config: what each scene contains.
        embeddings: (K, D) embeddings of ``vocabulary.name_strings()`` for the feature targets;
            None writes no features.
        text_info: how the embeddings were made (e.g. the TextEncoderConfig as a dict), recorded
            in ``synthetic.json`` and the embeddings file.
        version: nuScenes table directory name.
        image_format: "jpg" (nuScenes' format) or "png" (lossless).
        val_fraction: share of scenes in the "val" split (evenly spread); the rest is "train".
        workers: processes rendering scenes in parallel.
        progress: show a tqdm bar.
        segmentation_labels: also write each image's 2D labels to ``nuscenes_grounded_sam2/``
            (``targets.segmentation_targets``: the official FeatUp model's auxiliary Grounded SAM 2
            labels as an ideal segmenter would give them), so the featup preset's segmentation
            heads can train.
    Returns:
        The dataset's layout (``OccupancyDataset(layout.dataroot, ...)`` reads it).
    """
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    config = config or SyntheticConfig()
    names = name_strings()
    if embeddings is not None:
        if embeddings.dim() != 2 or embeddings.shape[0] != len(names):
            raise ValueError(
                f"embeddings must be (K, D) with K = {len(names)} synthetic names, "
                f"got {tuple(embeddings.shape)}"
            )
        embeddings = embeddings.detach().float().cpu()
    root = Path(out)
    layout = DatasetLayout(
        root / "nuscenes",
        version,
        root / "nuscenes_metric3d",
        root / "nuscenes_featup",
        root / "nuscenes_grounded_sam2",
    )
    layout.table_dir.mkdir(parents=True, exist_ok=True)

    jobs = [
        _Job(layout, seed, s, config, embeddings, image_format, segmentation_labels)
        for s in range(num_scenes)
    ]
    records: list[dict] = []
    from tqdm import tqdm

    with tqdm(
        total=num_scenes * config.samples_per_scene, desc="gausstr-synth", unit="frame", disable=not progress
    ) as bar:
        for scene_records in _iter_jobs(jobs, workers):
            records.extend(scene_records)
            bar.update(len(scene_records))

    tables = _tables(seed, num_scenes, config, records)
    for name, rows in tables.items():
        _atomic_write(layout.table_dir / f"{name}.json", json.dumps(rows, indent=1).encode())
    val = [scene_name(seed, s) for s in range(num_scenes) if is_val_scene(s, val_fraction)]
    if not val and val_fraction > 0 and num_scenes > 1:
        val = [scene_name(seed, num_scenes - 1)]
    train = [scene_name(seed, s) for s in range(num_scenes) if scene_name(seed, s) not in set(val)]
    _atomic_write(layout.table_dir / SPLITS_FILE, json.dumps({"train": train, "val": val}, indent=1).encode())
    _atomic_write(
        layout.dataroot / "maps" / f"{tables['map'][0]['token']}.png",
        _image_bytes(torch.zeros(3, 8, 8, dtype=torch.uint8), "png"),
    )
    metadata = {
        "generator": "gausstr_core.data.synthetic",
        "seed": seed,
        "num_scenes": num_scenes,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=list)),
        "synthetic_names": names,
        "text": text_info,
        "features": embeddings is not None,
        "segmentation_labels": segmentation_labels,
        "image_format": image_format,
        "version": version,
    }
    _atomic_write(layout.dataroot / METADATA_FILE, json.dumps(metadata, indent=1).encode())
    if embeddings is not None:
        from safetensors.torch import save

        meta = {"names": json.dumps(names), "text": json.dumps(text_info)}
        _atomic_write(layout.dataroot / EMBEDDINGS_FILE, save({"embeddings": embeddings.contiguous()}, meta))
    return layout
