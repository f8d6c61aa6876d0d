"""``gausstr-synth``: write synthetic driving scenes in the nuScenes / Occ3D / official-GaussTR layout.

Example (100 scenes at nuScenes/4 resolution, features from the tiny random text encoder):

    gausstr-synth --out data/synth --scenes 100 --seed 0 --resolution 225 400 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gausstr_core.data.synthetic.samples import SyntheticConfig, generate_sample
from gausstr_core.data.synthetic.targets import (
    DepthTargetConfig,
    FeatureTargetConfig,
    name_embeddings,
    random_embeddings,
)
from gausstr_core.data.synthetic.vocabulary import name_strings
from gausstr_core.data.synthetic.world import WorldConfig
from gausstr_core.presets import PRESETS, PRESETS_BY_NAME

TEXT_PRESETS = PRESETS


def text_config(
    preset: str,
    seed: int | None = None,
    checkpoint: str | None = None,
    projection_checkpoint: str | None = None,
):
    """The ``TextEncoderConfig`` of a preset, with optional weights or random init."""
    if preset not in TEXT_PRESETS:
        raise ValueError(f"unknown text preset {preset!r}; available: {', '.join(TEXT_PRESETS)}")
    cfg = PRESETS_BY_NAME[preset].text()
    if seed is not None:
        cfg.random_init_seed = seed
    if checkpoint is not None:
        cfg.checkpoint = checkpoint
    if projection_checkpoint is not None:
        cfg.projection_checkpoint = projection_checkpoint
    cfg.device = "cpu"
    return cfg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output directory (gets nuscenes/, nuscenes_metric3d/, nuscenes_featup/)",
    )
    p.add_argument("--scenes", type=int, required=True, help="number of worlds")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument(
        "--resolution",
        type=int,
        nargs=2,
        default=(225, 400),
        metavar=("H", "W"),
        help="camera image size (default 225 400: nuScenes / 4)",
    )
    p.add_argument("--samples-per-scene", type=int, default=1, help="key frames per world (default 1)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    p.add_argument("--version", default="v1.0-trainval", help="nuScenes table directory name")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of scenes in the val split")
    p.add_argument("--antialias", type=int, default=1, help="odd RGB supersampling factor (default 1)")
    g = p.add_argument_group("feature targets")
    g.add_argument(
        "--features",
        choices=("text", "random", "none"),
        default="text",
        help="embed the synthetic names with a text encoder (default), random unit vectors, or "
        "write no features",
    )
    g.add_argument(
        "--text-preset",
        choices=TEXT_PRESETS,
        default="tiny",
        help="text encoder of a model preset (default tiny: random 64-d tower)",
    )
    g.add_argument(
        "--text-seed", type=int, default=None, help="random-init seed of the text tower (tiny defaults to 0)"
    )
    g.add_argument("--text-checkpoint", default=None, help="local open_clip weights")
    g.add_argument("--text-projection-checkpoint", default=None, help="local Talk2DINO projection weights")
    g.add_argument("--embed-dim", type=int, default=64, help="width of --features random (default 64)")
    g.add_argument("--patch-size", type=int, default=16, help="image pixels per feature cell (default 16)")
    g.add_argument(
        "--feature-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("h", "w"),
        help="feature map size (overrides --patch-size)",
    )
    g.add_argument("--feature-noise", type=float, default=FeatureTargetConfig.noise_std)
    g.add_argument("--feature-blur", type=float, default=FeatureTargetConfig.blur_sigma)
    g.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32")
    d = p.add_argument_group("depth targets")
    d.add_argument("--depth-bias", type=float, default=DepthTargetConfig.scale_bias)
    d.add_argument("--depth-noise", type=float, default=DepthTargetConfig.pixel_noise_std)
    d.add_argument("--depth-smooth-noise", type=float, default=DepthTargetConfig.smooth_noise_std)
    d.add_argument("--max-depth", type=float, default=DepthTargetConfig.max_depth)
    d.add_argument(
        "--far-field",
        choices=("far", "invalid"),
        default=DepthTargetConfig.far_field,
        help="sky and beyond --max-depth: the far depth (default; what a metric-depth network "
        "outputs) or invalid 0 (the old targets, for the ablation)",
    )
    p.add_argument(
        "--segmentation-labels",
        action="store_true",
        help="also write each image's 2D class labels to nuscenes_grounded_sam2/ (the official FeatUp "
        "model's auxiliary Grounded SAM 2 labels, as an ideal segmenter gives them), so the featup "
        "preset's segmentation heads can train",
    )
    p.add_argument(
        "--no-preview", action="store_true", help="do not write preview.png of the first key frame"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gausstr_core.data.synthetic.writer import write_dataset

    try:
        config = SyntheticConfig(
            image_size=tuple(args.resolution),
            samples_per_scene=args.samples_per_scene,
            world=WorldConfig(),
            features=FeatureTargetConfig(
                patch_size=args.patch_size,
                feature_size=tuple(args.feature_size) if args.feature_size else None,
                blur_sigma=args.feature_blur,
                noise_std=args.feature_noise,
                dtype=args.feature_dtype,
            ),
            depth=DepthTargetConfig(
                scale_bias=args.depth_bias,
                pixel_noise_std=args.depth_noise,
                smooth_noise_std=args.depth_smooth_noise,
                max_depth=args.max_depth,
                far_field=args.far_field,
            ),
            antialias=args.antialias,
        )
        config.features.grid_size(config.image_size)
        embeddings, text_info = None, None
        if args.features == "text":
            seed = args.text_seed
            if seed is None and args.text_preset == "tiny":
                seed = 0
            tcfg = text_config(args.text_preset, seed, args.text_checkpoint, args.text_projection_checkpoint)
            embeddings = name_embeddings(tcfg)
            text_info = {
                "preset": args.text_preset,
                "config": json.loads(json.dumps(asdict(tcfg), default=list)),
            }
        elif args.features == "random":
            embeddings = random_embeddings(len(name_strings()), args.embed_dim, seed=args.seed)
            text_info = {"random_unit_vectors": {"dim": args.embed_dim, "seed": args.seed}}
    except (ValueError, ImportError, FileNotFoundError) as exc:
        print(f"gausstr-synth: error: {exc}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    layout = write_dataset(
        args.out,
        args.scenes,
        seed=args.seed,
        config=config,
        embeddings=embeddings,
        text_info=text_info,
        version=args.version,
        image_format=args.image_format,
        val_fraction=args.val_fraction,
        workers=args.workers,
        progress=not args.quiet,
        segmentation_labels=args.segmentation_labels,
    )
    elapsed = time.perf_counter() - start
    frames = args.scenes * args.samples_per_scene
    if not args.no_preview:
        from PIL import Image

        from gausstr_core.data.synthetic.preview import sample_preview

        sample = generate_sample(args.seed, 0, 0, config, embeddings)
        Image.fromarray(sample_preview(sample)).save(Path(args.out) / "preview.png")
    h, w = config.image_size
    print(
        f"wrote {frames} key frames ({args.scenes} scenes) of 6 x {h}x{w} images in {elapsed:.1f} s "
        f"({elapsed / frames:.2f} s per key frame, {args.workers} worker(s))"
    )
    print(f"  dataroot  {layout.dataroot}  (tables {layout.version}, Occ3D gts/)")
    print(f"  depth     {layout.depth_dir}")
    print(f"  features  {layout.feature_dir if embeddings is not None else '(none)'}")
    if args.segmentation_labels:
        print(f"  2D labels {layout.segmentation_dir}")
    if not args.no_preview:
        print(f"  preview   {Path(args.out) / 'preview.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
