"""Convert the official hustvl/GaussTR release checkpoints to this package's safetensors format.

    gausstr-convert-official gausstr_talk2dino_e20_miou12.27.pth -o talk2dino.safetensors

The .pth files are mmengine checkpoints: ``state_dict`` (tensors) plus ``meta``, ``message_hub``,
``optimizer`` ... whose pickles name mmengine and numpy classes. They are read with
``torch.load(weights_only=True)``; classes outside torch's allowlist are bound to inert stand-ins
that only record their arguments, so no code from the file runs. Every official key is mapped onto
``GaussTR`` (mmcv/mmdet names -> ours, DINOv2 torch.hub -> timm names) and loaded strictly.

Outputs, next to each other:

* ``OUT.safetensors``: the model checkpoint (config + weights; metadata ``source``, ``preset``);
* ``OUT.backbone.safetensors`` (talk2dino): the DINOv2 weights carried by the official checkpoint,
  in timm names; the checkpoint's config names this file, so it is not stored twice;
* ``OUT.text_prototypes.safetensors`` (when the checkpoint has them): the official text prototypes
  ``prototypes`` (P, D) for the prompts listed in its metadata (Talk2DINO or CLIP space).

The converted model reproduces the official forward pass: per-view self-attention and no 3D mean
encoding (``decoder.self_attention: view``, ``decoder.mean_position_encoding: false``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
import sys
from pathlib import Path

import torch
from torch import Tensor

from gausstr_core.grid import OCC3D_RANGE
from gausstr_core.io.checkpoint import load_state_dict_strict, save_model_checkpoint
from gausstr_core.model.backbones import dinov2_hub_to_timm
from gausstr_core.model.config import ModelConfig
from gausstr_core.presets import preset_model

# The official prompt groups (gausstr/models/utils.py OCC3D_CATEGORIES) in the order of the
# prototype columns; group i is Occ3D class i + 1 (+1 more from "sidewalk" on, skipping other_flat);
# "sky" is mapped to free.
OFFICIAL_PROMPT_GROUPS = (
    ("barrier", ["barrier"]),
    ("bicycle", ["bicycle"]),
    ("bus", ["bus"]),
    ("car", ["car"]),
    ("construction_vehicle", ["construction vehicle"]),
    ("motorcycle", ["motorcycle"]),
    ("pedestrian", ["person"]),
    ("traffic_cone", ["cone"]),
    ("trailer", ["trailer"]),
    ("truck", ["truck"]),
    ("driveable_surface", ["road"]),
    ("sidewalk", ["sidewalk"]),
    ("terrain", ["terrain", "grass"]),
    ("manmade", ["building", "wall", "fence", "pole", "sign"]),
    ("vegetation", ["vegetation"]),
    ("sky", ["sky"]),
)

# Official key -> our key, for everything but the backbone. Patterns are anchored at both ends.
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"query_embeds\.weight", r"query_embed.weight"),
    (r"neck\.scale_convs\.(\d+)\.(.+)", r"neck.rescale.\1.\2"),
    (r"neck\.lateral_convs\.(\d+)\.conv\.weight", r"neck.lateral.\1.conv.weight"),
    (r"neck\.lateral_convs\.(\d+)\.norm_layer\.(weight|bias)", r"neck.lateral.\1.norm.\2"),
    (r"neck\.fpn_convs\.(\d+)\.conv\.weight", r"neck.output.\1.conv.weight"),
    (r"neck\.fpn_convs\.(\d+)\.norm_layer\.(weight|bias)", r"neck.output.\1.norm.\2"),
    (
        r"decoder\.layers\.(\d+)\.self_attn\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
        r"decoder.layers.\1.self_attn.\2",
    ),
    (
        r"decoder\.layers\.(\d+)\.cross_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\."
        r"(weight|bias)",
        r"decoder.layers.\1.cross_attn.\2.\3",
    ),
    (r"decoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)", r"decoder.layers.\1.ffn.fc1.\2"),
    (r"decoder\.layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)", r"decoder.layers.\1.ffn.fc2.\2"),
    (r"decoder\.layers\.(\d+)\.norms\.(\d)\.(weight|bias)", r"decoder.layers.\1.norms.\2.\3"),
    (r"decoder\.ref_point_head\.layers\.(\d)\.(weight|bias)", r"decoder.reference_encoder.layers.\1.\2"),
    (r"decoder\.norm\.(weight|bias)", r"decoder.norm.\1"),
    (r"gauss_heads\.(\d+)\.regress_head\.layers\.(\d)\.(weight|bias)", r"heads.\1.offset.layers.\2.\3"),
    (r"gauss_heads\.(\d+)\.opacity_head\.layers\.(\d)\.(weight|bias)", r"heads.\1.opacity.layers.\2.\3"),
    (r"gauss_heads\.(\d+)\.scale_head\.layers\.(\d)\.(weight|bias)", r"heads.\1.scale.layers.\2.\3"),
    (r"gauss_heads\.(\d+)\.feature_head\.layers\.(\d)\.(weight|bias)", r"heads.\1.feature.layers.\2.\3"),
    (r"gauss_heads\.(\d+)\.segment_head\.layers\.(\d)\.(weight|bias)", r"heads.\1.segment.layers.\2.\3"),
)
# Official buffers that are not network weights: the voxelizer's grid (checked against ours) and
# the text prototypes (exported separately).
VOXELIZER_KEY = re.compile(r"gauss_heads\.(\d+)\.voxelizer\.(vol_range|grid_coords)")
PROTOTYPE_KEY = re.compile(r"gauss_heads\.(\d+)\.text_proto_embeds")


class OfficialCheckpointError(ValueError):
    """The file is not an official GaussTR checkpoint this converter understands."""


def _inert_global(full_name: str) -> type:
    """A stand-in for a pickled global outside torch's allowlist: it accepts any construction or
    state and does nothing, so unpickling the surrounding metadata cannot run foreign code."""

    class Inert:
        def __new__(cls, *args, **kwargs):
            return object.__new__(cls)

        def __init__(self, *args, **kwargs) -> None:
            self.args = args

        def __setstate__(self, state) -> None:
            self.state = state

    module, _, name = full_name.rpartition(".")
    Inert.__module__, Inert.__qualname__, Inert.__name__ = module, name, name
    return Inert


def read_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of an official (mmengine) .pth checkpoint, loaded with weights_only=True.

    Raises:
        FileNotFoundError, OfficialCheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            stand_ins = [(_inert_global(n), n) for n in names]
            with torch.serialization.safe_globals(stand_ins):
                data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise OfficialCheckpointError(
                f"{path} could not be read with torch.load(weights_only=True), even with inert stand-ins for "
                f"its non-tensor objects ({exc}). On a machine with mmengine, extract the weights with "
                f"torch.save(torch.load(p, weights_only=False)['state_dict'], 'state_dict.pth') and convert "
                f"that file."
            ) from exc
    except Exception as exc:
        raise OfficialCheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data:
        raise OfficialCheckpointError(f"{path} holds no state dict")
    bad = [k for k, v in data.items() if not isinstance(v, Tensor)]
    if bad:
        raise OfficialCheckpointError(f"{path}: state dict entries that are not tensors: {bad[:5]}")
    return {k.removeprefix("module."): v for k, v in data.items()}


def detect_preset(state: dict[str, Tensor]) -> str:
    """ "talk2dino" (has a DINOv2 backbone) or "featup" (precomputed features, segmentation head)."""
    if any(k.startswith("backbone.") for k in state):
        return "talk2dino"
    if any(".segment_head." in k for k in state) or "neck.lateral_convs.2.conv.weight" in state:
        return "featup"
    raise OfficialCheckpointError("cannot tell the official preset from the keys (no backbone.*, no neck.*)")


def official_model_config(preset: str) -> ModelConfig:
    """Our ModelConfig that reproduces an official model's forward pass."""
    if preset not in ("talk2dino", "featup"):
        raise ValueError(f"official presets are 'talk2dino' and 'featup', got {preset!r}")
    cfg = preset_model(preset)
    cfg.decoder = dataclasses.replace(
        cfg.decoder,
        self_attention="view",
        mean_position_encoding=False,
        reference_init="random",
        cross_attn_dropout=0.1,
    )
    cfg.depth_head = dataclasses.replace(cfg.depth_head, enabled=False)
    if cfg.backbone.kind != "precomputed":
        cfg.backbone = dataclasses.replace(cfg.backbone, random_init=True, weights=None)
    return cfg


@dataclasses.dataclass
class ConvertedCheckpoint:
    """Result of ``convert_state_dict``.

    Attributes:
        state_dict: our keys -> tensors (backbone included, in timm names).
        prototypes: (P, D) official text prototypes, or None.
        dropped: official keys that are not network weights (voxelizer grid, prototypes).
    """

    state_dict: dict[str, Tensor]
    prototypes: Tensor | None
    dropped: list[str]


def convert_state_dict(official: dict[str, Tensor], feature_dim: int | None = None) -> ConvertedCheckpoint:
    """Map official keys to ours. Unknown official keys are an error naming them.

    Args:
        official: the official state dict.
        feature_dim: D of the Gaussian features, to orient the prototypes as (P, D).
    """
    out: dict[str, Tensor] = {}
    backbone = {k[len("backbone.") :]: v for k, v in official.items() if k.startswith("backbone.")}
    for k, v in dinov2_hub_to_timm(backbone).items():
        out[f"backbone.vit.{k}"] = v
    prototypes, dropped, unknown = None, [], []
    compiled = [(re.compile(p), r) for p, r in KEY_RULES]
    for key, value in official.items():
        if key.startswith("backbone."):
            continue
        if VOXELIZER_KEY.fullmatch(key):
            grid = torch.tensor(OCC3D_RANGE)
            if key.endswith("vol_range") and (
                value.shape != grid.shape or not torch.allclose(value.float().cpu(), grid)
            ):
                raise OfficialCheckpointError(
                    f"{key} = {value.tolist()} is not the Occ3D range {OCC3D_RANGE}"
                )
            dropped.append(key)
            continue
        if PROTOTYPE_KEY.fullmatch(key):
            dropped.append(key)
            if prototypes is None:
                p = value.float()
                prototypes = p.T.contiguous() if feature_dim is not None and p.shape[0] == feature_dim else p
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        more = ", ..." if len(unknown) > 8 else ""
        raise OfficialCheckpointError(
            f"{len(unknown)} official key(s) this converter does not know: "
            f"{', '.join(sorted(unknown)[:8])}{more}"
        )
    return ConvertedCheckpoint(out, prototypes, dropped)


def convert(path: str | Path, output: str | Path, preset: str | None = None) -> dict[str, Path]:
    """Convert an official checkpoint file; returns the written files by role."""
    from gausstr_core.model.gausstr import GaussTR

    output = Path(output)
    official = read_official_state_dict(path)
    preset = preset or detect_preset(official)
    cfg = official_model_config(preset)
    converted = convert_state_dict(official, cfg.head.feature_dim)
    model = GaussTR(cfg)
    load_state_dict_strict(model, converted.state_dict, where=f"official checkpoint {path} (as {preset})")

    written: dict[str, Path] = {}
    stem = output.name.removesuffix(".safetensors")
    if model.backbone is not None:
        from safetensors.torch import save_file

        backbone_path = output.with_name(f"{stem}.backbone.safetensors")
        save_file(
            {k: v.contiguous() for k, v in model.backbone.vit.state_dict().items()},
            str(backbone_path),
            metadata={"source": str(Path(path).name), "naming": "timm"},
        )
        cfg.backbone = dataclasses.replace(cfg.backbone, weights=backbone_path.name, random_init=False)
        written["backbone"] = backbone_path
        # Build again from the file: proves the exported backbone reproduces the official one.
        rebuilt = GaussTR(_with_weights_path(cfg, backbone_path))
        load_state_dict_strict(
            rebuilt, {k: v for k, v in converted.state_dict.items() if not k.startswith("backbone.")}
        )
        model = rebuilt
    metadata = {"preset": preset, "source": Path(path).name, "dropped_official_keys": converted.dropped}
    written["checkpoint"] = save_model_checkpoint(output, model, cfg, metadata)
    if converted.prototypes is not None:
        from safetensors.torch import save_file

        proto_path = output.with_name(f"{stem}.text_prototypes.safetensors")
        prompts = [p for _, group in OFFICIAL_PROMPT_GROUPS for p in group]
        meta = {
            "source": Path(path).name,
            "layout": "(P, D): one row per prompt",
            "prompts": json.dumps(prompts) if converted.prototypes.shape[0] == len(prompts) else "[]",
            "groups": json.dumps(OFFICIAL_PROMPT_GROUPS),
        }
        save_file({"prototypes": converted.prototypes.contiguous()}, str(proto_path), metadata=meta)
        written["text_prototypes"] = proto_path
    return written


def _with_weights_path(cfg: ModelConfig, path: Path) -> ModelConfig:
    out = dataclasses.replace(cfg)
    out.backbone = dataclasses.replace(cfg.backbone, weights=str(path))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gausstr-convert-official",
        description="Convert a hustvl/GaussTR release checkpoint (.pth) to a gausstr safetensors checkpoint.",
    )
    parser.add_argument(
        "checkpoint", help="gausstr_talk2dino_e20_miou12.27.pth or gausstr_featup_e24_miou11.70.pth"
    )
    parser.add_argument("-o", "--output", required=True, help="output .safetensors path")
    parser.add_argument(
        "--preset",
        choices=("talk2dino", "featup"),
        default=None,
        help="official config the checkpoint was trained with (default: detected from its keys)",
    )
    args = parser.parse_args(argv)
    try:
        written = convert(args.checkpoint, args.output, args.preset)
    except (OfficialCheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"gausstr-convert-official: {exc}", file=sys.stderr)
        return 1
    for role, p in written.items():
        print(f"{role}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
