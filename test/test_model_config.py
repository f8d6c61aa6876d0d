"""Configs: presets, YAML round trips, and errors that name what was wrong."""

from __future__ import annotations

import dataclasses

import pytest

from gausstr_core.config import config_to_yaml, save_config, to_dict
from gausstr_core.model.config import BackboneConfig, DecoderConfig, ModelConfig
from gausstr_core.presets import PRESETS, config_from_yaml, load_config, preset_model


@pytest.mark.parametrize("name", PRESETS)
def test_model_presets_round_trip_through_yaml(tmp_path, name):
    cfg = preset_model(name)
    path = tmp_path / f"{name}.yaml"
    save_config(cfg, path)
    back = load_config(path, ModelConfig)
    assert back == cfg
    assert isinstance(back.image_size, tuple) and isinstance(back.decoder.position_range, tuple)


def test_paper_preset_sizes():
    t2d, featup, tiny = preset_model("talk2dino"), preset_model("featup"), preset_model("tiny")
    assert t2d.image_size == (504, 896) and t2d.backbone.name == "vit_base_patch14_reg4_dinov2"
    assert (t2d.head.feature_dim, t2d.decoder.queries_per_view, t2d.decoder.num_layers) == (768, 300, 3)
    dec = t2d.decoder
    assert (dec.num_heads, dec.num_points, dec.ffn_dim, t2d.embed_dim) == (8, 4, 2048, 256)
    assert featup.image_size == (432, 768) and featup.backbone.kind == "precomputed"
    assert (featup.head.feature_dim, featup.backbone.patch_size, featup.head.segment_classes) == (512, 16, 26)
    assert not t2d.depth_head.enabled and not featup.depth_head.enabled and tiny.depth_head.enabled
    assert tiny.backbone.kind == "vit" and not tiny.backbone.frozen


def test_unknown_keys_name_the_key_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'embed_dims' in ModelConfig; allowed: image"):
        config_from_yaml("embed_dims: 128\n", ModelConfig)
    with pytest.raises(ValueError, match=r"backbone\.'kindd'.*allowed: kind, name"):
        config_from_yaml("backbone:\n  kindd: vit\n", ModelConfig)


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match=r"backbone\.kind must be one of"):
        config_from_yaml("backbone:\n  kind: resnet\n", ModelConfig)
    with pytest.raises(ValueError, match="self_attention"):
        DecoderConfig(self_attention="global")
    with pytest.raises(ValueError, match="multiple of the backbone patch size 14"):
        ModelConfig(image_size=(500, 896))
    with pytest.raises(ValueError, match="needs 2 values"):
        config_from_yaml("image_size: [1, 2, 3]\n", ModelConfig)
    with pytest.raises(ValueError, match=r"divisible by decoder\.num_heads"):
        ModelConfig(embed_dim=100)
    with pytest.raises(ValueError, match="must be a mapping"):
        config_from_yaml("backbone: 3\n", ModelConfig)


def test_partial_yaml_keeps_defaults_and_coerces_numbers():
    cfg = config_from_yaml("decoder:\n  queries_per_view: 100\nhead:\n  depth_limit: 40\n", ModelConfig)
    assert cfg.decoder.queries_per_view == 100 and cfg.decoder.num_layers == 3
    assert cfg.head.depth_limit == 40.0 and isinstance(cfg.head.depth_limit, float)
    assert cfg.backbone == BackboneConfig()


def test_normalization_defaults_per_kind():
    assert BackboneConfig(kind="open_clip").normalization()[0][0] == pytest.approx(0.4815, abs=1e-4)
    assert BackboneConfig().normalization()[1] == (0.229, 0.224, 0.225)
    assert BackboneConfig(mean=(0.5, 0.5, 0.5)).normalization()[0] == (0.5, 0.5, 0.5)


@pytest.fixture
def full_config_available():
    for module in ("gausstr_core.text", "gausstr_core.losses", "gausstr_core.inference"):
        pytest.importorskip(module, reason=f"{module} is not in this checkout yet")


@pytest.mark.parametrize("name", PRESETS)
def test_full_presets_round_trip(tmp_path, name, full_config_available):
    from gausstr_core.config import GaussTRConfig
    from gausstr_core.presets import preset

    cfg = preset(name)
    assert cfg.preset == name and cfg.model == preset_model(name)
    assert cfg.text.embed_dim == cfg.model.head.feature_dim
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert to_dict(load_config(path, GaussTRConfig)) == to_dict(cfg)
    # A YAML naming a preset only overrides what it sets.
    partial = config_from_yaml(f"preset: {name}\nmodel:\n  decoder:\n    queries_per_view: 7\n")
    assert partial.model.decoder.queries_per_view == 7
    assert partial.model.head == cfg.model.head and partial.text == cfg.text
    assert "preset: " + name in config_to_yaml(cfg)


def test_feature_width_must_match_the_text_embeddings(full_config_available):
    from gausstr_core.config import GaussTRConfig
    from gausstr_core.presets import preset

    cfg = preset("tiny")
    with pytest.raises(ValueError, match=r"feature_dim \(32\) must equal the text encoder's embedding width"):
        model = dataclasses.replace(cfg.model, head=dataclasses.replace(cfg.model.head, feature_dim=32))
        GaussTRConfig(preset="custom", model=model, text=cfg.text, loss=cfg.loss, inference=cfg.inference)
    with pytest.raises(ValueError, match=r"unknown config key 'text\.bogus'|unknown config key.*bogus"):
        config_from_yaml("preset: tiny\ntext:\n  bogus: 1\n")
