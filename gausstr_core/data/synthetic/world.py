"""Procedural driving worlds made of analytic solids on a flat ground.

A world is generated in the frame of the ego vehicle at its first key frame (x forward, y left, z
up; the ground is the plane z = 0, the nuScenes ego origin is on the ground under the rear axle).
Its content follows the layout of a street: a main road along the ego's heading (lanes, lane
markings, an optional median) with curbs, sidewalks, grass verges, building rows, poles, street
lights and signs, trees and bushes, parked and driving cars, trucks and buses, pedestrians, barrier
rows and traffic cones, and sometimes a crossing road (an intersection or a T junction).

Everything that has a volume is a ``primitives.Primitives`` solid; the ground is a
``GroundLayout`` of oriented strips on the plane whose highest-priority strip names the surface
(road, lane marking, curb, sidewalk, traffic island, parking lot; grass elsewhere). The ray caster
and the occupancy builder read the same description, so images and ground truth agree exactly.

Worlds are deterministic per seed (numpy's PCG64 stream) and independent of the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from gausstr_core.data.synthetic.primitives import BOX, CYLINDER, ELLIPSOID, Primitives
from gausstr_core.data.synthetic.vocabulary import NAME_ID, SYNTHETIC_NAMES

GROUND_THICKNESS = 0.2
"""The ground is a solid slab z in [-0.2, 0): exactly the Occ3D voxel layer [-0.2, 0.2) holding
the surface is occupied, like Occ3D where only surface voxels are labelled (the space below the
ground is never observed by a camera or a LiDAR, so it is free and masked out)."""


@dataclass
class GroundLayout:
    """The ground plane z = 0 painted by S oriented strips (rectangles, optionally dashed).

    A point on the plane takes the name and colour of the highest-priority strip containing it,
    else the default (grass). The plane is a disc of ``radius`` around ``origin``; beyond it there
    is no ground (rays see the sky).

    Attributes:
        center: (S, 2) strip centres [m].
        heading: (S,) direction of the strip's length axis [rad].
        half_length, half_width: (S,) [m].
        name_id: (S,) int64 synthetic name of each strip.
        color: (S, 3) base colour of each strip.
        priority: (S,) float, higher wins where strips overlap.
        dash_period: (S,) period of dashes along the length [m] (0 = solid).
        dash_on: (S,) fraction of each period that is painted.
        origin: (2,) centre of the ground disc; radius: its radius [m].
        default_name_id, default_color: the surface outside every strip.
    """

    center: Tensor
    heading: Tensor
    half_length: Tensor
    half_width: Tensor
    name_id: Tensor
    color: Tensor
    priority: Tensor
    dash_period: Tensor
    dash_on: Tensor
    origin: Tensor
    radius: float
    default_name_id: int = NAME_ID["grass"]
    default_color: tuple[float, float, float] = SYNTHETIC_NAMES[NAME_ID["grass"]].color

    def transformed(self, rotation_yaw: float, translation: tuple[float, float]) -> GroundLayout:
        """The layout rotated about +z by ``rotation_yaw`` then translated."""
        c, s = math.cos(rotation_yaw), math.sin(rotation_yaw)
        rot = torch.tensor([[c, -s], [s, c]], dtype=self.center.dtype)
        shift = torch.tensor(translation, dtype=self.center.dtype)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(
            center=self.center @ rot.T + shift,
            heading=self.heading + rotation_yaw,
            origin=self.origin @ rot.T + shift,
        )
        return GroundLayout(**values)

    def on_ground(self, xy: Tensor) -> Tensor:
        """(...) bool: points (..., 2) inside the ground disc."""
        return ((xy - self.origin.to(xy)) ** 2).sum(-1) <= self.radius**2

    def region(self, xy: Tensor, chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Name id (...) int64 and colour (..., 3) of the ground at points (..., 2)."""
        shape = xy.shape[:-1]
        flat = xy.reshape(-1, 2)
        names = torch.full((flat.shape[0],), self.default_name_id, dtype=torch.long)
        colors = torch.tensor(self.default_color, dtype=torch.float32).expand(flat.shape[0], 3).clone()
        if self.center.shape[0] == 0 or flat.shape[0] == 0:
            return names.reshape(shape), colors.reshape(*shape, 3)
        cos, sin = torch.cos(self.heading), torch.sin(self.heading)
        for start in range(0, flat.shape[0], chunk):
            rel = flat[start : start + chunk, None, :] - self.center  # (n, S, 2)
            u = rel[..., 0] * cos + rel[..., 1] * sin
            v = -rel[..., 0] * sin + rel[..., 1] * cos
            inside = (u.abs() <= self.half_length) & (v.abs() <= self.half_width)
            period = self.dash_period.clamp_min(1e-6)
            phase = torch.remainder(u + self.half_length, period) / period
            inside &= (self.dash_period <= 0) | (phase < self.dash_on)
            score = torch.where(inside, self.priority, torch.full_like(u, -math.inf))
            best, index = score.max(dim=-1)
            hit = best > -math.inf
            names[start : start + chunk] = torch.where(hit, self.name_id[index], names[start : start + chunk])
            colors[start : start + chunk] = torch.where(
                hit[:, None], self.color[index], colors[start : start + chunk]
            )
        return names.reshape(shape), colors.reshape(*shape, 3)


@dataclass
class Scene:
    """Everything the renderer and the occupancy builder need, in one frame (the ego frame for a
    key frame).

    Attributes:
        primitives: the solids.
        ground: the painted ground plane.
        sun_direction: (3,) unit vector towards the sun.
        sky_horizon, sky_zenith: (3,) sky colours at the horizon and straight up.
    """

    primitives: Primitives
    ground: GroundLayout
    sun_direction: Tensor
    sky_horizon: Tensor
    sky_zenith: Tensor

    def transformed(self, rotation_yaw: float, translation: tuple[float, float]) -> Scene:
        c, s = math.cos(rotation_yaw), math.sin(rotation_yaw)
        sx, sy, sz = self.sun_direction.tolist()
        sun = torch.tensor([c * sx - s * sy, s * sx + c * sy, sz], dtype=self.sun_direction.dtype)
        return Scene(
            self.primitives.transformed(rotation_yaw, (translation[0], translation[1], 0.0)),
            self.ground.transformed(rotation_yaw, translation),
            sun,
            self.sky_horizon,
            self.sky_zenith,
        )


@dataclass
class World:
    """A static world and the ego poses of its key frames.

    Attributes:
        scene: the world in its own frame (the ego frame of key frame 0).
        ego_poses: (S, 3) float64 ego (x, y, yaw) of each key frame in the world frame.
        seed: the generating seed.
    """

    scene: Scene
    ego_poses: Tensor
    seed: int

    @property
    def num_samples(self) -> int:
        return self.ego_poses.shape[0]

    def ego_to_world(self, index: int) -> Tensor:
        """(4, 4) float64 ego -> world transform of key frame ``index``."""
        x, y, yaw = self.ego_poses[index].tolist()
        out = torch.eye(4, dtype=torch.float64)
        out[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        out[0, 3], out[1, 3] = x, y
        return out

    def sample(self, index: int) -> Scene:
        """The world seen from key frame ``index``: every part expressed in that ego frame."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"key frame {index} out of range [0, {self.num_samples})")
        x, y, yaw = self.ego_poses[index].tolist()
        # world -> ego: rotate by -yaw after moving the ego to the origin.
        c, s = math.cos(-yaw), math.sin(-yaw)
        tx, ty = -(c * x - s * y), -(s * x + c * y)
        return self.scene.transformed(-yaw, (tx, ty))


@dataclass
class WorldConfig:
    """How the procedural streets are drawn. Ranges are (low, high), sampled uniformly.

    Counts of optional classes (bicycles, motorcycles, trailers, construction vehicles, trash bins
    as ``others``) default to zero so the default vocabulary is the driving-scene list of the
    project; raise them to add those classes.
    """

    lanes_per_direction: tuple[int, ...] = (1, 2, 2, 3)
    lane_width: tuple[float, float] = (3.0, 3.7)
    median_probability: float = 0.35
    median_width: tuple[float, float] = (1.5, 4.0)
    sidewalk_width: tuple[float, float] = (1.8, 4.0)
    verge_width: tuple[float, float] = (0.0, 6.0)
    parking_lot_probability: float = 0.25
    crossing_probability: float = 0.45
    t_junction_probability: float = 0.35
    crossing_distance: tuple[float, float] = (14.0, 40.0)
    heading_jitter_deg: float = 3.0
    vehicle_gap: tuple[float, float] = (6.0, 40.0)
    truck_fraction: float = 0.12
    bus_fraction: float = 0.07
    parked_probability: float = 0.45
    pedestrians: tuple[int, int] = (0, 14)
    pole_spacing: tuple[float, float] = (18.0, 35.0)
    tree_probability: float = 0.7
    tree_spacing: tuple[float, float] = (7.0, 18.0)
    bushes: tuple[int, int] = (2, 12)
    building_height: tuple[float, float] = (4.0, 22.0)
    barrier_rows: tuple[int, int] = (0, 2)
    cone_groups: tuple[int, int] = (0, 2)
    bicycles: tuple[int, int] = (0, 0)
    motorcycles: tuple[int, int] = (0, 0)
    trailers: tuple[int, int] = (0, 0)
    construction_vehicles: tuple[int, int] = (0, 0)
    trash_bins: tuple[int, int] = (0, 0)
    sample_spacing: tuple[float, float] = (3.0, 6.0)
    content_range: float = 75.0
    ground_radius: float = 150.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            is_range = isinstance(value, tuple) and len(value) == 2 and f.name != "lanes_per_direction"
            if is_range and (value[0] > value[1] or value[0] < 0):
                raise ValueError(f"WorldConfig.{f.name} must be a range (low <= high, >= 0), got {value}")
        if not self.lanes_per_direction or min(self.lanes_per_direction) < 1:
            raise ValueError(f"lanes_per_direction must list counts >= 1, got {self.lanes_per_direction}")
        if self.ground_radius < self.content_range:
            raise ValueError("ground_radius must be at least content_range")


_CAR_COLORS = (
    (0.92, 0.92, 0.92),
    (0.08, 0.08, 0.09),
    (0.62, 0.63, 0.66),
    (0.6, 0.08, 0.08),
    (0.1, 0.2, 0.5),
    (0.35, 0.36, 0.38),
    (0.75, 0.7, 0.6),
    (0.15, 0.35, 0.2),
)
_FACADE_COLORS = (
    (0.78, 0.66, 0.52),
    (0.62, 0.5, 0.42),
    (0.8, 0.8, 0.78),
    (0.55, 0.56, 0.6),
    (0.7, 0.45, 0.35),
    (0.9, 0.86, 0.74),
    (0.45, 0.42, 0.4),
)


@dataclass
class _Builder:
    """Accumulates solids and ground strips in the road frame (u along the main road, v left)."""

    rng: np.random.Generator
    heading: float
    solids: list[tuple] = field(default_factory=list)
    strips: list[tuple] = field(default_factory=list)
    footprints: list[tuple[float, float, float, float]] = field(default_factory=list)

    def free(self, u0: float, u1: float, v0: float, v1: float, margin: float = 0.3) -> bool:
        for a0, a1, b0, b1 in self.footprints:
            if u0 < a1 + margin and u1 > a0 - margin and v0 < b1 + margin and v1 > b0 - margin:
                return False
        return True

    def claim(self, u0: float, u1: float, v0: float, v1: float) -> None:
        self.footprints.append((u0, u1, v0, v1))

    def color(self, name: str, jitter: float = 0.12) -> tuple[float, float, float]:
        base = np.array(SYNTHETIC_NAMES[NAME_ID[name]].color)
        return tuple(np.clip(base * self.rng.uniform(1 - jitter, 1 + jitter, 3), 0, 1).tolist())

    def solid(
        self,
        kind: int,
        name: str,
        u: float,
        v: float,
        z: float,
        half: tuple[float, float, float],
        yaw: float = 0.0,
        color: tuple[float, float, float] | None = None,
    ) -> None:
        self.solids.append((kind, u, v, z, *half, yaw, NAME_ID[name], *(color or self.color(name))))

    def strip(
        self,
        name: str,
        u: float,
        v: float,
        heading: float,
        half_length: float,
        half_width: float,
        priority: float,
        color: tuple[float, float, float] | None = None,
        dash: tuple[float, float] = (0, 1),
    ):
        self.strips.append(
            (
                u,
                v,
                heading,
                half_length,
                half_width,
                NAME_ID[name],
                *(color or self.color(name, 0.06)),
                priority,
                *dash,
            )
        )

    def placed(self, u0: float, u1: float, v0: float, v1: float, margin: float = 0.3) -> bool:
        """Claim the footprint if it is free."""
        if self.free(u0, u1, v0, v1, margin):
            self.claim(u0, u1, v0, v1)
            return True
        return False

    def vehicle(self, kind: str, u: float, v: float, yaw: float) -> bool:
        rng = self.rng
        if kind == "car":
            length, width, height = rng.uniform(3.9, 4.9), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7)
        elif kind == "truck":
            length, width, height = rng.uniform(6.5, 10.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.8)
        elif kind == "bus":
            length, width, height = rng.uniform(10.5, 12.5), rng.uniform(2.45, 2.6), rng.uniform(3.0, 3.4)
        elif kind == "trailer":
            length, width, height = rng.uniform(6.0, 12.0), rng.uniform(2.3, 2.55), rng.uniform(2.5, 3.8)
        elif kind == "construction vehicle":
            length, width, height = rng.uniform(5.0, 8.0), rng.uniform(2.3, 2.8), rng.uniform(2.8, 3.6)
        elif kind == "bicycle":
            length, width, height = rng.uniform(1.6, 1.9), 0.55, rng.uniform(1.0, 1.2)
        else:  # motorcycle
            length, width, height = rng.uniform(1.9, 2.3), 0.8, rng.uniform(1.1, 1.4)
        ext = 0.5 * (abs(length * math.cos(yaw)) + abs(width * math.sin(yaw)))
        exv = 0.5 * (abs(length * math.sin(yaw)) + abs(width * math.cos(yaw)))
        if not self.placed(u - ext, u + ext, v - exv, v + exv, margin=0.6):
            return False
        cu, su = math.cos(yaw), math.sin(yaw)
        if kind == "car":
            color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
            body_h, clearance = 0.55 * height, 0.18
            self.solid(
                BOX,
                "car",
                u,
                v,
                clearance + 0.5 * body_h,
                (0.5 * length, 0.5 * width, 0.5 * body_h),
                yaw,
                color,
            )
            cabin_l = 0.55 * length
            shift = rng.uniform(-0.12, 0.05) * length
            cabin_h = height - clearance - body_h
            self.solid(
                BOX,
                "car",
                u + shift * cu,
                v + shift * su,
                clearance + body_h + 0.5 * cabin_h,
                (0.5 * cabin_l, 0.45 * width, 0.5 * cabin_h),
                yaw,
                tuple(0.75 * np.array(color)),
            )
        elif kind in ("truck", "construction vehicle"):
            cab_l = min(2.2, 0.3 * length)
            name = kind
            color = self.color(name, 0.2)
            cab_u = 0.5 * length - 0.5 * cab_l
            self.solid(
                BOX,
                name,
                u + cab_u * cu,
                v + cab_u * su,
                0.35 + 0.4 * (height - 0.35),
                (0.5 * cab_l, 0.5 * width, 0.4 * (height - 0.35)),
                yaw,
                color,
            )
            box_l = length - cab_l - 0.2
            box_u = -0.5 * length + 0.5 * box_l
            self.solid(
                BOX,
                name,
                u + box_u * cu,
                v + box_u * su,
                0.35 + 0.5 * (height - 0.35),
                (0.5 * box_l, 0.5 * width, 0.5 * (height - 0.35)),
                yaw,
                self.color(name, 0.15),
            )
        elif kind in ("bus", "trailer"):
            self.solid(
                BOX,
                kind,
                u,
                v,
                0.3 + 0.5 * (height - 0.3),
                (0.5 * length, 0.5 * width, 0.5 * (height - 0.3)),
                yaw,
                self.color(kind, 0.2),
            )
        else:
            self.solid(BOX, kind, u, v, 0.5 * height, (0.5 * length, 0.5 * width * 0.6, 0.5 * height), yaw)
        return True

    def pedestrian(self, u: float, v: float) -> bool:
        rng = self.rng
        height, radius = rng.uniform(1.5, 1.9), rng.uniform(0.22, 0.3)
        if not self.placed(u - radius, u + radius, v - radius, v + radius, margin=0.2):
            return False
        body = height - 0.26
        color = tuple(rng.uniform(0.1, 0.7, 3).tolist())
        self.solid(CYLINDER, "pedestrian", u, v, 0.5 * body, (radius, radius, 0.5 * body), 0.0, color)
        head = 0.12
        self.solid(ELLIPSOID, "pedestrian", u, v, height - head, (head, head, 0.13), 0.0, (0.85, 0.7, 0.55))
        return True

    def cone(self, u: float, v: float) -> bool:
        if not self.placed(u - 0.22, u + 0.22, v - 0.22, v + 0.22, margin=0.1):
            return False
        for z0, z1, r in ((0.0, 0.24, 0.2), (0.24, 0.48, 0.14), (0.48, 0.72, 0.08)):
            self.solid(CYLINDER, "traffic cone", u, v, 0.5 * (z0 + z1), (r, r, 0.5 * (z1 - z0)))
        return True

    def pole(self, u: float, v: float, arm_direction: float) -> bool:
        rng = self.rng
        radius, height = rng.uniform(0.13, 0.22), rng.uniform(4.5, 9.0)
        if not self.placed(u - radius, u + radius, v - radius, v + radius, margin=0.3):
            return False
        self.solid(CYLINDER, "pole", u, v, 0.5 * height, (radius, radius, 0.5 * height))
        kind = rng.uniform()
        if kind < 0.45:  # street light: an arm over the road
            arm = rng.uniform(1.2, 2.8)
            self.solid(BOX, "pole", u, v + arm_direction * 0.5 * arm, height - 0.1, (0.08, 0.5 * arm, 0.08))
        elif kind < 0.75:  # a sign plate facing along the road
            z = rng.uniform(2.2, min(3.2, height - 0.4))
            self.solid(
                BOX,
                "traffic sign",
                u,
                v,
                z,
                (0.04, rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.45)),
                0.0,
                tuple(self.rng.choice([(0.1, 0.3, 0.8), (0.85, 0.1, 0.1), (0.95, 0.85, 0.1)])),
            )
        return True

    def tree(self, u: float, v: float) -> bool:
        rng = self.rng
        crown = rng.uniform(1.3, 3.0)
        trunk_r, trunk_h = rng.uniform(0.15, 0.32), rng.uniform(1.8, 3.5)
        if not self.placed(u - trunk_r, u + trunk_r, v - trunk_r, v + trunk_r, margin=0.4):
            return False
        self.solid(
            CYLINDER, "tree trunk", u, v, 0.5 * trunk_h + 0.05, (trunk_r, trunk_r, 0.5 * trunk_h + 0.05)
        )
        rz = crown * rng.uniform(0.8, 1.4)
        self.solid(
            ELLIPSOID,
            "tree",
            u,
            v,
            trunk_h + 0.8 * rz,
            (crown, crown * rng.uniform(0.85, 1.15), rz),
            rng.uniform(0, math.pi),
        )
        return True


def _segments(lo: float, hi: float, gaps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[lo, hi] with the gap intervals removed."""
    pieces = [(lo, hi)]
    for g0, g1 in gaps:
        out = []
        for a, b in pieces:
            if g1 <= a or g0 >= b:
                out.append((a, b))
                continue
            if g0 > a:
                out.append((a, g0))
            if g1 < b:
                out.append((g1, b))
        pieces = out
    return [(a, b) for a, b in pieces if b - a > 1e-3]


def generate_world(seed: int, config: WorldConfig | None = None, num_samples: int = 1) -> World:
    """A procedural street world, deterministic per ``seed``.

    Args:
        seed: any non-negative integer.
        config: layout parameters (defaults: ``WorldConfig()``).
        num_samples: key frames; the ego drives forward along its x axis between them.
    Returns:
        The world with its key-frame ego poses.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    cfg = config or WorldConfig()
    rng = np.random.default_rng(seed)
    heading = math.radians(rng.uniform(-cfg.heading_jitter_deg, cfg.heading_jitter_deg))
    b = _Builder(rng, heading)

    spacing = rng.uniform(*cfg.sample_spacing)
    travel = spacing * (num_samples - 1)
    u_lo, u_hi = -cfg.content_range, cfg.content_range + travel
    # The ego corridor stays empty: the ego car itself and the space its cameras sit in.
    b.claim(-6.0, travel + 7.0, -1.6, 1.6)

    # ---- main road ------------------------------------------------------------------------
    lanes = int(rng.choice(cfg.lanes_per_direction))
    lane_w = rng.uniform(*cfg.lane_width)
    median = rng.uniform(*cfg.median_width) if rng.uniform() < cfg.median_probability else 0.0
    ego_lane = int(rng.integers(lanes))
    vc = 0.5 * median + (ego_lane + 0.5) * lane_w  # the road centre line, left of the ego
    hw = 0.5 * median + lanes * lane_w
    sw = [rng.uniform(*cfg.sidewalk_width) for _ in range(2)]  # right (v < vc), left
    verge = [rng.uniform(*cfg.verge_width) for _ in range(2)]
    edge = [(vc - hw, -1.0), (vc + hw, 1.0)]  # (curb line, outward direction) per side

    # ---- optional crossing road -------------------------------------------------------------
    crossing = None
    gaps: list[tuple[float, float]] = []
    if rng.uniform() < cfg.crossing_probability:
        ux = rng.uniform(*cfg.crossing_distance) * (1 if rng.uniform() < 0.7 else -1)
        if ux > 0:
            ux += travel
        cross_hw = rng.uniform(1, 2.2) * 3.3
        cross_sw = rng.uniform(*cfg.sidewalk_width)
        sides = (-1, 1)
        if rng.uniform() < cfg.t_junction_probability:
            sides = (int(rng.choice([-1, 1])),)
        crossing = (ux, cross_hw, cross_sw, sides)
        gaps = [(ux - cross_hw - cross_sw, ux + cross_hw + cross_sw)]

    mid_u, half_u = 0.5 * (u_lo + u_hi), 0.5 * (u_hi - u_lo) + 40.0
    b.strip("road", mid_u, vc, 0.0, half_u, hw, 3.0)
    for side, (curb_v, out) in enumerate(edge):
        b.strip("sidewalk", mid_u, curb_v + out * 0.5 * sw[side], 0.0, half_u, 0.5 * sw[side], 2.0)
        b.strip("sidewalk", mid_u, curb_v + out * 0.15, 0.0, half_u, 0.15, 2.5, color=(0.78, 0.77, 0.74))
    road_gaps = [(crossing[0] - crossing[1], crossing[0] + crossing[1])] if crossing else []
    for a, c in _segments(u_lo - 40, u_hi + 40, road_gaps):
        mu, hl = 0.5 * (a + c), 0.5 * (c - a)
        if median > 0:
            b.strip("traffic island", mu, vc, 0.0, hl, 0.5 * median, 4.0)
        else:
            b.strip("lane marking", mu, vc, 0.0, hl, 0.1, 3.5, color=(0.9, 0.8, 0.25))
        for side in (-1, 1):
            b.strip("lane marking", mu, vc + side * (hw - 0.3), 0.0, hl, 0.075, 3.5)
            for k in range(1, lanes):
                b.strip(
                    "lane marking",
                    mu,
                    vc + side * (0.5 * median + k * lane_w),
                    0.0,
                    hl,
                    0.075,
                    3.5,
                    dash=(9.0, 0.33),
                )
    if crossing:
        ux, chw, csw, sides = crossing
        for side in sides:
            start = vc + side * hw
            length = cfg.content_range + 40.0
            centre_v = start + side * 0.5 * length
            b.strip("road", ux, centre_v, 0.5 * math.pi, 0.5 * length, chw, 3.0)
            for out in (-1, 1):
                b.strip(
                    "sidewalk",
                    ux + out * (chw + 0.5 * csw),
                    centre_v,
                    0.5 * math.pi,
                    0.5 * length,
                    0.5 * csw,
                    2.0,
                )
                b.strip(
                    "lane marking",
                    ux + out * (chw - 0.3),
                    centre_v,
                    0.5 * math.pi,
                    0.5 * length - 0.5,
                    0.075,
                    3.5,
                )
            b.strip(
                "lane marking",
                ux,
                centre_v + side * 3.0,
                0.5 * math.pi,
                0.5 * length - 3.0,
                0.08,
                3.5,
                dash=(6.0, 0.5),
            )
            b.claim(ux - chw, ux + chw, min(start, start + side * length), max(start, start + side * length))

    # ---- buildings, walls, parking lots and verges along both sides --------------------------
    side_gaps = [gaps if crossing and out in crossing[3] else [] for _, out in edge]
    for side, (curb_v, out) in enumerate(edge):
        gaps = side_gaps[side]
        if rng.uniform() < cfg.parking_lot_probability and verge[side] > 3.0:
            lot_u = rng.uniform(u_lo + 10, u_hi - 10)
            lot_l = rng.uniform(8, 20)
            b.strip(
                "parking lot",
                lot_u,
                curb_v + out * (sw[side] + 0.5 * verge[side]),
                0.0,
                lot_l,
                0.5 * verge[side],
                1.0,
            )
        u = u_lo + rng.uniform(0, 8)
        while u < u_hi:
            width = rng.uniform(8, 25)
            blocked = [g1 for g0, g1 in gaps if u < g1 and u + width > g0]
            if blocked:
                u = blocked[0] + rng.uniform(1, 4)
                continue
            if rng.uniform() < 0.85:
                depth, height = rng.uniform(8, 20), rng.uniform(*cfg.building_height)
                setback = rng.uniform(0, 2.5)
                v_centre = curb_v + out * (sw[side] + verge[side] + setback + 0.5 * depth)
                if b.placed(u, u + width, v_centre - 0.5 * depth, v_centre + 0.5 * depth, margin=0.0):
                    color = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))]
                    color = tuple(np.clip(np.array(color) * rng.uniform(0.9, 1.1, 3), 0, 1).tolist())
                    b.solid(
                        BOX,
                        "building",
                        u + 0.5 * width,
                        v_centre,
                        0.5 * height,
                        (0.5 * width, 0.5 * depth, 0.5 * height),
                        0.0,
                        color,
                    )
            elif verge[side] + sw[side] > 1.0:
                wall_h = rng.uniform(1.0, 2.4)
                v_wall = curb_v + out * (sw[side] + verge[side] + 0.2)
                if b.placed(u, u + width, v_wall - 0.15, v_wall + 0.15, margin=0.0):
                    name = "wall" if rng.uniform() < 0.6 else "bush"
                    b.solid(
                        BOX,
                        name,
                        u + 0.5 * width,
                        v_wall,
                        0.5 * wall_h,
                        (0.5 * width, 0.15 if name == "wall" else 0.45, 0.5 * wall_h),
                    )
            u += width + (rng.uniform(0.5, 3) if rng.uniform() < 0.7 else rng.uniform(4, 12))
    if crossing:
        ux, chw, csw, sides = crossing
        for side in sides:
            for out in (-1, 1):
                v = vc + side * (hw + max(sw) + max(verge) + 22.0)
                while abs(v) < cfg.content_range:
                    width = rng.uniform(8, 20)
                    depth, height = rng.uniform(8, 18), rng.uniform(*cfg.building_height)
                    cu = ux + out * (chw + csw + rng.uniform(1, 4) + 0.5 * depth)
                    v0, v1 = sorted((v, v + side * width))
                    if b.placed(cu - 0.5 * depth, cu + 0.5 * depth, v0, v1, margin=0.0):
                        b.solid(
                            BOX,
                            "building",
                            cu,
                            0.5 * (v0 + v1),
                            0.5 * height,
                            (0.5 * depth, 0.5 * width, 0.5 * height),
                            0.0,
                            _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))],
                        )
                    v += side * (width + rng.uniform(1, 6))

    # ---- street furniture and vegetation on sidewalks and verges -----------------------------
    for side, (curb_v, out) in enumerate(edge):
        gaps = side_gaps[side]
        u = u_lo + rng.uniform(0, 10)
        while u < u_hi:
            if not any(g0 - 1 < u < g1 + 1 for g0, g1 in gaps):
                b.pole(u, curb_v + out * 0.5, -out)
            u += rng.uniform(*cfg.pole_spacing)
        if rng.uniform() < cfg.tree_probability:
            in_verge = verge[side] > 2.0 and rng.uniform() < 0.5
            tree_v = curb_v + out * (sw[side] + 0.5 * verge[side] if in_verge else sw[side] - 0.9)
            u = u_lo + rng.uniform(0, 6)
            while u < u_hi:
                if not any(g0 - 2 < u < g1 + 2 for g0, g1 in gaps):
                    b.tree(u + rng.uniform(-1, 1), tree_v)
                u += rng.uniform(*cfg.tree_spacing)
        if median >= 2.5 and side == 0 and rng.uniform() < 0.5:
            u = u_lo + rng.uniform(0, 10)
            while u < u_hi:
                if not any(g0 - 2 < u < g1 + 2 for g0, g1 in road_gaps):
                    b.tree(u, vc)
                u += rng.uniform(*cfg.tree_spacing)
    for _ in range(int(rng.integers(cfg.bushes[0], cfg.bushes[1] + 1))):
        side = int(rng.integers(2))
        curb_v, out = edge[side]
        if verge[side] < 1.5:
            continue
        u = rng.uniform(u_lo, u_hi)
        v = curb_v + out * (sw[side] + rng.uniform(0.5, verge[side] - 0.5))
        r = rng.uniform(0.5, 1.4)
        if b.placed(u - r, u + r, v - r, v + r):
            b.solid(
                ELLIPSOID,
                "bush",
                u,
                v,
                0.3 * r,
                (r, r * rng.uniform(0.7, 1.3), r * rng.uniform(0.6, 1.0)),
                rng.uniform(0, math.pi),
            )
    for _ in range(int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))):
        side = int(rng.integers(2))
        curb_v, out = edge[side]
        b.pedestrian(rng.uniform(u_lo, u_hi), curb_v + out * rng.uniform(0.5, sw[side] - 0.3))
    for _ in range(int(rng.integers(cfg.trash_bins[0], cfg.trash_bins[1] + 1))):
        side = int(rng.integers(2))
        curb_v, out = edge[side]
        u, v, r = rng.uniform(u_lo, u_hi), curb_v + out * rng.uniform(0.6, sw[side] - 0.4), 0.3
        if b.placed(u - r, u + r, v - r, v + r):
            b.solid(CYLINDER, "trash bin", u, v, 0.5, (r, r, 0.5))
    for count, kind in ((cfg.bicycles, "bicycle"), (cfg.motorcycles, "motorcycle")):
        for _ in range(int(rng.integers(count[0], count[1] + 1))):
            side = int(rng.integers(2))
            curb_v, out = edge[side]
            b.vehicle(
                kind,
                rng.uniform(u_lo, u_hi),
                curb_v + out * rng.uniform(0.6, sw[side] - 0.5),
                rng.uniform(-0.3, 0.3),
            )

    # ---- traffic: lanes in both directions, parked cars on the outer lanes -------------------
    gaps = road_gaps
    lane_centres = [(vc + s * (0.5 * median + (k + 0.5) * lane_w), s) for s in (-1, 1) for k in range(lanes)]
    parked = {s: rng.uniform() < cfg.parked_probability and lanes >= 2 for s in (-1, 1)}
    for v, s in lane_centres:
        yaw = 0.0 if s < 0 else math.pi
        outer = abs(v - vc) > 0.5 * median + (lanes - 1) * lane_w
        if outer and parked[s]:
            u = u_lo + rng.uniform(0, 5)
            while u < u_hi:
                if not any(g0 - 3 < u < g1 + 3 for g0, g1 in gaps):
                    b.vehicle("car", u, v + s * rng.uniform(0.2, 0.6), yaw + rng.uniform(-0.03, 0.03))
                u += rng.uniform(5.0, 8.0)
            continue
        u = u_lo + rng.uniform(0, cfg.vehicle_gap[1])
        while u < u_hi:
            pick = rng.uniform()
            kind = "car"
            if pick < cfg.bus_fraction:
                kind = "bus"
            elif pick < cfg.bus_fraction + cfg.truck_fraction:
                kind = "truck"
            if not any(g0 - 4 < u < g1 + 4 for g0, g1 in gaps):
                b.vehicle(kind, u, v + rng.uniform(-0.3, 0.3), yaw + rng.uniform(-0.04, 0.04))
            u += rng.uniform(*cfg.vehicle_gap)
    for count, kind in ((cfg.trailers, "trailer"), (cfg.construction_vehicles, "construction vehicle")):
        for _ in range(int(rng.integers(count[0], count[1] + 1))):
            v, s = lane_centres[int(rng.integers(len(lane_centres)))]
            b.vehicle(kind, rng.uniform(u_lo, u_hi), v, 0.0 if s < 0 else math.pi)

    # ---- barriers and cones ------------------------------------------------------------------
    for _ in range(int(rng.integers(cfg.barrier_rows[0], cfg.barrier_rows[1] + 1))):
        side = int(rng.integers(2))
        curb_v, out = edge[side]
        v = curb_v - out * rng.uniform(0.5, 1.2) if rng.uniform() < 0.6 else curb_v + out * (sw[side] - 0.4)
        u = rng.uniform(u_lo, u_hi - 20)
        for _ in range(int(rng.integers(2, 9))):
            length = rng.uniform(1.8, 2.4)
            if b.placed(u, u + length, v - 0.3, v + 0.3, margin=0.05):
                b.solid(
                    BOX,
                    "barrier",
                    u + 0.5 * length,
                    v,
                    0.45,
                    (0.5 * length, 0.3, 0.45),
                    0.0,
                    (0.85, 0.85, 0.82) if rng.uniform() < 0.6 else (0.9, 0.45, 0.1),
                )
            u += length + rng.uniform(0.05, 0.4)
    for _ in range(int(rng.integers(cfg.cone_groups[0], cfg.cone_groups[1] + 1))):
        v, _s = lane_centres[int(rng.integers(len(lane_centres)))]
        v += rng.uniform(-1.4, 1.4)
        u = rng.uniform(u_lo, u_hi - 20)
        for _ in range(int(rng.integers(3, 9))):
            b.cone(u, v + rng.uniform(-0.2, 0.2))
            u += rng.uniform(1.5, 4.0)

    scene = _assemble(b, cfg, rng)
    poses = torch.tensor([[k * spacing, 0.0, 0.0] for k in range(num_samples)], dtype=torch.float64)
    return World(scene=scene, ego_poses=poses, seed=seed)


def _assemble(b: _Builder, cfg: WorldConfig, rng: np.random.Generator) -> Scene:
    """Road-frame lists -> tensors in the world frame (rotated by the road heading)."""
    c, s = math.cos(b.heading), math.sin(b.heading)
    if b.solids:
        a = torch.tensor(b.solids, dtype=torch.float64)
        u, v = a[:, 1], a[:, 2]
        prims = Primitives(
            kind=a[:, 0].long(),
            center=torch.stack([c * u - s * v, s * u + c * v, a[:, 3]], dim=-1).float(),
            half_size=a[:, 4:7].float(),
            yaw=(a[:, 7] + b.heading).float(),
            name_id=a[:, 8].long(),
            color=a[:, 9:12].float(),
        )
    else:
        prims = Primitives.empty()
    st = torch.tensor(b.strips, dtype=torch.float64).reshape(-1, 12)
    u, v = st[:, 0], st[:, 1]
    ground = GroundLayout(
        center=torch.stack([c * u - s * v, s * u + c * v], dim=-1).float(),
        heading=(st[:, 2] + b.heading).float(),
        half_length=st[:, 3].float(),
        half_width=st[:, 4].float(),
        name_id=st[:, 5].long(),
        color=st[:, 6:9].float(),
        priority=st[:, 9].float(),
        dash_period=st[:, 10].float(),
        dash_on=st[:, 11].float(),
        origin=torch.zeros(2),
        radius=cfg.ground_radius,
    )
    azimuth, elevation = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(25, 65))
    sun = torch.tensor(
        [
            math.cos(azimuth) * math.cos(elevation),
            math.sin(azimuth) * math.cos(elevation),
            math.sin(elevation),
        ]
    )
    horizon = torch.tensor(np.clip(np.array([0.78, 0.84, 0.9]) * rng.uniform(0.9, 1.05, 3), 0, 1)).float()
    zenith = torch.tensor(np.clip(np.array([0.32, 0.52, 0.82]) * rng.uniform(0.85, 1.1, 3), 0, 1)).float()
    return Scene(prims, ground, sun, horizon, zenith)
