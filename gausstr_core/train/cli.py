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

from gausstr_core.cli_flags import add_dataclass_flags, given_values
from gausstr_core.presets import recipe
from gausstr_core.train.config import TrainConfig, load_train_config

# TrainConfig fields without a flag (set them in a --config file).
_NOT_FLAGS = ("betas", "warmup_start", "find_unused_parameters")
_FLAG_OPTIONS = {
    "eval_at_end": {"name": "--no-eval", "help": "skip the final evaluation"},
    "overrides": {
        "name": "--set",
        "action": "append",
        "metavar": "KEY=VALUE",
        "help": "model-config override (repeatable), e.g. loss.depth_weight=0",
    },
}


def build_parser() -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
    """The parser, and the TrainConfig fields it has flags for (every flag defaults to None: given or
    not)."""
    p = argparse.ArgumentParser(
        prog="gausstr-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, help="TrainConfig YAML (flags override it)")
    fields = add_dataclass_flags(
        p, TrainConfig, exclude=_NOT_FLAGS, unset_defaults=True, options=_FLAG_OPTIONS
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoints/last.pt if it exists"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved TrainConfig and exit")
    p.add_argument(
        "--export-model",
        action="store_true",
        help="do not train: write the model of <out>/checkpoints/last.pt (a run stopped before its "
        "schedule ended) as <out>/model_step<N>.safetensors, a deployment checkpoint gausstr-eval reads",
    )
    return p, fields


def resolve_config(args: argparse.Namespace, fields: tuple[str, ...]) -> tuple[TrainConfig, bool]:
    """The TrainConfig of the command line (``fields``: those with a flag) and whether to resume from a
    saved state."""
    from gausstr_core.train.state import load_state
    from gausstr_core.train.trainer import RESUMABLE_CHANGES, STATE_FILE, saved_train_config

    given = given_values(args, TrainConfig, fields)

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


def export_model(args: argparse.Namespace, argv: list[str]) -> int:
    """``--export-model``: the saved state's model as a deployment checkpoint (no training)."""
    from gausstr_core.train.trainer import STATE_FILE, export_training_state

    if args.out is None:
        print("gausstr-train: error: --export-model needs --out (the run directory)", file=sys.stderr)
        return 2
    if not (Path(args.out) / STATE_FILE).is_file():
        print(f"gausstr-train: error: no training state at {Path(args.out) / STATE_FILE}", file=sys.stderr)
        return 2
    try:
        path = export_training_state(args.out, command=shlex.join(["gausstr-train", *argv]))
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-train: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    parser, fields = build_parser()
    args = parser.parse_args(argv_list)
    if args.export_model:
        return export_model(args, argv_list)
    try:
        cfg, resume = resolve_config(args, fields)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-train: error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        from gausstr_core.train.config import train_config_to_yaml

        print(train_config_to_yaml(cfg))
        return 0
    from gausstr_core.train.stop_signal import TrainingInterrupted
    from gausstr_core.train.trainer import main_worker

    try:
        main_worker(cfg, resume=resume, command=shlex.join(["gausstr-train", *argv_list]))
    except (ValueError, FileNotFoundError) as exc:
        print(f"gausstr-train: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"gausstr-train: {exc}", file=sys.stderr)
        return 130  # the shell's code for "ended by a signal"; the state is saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
