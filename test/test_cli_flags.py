"""Command-line flags generated from dataclasses (gausstr_core.cli_flags), and the two CLIs built on it."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from gausstr_core.cli_flags import add_dataclass_flags, dataclass_from_args, field_docs, given_values


@dataclass
class Example:
    """An example.

    Attributes:
        data: where the data is (100% needed).
        out: output
            directory, on two lines.
        lr, momentum: the optimiser's numbers.
        mode: how to run.
        verbose: talk more.
        cache: keep a cache.
        sizes: any number of sizes.
        pair: two numbers.
        names: one or more names.
        changes: repeatable changes.
        steps: a step count or nothing.
    """

    data: str
    out: Path
    lr: float = 1e-3
    momentum: float = 0.9
    mode: Literal["fast", "exact"] = "fast"
    verbose: bool = False
    cache: bool = True
    sizes: tuple[float, ...] = (1.0,)
    pair: tuple[int, int] = (1, 2)
    names: list[str] | None = None
    changes: list[str] = field(default_factory=list)
    steps: int | None = None


def _parser(**kw) -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
    p = argparse.ArgumentParser(prog="example")
    names = add_dataclass_flags(p, Example, options={"changes": {"name": "--set", "action": "append"}}, **kw)
    return p, names


def test_docstring_attributes_become_help_texts():
    docs = field_docs(Example)
    assert docs["out"] == "output directory, on two lines."
    assert docs["lr"] == docs["momentum"] == "the optimiser's numbers."
    help_text = " ".join(_parser()[0].format_help().split())
    assert "where the data is (100% needed)." in help_text and "--no-cache" in help_text
    assert "the optimiser's numbers. (default: 0.001)" in help_text
    assert "two numbers. (default: 1 2)" in help_text and "turn off: keep a cache." in help_text
    assert "(default: False)" not in help_text and "(default: None)" not in help_text


def test_flags_follow_the_field_types_and_defaults():
    p, names = _parser()
    assert names == tuple(f for f in Example.__dataclass_fields__)
    args = p.parse_args(
        shlex.split(
            "--data d --out o --mode exact --sizes 1 2.5 --pair 3 4 --names a b --set x=1 --set y=2 "
            "--steps 7 --verbose --no-cache --lr 0.5"
        )
    )
    values = {n: getattr(args, n) for n in names}
    assert Example(**given_values(args, Example, names)) == Example(
        data="d",
        out=Path("o"),
        lr=0.5,
        mode="exact",
        verbose=True,
        cache=False,
        sizes=(1.0, 2.5),
        pair=(3, 4),
        names=["a", "b"],
        changes=["x=1", "y=2"],
        steps=7,
    )
    assert values["out"] == Path("o") and values["momentum"] == 0.9
    defaults = p.parse_args(["--data", "d", "--out", "o"])
    assert Example(**{n: getattr(defaults, n) for n in names}) == Example(data="d", out=Path("o"))


def test_required_fields_and_choices_are_enforced(capsys):
    p, _ = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "o"])
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--out", "o", "--mode", "slow"])
    assert "invalid choice" in capsys.readouterr().err


def test_unset_defaults_tell_which_flags_were_given():
    p, names = _parser(unset_defaults=True)
    args = p.parse_args(["--lr", "0.1", "--sizes", "3"])
    assert given_values(args, Example, names) == {"lr": 0.1, "sizes": (3.0,)}


def test_a_field_without_a_command_line_form_must_be_excluded():
    @dataclass
    class Odd:
        table: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Odd\.table"):
        add_dataclass_flags(argparse.ArgumentParser(), Odd)
    assert add_dataclass_flags(argparse.ArgumentParser(), Odd, exclude=("table",)) == ()


def test_optional_switches_and_positional_fields():
    @dataclass
    class Replay:
        """Replay.

        Attributes:
            bag: the bag.
            use_depth: feed depth (None = the params').
        """

        bag: Path | None = None
        use_depth: bool | None = None

    p = argparse.ArgumentParser()
    add_dataclass_flags(p, Replay, options={"bag": {"name": "bag", "nargs": "?"}})
    assert vars(p.parse_args([])) == {"bag": None, "use_depth": None}
    assert vars(p.parse_args(["b", "--use-depth"])) == {"bag": Path("b"), "use_depth": True}
    assert vars(p.parse_args(["--no-use-depth"])) == {"bag": None, "use_depth": False}
    with pytest.raises(ValueError, match="spelled like its field"):
        add_dataclass_flags(argparse.ArgumentParser(), Replay, options={"bag": {"name": "recording"}})


# --- the CLIs built on it keep their flags --------------------------------------------------------

TRAIN_FLAGS = {
    "--config", "--preset", "--model-config", "--init-weights", "--data", "--val-data", "--train-split",
    "--val-split", "--out",
    "--epochs", "--max-steps", "--max-minutes", "--batch-size", "--num-workers", "--lr", "--weight-decay",
    "--warmup-steps", "--schedule", "--warmup-fraction", "--decay-epochs", "--decay-fractions",
    "--decay-gamma", "--grad-clip", "--amp", "--device", "--seed",
    "--log-every", "--image-every", "--checkpoint-every", "--eval-every", "--eval-scenes", "--threads",
    "--train-only", "--no-eval", "--set", "--resume", "--print-config", "--export-model",
}  # fmt: skip
BAG_EVAL_FLAGS = {
    "--out", "--overwrite", "--checkpoint", "--params", "--categories", "--cameras", "--image-topics",
    "--camera-info-topics", "--depth-topics", "--image-transport", "--depth-transport", "--use-depth",
    "--no-use-depth", "--target-frame", "--ground-truth-topic", "--occ3d", "--gt-tolerance-ms", "--device",
    "--max-frames", "--pictures", "--threads", "--record", "--live", "--rate", "--namespace",
    "--node-timeout", "--no-progress",
}  # fmt: skip
EVAL_FLAGS = {
    "--checkpoint", "--baseline", "--preset", "--data", "--split", "--out", "--categories", "--max-scenes",
    "--bev", "--no-rayiou", "--no-use-depth", "--density-sweep", "--device", "--set", "--threads",
}  # fmt: skip


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}


def test_gausstr_train_flags_are_the_train_config_fields():
    import dataclasses

    from gausstr_core.presets import recipe
    from gausstr_core.train import cli
    from gausstr_core.train.config import TrainConfig

    parser, fields = cli.build_parser()
    assert _flags(parser) == TRAIN_FLAGS
    assert set(fields) == {f.name for f in dataclasses.fields(TrainConfig)} - set(cli._NOT_FLAGS)
    assert "AdamW (official 2e-4, 5e-3)" in parser.format_help()  # help from TrainConfig's docstring
    argv = shlex.split("--preset tiny --lr 0.01 --decay-epochs 1 2 --amp off --no-eval --set loss.pca_dims=8")
    config, resume = cli.resolve_config(parser.parse_args(argv), fields)
    expected = dataclasses.replace(
        recipe("tiny"), lr=0.01, decay_epochs=(1.0, 2.0), amp="off", eval_at_end=False,
        overrides=["loss.pca_dims=8"],
    )  # fmt: skip
    assert config == expected and not resume
    with pytest.raises(SystemExit):
        parser.parse_args(["--amp", "fp64"])


def test_gausstr_train_resume_refuses_flags_that_change_the_run(tmp_path):
    import yaml

    from gausstr_core.config import to_dict
    from gausstr_core.presets import recipe
    from gausstr_core.train import cli
    from gausstr_core.train.state import STATE_VERSION, atomic_torch_save
    from gausstr_core.train.trainer import STATE_FILE

    saved = recipe("tiny")
    atomic_torch_save(
        {"version": STATE_VERSION, "train_config": yaml.safe_dump(to_dict(saved))}, tmp_path / STATE_FILE
    )
    parser, fields = cli.build_parser()
    config, resume = cli.resolve_config(
        parser.parse_args(["--out", str(tmp_path), "--resume", "--max-steps", "5"]), fields
    )
    assert resume and config.max_steps == 5 and config.lr == saved.lr
    with pytest.raises(ValueError, match=r"--resume continues the saved run.*lr"):
        cli.resolve_config(parser.parse_args(["--out", str(tmp_path), "--resume", "--lr", "0.5"]), fields)


def test_gausstr_eval_flags_are_the_eval_options_fields():
    from gausstr_core.evaluation import cli

    parser = cli.build_parser()
    assert _flags(parser) == EVAL_FLAGS
    options = cli.options_from_args(
        parser.parse_args(shlex.split("--data d --out o --no-rayiou --set a=1 --set b=2"))
    )
    assert options == cli.EvalOptions(data="d", out=Path("o"), rayiou=False, overrides=["a=1", "b=2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "d", "--out", "o", "--baseline", "nothing"])


def test_gausstr_bag_eval_flags_are_the_bag_eval_options_fields():
    from gausstr_ros.bag import evaluate
    from gausstr_ros.bag.options import BagEvalOptions

    parser = evaluate.build_parser()
    assert _flags(parser) == BAG_EVAL_FLAGS
    assert evaluate.options_from_args(parser.parse_args([])) == BagEvalOptions()
    argv = "drive.mcap --cameras a b --no-use-depth --gt-tolerance-ms 20 --node-timeout 9 --no-progress"
    options = evaluate.options_from_args(parser.parse_args(shlex.split(argv)))
    assert options == BagEvalOptions(
        bag=Path("drive.mcap"), camera_names=["a", "b"], use_depth=False, gt_tolerance_ms=20.0,
        node_timeout_s=9.0, progress=False,
    )  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(["--image-transport", "theora"])


def test_gausstr_make_bag_flags_are_the_synthetic_bag_config_fields(tmp_path):
    import dataclasses

    from gausstr_ros.bag import make_bag

    parser = make_bag.build_parser()
    flags = _flags(parser)
    assert {"--out", "--frames", "--seed", "--scene", "--image-size", "--rate-hz", "--camera-offset-ms",
            "--start-time", "--no-depth", "--no-ground-truth", "--no-compress", "--storage",
            "--image-format", "--jpeg-quality", "--depth-format"} <= flags  # fmt: skip
    assert len(flags) == 1 + len(dataclasses.fields(make_bag.SyntheticBagConfig))
    args = parser.parse_args(
        shlex.split(
            "--out b --frames 3 --image-size 56 100 --speed-mps 5 6 --start-time 5 --no-depth "
            "--image-format jpeg"
        )
    )
    config = dataclass_from_args(make_bag.SyntheticBagConfig, args)
    assert config == make_bag.SyntheticBagConfig(
        frames=3,
        image_size=(56, 100),
        speed_mps=(5.0, 6.0),
        start_time_s=5.0,
        depth=False,
        image_format="jpeg",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "b", "--storage", "zip"])
