"""Analytic solids of the synthetic world: ray intersection, normals and point membership.

Three convex kinds, all upright (rotated only about the vertical axis by ``yaw``) and described
by the same parameters, so one oriented bounding box (centre, half size, yaw) bounds each:

* ``BOX``: half extents ``half_size`` along its local x, y, z.
* ``CYLINDER``: vertical axis; radius ``half_size[0]``, half height ``half_size[2]``.
* ``ELLIPSOID``: semi-axes ``half_size``.

Rays are ``origin + t * direction``; with camera rays whose direction has optical-z component 1,
``t`` is the z-depth. All functions broadcast over leading dimensions, so the same code serves
(tile, pixel) pairs in the ray caster and per-ray recomputation of the winning hit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
KIND_NAMES = ("box", "cylinder", "ellipsoid")

_TINY = 1e-12


@dataclass
class Primitives:
    """P upright convex solids.

    Attributes:
        kind: (P,) int64, ``BOX``, ``CYLINDER`` or ``ELLIPSOID``.
        center: (P, 3) float32 centre [m].
        half_size: (P, 3) float32 half extents / (r, r, half height) / semi-axes [m], positive.
        yaw: (P,) float32 rotation about +z [rad].
        name_id: (P,) int64 index into ``vocabulary.SYNTHETIC_NAMES``.
        color: (P, 3) float32 base RGB in [0, 1] of this instance.
    """

    kind: Tensor
    center: Tensor
    half_size: Tensor
    yaw: Tensor
    name_id: Tensor
    color: Tensor

    def __post_init__(self) -> None:
        p = self.kind.shape[0]
        expected = {
            "kind": (p,),
            "center": (p, 3),
            "half_size": (p, 3),
            "yaw": (p,),
            "name_id": (p,),
            "color": (p, 3),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Primitives.{name} must be {shape}, got {tuple(getattr(self, name).shape)}")
        if p and not bool((self.half_size > 0).all()):
            raise ValueError("Primitives.half_size must be positive")
        if p and not bool(((self.kind >= BOX) & (self.kind <= ELLIPSOID)).all()):
            raise ValueError(f"Primitives.kind must be in {{0, 1, 2}}, got {self.kind.unique().tolist()}")

    def __len__(self) -> int:
        return self.kind.shape[0]

    @staticmethod
    def empty() -> Primitives:
        return Primitives(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 3),
            torch.ones(0, 3),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 3),
        )

    @staticmethod
    def cat(parts: list[Primitives]) -> Primitives:
        parts = [p for p in parts if len(p)] or [Primitives.empty()]
        return Primitives(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Primitives)}
        )

    def select(self, index: Tensor) -> Primitives:
        return Primitives(**{f.name: getattr(self, f.name)[index] for f in fields(Primitives)})

    def transformed(self, rotation_yaw: float, translation: tuple[float, float, float]) -> Primitives:
        """The solids moved by a rotation about +z by ``rotation_yaw`` then a translation."""
        c, s = torch.cos(torch.tensor(rotation_yaw)), torch.sin(torch.tensor(rotation_yaw))
        x, y, z = self.center.unbind(-1)
        center = torch.stack(
            [c * x - s * y + translation[0], s * x + c * y + translation[1], z + translation[2]], dim=-1
        )
        return Primitives(
            self.kind, center, self.half_size, self.yaw + rotation_yaw, self.name_id, self.color
        )

    def box_corners(self) -> Tensor:
        """(P, 8, 3) corners of each solid's oriented bounding box."""
        signs = torch.tensor(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=self.center.dtype
        )
        local = signs * self.half_size[:, None, :]
        c, s = torch.cos(self.yaw)[:, None], torch.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return torch.stack([x, y, local[..., 2]], dim=-1) + self.center[:, None, :]


def _to_local(vectors: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rotate (..., 3) vectors by -yaw (ego -> primitive frame), returning x, y, z."""
    x, y, z = vectors.unbind(-1)
    return cos * x + sin * y, -sin * x + cos * y, z


def _safe(d: Tensor) -> Tensor:
    # Axis-parallel rays: a tiny same-sign denominator turns 0/0 slabs into +-huge, which the
    # interval logic handles correctly (inside the slab -> whole line, outside -> empty).
    return torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)


def _slab(p: Tensor, d: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    d = _safe(d)
    t1, t2 = (-half - p) / d, (half - p) / d
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _quadratic_interval(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Interval where a t^2 + 2 b t + c <= 0 for a >= 0 (empty -> (inf, -inf); a = 0 -> whole
    line when c <= 0)."""
    inf = torch.full_like(a, float("inf"))
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    a_safe = torch.where(a > _TINY, a, torch.ones_like(a))
    lo, hi = (-b - root) / a_safe, (-b + root) / a_safe
    degenerate = a <= _TINY
    lo = torch.where(degenerate, torch.where(c <= 0, -inf, inf), torch.where(disc >= 0, lo, inf))
    hi = torch.where(degenerate, torch.where(c <= 0, inf, -inf), torch.where(disc >= 0, hi, -inf))
    return lo, hi


def _kind_interval(
    kind: int,
    p: tuple[Tensor, Tensor, Tensor],
    d: tuple[Tensor, Tensor, Tensor],
    half: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    (px, py, pz), (dx, dy, dz), (hx, hy, hz) = p, d, half
    if kind == ELLIPSOID:
        # A unit sphere after scaling by the semi-axes (t is unchanged by the scaling).
        ex, ey, ez, fx, fy, fz = px / hx, py / hy, pz / hz, dx / hx, dy / hy, dz / hz
        return _quadratic_interval(
            fx * fx + fy * fy + fz * fz, ex * fx + ey * fy + ez * fz, ex * ex + ey * ey + ez * ez - 1.0
        )
    z0, z1 = _slab(pz, dz, hz)
    if kind == CYLINDER:
        # The infinite vertical cylinder intersected with the z slab.
        c0, c1 = _quadratic_interval(dx * dx + dy * dy, px * dx + py * dy, px * px + py * py - hx * hx)
        return torch.maximum(c0, z0), torch.minimum(c1, z1)
    x0, x1 = _slab(px, dx, hx)
    y0, y1 = _slab(py, dy, hy)
    return torch.maximum(torch.maximum(x0, y0), z0), torch.minimum(torch.minimum(x1, y1), z1)


def ray_interval(
    origin: Tensor, direction: Tensor, kind: int | Tensor, center: Tensor, half_size: Tensor, yaw: Tensor
) -> tuple[Tensor, Tensor]:
    """Parameter interval [t_in, t_out] in which rays are inside solids (t_in > t_out: missed).

    Args:
        origin, direction: (..., 3) rays.
        kind: one kind for all (int, the fast path), or (...) int tensor of kinds.
        center, half_size: (..., 3); yaw: (...). All broadcast against the rays.
    Returns:
        t_in, t_out: (...) entry and exit parameters.
    """
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    p = _to_local(origin - center, cos, sin)
    d = _to_local(direction, cos, sin)
    half = half_size.unbind(-1)
    if isinstance(kind, int):
        return _kind_interval(kind, p, d, half)
    t_in = t_out = None
    for k in (BOX, CYLINDER, ELLIPSOID):
        k_in, k_out = _kind_interval(k, p, d, half)
        if t_in is None:
            t_in, t_out = k_in, k_out
        else:
            t_in, t_out = torch.where(kind == k, k_in, t_in), torch.where(kind == k, k_out, t_out)
    return t_in, t_out


def ray_hit(
    origin: Tensor,
    direction: Tensor,
    kind: int | Tensor,
    center: Tensor,
    half_size: Tensor,
    yaw: Tensor,
    near: float = 1e-3,
) -> Tensor:
    """(...) parameter t of the first entry into each solid beyond ``near``, inf where missed.

    A ray starting inside a solid counts as a miss (cameras are never inside solids)."""
    t_in, t_out = ray_interval(origin, direction, kind, center, half_size, yaw)
    hit = (t_in <= t_out) & (t_in > near)
    return torch.where(hit, t_in, torch.full_like(t_in, float("inf")))


def surface_normal(points: Tensor, kind: Tensor, center: Tensor, half_size: Tensor, yaw: Tensor) -> Tensor:
    """(..., 3) unit outward normals at surface points of solids (ego frame)."""
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    qx, qy, qz = _to_local(points - center, cos, sin)
    hx, hy, hz = half_size.unbind(-1)
    zero = torch.zeros_like(qx)

    # Box: the face whose normalised coordinate is largest.
    rx, ry, rz = (qx / hx).abs(), (qy / hy).abs(), (qz / hz).abs()
    on_x = (rx >= ry) & (rx >= rz)
    on_y = ~on_x & (ry >= rz)
    box = torch.stack(
        [
            torch.where(on_x, qx.sign(), zero),
            torch.where(on_y, qy.sign(), zero),
            torch.where(~on_x & ~on_y, qz.sign(), zero),
        ],
        dim=-1,
    )

    # Cylinder: the cap or the side, whichever the point is relatively closer to.
    radial = (qx * qx + qy * qy).sqrt()
    cap = rz >= radial / hx
    cyl = torch.where(
        cap[..., None], torch.stack([zero, zero, qz.sign()], dim=-1), torch.stack([qx, qy, zero], dim=-1)
    )

    ell = torch.stack([qx / (hx * hx), qy / (hy * hy), qz / (hz * hz)], dim=-1)

    k = kind[..., None]
    local = torch.where(k == BOX, box, torch.where(k == CYLINDER, cyl, ell))
    local = local / local.norm(dim=-1, keepdim=True).clamp_min(_TINY)
    lx, ly, lz = local.unbind(-1)
    return torch.stack([cos * lx - sin * ly, sin * lx + cos * ly, lz], dim=-1)


def contains(points: Tensor, kind: Tensor, center: Tensor, half_size: Tensor, yaw: Tensor) -> Tensor:
    """(...) bool: whether points (..., 3) lie inside (or on) solids (broadcast parameters)."""
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    qx, qy, qz = _to_local(points - center, cos, sin)
    hx, hy, hz = half_size.unbind(-1)
    in_z = qz.abs() <= hz
    box = (qx.abs() <= hx) & (qy.abs() <= hy) & in_z
    cyl = (qx * qx + qy * qy <= hx * hx) & in_z
    ell = (qx / hx) ** 2 + (qy / hy) ** 2 + (qz / hz) ** 2 <= 1.0
    return torch.where(kind == BOX, box, torch.where(kind == CYLINDER, cyl, ell))
