"""The 3D Gaussian set the model predicts and every downstream stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from gausstr_core.geometry import build_covariance, quaternion_to_matrix


@dataclass
class Gaussians:
    """A batch of 3D Gaussian sets, one per scene, in the ego (target) frame.

    Attributes:
        means: (B, N, 3) centres [m].
        scales: (B, N, 3) standard deviations along the principal axes [m], positive.
        rotations: (B, N, 4) unit quaternions (w, x, y, z) rotating the principal axes into the
            ego frame.
        opacities: (B, N) in [0, 1].
        features: (B, N, C) per-Gaussian feature vectors (C = 0 allowed).
    """

    means: Tensor
    scales: Tensor
    rotations: Tensor
    opacities: Tensor
    features: Tensor

    def __post_init__(self) -> None:
        b, n = self.means.shape[:2]
        expected = {"means": 3, "scales": 3, "rotations": 4}
        for name, last in expected.items():
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[:2] != (b, n) or t.shape[-1] != last:
                raise ValueError(
                    f"Gaussians.{name} must be (B, N, {last}) = ({b}, {n}, {last}), got {tuple(t.shape)}"
                )
        if self.opacities.shape != (b, n):
            raise ValueError(
                f"Gaussians.opacities must be (B, N) = ({b}, {n}), got {tuple(self.opacities.shape)}"
            )
        if self.features.dim() != 3 or self.features.shape[:2] != (b, n):
            raise ValueError(
                f"Gaussians.features must be (B, N, C) with B, N = {b}, {n}, got {tuple(self.features.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    def with_detached_geometry(self, features: Tensor) -> Gaussians:
        """The same means, scales, rotations and opacities, detached, carrying ``features`` (B, N, C):
        a render of them trains the features and nothing that places the Gaussians."""
        detached = (t.detach() for t in (self.means, self.scales, self.rotations, self.opacities))
        return Gaussians(*detached, features)

    def covariances(self) -> Tensor:
        """(B, N, 3, 3) covariances R S S^T R^T."""
        return build_covariance(self.scales, self.rotations)

    def rotation_matrices(self) -> Tensor:
        """(B, N, 3, 3) rotation matrices of ``rotations``."""
        return quaternion_to_matrix(self.rotations)

    def with_features(self, features: Tensor) -> Gaussians:
        """The same Gaussians carrying other features (B, N, C')."""
        return Gaussians(self.means, self.scales, self.rotations, self.opacities, features)

    def select(self, batch_index: int, mask: Tensor | None = None) -> Gaussians:
        """One scene (batch of one), optionally only the Gaussians where ``mask`` (N,) is true."""
        out = {f.name: getattr(self, f.name)[batch_index : batch_index + 1] for f in fields(self)}
        if mask is not None:
            out = {k: v[:, mask] for k, v in out.items()}
        return Gaussians(**out)

    def to(self, *args, **kwargs) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def detach(self) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    @staticmethod
    def concatenate(parts: list[Gaussians], dim: int = 1) -> Gaussians:
        """Concatenate Gaussian sets along scenes (dim=0) or Gaussians (dim=1)."""
        return Gaussians(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=dim) for f in fields(Gaussians)}
        )
