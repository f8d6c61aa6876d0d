"""The official-checkpoint converter, on state dicts built with the official key names and shapes.

The table below is derived from reading hustvl/GaussTR (configs/gausstr_{talk2dino,featup}.py,
gausstr/models/*.py) and the mmcv/mmdet/DINOv2 modules it builds:

* backbone (talk2dino): torch.hub ``dinov2_vitb14_reg`` (ViT-B/14, 4 registers, 518 px -> 37x37
  positions + 1 cls position, LayerScale ``ls1/ls2.gamma``, ``mask_token``);
* neck ``ViTDetFPN(768|512 -> 256, norm LN2d)``: ``scale_convs`` 0 = ConvT(C, C/2) + LN2d + GELU +
  ConvT(C/2, C/4) (Sequential indices 0, 1, 3), 1 = ConvT(C, C/2), 2 = Identity, 3 = MaxPool;
  ``lateral_convs``/``fpn_convs`` are mmcv ConvModules: bias-free conv + norm; mmcv names the LN2d
  layer ``norm_layer`` (infer_abbr finds no known norm in the class name);
* decoder ``GaussTRDecoder``: layers.{i}.cross_attn = mmcv MultiScaleDeformableAttention(256, 8 heads,
  4 levels, 4 points), self_attn = mmcv MultiheadAttention (wraps nn.MultiheadAttention as ``attn``),
  ffn = mmcv FFN (``layers.0.0`` Linear(256, 2048), ``layers.1`` Linear(2048, 256)), norms.0-2;
  ``ref_point_head`` = mmdet MLP(256, 256, 256, 2 layers); ``norm`` = LayerNorm(256);
* ``query_embeds`` = Embedding(300, 256);
* gauss_heads.{0,1,2}: GaussTR MLPs (hidden 4x input) ``opacity_head`` (->1), ``feature_head``
  (->768|512), ``scale_head`` (->3), ``regress_head`` (->3), featup ``segment_head`` (128 -> 512 -> 26);
  buffers ``text_proto_embeds`` (D, P) and the voxelizer's ``vol_range`` (6) and ``grid_coords``
  (200, 200, 16, 3).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gausstr_core.batch import CameraBatch
from gausstr_core.io.checkpoint import (
    CheckpointMismatchError,
    build_model_from_checkpoint,
    load_state_dict_strict,
)
from gausstr_core.io.convert_official import (
    OfficialCheckpointError,
    convert_state_dict,
    detect_preset,
    main,
    official_model_config,
    read_official_state_dict,
)
from gausstr_core.model.gausstr import GaussTR

torch.set_num_threads(1)
C, FFN, Q, LAYERS, HEADS, LEVELS, POINTS = 256, 2048, 300, 3, 8, 4, 4


def mlp(prefix: str, d_in: int, d_out: int) -> dict[str, tuple]:
    return {
        f"{prefix}.layers.0.weight": (4 * d_in, d_in),
        f"{prefix}.layers.0.bias": (4 * d_in,),
        f"{prefix}.layers.1.weight": (d_out, 4 * d_in),
        f"{prefix}.layers.1.bias": (d_out,),
    }


def dinov2_vitb14_reg_shapes() -> dict[str, tuple]:
    d = 768
    shapes = {
        "backbone.cls_token": (1, 1, d),
        "backbone.pos_embed": (1, 1 + 37 * 37, d),
        "backbone.register_tokens": (1, 4, d),
        "backbone.mask_token": (1, d),
        "backbone.patch_embed.proj.weight": (d, 3, 14, 14),
        "backbone.patch_embed.proj.bias": (d,),
        "backbone.norm.weight": (d,),
        "backbone.norm.bias": (d,),
    }
    for i in range(12):
        b = f"backbone.blocks.{i}"
        shapes.update(
            {
                f"{b}.norm1.weight": (d,),
                f"{b}.norm1.bias": (d,),
                f"{b}.attn.qkv.weight": (3 * d, d),
                f"{b}.attn.qkv.bias": (3 * d,),
                f"{b}.attn.proj.weight": (d, d),
                f"{b}.attn.proj.bias": (d,),
                f"{b}.ls1.gamma": (d,),
                f"{b}.norm2.weight": (d,),
                f"{b}.norm2.bias": (d,),
                f"{b}.mlp.fc1.weight": (4 * d, d),
                f"{b}.mlp.fc1.bias": (4 * d,),
                f"{b}.mlp.fc2.weight": (d, 4 * d),
                f"{b}.mlp.fc2.bias": (d,),
                f"{b}.ls2.gamma": (d,),
            }
        )
    return shapes


def official_shapes(preset: str, prototypes: int = 21) -> dict[str, tuple]:
    feat = 768 if preset == "talk2dino" else 512
    shapes: dict[str, tuple] = dinov2_vitb14_reg_shapes() if preset == "talk2dino" else {}
    shapes.update(
        {
            "neck.scale_convs.0.0.weight": (feat, feat // 2, 2, 2),
            "neck.scale_convs.0.0.bias": (feat // 2,),
            "neck.scale_convs.0.1.weight": (feat // 2,),
            "neck.scale_convs.0.1.bias": (feat // 2,),
            "neck.scale_convs.0.3.weight": (feat // 2, feat // 4, 2, 2),
            "neck.scale_convs.0.3.bias": (feat // 4,),
            "neck.scale_convs.1.weight": (feat, feat // 2, 2, 2),
            "neck.scale_convs.1.bias": (feat // 2,),
            "query_embeds.weight": (Q, C),
            "decoder.norm.weight": (C,),
            "decoder.norm.bias": (C,),
        }
    )
    for i, cin in enumerate([feat // 4, feat // 2, feat, feat]):
        shapes.update(
            {
                f"neck.lateral_convs.{i}.conv.weight": (C, cin, 1, 1),
                f"neck.lateral_convs.{i}.norm_layer.weight": (C,),
                f"neck.lateral_convs.{i}.norm_layer.bias": (C,),
                f"neck.fpn_convs.{i}.conv.weight": (C, C, 3, 3),
                f"neck.fpn_convs.{i}.norm_layer.weight": (C,),
                f"neck.fpn_convs.{i}.norm_layer.bias": (C,),
            }
        )
    shapes.update(mlp("decoder.ref_point_head", C, C))
    shapes["decoder.ref_point_head.layers.0.weight"] = (C, C)  # mmdet MLP: hidden = 256, not 4x
    shapes["decoder.ref_point_head.layers.0.bias"] = (C,)
    shapes["decoder.ref_point_head.layers.1.weight"] = (C, C)
    for i in range(LAYERS):
        lay = f"decoder.layers.{i}"
        shapes.update(
            {
                f"{lay}.self_attn.attn.in_proj_weight": (3 * C, C),
                f"{lay}.self_attn.attn.in_proj_bias": (3 * C,),
                f"{lay}.self_attn.attn.out_proj.weight": (C, C),
                f"{lay}.self_attn.attn.out_proj.bias": (C,),
                f"{lay}.cross_attn.sampling_offsets.weight": (HEADS * LEVELS * POINTS * 2, C),
                f"{lay}.cross_attn.sampling_offsets.bias": (HEADS * LEVELS * POINTS * 2,),
                f"{lay}.cross_attn.attention_weights.weight": (HEADS * LEVELS * POINTS, C),
                f"{lay}.cross_attn.attention_weights.bias": (HEADS * LEVELS * POINTS,),
                f"{lay}.cross_attn.value_proj.weight": (C, C),
                f"{lay}.cross_attn.value_proj.bias": (C,),
                f"{lay}.cross_attn.output_proj.weight": (C, C),
                f"{lay}.cross_attn.output_proj.bias": (C,),
                f"{lay}.ffn.layers.0.0.weight": (FFN, C),
                f"{lay}.ffn.layers.0.0.bias": (FFN,),
                f"{lay}.ffn.layers.1.weight": (C, FFN),
                f"{lay}.ffn.layers.1.bias": (C,),
            }
        )
        for j in range(3):
            shapes[f"{lay}.norms.{j}.weight"] = (C,)
            shapes[f"{lay}.norms.{j}.bias"] = (C,)
        h = f"gauss_heads.{i}"
        shapes.update(mlp(f"{h}.opacity_head", C, 1))
        shapes.update(mlp(f"{h}.feature_head", C, feat))
        shapes.update(mlp(f"{h}.scale_head", C, 3))
        shapes.update(mlp(f"{h}.regress_head", C, 3))
        if preset == "featup":
            shapes.update(mlp(f"{h}.segment_head", 128, 26))
        shapes[f"{h}.text_proto_embeds"] = (feat, prototypes)
        shapes[f"{h}.voxelizer.vol_range"] = (6,)
        shapes[f"{h}.voxelizer.grid_coords"] = (200, 200, 16, 3)
    return shapes


def official_state_dict(preset: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(s, generator=g) * 0.02 for k, s in official_shapes(preset).items()}
    for k in out:
        if k.endswith("vol_range"):
            out[k] = torch.tensor([-40.0, -40.0, -1.0, 40.0, 40.0, 5.4])
    return out


def save_mmengine_style(path, state: dict[str, torch.Tensor]) -> None:
    """A .pth like mmengine writes: state_dict + meta + message_hub with a HistoryBuffer and numpy."""
    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    for n in names:
        sys.modules[n] = types.ModuleType(n)

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.arange(4.0)
            self._count_history = np.ones(4)
            self.max_length = 1000000

    HistoryBuffer.__module__ = "mmengine.logging.history_buffer"
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    sys.modules[names[-1]].HistoryBuffer = HistoryBuffer
    try:
        torch.save(
            {
                "meta": {
                    "epoch": 20,
                    "mmengine_version": "0.10.4",
                    "seed": np.int64(0),
                    "dataset_meta": {"classes": ["car"]},
                },
                "state_dict": state,
                "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}},
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4}]},
            },
            path,
        )
    finally:
        for n in names:  # gone when loading: nothing of it can be imported or run
            del sys.modules[n]


def test_mmengine_checkpoint_is_read_without_unpickling_its_objects(tmp_path):
    state = {"query_embeds.weight": torch.ones(3, 2)}
    path = tmp_path / "official.pth"
    save_mmengine_style(path, state)
    with pytest.raises(Exception, match=r"(?i)unsupported global|weights_only"):
        torch.load(path, weights_only=True)  # plain weights_only refuses the metadata ...
    got = read_official_state_dict(path)  # ... the converter binds it to inert stand-ins
    assert list(got) == ["query_embeds.weight"]
    assert torch.equal(got["query_embeds.weight"], state["query_embeds.weight"])
    with pytest.raises(FileNotFoundError):
        read_official_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialCheckpointError):
        read_official_state_dict(tmp_path / "junk.pth")


def test_featup_converts_strictly_and_runs(tmp_path):
    state = official_state_dict("featup")
    assert detect_preset(state) == "featup"
    path = tmp_path / "gausstr_featup_e24_miou11.70.pth"
    save_mmengine_style(path, state)
    out = tmp_path / "featup.safetensors"
    assert main([str(path), "-o", str(out)]) == 0
    model, config, meta = build_model_from_checkpoint(out)
    assert meta["preset"] == "featup" and meta["source"] == path.name
    assert config.decoder.self_attention == "view" and not config.decoder.mean_position_encoding
    sd = model.state_dict()
    pairs = {
        "decoder.layers.1.ffn.fc1.weight": "decoder.layers.1.ffn.layers.0.0.weight",
        "decoder.layers.2.ffn.fc2.bias": "decoder.layers.2.ffn.layers.1.bias",
        "decoder.layers.0.self_attn.in_proj_weight": "decoder.layers.0.self_attn.attn.in_proj_weight",
        "decoder.layers.1.cross_attn.value_proj.bias": "decoder.layers.1.cross_attn.value_proj.bias",
        "decoder.layers.2.norms.1.weight": "decoder.layers.2.norms.1.weight",
        "neck.lateral.3.norm.weight": "neck.lateral_convs.3.norm_layer.weight",
        "neck.output.0.conv.weight": "neck.fpn_convs.0.conv.weight",
        "neck.rescale.0.3.weight": "neck.scale_convs.0.3.weight",
        "decoder.reference_encoder.layers.1.weight": "decoder.ref_point_head.layers.1.weight",
        "heads.2.offset.layers.0.weight": "gauss_heads.2.regress_head.layers.0.weight",
        "heads.1.segment.layers.1.bias": "gauss_heads.1.segment_head.layers.1.bias",
        "query_embed.weight": "query_embeds.weight",
    }
    for ours, theirs in pairs.items():
        torch.testing.assert_close(sd[ours], state[theirs], msg=ours)
    # Prototypes exported as (P, D) rows.
    with safe_open(str(tmp_path / "featup.text_prototypes.safetensors"), "pt") as f:
        protos = f.get_tensor("prototypes")
        assert "barrier" in f.metadata()["prompts"]
    torch.testing.assert_close(protos, state["gauss_heads.0.text_proto_embeds"].T)
    # The converted model runs (precomputed 512-d features at stride 16).
    b, v, h, w = 1, 2, 64, 112
    k = torch.tensor([[70.0, 0, 56], [0, 70, 32], [0, 0, 1]]).expand(b, v, 3, 3)
    batch = CameraBatch(
        torch.rand(b, v, 3, h, w),
        k,
        torch.eye(4).expand(b, v, 4, 4).clone(),
        CameraBatch.identity_aug(b, v),
        depth=torch.rand(b, v, h, w) * 30 + 1,
        features=torch.randn(b, v, 512, h // 16, w // 16),
    )
    assert model(batch).final.features.shape == (1, 600, 512)


def test_talk2dino_converts_with_its_dinov2_backbone(tmp_path):
    state = official_state_dict("talk2dino")
    assert detect_preset(state) == "talk2dino"
    path = tmp_path / "gausstr_talk2dino_e20_miou12.27.pth"
    torch.save({"state_dict": state}, path)
    out = tmp_path / "talk2dino.safetensors"
    assert main([str(path), "-o", str(out)]) == 0
    backbone_file = tmp_path / "talk2dino.backbone.safetensors"
    with safe_open(str(out), "pt") as f:
        assert not any(k.startswith("backbone.") for k in f.keys())  # noqa: SIM118  # frozen, named file: not duplicated
    model, config, _ = build_model_from_checkpoint(out)
    assert config.backbone.weights == str(backbone_file) and not config.backbone.random_init
    vit = model.backbone.vit.state_dict()
    torch.testing.assert_close(vit["reg_token"], state["backbone.register_tokens"])
    cls = state["backbone.cls_token"] + state["backbone.pos_embed"][:, :1]
    torch.testing.assert_close(vit["cls_token"], cls)
    torch.testing.assert_close(vit["pos_embed"], state["backbone.pos_embed"][:, 1:])
    torch.testing.assert_close(vit["blocks.11.ls2.gamma"], state["backbone.blocks.11.ls2.gamma"])
    torch.testing.assert_close(
        model.state_dict()["heads.0.feature.layers.1.weight"],
        state["gauss_heads.0.feature_head.layers.1.weight"],
    )


def test_unknown_and_missing_official_keys_are_reported():
    state = official_state_dict("featup")
    extra = dict(state, **{"decoder.layers.0.extra_attn.weight": torch.zeros(2)})
    with pytest.raises(OfficialCheckpointError, match=r"1 official key\(s\).*extra_attn\.weight"):
        convert_state_dict(extra)
    missing = dict(state)
    del missing["gauss_heads.1.scale_head.layers.1.weight"]
    converted = convert_state_dict(missing, 512)
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): heads.1.scale.layers.1.weight"):
        load_state_dict_strict(GaussTR(official_model_config("featup")), converted.state_dict)
    bad_shape = dict(state, **{"query_embeds.weight": torch.zeros(900, 256)})
    with pytest.raises(CheckpointMismatchError, match=r"query_embed\.weight \(checkpoint \(900, 256\)"):
        load_state_dict_strict(
            GaussTR(official_model_config("featup")), convert_state_dict(bad_shape).state_dict
        )
    wrong_range = torch.tensor([-50.0, -50, -5, 50, 50, 3])
    wrong_grid = dict(state, **{"gauss_heads.0.voxelizer.vol_range": wrong_range})
    with pytest.raises(OfficialCheckpointError, match="Occ3D range"):
        convert_state_dict(wrong_grid)


def test_every_official_key_is_mapped_or_explicitly_dropped():
    for preset in ("featup", "talk2dino"):
        shapes = official_shapes(preset)
        state = {
            k: torch.zeros(s) if "pos_embed" in k or "cls_token" in k else torch.empty(0)
            for k, s in shapes.items()
        }
        occ3d = torch.tensor([-40.0, -40, -1, 40, 40, 5.4])
        state.update({k: occ3d for k in state if k.endswith("vol_range")})
        converted = convert_state_dict(state)
        model_keys = set(GaussTR(official_model_config(preset)).state_dict())
        assert set(converted.state_dict) == model_keys, preset
        assert sorted(converted.dropped) == sorted(k for k in shapes if "voxelizer" in k or "text_proto" in k)
