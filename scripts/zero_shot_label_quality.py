#!/usr/bin/env python3
"""How right the zero-shot labels of ``loss.zero_shot_label_weight`` are: the synthetic world's feature
targets, each patch labelled with its nearest category prompt (``gausstr_core.losses.zero_shot``),
against the class of the surface each pixel really shows (the generator's per-pixel classes, which
training never sees). Scenes are generated in memory as ``gausstr-synth`` writes them.

    python scripts/zero_shot_label_quality.py --preset featup --resolution 216 384 --patch-size 8
    python scripts/zero_shot_label_quality.py --preset tiny --resolution 112 200 --patch-size 8

Prints the pixel accuracy (all pixels, and the pixels within the depth limit that the term counts)
and per class the share of pixels, precision, recall and IoU of the labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gausstr_core.data.synthetic.cli import text_config  # noqa: E402
from gausstr_core.data.synthetic.samples import SyntheticConfig, generate_sample  # noqa: E402
from gausstr_core.data.synthetic.targets import FeatureTargetConfig, name_embeddings  # noqa: E402
from gausstr_core.data.synthetic.vocabulary import SKY_CLASS, synthetic_vocabulary  # noqa: E402
from gausstr_core.losses.gaussrender import ClassPrototypes  # noqa: E402
from gausstr_core.losses.zero_shot import zero_shot_labels  # noqa: E402
from gausstr_core.presets import preset  # noqa: E402
from gausstr_core.text.vocabulary import Vocabulary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="featup", choices=("featup", "tiny"), help="text tower of the targets")
    p.add_argument("--text-seed", type=int, default=0, help="random-init seed of the text tower")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--resolution", type=int, nargs=2, default=(216, 384), metavar=("H", "W"))
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--depth-limit", type=float, default=51.2, help="the loss's depth limit [m]")
    p.add_argument(
        "--feature-noise",
        type=float,
        default=FeatureTargetConfig.noise_std,
        help="the targets' noise (gausstr-synth --feature-noise): noisier targets, noisier labels",
    )
    p.add_argument("--feature-blur", type=float, default=FeatureTargetConfig.blur_sigma)
    args = p.parse_args(argv)

    text = text_config(args.preset, args.text_seed)
    config = dataclasses.replace(preset(args.preset), text=text)
    embeddings = name_embeddings(text)
    categories = list(synthetic_vocabulary())
    prototypes = ClassPrototypes.from_config(config, categories)
    k = prototypes.num_classes
    synth = SyntheticConfig(
        image_size=tuple(args.resolution),
        features=FeatureTargetConfig(
            patch_size=args.patch_size, noise_std=args.feature_noise, blur_sigma=args.feature_blur
        ),
    )
    confusion = torch.zeros(k + 1, k + 1, dtype=torch.int64)  # [true, label], k = free / sky
    near = torch.zeros(k + 1, k + 1, dtype=torch.int64)
    for scene in range(args.scenes):
        sample = generate_sample(args.seed, scene, 0, synth, embeddings, with_labels=False)
        labels = zero_shot_labels(sample.features.float()[None], prototypes, tuple(args.resolution))[0]
        truth = sample.views.occ_class.long()
        truth = torch.where(truth == SKY_CLASS, torch.full_like(truth, k), truth.clamp_max(k))
        index = truth.flatten() * (k + 1) + labels.flatten()
        confusion += torch.bincount(index, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
        within = (sample.views.depth.flatten() < args.depth_limit) & (truth.flatten() < k)
        near += torch.bincount(index[within], minlength=(k + 1) ** 2).reshape(k + 1, k + 1)

    def accuracy(m: torch.Tensor) -> float:
        return 100.0 * float(m.diag().sum()) / max(1, int(m.sum()))

    names = [*Vocabulary.parse(categories).names, "free (sky)"]
    print(
        f"zero-shot labels of {args.scenes} scene(s), {args.preset} text tower (seed {args.text_seed}), "
        f"{args.resolution[0]} x {args.resolution[1]}, patch {args.patch_size}, target noise "
        f"{args.feature_noise:g}, blur {args.feature_blur:g}"
    )
    print(
        f"pixel accuracy: {accuracy(confusion):.1f} % of all pixels, {accuracy(near):.1f} % of the pixels "
        f"the term counts (a surface within {args.depth_limit:g} m)"
    )
    print()
    print("| class | share of pixels | precision | recall | IoU |")
    print("| --- | ---: | ---: | ---: | ---: |")
    total = int(confusion.sum())
    for c in range(k + 1):
        tp = int(confusion[c, c])
        true, pred = int(confusion[c].sum()), int(confusion[:, c].sum())
        if true == 0 and pred == 0:
            continue
        prec = 100.0 * tp / pred if pred else float("nan")
        rec = 100.0 * tp / true if true else float("nan")
        iou = 100.0 * tp / (true + pred - tp)
        print(f"| {names[c]} | {100.0 * true / total:.1f} % | {prec:.1f} | {rec:.1f} | {iou:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
