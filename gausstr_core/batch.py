"""The multi-camera input every model, trainer, evaluator and the ROS node hands to the model."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class CameraBatch:
    """B scenes seen by V cameras, already resized to the network input size H x W.

    Attributes:
        images: (B, V, 3, H, W) RGB in [0, 1] (normalisation happens in the backbone).
        intrinsics: (B, V, 3, 3) pinhole intrinsics of the original camera images.
        cam_to_ego: (B, V, 4, 4) camera (optical frame) -> ego/target frame transforms.
        image_aug: (B, V, 3, 3) original-pixel -> input-pixel affine maps (resize/crop); the
            intrinsics of the H x W input are ``image_aug @ intrinsics``.
        depth: (B, V, H, W) metric depth [m] aligned with the input images (from a depth model
            such as Metric3D, a depth camera or the synthetic world); 0 marks invalid pixels. None
            when the model must predict depth itself.
        features: (B, V, C, h, w) precomputed foundation-model features at patch resolution (the
            training targets, and the backbone output when the backbone is "precomputed").
            None at inference with an image backbone.
        segmentation: (B, V, H, W) int64 2D class labels aligned with the input images (training
            only: the official featup model's Grounded SAM 2 labels for its auxiliary segmentation
            head; 0 = unlabelled), or None.
    """

    images: Tensor
    intrinsics: Tensor
    cam_to_ego: Tensor
    image_aug: Tensor
    depth: Tensor | None = None
    features: Tensor | None = None
    segmentation: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 5 or self.images.shape[2] != 3:
            raise ValueError(f"images must be (B, V, 3, H, W), got {tuple(self.images.shape)}")
        b, v, _, h, w = self.images.shape
        checks = {"intrinsics": (b, v, 3, 3), "cam_to_ego": (b, v, 4, 4), "image_aug": (b, v, 3, 3)}
        for name, shape in checks.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {shape}, got {tuple(getattr(self, name).shape)}")
        if self.depth is not None and tuple(self.depth.shape) != (b, v, h, w):
            raise ValueError(f"depth must be {(b, v, h, w)}, got {tuple(self.depth.shape)}")
        if self.segmentation is not None and tuple(self.segmentation.shape) != (b, v, h, w):
            raise ValueError(f"segmentation must be {(b, v, h, w)}, got {tuple(self.segmentation.shape)}")
        if self.features is not None and (self.features.dim() != 5 or self.features.shape[:2] != (b, v)):
            raise ValueError(
                f"features must be (B, V, C, h, w) with B, V = {b}, {v}, got {tuple(self.features.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the network input."""
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def input_intrinsics(self) -> Tensor:
        """(B, V, 3, 3) intrinsics of the H x W network input: image_aug @ intrinsics."""
        return self.image_aug @ self.intrinsics

    def to(self, *args, **kwargs) -> CameraBatch:
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            out[f.name] = t.to(*args, **kwargs) if isinstance(t, Tensor) else t
        return CameraBatch(**out)

    @staticmethod
    def identity_aug(batch: int, views: int, device=None, dtype=torch.float32) -> Tensor:
        """(B, V, 3, 3) identity image augmentation."""
        return torch.eye(3, device=device, dtype=dtype).expand(batch, views, 3, 3).clone()
