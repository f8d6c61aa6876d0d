"""``gausstr-train``: train GaussTR on the synthetic world or nuScenes + precomputed targets.

    gausstr-train --preset tiny --data data/synth --out runs/tiny            # one process
    torchrun --nproc-per-node 8 -m gausstr_core.train.cli --preset talk2dino --data data/nusc --out runs/t2d
    gausstr-train --out runs/tiny --resume                                    # continue a killed run

``--preset`` picks the model preset and that preset's training recipe (``recipe``); every flag
overrides one field of the TrainConfig, ``--set key=value`` changes the model config (e.g.
``--set loss.feature_weight=0`` for the depth-only ablation). With ``--resume`` the run continues
from ``<out>/checkpoints/last.pt`` with the configuration it was started with; only the flags in
``RESUMABLE_CHANGES`` (e.g. ``--max-steps``) may be given then.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from gausstr_core.presets import recipe
from gausstr_core.train.config import TrainConfig, load_train_config

# TrainConfig fields that have a flag of the same name (a flag left at None was not given)
_FLAGS = (
    "preset",
    "model_config",
    "data",
    "val_data",
    "train_split",
    "val_split",
    "out",
    "epochs",
    "max_steps",
    "max_minutes",
    "batch_size",
    "num_workers",
    "lr",
    "weight_decay",
    "warmup_steps",
    "decay_epochs",
    "decay_gamma",
    "schedule",
    "warmup_fraction",
    "decay_fractions",
    "grad_clip",
    "amp",
    "device",
    "seed",
    "log_every",
    "image_every",
    "checkpoint_every",
    "eval_every",
    "eval_scenes",
    "threads",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    a = p.add_argument
    a("--config", type=Path, help="TrainConfig YAML (flags override it)")
    a("--preset", help="model preset and its training recipe: tiny, talk2dino, featup")
    a("--model-config", help="GaussTRConfig YAML instead of the preset's model")
    a("--data", help="directory in the nuScenes/Occ3D layout, or synthetic:scenes=N,seed=S")
    a("--val-data", help="evaluation data (default: the val split of --data)")
    a("--train-split")
    a("--val-split")
    a("--out", help="run directory")
    a("--epochs", type=float)
    a("--max-steps", type=int)
    a("--max-minutes", type=float, help="stop (and save) after this much training wall time")
    a("--batch-size", type=int, help="scenes per step per process")
    a("--num-workers", type=int)
    a("--lr", type=float)
    a("--weight-decay", type=float)
    a("--warmup-steps", type=int)
    a(
        "--schedule",
        choices=["epochs", "budget"],
        help="epochs: decay at --decay-epochs; budget: warm-up/full rate/decay placed on the run's budget "
        "(--max-steps, --max-minutes or --epochs, whichever ends it first)",
    )
    a("--warmup-fraction", type=float, help="budget schedule: the warm-up also ends at this fraction")
    a("--decay-fractions", type=float, nargs="*", help="budget schedule: decay at these fractions")
    a("--decay-epochs", type=float, nargs="*")
    a("--decay-gamma", type=float)
    a("--grad-clip", type=float)
    a("--amp", choices=["auto", "bf16", "fp16", "off"])
    a("--device", help="auto, cpu, cuda")
    a("--seed", type=int)
    a("--log-every", type=int)
    a("--image-every", type=int)
    a("--checkpoint-every", type=int)
    a("--eval-every", type=int)
    a("--eval-scenes", type=int)
    a("--threads", type=int)
    a("--no-eval", action="store_true", help="skip the final evaluation")
    a(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="model-config override (repeatable), e.g. loss.depth_weight=0",
    )
    a("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt if it exists")
    a("--print-config", action="store_true", help="print the resolved TrainConfig and exit")
    return p


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The TrainConfig of the command line and whether to resume from a saved state."""
    from gausstr_core.train.state import load_state
    from gausstr_core.train.trainer import RESUMABLE_CHANGES, STATE_FILE, saved_train_config

    given = {name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None}
    for name in ("decay_epochs", "decay_fractions"):
        if name in given:
            given[name] = tuple(given[name])
    if args.no_eval:
        given["eval_at_end"] = False
    if args.overrides is not None:
        given["overrides"] = list(args.overrides)

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out (the run directory to continue)")
        state_path = Path(args.out) / STATE_FILE
        if state_path.is_file():
            saved = saved_train_config(load_state(state_path))
            bad = sorted(k for k in given if k not in RESUMABLE_CHANGES and given[k] != getattr(saved, k))
            if bad:
                raise ValueError(
                    f"--resume continues the saved run; these flags would change it: "
                    f"{', '.join(bad)} (allowed: {', '.join(RESUMABLE_CHANGES)})"
                )
            return dataclasses.replace(saved, **given), True
        print(f"gausstr-train: no checkpoint at {state_path}: starting a new run", file=sys.stderr)

    base = load_train_config(args.config) if args.config else recipe(given.get("preset", "tiny"))
    if args.config and "preset" in given:
        base = dataclasses.replace(base, preset=given["preset"])
    return dataclasses.replace(base, **given), False


def main(argv: list[str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv_list)
    try:
        cfg, resume = resolve_config(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-train: error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        from gausstr_core.train.config import train_config_to_yaml

        print(train_config_to_yaml(cfg))
        return 0
    from gausstr_core.train.trainer import main_worker

    try:
        main_worker(cfg, resume=resume, command=shlex.join(["gausstr-train", *argv_list]))
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
