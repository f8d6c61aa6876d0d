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


def test_the_tune_sweep_variants_are_valid_overrides():
    for extra in RESULTS.LOGIT_VARIANTS.values():
        overrides = [extra[i + 1] for i, a in enumerate(extra) if a == "--set"]
        from_dict(GaussTRConfig, apply_overrides(to_dict(preset("featup")), overrides, "variant"))
    assert [float(t) for t in RESULTS.SWEEP] == sorted(float(t) for t in RESULTS.SWEEP)
