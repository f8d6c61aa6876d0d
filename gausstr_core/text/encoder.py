"""Text prototypes for open-vocabulary inference: the frozen open_clip text tower, prompt templates,
an optional Talk2DINO-style projection, a per-prompt cache, and fixed prototype tables.

Embedding conventions (each follows the method the prototypes must match):

* Plain CLIP (e.g. the featup preset, MaskCLIP image features): every template's embedding is
  normalised, the templates are averaged, the average is normalised again (CLIP zero-shot practice).
* With a projection (the talk2dino preset): the raw CLIP embeddings are averaged over the templates,
  projected into the DINOv2 feature space by the learned Talk2DINO layer, then normalised (what
  Talk2DINO's ``build_text_embedding`` does).

Weights are only read from local files named in the config; random weights only when the config
sets ``random_init_seed`` (tests, the synthetic world, benchmarks).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.device import resolve_device
from gausstr_core.io.weights import load_weights_file
from gausstr_core.text.config import (
    PROJECTION_ACTIVATIONS,
    TINY_EMBED_DIM,
    TINY_MODEL_NAME,
    TextEncoderConfig,
)

TINY_OPEN_CLIP_CONFIG: dict = {
    # An open_clip CLIP model config (the format of open_clip/model_configs/*.json), small enough to
    # build in well under a second on a CPU. The vision tower is a minimal placeholder that is
    # dropped after construction; only the text tower is used.
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""The ``gausstr-tiny`` text tower: 2 layers of width 64, 64-d embeddings, random init only."""

_CUSTOM_MODELS = {TINY_MODEL_NAME: TINY_OPEN_CLIP_CONFIG}

_WEIGHTS_HELP = (
    "Text encoder weights are read from local files only. Download an open_clip checkpoint of "
    "the model on a machine with internet access, e.g. for ViT-B-16-quickgelu (OpenAI CLIP ViT-B/16) "
    "'open_clip_model.safetensors' from https://huggingface.co/timm/vit_base_patch16_clip_224.openai, "
    "and set text.checkpoint to its path (or set text.random_init_seed for random weights in tests)."
)
_PROJECTION_HELP = (
    "The Talk2DINO projection maps CLIP ViT-B/16 text embeddings into the DINOv2 ViT-B/14 space: "
    "download weights/vitb_mlp_infonce.pth from https://github.com/lorebianchi98/Talk2DINO and set "
    "text.projection_checkpoint to its path."
)


# --- projection --------------------------------------------------------------------------------

_ACTIVATIONS = dict(zip(PROJECTION_ACTIVATIONS, (nn.Tanh, nn.ReLU, nn.Identity)))
_TALK2DINO_IMAGE_KEYS = re.compile(r"^(attn_weights|weight_layer1\.\w+|weight_layer2\.\w+)$")


class TextProjection(nn.Module):
    """Talk2DINO's text projection: x -> Linear(x), then (activation, Linear) per hidden layer.

    Parameter names match Talk2DINO's ``ProjectionLayer`` so its weight files load unchanged.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_layers: int = 1, activation: str = "tanh"):
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim)
        self.hidden_layers = nn.ModuleList(nn.Linear(out_dim, out_dim) for _ in range(hidden_layers))
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        x = self.linear_layer(x)
        for layer in self.hidden_layers:
            x = layer(self.act(x))
        return x

    def load_talk2dino(self, path: str | Path) -> None:
        """Load a Talk2DINO ``ProjectionLayer`` weight file; mismatches raise with the key names."""
        state = dict(load_weights_file(path))
        if "linear_layer2.weight" in state:  # Talk2DINO's older name of the single hidden layer
            state["hidden_layers.0.weight"] = state.pop("linear_layer2.weight")
            state["hidden_layers.0.bias"] = state.pop("linear_layer2.bias")
        state = {k: v for k, v in state.items() if not _TALK2DINO_IMAGE_KEYS.match(k)}
        _load_strict(self, state, f"text projection {path}")


# --- the encoder -------------------------------------------------------------------------------


class TextEncoder:
    """Frozen text encoder producing unit-norm prototypes, cached per prompt string.

    ``encode(prompts)`` only runs the network for prompts it has not seen, so changing a vocabulary
    costs only its new names.
    """

    def __init__(self, config: TextEncoderConfig):
        self.config = config
        self.device = resolve_device(config.device)
        self.model, self.tokenizer = _build_clip_text(config)
        self.model.to(self.device)
        self.projection: TextProjection | None = None
        clip_dim = _clip_embed_dim(self.model)
        if config.projection:
            self.projection = _build_projection(config, clip_dim).to(self.device)
        elif clip_dim != config.embed_dim:
            raise ValueError(
                f"open_clip {config.model_name} embeds text in {clip_dim} dimensions but "
                f"text.embed_dim is {config.embed_dim} (and text.projection is off)"
            )
        for module in (self.model, self.projection):
            if module is not None:
                module.eval().requires_grad_(False)
        self._cache: dict[str, Tensor] = {}

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def set_templates(self, templates: Sequence[str]) -> None:
        """Use other prompt templates from now on (validated; the prototype cache is cleared)."""
        self.config = dataclasses.replace(self.config, templates=tuple(templates))
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        """Number of prompts whose prototypes are cached."""
        return len(self._cache)

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Prototypes of prompts.

        Args:
            prompts: P non-empty strings (category prompts such as "car", without template).
        Returns:
            (P, D) float32 unit vectors on ``self.device``.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"encode() needs a list of non-empty strings, got {prompts!r}")
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if new:
            for p, e in zip(new, self._encode_uncached(new)):
                self._cache[p] = e
        if not prompts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.stack([self._cache[p] for p in prompts])

    @torch.no_grad()  # not inference_mode: callers may multiply prototypes with tensors that need grad
    def _encode_uncached(self, prompts: list[str]) -> Tensor:
        templates = self.config.templates
        texts = [t.format(p) for p in prompts for t in templates]
        chunks = []
        for start in range(0, len(texts), self.config.batch_size):
            tokens = self.tokenizer(texts[start : start + self.config.batch_size]).to(self.device)
            chunks.append(self.model.encode_text(tokens).float())
        emb = torch.cat(chunks).reshape(len(prompts), len(templates), -1)
        if self.projection is None:
            emb = F.normalize(F.normalize(emb, dim=-1).mean(1), dim=-1)
        else:
            emb = F.normalize(self.projection(emb.mean(1)), dim=-1)
        return emb


class PrototypeTable:
    """Fixed prototypes of a known set of prompts, in place of a text encoder.

    For the official GaussTR text prototypes that ``gausstr-convert-official`` exports next to a
    converted checkpoint (``<name>.text_prototypes.safetensors``: tensor ``prototypes`` (P, D) and
    JSON metadata ``prompts``): with them a converted model predicts exactly as the official one.
    Only the known prompts can be encoded (``knows``); the predictor leaves the others out.
    """

    def __init__(self, prompts: Sequence[str], prototypes: Tensor, device: str | torch.device = "cpu"):
        prompts = [" ".join(p.split()) for p in prompts]
        if prototypes.dim() != 2 or prototypes.shape[0] != len(prompts) or len(set(prompts)) != len(prompts):
            raise ValueError(
                f"a prototype table needs P distinct prompts and (P, D) prototypes, got "
                f"{len(prompts)} prompts ({len(set(prompts))} distinct) and "
                f"{tuple(prototypes.shape)}"
            )
        self.device = resolve_device(device)
        self.prompts = tuple(prompts)
        self._rows = {p.casefold(): i for i, p in enumerate(prompts)}
        self.prototypes = prototypes.detach().to(self.device, torch.float32)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> PrototypeTable:
        """Read a ``*.text_prototypes.safetensors`` file (see the class docstring)."""
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = list(f.keys())
            if "prototypes" not in names:
                raise ValueError(f"{path} has no 'prototypes' tensor")
            prototypes = f.get_tensor("prototypes")
        prompts = json.loads(meta.get("prompts", "[]"))
        if not prompts:
            raise ValueError(
                f"{path} does not list its prompts (metadata 'prompts'), so its rows cannot be "
                f"matched to categories"
            )
        return cls(prompts, prototypes, device)

    @property
    def embed_dim(self) -> int:
        return self.prototypes.shape[1]

    def knows(self, prompt: str) -> bool:
        return " ".join(prompt.split()).casefold() in self._rows

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """(P, D) rows of known prompts; an unknown prompt is a ValueError naming the known ones."""
        unknown = [p for p in prompts if not self.knows(p)]
        if unknown:
            raise ValueError(f"prompts {unknown} are not in the prototype table; known: {list(self.prompts)}")
        rows = [self._rows[" ".join(p.split()).casefold()] for p in prompts]
        return self.prototypes[torch.tensor(rows, dtype=torch.long, device=self.device)]


def _build_clip_text(config: TextEncoderConfig):
    """(open_clip CLIP model with its vision tower dropped, tokenizer), built on the CPU."""
    import open_clip

    custom = _CUSTOM_MODELS.get(config.model_name)
    if config.random_init_seed is None and config.checkpoint is None:
        raise ValueError(f"text.checkpoint is not set for open_clip {config.model_name!r}. {_WEIGHTS_HELP}")
    if config.random_init_seed is None and not Path(config.checkpoint).is_file():
        raise FileNotFoundError(f"text.checkpoint {config.checkpoint!r} does not exist. {_WEIGHTS_HELP}")
    if custom is None and config.model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {config.model_name!r}; e.g. ViT-B-16-quickgelu, ViT-B-16, "
            f"ViT-L-14 (open_clip.list_models()) or {TINY_MODEL_NAME!r}"
        )

    # Random weights are the same in every process: a private generator state, on the CPU.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if config.random_init_seed is None else config.random_init_seed)
        if custom is not None:
            model = open_clip.CLIP(**custom)
        else:
            model = open_clip.create_model(config.model_name, pretrained=None, load_weights=False)
    if config.random_init_seed is None:
        try:
            open_clip.load_checkpoint(model, config.checkpoint, strict=True, weights_only=True)
        except Exception as exc:  # torch/safetensors/open_clip each raise their own kinds
            raise ValueError(
                f"text.checkpoint {config.checkpoint} cannot be loaded into open_clip "
                f"{config.model_name} (a tensor-only state dict is required): {exc}"
            ) from exc
    if hasattr(model, "visual"):
        del model.visual  # only the text tower is used; the image side lives in the backbone
    if custom is not None:
        tokenizer = open_clip.SimpleTokenizer(context_length=custom["text_cfg"]["context_length"])
    else:
        tokenizer = open_clip.get_tokenizer(config.model_name)
    return model, tokenizer


def _clip_embed_dim(model: nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return proj.out_features
    if isinstance(proj, Tensor):
        return proj.shape[1]
    raise ValueError("cannot tell the text embedding width of this open_clip model (no text_projection)")


def _build_projection(config: TextEncoderConfig, clip_dim: int) -> TextProjection:
    if config.random_init_seed is None and config.projection_checkpoint is None:
        raise ValueError(
            f"text.projection is on but text.projection_checkpoint is not set. {_PROJECTION_HELP}"
        )
    with torch.random.fork_rng(devices=[]):
        # Distinct from the text tower's stream, the same in every process.
        torch.manual_seed(0 if config.random_init_seed is None else config.random_init_seed + 1)
        projection = TextProjection(
            clip_dim, config.embed_dim, config.projection_hidden_layers, config.projection_activation
        )
    if config.random_init_seed is None:
        if not Path(config.projection_checkpoint).is_file():
            raise FileNotFoundError(
                f"text.projection_checkpoint {config.projection_checkpoint!r} does not "
                f"exist. {_PROJECTION_HELP}"
            )
        projection.load_talk2dino(config.projection_checkpoint)
    return projection


def _load_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what} does not match: missing keys {missing}, unexpected keys {unexpected}, "
            f"mis-shaped {shapes}"
        )
    module.load_state_dict(state)
