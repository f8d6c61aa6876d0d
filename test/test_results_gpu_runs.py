"""scripts/results_gpu.py: every row it can run builds a valid configuration (a typo in a --set key
would otherwise surface only on the GPU machine, after minutes of data generation)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from gausstr_core.config import GaussTRConfig, from_dict, to_dict
from gausstr_core.presets import preset
from gausstr_core.train.config import apply_overrides

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "results_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("results_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_gpu"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


RESULTS = _module()


@pytest.mark.parametrize("key", sorted(RESULTS.RUNS))
def test_every_run_builds_its_config(key):
    run = RESULTS.RUNS[key]
    args = [*run.train, *run.evaluate]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = from_dict(GaussTRConfig, apply_overrides(to_dict(preset(run.preset)), overrides, key))
    assert config.preset == run.preset
    assert run.data in RESULTS.DATASETS and f"{run.data}_tune" in RESULTS.DATASETS


@pytest.mark.parametrize("name", sorted(RESULTS.DATASETS))
def test_every_dataset_is_a_valid_generator_command(name):
    from gausstr_core.data.synthetic.cli import build_parser

    args = build_parser().parse_args(["--out", "unused", *RESULTS.DATASETS[name]])
    # the featup training data carries the 2D labels that featup_both_segmentation trains on
    assert args.segmentation_labels == (name == "featup")


def test_the_tune_sweep_variants_are_valid_overrides():
    for extra in RESULTS.LOGIT_VARIANTS.values():
        overrides = [extra[i + 1] for i, a in enumerate(extra) if a == "--set"]
        from_dict(GaussTRConfig, apply_overrides(to_dict(preset("featup")), overrides, "variant"))
    assert [float(t) for t in RESULTS.SWEEP] == sorted(float(t) for t in RESULTS.SWEEP)


def test_fit_deadline_shortens_only_a_fresh_training_that_would_be_cut():
    fit = RESULTS.fitted_minutes
    reserve = RESULTS.EVAL_RESERVE_S + RESULTS.TRAIN_STARTUP_S
    # fits: unchanged
    assert fit(5.3, 60 * 5.3 + reserve + 1, resume=False) == 5.3
    # the call of 2026-12-06: 5.3 minutes planned, 6.4 minutes left after a slow gsplat build
    shortened = fit(5.3, 6.4 * 60, resume=False)
    assert shortened < 5.3
    assert 60 * shortened + reserve <= 6.4 * 60
    assert shortened == pytest.approx((6.4 * 60 - reserve) / 60, abs=0.011)
    # never below half a minute, and a resumed training keeps the schedule it started with
    assert fit(5.3, 10.0, resume=False) == 0.5
    assert fit(13.0, 60.0, resume=True) == 13.0


def _results(out):
    """A Results that only writes tables into ``out``."""
    results = RESULTS.Results.__new__(RESULTS.Results)
    results.out, results.device, results.date = out, "NVIDIA H100 80GB HBM3", "2026-12-07"
    return results


def _table_row(**fields):
    """A results.json row with the fields the table reads."""
    row = {"key": "featup_both", "preset": "featup", "iou": 30.0, "miou": 16.0, "rayiou": None}
    row.update(precision=40.0, recall=50.0, tune_sweeps=None)
    return {**row, **fields}


def test_a_training_shortened_to_fit_the_deadline_says_so_in_the_table(tmp_path):
    """A row whose training --fit-deadline cut is not at the steps of its planned comparison: the
    table and results.json carry the planned minutes (the tenth sitting's pair, 5.3 -> 4.25)."""
    results = _results(tmp_path)
    row = _table_row(name="featup, both", steps=867, train_minutes=4.25)
    results.write_tables([{**row, "planned_minutes": 5.3}, {**row, "key": "b", "planned_minutes": None}])
    table = (tmp_path / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| featup, both")]
    assert rows[0].endswith("| 867 | 4.2 min (shortened from 5.3 min by --fit-deadline) |"), rows[0]
    assert rows[1].endswith("| 867 | 4.2 min |"), rows[1]


def test_a_partly_collapsed_training_says_so_in_the_table_and_its_state_is_read(tmp_path):
    """The trainer's partial-collapse step (``transparent_since`` in its state) reaches the row and
    the table, as the 13-minute detached run of 2026-12-07 (IoU 15) would have shown."""
    import torch

    state = tmp_path / "last.pt"
    torch.save({"step": 3471, "train_seconds": 780.0, "transparent_since": 2100}, state)
    assert RESULTS.state_progress(state) == (3471, 780.0, 2100)
    torch.save({"step": 10, "train_seconds": 5.0}, state)  # a state from before the watch
    assert RESULTS.state_progress(state) == (10, 5.0, None)
    results = _results(tmp_path)
    row = _table_row(name="featup, both + term", steps=3471, train_minutes=13.0, planned_minutes=None)
    results.write_tables([{**row, "mostly_transparent_since_step": 2100}, row])
    table = [
        line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| featup")
    ]
    assert table[0].endswith(
        "| 3471 | 13.0 min (partial collapse: most Gaussians transparent since step 2100) |"
    )
    assert table[1].endswith("| 3471 | 13.0 min |"), table[1]
