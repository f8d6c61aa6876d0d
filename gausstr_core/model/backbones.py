"""Image feature backbones: one dense feature map per view at patch resolution.

* ``dinov2``: any timm ViT (default DINOv2 ViT-B/14 with 4 registers), dynamic input size, final
  norm applied, cls/register tokens dropped.
* ``open_clip``: a CLIP ViT with MaskCLIP dense features: the last block keeps only its value path
  (v -> out_proj, no q/k attention, no residual/MLP), then ``ln_post`` and the visual projection, so
  every patch lands in the joint image-text space (comparable with text embeddings).
* ``vit``: a small timm ViT trained from scratch (the CPU ``tiny`` preset).
* ``precomputed``: no network; the model reads ``batch.features``.

Weights only ever come from local files named in the config (.safetensors, or .pth/.pt read with
``torch.load(weights_only=True)``); random weights only when the config says ``random_init``.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.io.weights import load_weights_file
from gausstr_core.model.config import BackboneConfig

_WEIGHT_HINTS = {
    "vit_base_patch14_reg4_dinov2": (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth (torch.hub "
        "names, accepted as is), or model.safetensors of timm/vit_base_patch14_reg4_dinov2.lvd142m on the "
        "Hugging Face hub; `gausstr-convert-official` also extracts it from the official Talk2DINO checkpoint"
    ),
    "ViT-B-16-quickgelu": (
        "open_clip_model.safetensors of OpenAI CLIP ViT-B/16 (Hugging Face "
        "timm/vit_base_patch16_clip_224.openai; the full CLIP model or its visual tower)"
    ),
}


def _load_weights(module: nn.Module, state: dict[str, Tensor], weights: str, what: str) -> None:
    """Load a weights file's state dict into ``module``; ValueError naming the keys that do not fit."""
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights {weights} do not fit {what}: missing {result.missing_keys[:5]} "
            f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)})"
        )


def dinov2_hub_to_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a DINOv2 torch.hub state dict to timm's ViT layout (timm dicts pass through).

    torch.hub keeps one position for the cls token inside ``pos_embed`` and calls the registers
    ``register_tokens``; timm's DINOv2-with-registers models (``no_embed_class``) fold the cls
    position into ``cls_token`` and keep only patch positions. ``mask_token`` is training-only.
    """
    if "mask_token" not in state_dict and "register_tokens" not in state_dict:
        return dict(state_dict)
    sd = dict(state_dict)
    sd.pop("mask_token", None)
    out: dict[str, Tensor] = {}
    if "register_tokens" in sd:
        out["reg_token"] = sd.pop("register_tokens")
        pos = sd.pop("pos_embed")
        out["cls_token"] = sd.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    for k, v in sd.items():
        k = re.sub(r"^blocks\.(\d+)\.mlp\.w12\.", r"blocks.\1.mlp.fc1.", k)
        k = re.sub(r"^blocks\.(\d+)\.mlp\.w3\.", r"blocks.\1.mlp.fc2.", k)
        out[k] = v
    return out


def _missing_weights_error(config: BackboneConfig) -> ValueError:
    hint = _WEIGHT_HINTS.get(config.name, "the model's released weights")
    return ValueError(
        f"backbone {config.kind!r} ({config.name}) needs local weights: set model.backbone.weights to a "
        f".safetensors or .pth file ({hint}); this machine cannot download them. Use random_init: true "
        f"only for tests and benchmarks."
    )


class Backbone(nn.Module):
    """Base: normalises [0, 1] RGB and returns (BV, C, H/p, W/p); frozen ones stay in eval mode."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        mean, std = config.normalization()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def frozen(self) -> bool:
        return self.config.frozen

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Backbone:
        # A frozen foundation model is never in training mode (no dropout, fixed statistics).
        return super().train(mode and not self.frozen)

    def check_input(self, images: Tensor) -> None:
        p = self.config.patch_size
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"backbone input must be (BV, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(
                f"input size {tuple(images.shape[-2:])} must be a multiple of the patch size {p}"
            )

    def forward(self, images: Tensor) -> Tensor:
        """(BV, 3, H, W) RGB in [0, 1] -> (BV, C, H/p, W/p)."""
        self.check_input(images)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.frozen:
            with torch.no_grad():
                return self.features(x)
        return self.features(x)

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class TimmViTBackbone(Backbone):
    """A timm VisionTransformer (``vit``): DINOv2 (``dinov2``) or a small one trained from scratch."""

    def __init__(self, config: BackboneConfig, image_size: tuple[int, int]) -> None:
        super().__init__(config)
        import timm
        from timm.models.vision_transformer import VisionTransformer

        if config.kind == "vit":
            self.vit = VisionTransformer(
                img_size=tuple(image_size),
                patch_size=config.patch_size,
                embed_dim=config.channels,
                depth=config.vit_depth,
                num_heads=config.vit_heads,
                num_classes=0,
                global_pool="",
                class_token=False,
                dynamic_img_size=True,
            )
        else:
            self.vit = timm.create_model(config.name, pretrained=False, num_classes=0, dynamic_img_size=True)
        if self.vit.embed_dim != config.channels:
            raise ValueError(
                f"backbone {config.name} has width {self.vit.embed_dim}, config says "
                f"channels={config.channels}"
            )
        patch = self.vit.patch_embed.patch_size[0]
        if patch != config.patch_size:
            raise ValueError(
                f"backbone {config.name} has patch size {patch}, config says {config.patch_size}"
            )
        if config.weights:
            state = dinov2_hub_to_timm(load_weights_file(config.weights))
            _load_weights(self.vit, state, config.weights, config.name)
        elif config.kind == "dinov2" and not config.random_init:
            raise _missing_weights_error(config)
        if config.frozen:
            self.freeze()

    def features(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]  # final norm applied
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class MaskCLIPBackbone(Backbone):
    """open_clip ViT visual tower with MaskCLIP dense features in the joint image-text space."""

    def __init__(self, config: BackboneConfig, visual: nn.Module | None = None) -> None:
        super().__init__(config)
        if visual is None:
            visual = self._create_visual(config)
        self.visual = visual
        out_dim = visual.proj.shape[1] if visual.proj is not None else visual.ln_post.normalized_shape[0]
        if out_dim != config.channels:
            raise ValueError(
                f"open_clip {config.name} projects to {out_dim} channels, config says "
                f"channels={config.channels}"
            )
        if visual.conv1.kernel_size[0] != config.patch_size:
            raise ValueError(
                f"open_clip {config.name} has patch size {visual.conv1.kernel_size[0]}, config "
                f"says {config.patch_size}"
            )
        if config.frozen:
            self.freeze()

    @staticmethod
    def _create_visual(config: BackboneConfig) -> nn.Module:
        import open_clip

        if not config.weights and not config.random_init:
            raise _missing_weights_error(config)
        # open_clip warns about random weights here; ours are loaded right below (or asked for).
        logging.disable(logging.WARNING)
        try:
            model = open_clip.create_model(config.name, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
        if config.weights:
            state = load_weights_file(config.weights)
            if any(k.startswith("visual.") for k in state):
                state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
            _load_weights(model.visual, state, config.weights, f"open_clip {config.name}'s visual tower")
        return model.visual

    def positional_embedding(self, h: int, w: int) -> Tensor:
        """(1 + h*w, width) positions: the class position plus the patch grid resized (bicubic)."""
        pos = self.visual.positional_embedding
        cls_pos, grid = pos[:1], pos[1:]
        g = round(grid.shape[0] ** 0.5)
        if (g, g) == (h, w):
            return pos
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(pos.dtype)])

    def features(self, x: Tensor) -> Tensor:
        v = self.visual
        x = v.conv1(x)  # (BV, width, h, w)
        bv, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(bv, 1, width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(h, w).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        last = blocks[-1]
        # MaskCLIP: the value path of the last block alone keeps each patch's own content.
        attn = last.attn
        v_weight, v_bias = attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
        x = attn.out_proj(F.linear(last.ln_1(x[:, 1:]), v_weight, v_bias))
        x = v.ln_post(x)
        if v.proj is not None:
            x = x @ v.proj
        return x.transpose(1, 2).reshape(bv, -1, h, w)


def build_backbone(config: BackboneConfig, image_size: tuple[int, int]) -> Backbone | None:
    """The configured backbone, or None for ``precomputed`` features."""
    if config.kind == "precomputed":
        return None
    if config.kind == "open_clip":
        return MaskCLIPBackbone(config)
    return TimmViTBackbone(config, image_size)
