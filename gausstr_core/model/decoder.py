"""The Gaussian query decoder: per layer, deformable cross-attention into the query's own view, then
self-attention among Gaussians, then an FFN, each followed by a residual LayerNorm (post-norm, the
official order). Reference points are refined after every layer by that layer's offset head.

Queries are laid out (B*V, Q, C): each view is a batch entry, so cross-attention only ever samples
the query's own camera. Self-attention reshapes to (B, V*Q, C) in "scene" mode (all Gaussians of a
scene attend to each other) and stays per view in "view" mode (the official code's behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gausstr_core.model.config import DecoderConfig
from gausstr_core.model.deformable_attention import MultiScaleDeformableAttention
from gausstr_core.model.heads import MLP


def sine_encoding(coords: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """DETR sine encoding of normalised coordinates.

    Args:
        coords: (..., K) coordinates in [0, 1] (K = 2 for (x, y); any K works).
        num_feats: channels per coordinate (even).
    Returns:
        (..., K * num_feats): for K = 2 the (y, x) blocks in that order (the DETR convention), for
        other K the coordinates in order; within a block, sin/cos interleaved over frequencies.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords.float()[..., None] * (2 * math.pi) / dim_t  # (..., K, F)
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    if coords.shape[-1] == 2:
        pos = pos.flip(-2)  # (y, x) as DETR and the official decoder
    return pos.flatten(-2)


class FFN(nn.Module):
    """x + fc2(relu(fc1(x)))."""

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class DecoderLayer(nn.Module):
    """cross-attn -> norm -> self-attn -> norm -> FFN -> norm.

    Submodules: ``cross_attn`` (MultiScaleDeformableAttention), ``self_attn`` (nn.MultiheadAttention,
    batch first), ``ffn``, ``norms[0..2]``.
    """

    def __init__(self, embed_dim: int, config: DecoderConfig, num_levels: int = 4) -> None:
        super().__init__()
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dim, config.num_heads, num_levels, config.num_points, config.cross_attn_dropout
        )
        self.self_attn = nn.MultiheadAttention(embed_dim, config.num_heads, batch_first=True)
        self.ffn = FFN(embed_dim, config.ffn_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(3))

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
        query_pos: Tensor,
        self_pos: Tensor,
        num_views: int,
        scene_attention: bool,
    ) -> Tensor:
        """One layer.

        Args:
            query: (BV, Q, C); value: (BV, S, C) flattened pyramid of each view;
            reference_points: (BV, Q, 2); spatial_shapes: L (h, w);
            query_pos: (BV, Q, C) encoding added for cross-attention;
            self_pos: (BV, Q, C) encoding added to queries and keys of self-attention;
            num_views: V; scene_attention: attend across all views of a scene.
        Returns:
            (BV, Q, C).
        """
        query = self.norms[0](self.cross_attn(query, value, reference_points, spatial_shapes, query_pos))
        bv, q, c = query.shape
        if scene_attention:
            scenes = bv // num_views
            x, pos = query.reshape(scenes, num_views * q, c), self_pos.reshape(scenes, num_views * q, c)
        else:
            x, pos = query, self_pos
        qk = x + pos
        x = x + self.self_attn(qk, qk, x, need_weights=False)[0]
        query = self.norms[1](x.reshape(bv, q, c))
        return self.norms[2](self.ffn(query))


class GaussianDecoder(nn.Module):
    """The stack of layers with the reference-point encodings and the shared output norm.

    Submodules: ``layers``, ``reference_encoder`` (MLP of the 2D sine encoding, the official
    ``ref_point_head``), ``mean_encoder`` (MLP of the 3D sine encoding of the current means; only
    with ``mean_position_encoding``), ``norm`` (applied to every layer's output for the heads).
    """

    def __init__(self, embed_dim: int, config: DecoderConfig, num_levels: int = 4) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.layers = nn.ModuleList(
            DecoderLayer(embed_dim, config, num_levels) for _ in range(config.num_layers)
        )
        self.reference_encoder = MLP(embed_dim, embed_dim, hidden_dim=embed_dim)
        self.mean_pos_feats = 2 * math.ceil(embed_dim / 6)  # per coordinate, even
        self.mean_encoder = (
            MLP(3 * self.mean_pos_feats, embed_dim, hidden_dim=embed_dim)
            if config.mean_position_encoding
            else None
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.register_buffer(
            "position_range", torch.tensor(config.position_range, dtype=torch.float32), persistent=False
        )

    def encode_means(self, means: Tensor) -> Tensor:
        """(..., 3) ego-frame means [m] -> (..., C) positional encoding."""
        lo, hi = self.position_range[:3], self.position_range[3:]
        normalized = (means.float() - lo) / (hi - lo)
        return self.mean_encoder(sine_encoding(normalized, self.mean_pos_feats).to(means.dtype))

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
        reference_points: Tensor,
        num_views: int,
        refine: list[Callable[[Tensor, Tensor], Tensor]],
        means_of: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run all layers.

        Args:
            query: (BV, Q, C) initial queries.
            value: (BV, S, C) flattened pyramid.
            spatial_shapes: L (h, w).
            reference_points: (BV, Q, 2) initial normalised reference points.
            num_views: V.
            refine: per layer, (query (BV, Q, C), reference (BV, Q, 2)) -> refined reference points.
            means_of: (BV, Q, 2) reference points -> (BV, Q, 3) ego-frame means, for the 3D encoding.
        Returns:
            per layer the normed queries (BV, Q, C) and the refined, detached reference points (BV, Q, 2).
        """
        cfg = self.config
        hidden, references = [], []
        for layer, refine_fn in zip(self.layers, refine):
            encoding = sine_encoding(reference_points, self.embed_dim // 2).to(query.dtype)
            query_pos = self.reference_encoder(encoding)
            self_pos = query_pos
            if self.mean_encoder is not None:
                if means_of is None:
                    raise ValueError("mean_position_encoding needs means_of")
                with torch.no_grad():
                    means = means_of(reference_points)
                self_pos = query_pos + self.encode_means(means).to(query_pos.dtype)
            query = layer(
                query,
                value,
                reference_points,
                spatial_shapes,
                query_pos,
                self_pos,
                num_views,
                cfg.self_attention == "scene",
            )
            reference_points = refine_fn(query, reference_points).detach()
            hidden.append(self.norm(query))
            references.append(reference_points)
        return hidden, references
