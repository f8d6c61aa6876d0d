"""Occ3D-style ground truth of a synthetic scene: semantics, camera mask and LiDAR mask.

Semantics: every voxel of the grid is tested at s x s x s sub-sample points (offsets
(k + 0.5) / s of the voxel, default s = 2, i.e. 0.1 m from the faces at 0.4 m voxels). A voxel is
occupied when any sub-sample lies inside a solid or the ground slab (like Occ3D, where a voxel is
occupied when it holds surface points), and takes the class that owns most of its occupied
sub-samples (ties and overlapping solids: the smaller, rarer class wins, e.g. a pedestrian over the
road it stands on). Error against the analytic world is at most half a sub-sample spacing.

Visibility (Occ3D's ``mask_camera``): rays from every camera are traversed voxel by voxel
(Amanatides-Woo), marking every voxel they pass until and including the first occupied voxel, or
until they leave the grid; a voxel is observed when any ray marks it. As in Occ3D's camera
visibility the rays go through the image, but they are spaced by what they reach (see
``visibility_rays``) instead of one per pixel, so the far ground is not left in stripes.
``mask_lidar`` does the same for the beams of a 32-line roof LiDAR (nuScenes' HDL-32E: elevations
-30.67 to +10.67 deg) from the ``LIDAR_TOP`` position, one sweep (Occ3D accumulates many sweeps, so
its LiDAR masks are denser).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gausstr_core.data.occ3d import CLASS_ID, FREE_LABEL, Occ3DLabels
from gausstr_core.data.synthetic.primitives import contains
from gausstr_core.data.synthetic.rig import LIDAR_TOP_TRANSLATION, CameraRig
from gausstr_core.data.synthetic.vocabulary import name_to_occ_class
from gausstr_core.data.synthetic.world import GROUND_THICKNESS, Scene
from gausstr_core.grid import VoxelGrid

# Which class keeps a sub-sample claimed by two solids, and which wins a tied voxel: small and
# rare things over large ones, anything over the ground.
_PRIORITY_ORDER = (
    "terrain",
    "driveable_surface",
    "sidewalk",
    "other_flat",
    "manmade",
    "vegetation",
    "bus",
    "truck",
    "trailer",
    "construction_vehicle",
    "car",
    "others",
    "barrier",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "pedestrian",
)
CLASS_PRIORITY = torch.zeros(FREE_LABEL, dtype=torch.long)
for _rank, _name in enumerate(_PRIORITY_ORDER):
    CLASS_PRIORITY[CLASS_ID[_name]] = _rank + 1

_CODE_SHIFT = 5  # code = priority << 5 | class (class < 32)


def _subsample_offsets(subsamples: int, voxel_size: float) -> Tensor:
    """(s^3, 3) sub-sample offsets from a voxel's minimum corner."""
    f = (torch.arange(subsamples, dtype=torch.float32) + 0.5) * (voxel_size / subsamples)
    return torch.stack(torch.meshgrid(f, f, f, indexing="ij"), dim=-1).reshape(-1, 3)


def _voxel_boxes(lo_points: Tensor, hi_points: Tensor, grid: VoxelGrid) -> tuple[Tensor, Tensor]:
    """Inclusive voxel index ranges (N, 3) covering axis-aligned boxes, clipped to the grid."""
    lower = torch.tensor(grid.lower)
    size = torch.tensor(grid.shape)
    i0 = torch.floor((lo_points - lower) / grid.voxel_size).long().clamp_min(0)
    i1 = torch.minimum(torch.floor((hi_points - lower) / grid.voxel_size).long(), size - 1)
    return i0, i1


def semantic_occupancy(
    scene: Scene, grid: VoxelGrid | None = None, subsamples: int = 2, pairs_per_chunk: int = 1 << 18
) -> Tensor:
    """(X, Y, Z) uint8 Occ3D semantics of a scene in its own (ego) frame; 17 = free.

    Args:
        scene: the world in the ego frame.
        grid: the voxel grid (default: Occ3D-nuScenes, 200 x 200 x 16 at 0.4 m).
        subsamples: s, sub-samples per voxel edge (s^3 per voxel).
        pairs_per_chunk: (solid, voxel) pairs tested at once.
    """
    grid = grid or VoxelGrid()
    if subsamples < 1:
        raise ValueError(f"subsamples must be >= 1, got {subsamples}")
    nx, ny, nz = grid.shape
    n_sub = subsamples**3
    offsets = _subsample_offsets(subsamples, grid.voxel_size)
    lower = torch.tensor(grid.lower, dtype=torch.float32)
    occ_of_name = name_to_occ_class().long()
    # Winning code per (voxel, sub-sample); -1 = empty.
    codes = torch.full((nx * ny * nz * n_sub,), -1, dtype=torch.int16)

    # ---- solids: only the voxels inside each solid's bounding box --------------------------
    prims = scene.primitives
    if len(prims):
        corners = prims.box_corners()
        i0, i1 = _voxel_boxes(corners.amin(1), corners.amax(1), grid)
        extent = (i1 - i0 + 1).clamp_min(0)
        counts = extent.prod(-1)
        owner = torch.repeat_interleave(torch.arange(len(prims)), counts)
        start = torch.cumsum(counts, 0) - counts
        local = torch.arange(owner.numel()) - start[owner]
        ey, ez = extent[owner, 1], extent[owner, 2]
        idx = i0[owner] + torch.stack([local // (ey * ez), (local // ez) % ey, local % ez], dim=-1)
        prim_code = (
            (CLASS_PRIORITY[occ_of_name[prims.name_id]] << _CODE_SHIFT) | occ_of_name[prims.name_id]
        ).to(torch.int16)
        for s in range(0, owner.numel(), pairs_per_chunk):
            o, vi = owner[s : s + pairs_per_chunk], idx[s : s + pairs_per_chunk]
            points = (lower + vi.float() * grid.voxel_size)[:, None, :] + offsets  # (J, n_sub, 3)
            inside = contains(
                points,
                prims.kind[o, None],
                prims.center[o, None],
                prims.half_size[o, None],
                prims.yaw[o, None],
            )
            flat = ((vi[:, 0] * ny + vi[:, 1]) * nz + vi[:, 2])[:, None] * n_sub + torch.arange(n_sub)
            codes.scatter_reduce_(
                0, flat[inside], prim_code[o, None].expand_as(inside)[inside], reduce="amax"
            )

    # ---- the ground slab z in [-thickness, 0) ------------------------------------------------
    z_levels = lower[2] + (torch.arange(nz) * grid.voxel_size)
    layers = torch.nonzero((z_levels < 0) & (z_levels + grid.voxel_size > -GROUND_THICKNESS)).squeeze(1)
    if layers.numel():
        xs = lower[0] + torch.arange(nx) * grid.voxel_size
        ys = lower[1] + torch.arange(ny) * grid.voxel_size
        sub_xy = offsets.reshape(subsamples, subsamples, subsamples, 3)[:, :, 0, :2].reshape(-1, 2)
        xy = (
            torch.stack(torch.meshgrid(xs, ys, indexing="ij"), dim=-1)[:, :, None, :] + sub_xy
        )  # (X, Y, s^2, 2)
        names, _ = scene.ground.region(xy.reshape(-1, 2))
        on = scene.ground.on_ground(xy.reshape(-1, 2))
        ground_class = occ_of_name[names]
        ground_code = ((CLASS_PRIORITY[ground_class] << _CODE_SHIFT) | ground_class).to(torch.int16)
        ground_code = torch.where(on, ground_code, torch.full_like(ground_code, -1)).reshape(
            nx, ny, subsamples, subsamples
        )
        codes4 = codes.view(nx, ny, nz, subsamples, subsamples, subsamples)
        for iz in layers.tolist():
            for kz in range(subsamples):
                z = float(z_levels[iz]) + float(offsets[kz, 2])
                if -GROUND_THICKNESS <= z < 0:
                    codes4[:, :, iz, :, :, kz] = torch.maximum(codes4[:, :, iz, :, :, kz], ground_code)

    # ---- majority vote per voxel ------------------------------------------------------------
    codes = codes.view(-1, n_sub)
    occupied = torch.nonzero((codes >= 0).any(-1)).squeeze(1)
    labels = torch.full((nx * ny * nz,), FREE_LABEL, dtype=torch.uint8)
    if occupied.numel():
        c = codes[occupied].long()
        cls = torch.where(c >= 0, c & ((1 << _CODE_SHIFT) - 1), torch.full_like(c, -1))
        votes = (cls[:, :, None] == cls[:, None, :]).sum(-1)  # (N, n_sub): sub-samples agreeing with each
        score = torch.where(cls >= 0, votes * 64 + (c >> _CODE_SHIFT), torch.full_like(c, -1))
        best = score.argmax(-1)
        labels[occupied] = cls.gather(1, best[:, None]).squeeze(1).to(torch.uint8)
    return labels.view(nx, ny, nz)


def traverse(
    occupied: Tensor, origins: Tensor, directions: Tensor, grid: VoxelGrid, max_distance: Tensor | None = None
) -> Tensor:
    """Voxels that rays pass through up to and including the first occupied one.

    Amanatides-Woo traversal, all rays in lock step.

    Args:
        occupied: (X, Y, Z) bool.
        origins: (R, 3) ray origins inside the grid [m].
        directions: (R, 3) ray directions (any length).
        grid: the voxel grid.
        max_distance: optional (R,) ray parameter (in units of ``directions``) after which a ray
            stops even if it met no occupied voxel.
    Returns:
        (X, Y, Z) bool, the voxels some ray visited.
    """
    nx, ny, nz = grid.shape
    if tuple(occupied.shape) != (nx, ny, nz):
        raise ValueError(f"occupied must be {(nx, ny, nz)}, got {tuple(occupied.shape)}")
    visited = torch.zeros(nx * ny * nz, dtype=torch.bool)
    occ = occupied.reshape(-1)
    size = torch.tensor([nx, ny, nz])
    lower = torch.tensor(grid.lower, dtype=torch.float64)
    o, d = origins.double(), directions.double()
    idx = torch.floor((o - lower) / grid.voxel_size).long()
    inside = ((idx >= 0) & (idx < size)).all(-1)
    if not bool(inside.all()):
        raise ValueError(
            f"ray origins must lie inside the grid {grid.range}; "
            f"{int((~inside).sum())} of {inside.numel()} do not"
        )
    step = torch.sign(d).long()
    boundary = lower + (idx + (step > 0).long()).double() * grid.voxel_size
    safe = torch.where(d == 0, torch.ones_like(d), d)
    t_max = torch.where(d == 0, torch.full_like(d, math.inf), (boundary - o) / safe)
    t_delta = torch.where(d == 0, torch.full_like(d, math.inf), grid.voxel_size / safe.abs())
    # Set up in float64, stepped in float32: a few hundred additions keep t within ~1e-5 of exact,
    # far below any voxel-corner tie that could change the visited set meaningfully.
    t_max, t_delta = t_max.float(), t_delta.float()
    limit = max_distance.float() if max_distance is not None else None
    strides = torch.tensor([ny * nz, nz, 1])
    flat = (idx * strides).sum(-1)
    flat_step = step * strides
    alive = torch.ones_like(flat, dtype=torch.bool)
    # Each iteration: mark the current voxel, stop on occupied, then step into the neighbour
    # across the nearest voxel face (the axis with the smallest t_max). Stopped rays are frozen
    # in place (zero step, on a voxel already marked) and only dropped once a quarter of the
    # rays have stopped, which keeps the number of compactions logarithmic.
    while flat.numel():
        visited[flat] = True
        stop = occ[flat]
        t_next, axis = t_max.min(-1)
        if limit is not None:
            stop |= t_next > limit
        alive &= ~stop
        a = axis[:, None]
        moved = step.gather(1, a).squeeze(1) * alive
        coord = idx.gather(1, a).squeeze(1) + moved
        out = (coord < 0) | (coord >= size[axis])
        coord = torch.where(out, coord - moved, coord)
        alive &= ~out
        idx.scatter_(1, a, coord[:, None])
        t_max.scatter_add_(1, a, t_delta.gather(1, a))
        flat = flat + flat_step.gather(1, a).squeeze(1) * alive
        n_alive = int(alive.sum())
        if n_alive * 4 < alive.numel() * 3:
            keep = torch.nonzero(alive).squeeze(1)
            idx, t_max, t_delta, step, flat_step, flat, alive = (
                x[keep] for x in (idx, t_max, t_delta, step, flat_step, flat, alive)
            )
            if limit is not None:
                limit = limit[keep]
    return visited.view(nx, ny, nz)


def visibility_rays(
    rig: CameraRig, grid: VoxelGrid, spacing: float = 0.8, ground_spacing: float = 0.6
) -> tuple[Tensor, Tensor]:
    """Camera rays dense enough that no voxel a camera can see lies between two rays.

    One ray per image pixel leaves the far ground sparsely sampled (at 30 m a nuScenes pixel row
    already spans more than a voxel) and wastes rays where everything is near, so rays are placed
    by what they can reach: each image row is assigned the farthest distance its rays can travel
    inside the grid (to the ground, the grid top or the farthest grid corner), and its rays, and the
    gap to the next row, are ``spacing`` voxels apart at that distance; rows that meet the ground
    inside the grid are also at most ``ground_spacing`` voxels of ground distance apart.

    Returns:
        origins (R, 3) and directions (R, 3) in the ego frame.
    """
    lower, upper = grid.lower, grid.range[3:]
    # The top of the voxel layer holding the ground surface (z = 0): where rays enter the ground.
    ground_top = lower[2] + math.ceil(-lower[2] / grid.voxel_size - 1e-9) * grid.voxel_size
    origins, directions = [], []
    for cam in rig.cameras:
        k_inv = torch.linalg.inv(cam.intrinsics(torch.float64))
        rot = cam.cam_to_ego(torch.float64)[:3, :3]
        to_ego = rot @ k_inv
        cx, cy, cz = cam.translation
        far = max(math.hypot(x - cx, y - cy) for x in (lower[0], upper[0]) for y in (lower[1], upper[1]))
        # Rays towards the image sides are more oblique than the centre column's.
        obliquity = math.hypot(1.0, max(cam.cx + 0.5, cam.width - 0.5 - cam.cx) / cam.fx)

        def reach(
            v: float, cam=cam, to_ego=to_ego, cz=cz, far=far, obliquity=obliquity
        ) -> tuple[float, float]:
            """(3D reach [m], ground distance [m] or inf) of row v's centre ray."""
            d = to_ego @ torch.tensor([cam.cx, v, 1.0], dtype=torch.float64)
            horizontal, up = float(d[:2].norm()), float(d[2])
            ground = (cz - ground_top) * horizontal / -up if up < -1e-9 and cz > ground_top else math.inf
            top = (upper[2] - cz) * horizontal / up if up > 1e-9 else math.inf
            dist = min(far, ground, top) * obliquity
            return dist * math.hypot(1.0, up / max(horizontal, 1e-9)), ground

        def row_step(v: float, cam=cam, reach=reach, far=far) -> float:
            length, ground = reach(v)
            step = spacing * grid.voxel_size * cam.fy / length
            if ground <= far:
                slope = abs(reach(v + 1e-3)[1] - ground) / 1e-3  # metres of ground per pixel row
                step = min(step, ground_spacing * grid.voxel_size / max(slope, 1e-9))
            return step

        v = -0.5
        while v < cam.height - 0.5:
            first = row_step(v)
            step = min(first, row_step(v + first))
            row = v + 0.5 * step
            length, _ = reach(row)
            col_step = spacing * grid.voxel_size * cam.fx / length
            cols = torch.arange(-0.5 + 0.5 * col_step, cam.width - 0.5, col_step, dtype=torch.float64)
            pix = torch.stack([cols, torch.full_like(cols, row), torch.ones_like(cols)], dim=-1)
            directions.append(pix @ to_ego.T)
            origins.append(torch.tensor(cam.translation, dtype=torch.float64).expand(pix.shape[0], 3))
            v += step
    return torch.cat(origins), torch.cat(directions)


def camera_visibility(
    semantics: Tensor,
    rig: CameraRig,
    grid: VoxelGrid | None = None,
    spacing: float = 0.8,
    ground_spacing: float = 0.6,
) -> Tensor:
    """(X, Y, Z) bool Occ3D ``mask_camera``: voxels seen by any camera of the rig.

    Rays from every camera (``visibility_rays``) are traversed until the first occupied voxel;
    the voxels they pass, and that voxel, are observed. Unlike Occ3D's one ray per pixel, the
    rays are dense enough to reach every visible voxel up to the farthest grid corner, so the
    mask does not depend on the image resolution.

    Args:
        semantics: (X, Y, Z) labels (17 = free).
        rig: the cameras (poses and fields of view; the image size does not matter).
        grid: the voxel grid.
        spacing, ground_spacing: ray spacing in voxels (see ``visibility_rays``).
    """
    grid = grid or VoxelGrid()
    origins, directions = visibility_rays(rig, grid, spacing, ground_spacing)
    return traverse(semantics != FREE_LABEL, origins, directions, grid)


def lidar_visibility(
    semantics: Tensor,
    grid: VoxelGrid | None = None,
    beams: int = 32,
    azimuths: int = 1800,
    elevation_deg: tuple[float, float] = (-30.67, 10.67),
    origin: tuple[float, float, float] = LIDAR_TOP_TRANSLATION,
) -> Tensor:
    """(X, Y, Z) bool ``mask_lidar`` of one sweep of a spinning LiDAR (HDL-32E-like pattern)."""
    grid = grid or VoxelGrid()
    elevation = torch.deg2rad(torch.linspace(elevation_deg[0], elevation_deg[1], beams, dtype=torch.float64))
    azimuth = torch.arange(azimuths, dtype=torch.float64) * (2 * math.pi / azimuths)
    el, az = torch.meshgrid(elevation, azimuth, indexing="ij")
    directions = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1).reshape(-1, 3)
    origins = torch.tensor(origin, dtype=torch.float64).expand_as(directions)
    return traverse(semantics != FREE_LABEL, origins, directions, grid)


def occupancy_labels(
    scene: Scene,
    rig: CameraRig,
    grid: VoxelGrid | None = None,
    subsamples: int = 2,
    spacing: float = 0.8,
    ground_spacing: float = 0.6,
) -> Occ3DLabels:
    """Semantics, ``mask_lidar`` and ``mask_camera`` of a scene (see the module docstring)."""
    grid = grid or VoxelGrid()
    semantics = semantic_occupancy(scene, grid, subsamples)
    return Occ3DLabels(
        semantics=semantics,
        mask_lidar=lidar_visibility(semantics, grid),
        mask_camera=camera_visibility(semantics, rig, grid, spacing, ground_spacing),
    )
