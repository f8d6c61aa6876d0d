"""Checkpoints: safetensors round trip, what is (not) stored, strict loading, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from gausstr_core.batch import CameraBatch
from gausstr_core.config import to_dict
from gausstr_core.io.checkpoint import (
    CheckpointMismatchError,
    build_model_from_checkpoint,
    load_model_checkpoint,
    load_state_dict_strict,
    rewrite_checkpoint,
    save_model_checkpoint,
)
from gausstr_core.model.config import ModelConfig
from gausstr_core.model.gausstr import GaussTR
from gausstr_core.presets import preset_model

torch.set_num_threads(1)


def small_config(**backbone) -> ModelConfig:
    cfg = preset_model("tiny")
    cfg.image_size = (48, 80)
    cfg.decoder = dataclasses.replace(cfg.decoder, queries_per_view=8)
    cfg.backbone = dataclasses.replace(cfg.backbone, channels=32, vit_depth=1, vit_heads=2, **backbone)
    return cfg


def batch() -> CameraBatch:
    g = torch.Generator().manual_seed(0)
    k = torch.tensor([[40.0, 0, 40], [0, 40, 24], [0, 0, 1]]).expand(1, 2, 3, 3)
    return CameraBatch(
        torch.rand(1, 2, 3, 48, 80, generator=g),
        k,
        torch.eye(4).expand(1, 2, 4, 4).clone(),
        CameraBatch.identity_aug(1, 2),
        depth=torch.rand(1, 2, 48, 80, generator=g) * 20 + 1,
    )


def test_round_trip_restores_outputs_config_and_metadata(tmp_path):
    torch.manual_seed(0)
    cfg = small_config()
    model = GaussTR(cfg).eval()
    meta = {
        "preset": "tiny",
        "vocabulary": ["car|sedan", "road"],
        "step": 120,
        "metrics": {"miou": 0.25},
        "text_encoder_fingerprint": "abc123",
    }
    path = save_model_checkpoint(tmp_path / "ckpt.safetensors", model, cfg, meta)
    config, state, metadata = load_model_checkpoint(path)
    assert to_dict(config) == to_dict(cfg) and metadata == meta
    assert any(k.startswith("backbone.") for k in state)  # trainable backbone: stored
    loaded, _, _ = build_model_from_checkpoint(path)
    torch.testing.assert_close(loaded(batch()).final.means, model(batch()).final.means)
    assert not list(tmp_path.glob("*.tmp"))


def test_rewrite_changes_config_and_metadata_but_not_the_tensors(tmp_path):
    torch.manual_seed(0)
    cfg = small_config()
    path = save_model_checkpoint(tmp_path / "a.safetensors", GaussTR(cfg), cfg, {"step": 3, "preset": "tiny"})
    changed = dataclasses.replace(cfg, embed_dim=cfg.embed_dim)  # same shapes, another object
    changed.head = dataclasses.replace(cfg.head, depth_limit=40.0)
    out = rewrite_checkpoint(path, tmp_path / "b.safetensors", changed, {"training": {"command": "x"}})
    config, state, metadata = load_model_checkpoint(out)
    _, original, _ = load_model_checkpoint(path)
    assert config.head.depth_limit == 40.0 and metadata == {
        "step": 3,
        "preset": "tiny",
        "training": {"command": "x"},
    }
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    rewrite_checkpoint(out, out, metadata={"step": 4})  # in place
    assert load_model_checkpoint(out)[2]["step"] == 4 and not list(tmp_path.glob("*.tmp"))


def test_frozen_backbone_from_a_named_file_is_not_stored(tmp_path):
    torch.manual_seed(1)
    source = GaussTR(small_config(frozen=True))
    weights = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.vit.state_dict().items()}, str(weights))
    # A relative file name: found next to the checkpoint wherever it is loaded from.
    cfg = small_config(frozen=True, random_init=False, weights="backbone.safetensors")
    cfg.backbone.weights = str(weights)
    model = GaussTR(cfg).eval()
    model.load_state_dict(source.state_dict())
    cfg.backbone.weights = "backbone.safetensors"
    path = save_model_checkpoint(tmp_path / "ckpt.safetensors", model, cfg)
    _, state, _ = load_model_checkpoint(path)
    assert state and not any(k.startswith("backbone.") for k in state)
    loaded, config, _ = build_model_from_checkpoint(path)
    assert config.backbone.weights == str(tmp_path / "backbone.safetensors")
    torch.testing.assert_close(loaded(batch()).final.features, model(batch()).final.features)


def test_random_frozen_backbone_is_stored(tmp_path):
    cfg = small_config(frozen=True)  # random_init, no file: the weights exist nowhere else
    path = save_model_checkpoint(tmp_path / "c.safetensors", GaussTR(cfg), cfg)
    assert any(k.startswith("backbone.") for k in load_model_checkpoint(path)[1])


def test_mismatch_lists_missing_unexpected_and_misshaped_keys():
    model = GaussTR(small_config())
    state = dict(model.state_dict())
    del state["query_embed.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["heads.0.feature.layers.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_strict(model, state)
    msg = str(info.value)
    assert "1 missing key(s): query_embed.weight" in msg
    assert "1 unexpected key(s): decoder.extra.weight" in msg
    assert (
        "1 mis-shaped key(s): heads.0.feature.layers.1.weight (checkpoint (3, 3) vs model (64, 256))" in msg
    )
    many = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): .*, \.\.\."):
        load_state_dict_strict(model, many)


def test_broken_or_foreign_files_are_clear_errors(tmp_path):
    cfg = small_config()
    path = save_model_checkpoint(tmp_path / "ok.safetensors", GaussTR(cfg), cfg)
    with pytest.raises(FileNotFoundError):
        load_model_checkpoint(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_model_checkpoint(truncated)
    pth = tmp_path / "official.pth"
    torch.save({"state_dict": {}}, pth)
    with pytest.raises(ValueError, match="gausstr-convert-official"):
        load_model_checkpoint(pth)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"a": torch.ones(1)}, str(foreign))
    with pytest.raises(ValueError, match="not a GaussTR checkpoint"):
        load_model_checkpoint(foreign)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    cfg = small_config()
    path = save_model_checkpoint(tmp_path / "c.safetensors", GaussTR(cfg), cfg)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must not be used for checkpoints")

    monkeypatch.setattr(torch, "load", refuse)
    build_model_from_checkpoint(path)
