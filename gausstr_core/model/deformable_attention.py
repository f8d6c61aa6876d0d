"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

Each query looks at ``num_points`` learned offsets around its reference point on every pyramid level
and head, bilinearly samples the projected values there (``grid_sample``, zero padding outside the
map) and mixes them with softmax weights predicted from the query. Same semantics and parameter
layout as mmcv's ``MultiScaleDeformableAttention`` (which needs a CUDA op; this is fused enough to
be fast with grid_sample and runs everywhere).

Coordinates: normalised (x, y) in [0, 1] over the feature map's outer edges, so location ``x``
samples pixel coordinate ``x * W - 0.5`` (pixel centres at integers, ``align_corners=False``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVEL_SIZES: dict[tuple, Tensor] = {}


def level_sizes(spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(L, 2) tensor of the levels' (w, h), made once per shapes/device/dtype and kept: a fresh
    ``torch.tensor`` per forward is a synchronous host-to-device copy (no CUDA graph capture)."""
    key = (tuple(tuple(int(x) for x in hw) for hw in spatial_shapes), str(device), dtype)
    sizes = _LEVEL_SIZES.get(key)
    if sizes is None:
        with torch.inference_mode(False):
            sizes = torch.tensor([[w, h] for h, w in key[0]], dtype=dtype).to(device)
        if len(_LEVEL_SIZES) >= 32:
            _LEVEL_SIZES.clear()
        _LEVEL_SIZES[key] = sizes
    return sizes


def deformable_sample(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The core: weighted bilinear samples of per-head value maps.

    Args:
        value: (B, S, M, D) values of all levels flattened and concatenated (S = sum h_l * w_l),
            M heads of D channels.
        spatial_shapes: L (h_l, w_l) level sizes, in the order the levels are concatenated.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y) locations.
        attention_weights: (B, Q, M, L, P) mixing weights (softmax over L * P per head).
    Returns:
        (B, Q, M * D) attended values.
    """
    b, s, m, d = value.shape
    _, q, _, num_levels, p, _ = sampling_locations.shape
    if sum(h * w for h, w in spatial_shapes) != s or len(spatial_shapes) != num_levels:
        raise ValueError(
            f"spatial_shapes {spatial_shapes} do not cover the {s} values over {num_levels} levels"
        )
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, M, D) -> (B*M, D, h, w): heads become batch entries of one grid_sample call.
        v = values[level].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).reshape(b * m, q, p, 2)
        # Sample in the wider of the two dtypes: bf16 locations would be off by up to half a pixel.
        dt = torch.promote_types(v.dtype, g.dtype)
        sampled.append(
            F.grid_sample(v.to(dt), g.to(dt), mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (B*M, D, Q, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*M, D, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, q, num_levels * p)
    out = (stacked * weights.to(stacked.dtype)).sum(-1)  # (B*M, D, Q)
    return out.view(b, m * d, q).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable cross-attention of queries into a multi-level feature pyramid, with residual.

    Parameters (mmcv names): ``sampling_offsets`` (C -> M*L*P*2), ``attention_weights``
    (C -> M*L*P), ``value_proj`` (C -> C), ``output_proj`` (C -> C).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Deformable DETR init: zero offsets weights, biases spreading the P points of each head
        # outward along a head-specific direction, so sampling starts as a ring of rays.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """Attend and add the residual.

        Args:
            query: (B, Q, C) queries (B = scenes x views: each query sees only its own view's maps).
            value: (B, S, C) flattened pyramid, S = sum of h_l * w_l over ``spatial_shapes``.
            reference_points: (B, Q, 2) or (B, Q, L, 2) normalised (x, y) in [0, 1].
            spatial_shapes: L (h_l, w_l).
            query_pos: optional (B, Q, C) positional encoding added to the query (not the residual).
        Returns:
            (B, Q, C) query + dropout(output_proj(attended values)).
        """
        b, q, c = query.shape
        m, num_levels, p = self.num_heads, self.num_levels, self.num_points
        if len(spatial_shapes) != num_levels:
            raise ValueError(f"expected {num_levels} levels, got {len(spatial_shapes)}")
        x = query if query_pos is None else query + query_pos
        v = self.value_proj(value).view(b, value.shape[1], m, c // m)
        offsets = self.sampling_offsets(x).view(b, q, m, num_levels, p, 2)
        weights = self.attention_weights(x).view(b, q, m, num_levels * p).softmax(-1)
        weights = weights.view(b, q, m, num_levels, p)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None].expand(b, q, num_levels, 2)
        # Offsets are in pixels of each level: normalise by the level's (w, h).
        normalizer = level_sizes(spatial_shapes, query.device, offsets.dtype)
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        )
        out = deformable_sample(v, spatial_shapes, locations, weights)
        return query + self.dropout(self.output_proj(out))
