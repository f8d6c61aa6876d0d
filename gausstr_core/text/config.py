"""The text encoder's configuration (``TextEncoderConfig``) and its constants; importing it imports
neither torch nor open_clip (the encoder itself is ``gausstr_core.text.encoder``)."""

from __future__ import annotations

from dataclasses import dataclass

PROJECTION_ACTIVATIONS = ("tanh", "relu", "none")
"""Activations of the Talk2DINO projection's hidden layers (``TextEncoderConfig.projection_activation``)."""

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a {} in the street.",
    "a {} in a driving scene.",
)
"""Prompt templates ("{}" is the category prompt), averaged into one prototype per prompt."""


TINY_MODEL_NAME = "gausstr-tiny"
"""The CPU-sized random text tower (``gausstr_core.text.encoder.TINY_OPEN_CLIP_CONFIG``)."""
TINY_EMBED_DIM = 64


@dataclass
class TextEncoderConfig:
    """The frozen text side of open-vocabulary inference.

    Attributes:
        model_name: an open_clip model name ("ViT-B-16-quickgelu" is OpenAI's CLIP ViT-B/16, the
            text encoder of both official presets) or "gausstr-tiny" (``TINY_OPEN_CLIP_CONFIG``).
        checkpoint: local open_clip weights (.safetensors, or a state dict .bin/.pth/.pt read with
            weights_only=True) of the full CLIP model; loaded strictly.
        random_init_seed: build random weights from this seed instead of reading files (the text
            tower and the projection alike); identical in every process.
        templates: prompt templates with one "{}" each, averaged per prompt.
        embed_dim: width D of the returned embeddings (after the projection, if any); must match
            the model's Gaussian feature width.
        projection: map the CLIP embeddings with a Talk2DINO projection (CLIP -> DINOv2 space).
        projection_checkpoint: the Talk2DINO projection weights (``ProjectionLayer`` state dict:
            ``linear_layer.*`` and ``hidden_layers.<i>.*`` or the older ``linear_layer2.*``; its
            image-side keys are ignored), .pth (weights_only=True) or .safetensors.
        projection_hidden_layers: hidden layers after the first linear map (Talk2DINO ViT-B: 1).
        projection_activation: "tanh" (Talk2DINO), "relu" or "none", applied before each hidden layer.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        batch_size: prompts x templates encoded per forward pass.
    """

    model_name: str = "ViT-B-16-quickgelu"
    checkpoint: str | None = None
    random_init_seed: int | None = None
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    embed_dim: int = 768
    projection: bool = True
    projection_checkpoint: str | None = None
    projection_hidden_layers: int = 1
    projection_activation: str = "tanh"
    device: str = "auto"
    batch_size: int = 256

    def __post_init__(self) -> None:
        self.templates = tuple(self.templates)
        if not self.templates:
            raise ValueError("text.templates must contain at least one template")
        for t in self.templates:
            if not isinstance(t, str) or t.count("{}") != 1:
                raise ValueError(f"every text template needs exactly one '{{}}', got {t!r}")
        if self.embed_dim <= 0 or self.batch_size <= 0 or self.projection_hidden_layers < 0:
            raise ValueError(
                f"text.embed_dim and batch_size must be positive and projection_hidden_layers "
                f">= 0, got {self.embed_dim}, {self.batch_size}, "
                f"{self.projection_hidden_layers}"
            )
        if self.projection_activation not in PROJECTION_ACTIVATIONS:
            raise ValueError(
                f"text.projection_activation must be one of {PROJECTION_ACTIVATIONS}, "
                f"got {self.projection_activation!r}"
            )
