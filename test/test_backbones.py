"""Backbones: dense map shapes, frozen behaviour, MaskCLIP semantics, safe weight loading."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer as OpenCLIPVisionTransformer
from safetensors.torch import save_file

from gausstr_core.io.weights import load_weights_file
from gausstr_core.model.backbones import (
    MaskCLIPBackbone,
    TimmViTBackbone,
    build_backbone,
    dinov2_hub_to_timm,
)
from gausstr_core.model.config import BackboneConfig

SMALL_DINO = dict(kind="dinov2", name="vit_small_patch14_reg4_dinov2", channels=384, patch_size=14)


def tiny_vit_config(**kw) -> BackboneConfig:
    return BackboneConfig(
        **{
            **dict(
                kind="vit",
                name="tiny",
                frozen=False,
                random_init=True,
                channels=32,
                patch_size=8,
                vit_depth=2,
                vit_heads=2,
            ),
            **kw,
        }
    )


def test_trainable_vit_shapes_and_gradients():
    bb = build_backbone(tiny_vit_config(), (32, 48))
    x = torch.rand(3, 3, 32, 48)
    y = bb(x)
    assert y.shape == (3, 32, 4, 6)
    y.sum().backward()
    assert all(p.grad is not None for p in bb.parameters())
    # Another resolution works (dynamic size).
    assert bb(torch.rand(1, 3, 40, 64)).shape == (1, 32, 5, 8)


def test_frozen_backbone_has_no_grad_and_stays_in_eval():
    bb = build_backbone(tiny_vit_config(frozen=True), (32, 48))
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())
    assert not bb(torch.rand(1, 3, 32, 48)).requires_grad


def test_input_size_must_be_patch_multiple():
    bb = build_backbone(tiny_vit_config(), (32, 48))
    with pytest.raises(ValueError, match="multiple of the patch"):
        bb(torch.rand(1, 3, 30, 48))


def test_dinov2_without_weights_is_a_clear_error():
    with pytest.raises(ValueError, match=r"needs local weights.*weights"):
        build_backbone(BackboneConfig(**SMALL_DINO), (28, 42))


def _to_hub_names(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the documented hub -> timm mapping (cls position split off arbitrarily)."""
    sd = dict(timm_state)
    cls_pos = torch.randn_like(sd["cls_token"])
    out = {
        "register_tokens": sd.pop("reg_token"),
        "cls_token": sd.pop("cls_token") - cls_pos,
        "pos_embed": torch.cat([cls_pos, sd.pop("pos_embed")], dim=1),
        "mask_token": torch.zeros(1, sd["patch_embed.proj.weight"].shape[0]),
    }
    out.update(sd)
    return out


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_dinov2_loads_torch_hub_weights(tmp_path, suffix):
    torch.manual_seed(0)
    source = build_backbone(BackboneConfig(**SMALL_DINO, random_init=True), (28, 42))
    hub = _to_hub_names(source.vit.state_dict())
    path = tmp_path / f"dinov2{suffix}"
    if suffix == ".pth":
        torch.save(hub, path)
    else:
        save_file({k: v.contiguous() for k, v in hub.items()}, str(path))
    loaded = build_backbone(BackboneConfig(**SMALL_DINO, weights=str(path)), (28, 42))
    x = torch.rand(2, 3, 28, 42)
    torch.testing.assert_close(loaded(x), source(x), rtol=1e-5, atol=1e-5)
    assert loaded(x).shape == (2, 384, 2, 3)


def test_dinov2_hub_to_timm_mapping():
    sd = {
        "cls_token": torch.ones(1, 1, 4),
        "pos_embed": torch.arange(12.0).view(1, 3, 4),
        "register_tokens": torch.zeros(1, 4, 4),
        "mask_token": torch.zeros(1, 4),
        "blocks.0.mlp.w12.weight": torch.ones(2),
        "blocks.0.attn.qkv.weight": torch.ones(3),
    }
    out = dinov2_hub_to_timm(sd)
    assert set(out) == {
        "cls_token",
        "pos_embed",
        "reg_token",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.attn.qkv.weight",
    }
    assert out["cls_token"].flatten().tolist() == [1.0, 2.0, 3.0, 4.0]  # cls + its position
    assert out["pos_embed"].shape == (1, 2, 4)
    timm_sd = {"cls_token": torch.ones(1)}
    assert dinov2_hub_to_timm(timm_sd) == timm_sd


def test_timm_position_resampling_is_the_official_bicubic_antialias():
    """The official (torch.hub DINOv2-reg) resizes the position grid with bicubic + antialias to
    (H/14, W/14); timm's dynamic-size path must do the same."""
    from timm.layers import resample_abs_pos_embed

    grid = torch.randn(1, 37 * 37, 8)
    got = resample_abs_pos_embed(grid, new_size=(36, 64), old_size=(37, 37), num_prefix_tokens=0)
    want = (
        F.interpolate(
            grid.reshape(1, 37, 37, 8).permute(0, 3, 1, 2), size=(36, 64), mode="bicubic", antialias=True
        )
        .permute(0, 2, 3, 1)
        .reshape(1, -1, 8)
    )
    torch.testing.assert_close(got, want)


def small_visual() -> OpenCLIPVisionTransformer:
    torch.manual_seed(0)
    return OpenCLIPVisionTransformer(
        image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0, output_dim=16
    ).eval()


def clip_config(**kw) -> BackboneConfig:
    return BackboneConfig(
        **{**dict(kind="open_clip", name="small", channels=16, patch_size=8, random_init=True), **kw}
    )


def test_maskclip_is_the_value_path_of_the_last_block():
    visual = small_visual()
    bb = MaskCLIPBackbone(clip_config(), visual)
    x = torch.rand(2, 3, 32, 32)
    got = bb(x)
    assert got.shape == (2, 16, 4, 4)

    # Reference through open_clip's own modules: at the native size the embedding is open_clip's,
    # and attention restricted to the diagonal returns exactly out_proj(v) for every token.
    mean, std = bb.mean, bb.std
    tokens = visual._embeds((x - mean) / std)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        tokens = block(tokens)
    last = blocks[-1]
    n = tokens.shape[1]
    diagonal = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
    v = last.attn(
        last.ln_1(tokens), last.ln_1(tokens), last.ln_1(tokens), attn_mask=diagonal, need_weights=False
    )[0]
    want = (visual.ln_post(v) @ visual.proj)[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_maskclip_other_resolutions_and_frozen():
    bb = MaskCLIPBackbone(clip_config(), small_visual())
    assert bb(torch.rand(1, 3, 24, 48)).shape == (1, 16, 3, 6)
    assert not any(p.requires_grad for p in bb.parameters())
    with pytest.raises(ValueError, match="projects to 16"):
        MaskCLIPBackbone(clip_config(channels=8), small_visual())


def test_open_clip_weights_of_the_full_clip_model_load_into_the_visual_tower(tmp_path, monkeypatch):
    import open_clip

    source = small_visual()
    full = {f"visual.{k}": v for k, v in source.state_dict().items()}
    full["token_embedding.weight"] = torch.zeros(4, 2)  # text side: ignored
    path = tmp_path / "clip.safetensors"
    save_file(full, str(path))

    class Clip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(123)  # different random weights than the source
            self.visual = OpenCLIPVisionTransformer(
                image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0, output_dim=16
            )

    monkeypatch.setattr(open_clip, "create_model", lambda name, pretrained=None: Clip())
    bb = MaskCLIPBackbone(clip_config(random_init=False, weights=str(path)))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(bb(x), MaskCLIPBackbone(clip_config(), source)(x))
    bad = tmp_path / "bad.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(32, 3, 8, 8)}, str(bad))
    with pytest.raises(ValueError, match="do not fit open_clip"):
        MaskCLIPBackbone(clip_config(random_init=False, weights=str(bad)))


def test_open_clip_without_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="needs local weights"):
        MaskCLIPBackbone(BackboneConfig(kind="open_clip", name="ViT-B-16", channels=512, patch_size=16))


def test_load_weights_file_refuses_unsafe_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights_file(tmp_path / "nope.pth")
    pickled = tmp_path / "object.pth"
    with open(pickled, "wb") as f:
        pickle.dump({"w": torch.ones(1), "obj": Exception("x")}, f, protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        load_weights_file(pickled)
    good = tmp_path / "ok.safetensors"
    save_file({"a": torch.ones(3)}, str(good))
    truncated = tmp_path / "bad.safetensors"
    truncated.write_bytes(good.read_bytes()[:20])
    with pytest.raises(ValueError, match="safetensors"):
        load_weights_file(truncated)
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}, "meta": {"epoch": 3}}, nested)
    assert list(load_weights_file(nested)) == ["a"]


def test_wrong_width_or_patch_is_reported():
    with pytest.raises(ValueError, match="width"):
        TimmViTBackbone(BackboneConfig(**{**SMALL_DINO, "channels": 768}, random_init=True), (28, 42))
    with pytest.raises(ValueError, match="patch size"):
        TimmViTBackbone(BackboneConfig(**{**SMALL_DINO, "patch_size": 16}, random_init=True), (32, 48))
