"""Vectorised ray casting of the synthetic world into a camera rig: RGB, depth and semantics.

Every pixel's ray (through the pixel centre) is intersected exactly with the analytic solids and
the ground plane. Work is bounded by screen-space tiles: each solid's oriented bounding box is
projected into every camera, and only the (tile, solid) pairs whose footprints overlap are tested,
T x T rays at a time (the same binning idea as a tile rasteriser). The nearest hit of each ray is
found with one ``scatter_reduce(amin)`` over keys that pack (depth, solid index) into an int64.

Outputs per camera: RGB (base colour of the instance or ground strip, procedural value-noise
texture, building windows, Lambertian sun shading, distance haze; a vertical sky gradient where
nothing is hit), metric z-depth (0 for sky: no surface, so invalid as a depth target), the Occ3D
class of the surface (255 for sky) and its synthetic name id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gausstr_core.data.synthetic.primitives import BOX, CYLINDER, ELLIPSOID, ray_hit, surface_normal
from gausstr_core.data.synthetic.rig import CameraRig
from gausstr_core.data.synthetic.vocabulary import (
    NAME_ID,
    SKY_CLASS,
    SKY_NAME_ID,
    name_textures,
    name_to_occ_class,
)
from gausstr_core.data.synthetic.world import Scene
from gausstr_core.geometry import project

_PRIM_BITS = 20  # solid index bits of a hit key (up to ~1M solids per scene)
_DEPTH_SCALE = float(1 << 20)  # hit keys quantise depth to ~1 micrometre
_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class RenderedViews:
    """V rendered camera images of one scene.

    Attributes:
        rgb: (V, 3, H, W) uint8.
        depth: (V, H, W) float32 z-depth along the optical axis [m]; 0 where the ray hits nothing.
        occ_class: (V, H, W) uint8 Occ3D class of the visible surface; 255 (``SKY_CLASS``) for sky.
        name_id: (V, H, W) uint8 synthetic name id (``vocabulary.SYNTHETIC_NAMES``); sky included.
    """

    rgb: Tensor
    depth: Tensor
    occ_class: Tensor
    name_id: Tensor


def camera_rays(rig: CameraRig) -> tuple[Tensor, Tensor]:
    """Rays through every pixel centre of every camera.

    Returns:
        origins (V, 3) camera centres and directions (V, H, W, 3) in the ego frame, scaled so that
        their optical-axis component is 1 (the ray parameter t is then the z-depth).
    """
    h, w = rig.image_size
    k = rig.intrinsics(torch.float64)
    pose = rig.cam_to_ego(torch.float64)
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    cam = pix @ torch.linalg.inv(k).transpose(-1, -2)[:, None]  # (V, H, W, 3), z = 1
    directions = cam @ pose[:, None, :3, :3].transpose(-1, -2)
    return pose[:, :3, 3].float(), directions.float()


def _tile_pairs(scene: Scene, rig: CameraRig, tile: int, near: float) -> tuple[Tensor, Tensor]:
    """(camera-tile index, solid index) pairs whose screen footprints overlap."""
    prims = scene.primitives
    h, w = rig.image_size
    n_ty, n_tx = -(-h // tile), -(-w // tile)
    v_count, p_count = rig.num_views, len(prims)
    if p_count == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    corners = prims.box_corners().reshape(1, -1, 3).expand(v_count, -1, -1)  # (V, P*8, 3)
    pixels, depth = project(corners, rig.intrinsics(), rig.cam_to_ego())
    pixels, depth = pixels.reshape(v_count, p_count, 8, 2), depth.reshape(v_count, p_count, 8)
    in_front = depth > near
    lo = torch.where(in_front[..., None], pixels, torch.full_like(pixels, float("inf"))).amin(2)
    hi = torch.where(in_front[..., None], pixels, torch.full_like(pixels, -float("inf"))).amax(2)
    # A box crossing the near plane can project anywhere: give it the whole image.
    straddle = in_front.any(-1) & ~in_front.all(-1)
    lo = torch.where(straddle[..., None], torch.full_like(lo, -1e9), lo)
    hi = torch.where(straddle[..., None], torch.full_like(hi, 1e9), hi)
    # Pixel centres are integers; a one-pixel margin absorbs rounding.
    tx0 = torch.floor((lo[..., 0] - 1) / tile).clamp(0, n_tx - 1).long()
    tx1 = torch.floor((hi[..., 0] + 1) / tile).clamp(-1, n_tx - 1).long()
    ty0 = torch.floor((lo[..., 1] - 1) / tile).clamp(0, n_ty - 1).long()
    ty1 = torch.floor((hi[..., 1] + 1) / tile).clamp(-1, n_ty - 1).long()
    visible = (
        in_front.any(-1) & (hi[..., 0] >= -1) & (lo[..., 0] <= w) & (hi[..., 1] >= -1) & (lo[..., 1] <= h)
    )
    nx, ny = (tx1 - tx0 + 1).clamp_min(0), (ty1 - ty0 + 1).clamp_min(0)
    counts = torch.where(visible, nx * ny, torch.zeros_like(nx)).flatten()  # (V*P,)
    owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel()) - start[owner]
    cam, prim = owner // p_count, owner % p_count
    nx_o = nx.flatten()[owner]
    ty = ty0.flatten()[owner] + local // nx_o
    tx = tx0.flatten()[owner] + local % nx_o
    return (cam * n_ty + ty) * n_tx + tx, prim


def _to_tiles(x: Tensor, tile: int) -> Tensor:
    """(V, H, W, C) -> (V * n_ty * n_tx, T*T, C), edge-replicated to whole tiles."""
    v, h, w, c = x.shape
    ph, pw = -(-h // tile) * tile - h, -(-w // tile) * tile - w
    if ph or pw:
        x = F.pad(x.permute(0, 3, 1, 2), (0, pw, 0, ph), mode="replicate").permute(0, 2, 3, 1)
    n_ty, n_tx = x.shape[1] // tile, x.shape[2] // tile
    x = x.reshape(v, n_ty, tile, n_tx, tile, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(v * n_ty * n_tx, tile * tile, c)


def _from_tiles(x: Tensor, v: int, h: int, w: int, tile: int) -> Tensor:
    """(V * n_ty * n_tx * T*T, ...) -> (V, H, W, ...) (inverse of ``_to_tiles``, cropped)."""
    n_ty, n_tx = -(-h // tile), -(-w // tile)
    rest = x.shape[1:]
    x = x.reshape(v, n_ty, n_tx, tile, tile, *rest).transpose(2, 3)
    return x.reshape(v, n_ty * tile, n_tx * tile, *rest)[:, :h, :w]


def _ground_hit(scene: Scene, origins: Tensor, directions: Tensor) -> Tensor:
    """(...) parameter t where rays meet the ground disc (inf where they do not)."""
    dz = directions[..., 2]
    t = torch.where(dz < -1e-9, -origins[..., 2] / dz.clamp_max(-1e-9), torch.full_like(dz, float("inf")))
    xy = origins[..., :2] + t.clamp_max(1e6)[..., None] * directions[..., :2]
    return torch.where(scene.ground.on_ground(xy) & (t > 0), t, torch.full_like(t, float("inf")))


def cast_rays(
    scene: Scene, rig: CameraRig, tile: int = 16, near: float = 0.05, pairs_per_chunk: int = 4096
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nearest surface along every pixel ray of the rig.

    Args:
        scene: the world in the ego frame.
        rig: the cameras (all of one image size H x W).
        tile: screen tile edge in pixels for the (tile, solid) culling.
        near: hits closer than this to the camera are ignored [m].
        pairs_per_chunk: (tile, solid) pairs intersected at once (memory ~ pairs * T^2 * 100 B).
    Returns:
        t (V, H, W) z-depth of the nearest hit (inf: none), hit (V, H, W) int64 index of the solid
        hit (``len(scene.primitives)`` = the ground, -1 = nothing), and the rays: origins (V, 3),
        directions (V, H, W, 3).
    """
    prims = scene.primitives
    p_count = len(prims)
    if p_count >= (1 << _PRIM_BITS):
        raise ValueError(f"at most {(1 << _PRIM_BITS) - 1} solids per scene, got {p_count}")
    v_count = rig.num_views
    h, w = rig.image_size
    origins, directions = camera_rays(rig)
    tiles = _to_tiles(directions, tile)  # (n_tiles, T*T, 3)
    tiles_per_cam = tiles.shape[0] // v_count
    best = torch.full((tiles.shape[0] * tile * tile,), _NO_HIT, dtype=torch.long)

    def merge(t: Tensor, ray_index: Tensor, prim_index: Tensor) -> None:
        hit = torch.isfinite(t)
        if not bool(hit.any()):
            return
        key = (torch.round(t[hit].double() * _DEPTH_SCALE).long() << _PRIM_BITS) | prim_index[hit]
        best.scatter_reduce_(0, ray_index[hit], key, reduce="amin")

    # The ground: every ray.
    ray_origin = origins.repeat_interleave(tiles_per_cam, 0)[:, None, :]  # (n_tiles, 1, 3)
    t_ground = _ground_hit(scene, ray_origin, tiles).flatten()
    merge(t_ground, torch.arange(t_ground.numel()), torch.full_like(t_ground, p_count, dtype=torch.long))

    # The solids: only where their projected boxes overlap a tile.
    tile_index, prim_index = _tile_pairs(scene, rig, tile, near)
    local = torch.arange(tile * tile)
    for kind in (BOX, CYLINDER, ELLIPSOID):
        sel = prims.kind[prim_index] == kind
        k_tiles, k_prims = tile_index[sel], prim_index[sel]
        for start in range(0, k_tiles.numel(), pairs_per_chunk):
            tt, pp = k_tiles[start : start + pairs_per_chunk], k_prims[start : start + pairs_per_chunk]
            t = ray_hit(
                ray_origin[tt],
                tiles[tt],
                kind,
                prims.center[pp, None],
                prims.half_size[pp, None],
                prims.yaw[pp, None],
                near=near,
            )  # (J, T*T)
            ray_index = tt[:, None] * (tile * tile) + local
            merge(t.flatten(), ray_index.flatten(), pp[:, None].expand_as(t).flatten())

    hit = torch.where(best == _NO_HIT, torch.full_like(best, -1), best & ((1 << _PRIM_BITS) - 1))
    hit = _from_tiles(hit, v_count, h, w, tile)
    # Exact depth of the winner (the key only ordered the candidates).
    t = torch.full((v_count, h, w), float("inf"))
    ground = hit == p_count
    t_ground_img = _from_tiles(t_ground, v_count, h, w, tile)
    t = torch.where(ground, t_ground_img, t)
    solid = (hit >= 0) & ~ground
    if bool(solid.any()):
        cam = torch.arange(v_count)[:, None, None].expand_as(hit)[solid]
        idx = hit[solid]
        t[solid] = ray_hit(
            origins[cam],
            directions[solid],
            prims.kind[idx],
            prims.center[idx],
            prims.half_size[idx],
            prims.yaw[idx],
            near=near,
        )
    return t, hit, origins, directions


_NOISE_PERIOD = 32


def _noise_volume(seed: int) -> Tensor:
    """(1, 1, P+1, P+1, P+1) random lattice values in [-1, 1], periodic (last slice = first)."""
    g = torch.Generator().manual_seed(seed)
    lattice = torch.rand(_NOISE_PERIOD, _NOISE_PERIOD, _NOISE_PERIOD, generator=g) * 2 - 1
    lattice = torch.cat([lattice, lattice[:1]], 0)
    lattice = torch.cat([lattice, lattice[:, :1]], 1)
    lattice = torch.cat([lattice, lattice[:, :, :1]], 2)
    return lattice[None, None]


_NOISE = {}


def value_noise(points: Tensor, frequency: float, seed: int = 0) -> Tensor:
    """(N,) trilinear value noise in [-1, 1] at points (N, 3) [m], ``frequency`` lattice cells per
    metre, periodic every 32 cells (deterministic per seed)."""
    if seed not in _NOISE:
        _NOISE[seed] = _noise_volume(seed)
    q = torch.remainder(points * frequency, _NOISE_PERIOD) * (2.0 / _NOISE_PERIOD) - 1.0
    # grid_sample takes (x, y, z) = (W, H, D) order; the lattice is symmetric so any order works.
    out = F.grid_sample(_NOISE[seed], q.reshape(1, -1, 1, 1, 3), mode="bilinear", align_corners=True)
    return out.reshape(-1)


def shade(scene: Scene, t: Tensor, hit: Tensor, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """RGB (V, H, W, 3) float in [0, 1] and synthetic name id (V, H, W) of every pixel."""
    prims = scene.primitives
    p_count = len(prims)
    shape = t.shape
    flat_hit = hit.reshape(-1)
    flat_dir = directions.reshape(-1, 3)
    cam = torch.arange(shape[0]).repeat_interleave(shape[1] * shape[2])

    # Sky everywhere first: a vertical gradient from the horizon colour to the zenith colour.
    elevation = flat_dir[:, 2] / flat_dir.norm(dim=-1)
    blend = (elevation * 2.5).clamp(0, 1)[:, None]
    color = scene.sky_horizon * (1 - blend) + scene.sky_zenith * blend
    name = torch.full((flat_hit.numel(),), SKY_NAME_ID, dtype=torch.long)

    surf = torch.nonzero(flat_hit >= 0).squeeze(1)
    if surf.numel() == 0:
        return color.reshape(*shape, 3), name.reshape(shape)
    s_hit, s_dir = flat_hit[surf], flat_dir[surf]
    s_t = t.reshape(-1)[surf]
    points = origins[cam[surf]] + s_t[:, None] * s_dir
    s_name = torch.empty_like(s_hit)
    s_color = torch.empty(surf.numel(), 3)
    normal = torch.zeros(surf.numel(), 3)
    normal[:, 2] = 1.0

    ground = s_hit == p_count
    g = torch.nonzero(ground).squeeze(1)
    if g.numel():
        s_name[g], s_color[g] = scene.ground.region(points[g, :2])
    o = torch.nonzero(~ground).squeeze(1)
    if o.numel():
        idx = s_hit[o]
        s_name[o], s_color[o] = prims.name_id[idx], prims.color[idx]
        normal[o] = surface_normal(
            points[o], prims.kind[idx], prims.center[idx], prims.half_size[idx], prims.yaw[idx]
        )
        # Windows on vertical building faces: a periodic grid in the facade's own coordinates.
        b = o[prims.name_id[idx] == NAME_ID["building"]]
        if b.numel():
            bi = s_hit[b]
            q = points[b] - prims.center[bi]
            c, s = torch.cos(prims.yaw[bi]), torch.sin(prims.yaw[bi])
            along = torch.remainder((c * q[:, 0] + s * q[:, 1]) + (-s * q[:, 0] + c * q[:, 1]), 3.2)
            z = torch.remainder(points[b, 2] - 1.2, 3.0)
            window = (
                (normal[b, 2].abs() < 0.5)
                & (points[b, 2] > 1.2)
                & (along > 0.9)
                & (along < 2.3)
                & (z > 0.8)
                & (z < 2.2)
            )
            s_color[b[window]] = torch.tensor([0.22, 0.27, 0.33]) + 0.1 * scene.sky_zenith

    texture = name_textures()[s_name]
    noise = 0.65 * value_noise(points, 1.7, seed=1) + 0.35 * value_noise(points, 7.0, seed=2)
    s_color = s_color * (1 + texture * noise)[:, None]
    light = 0.45 + 0.65 * (normal @ scene.sun_direction.to(s_color)).clamp_min(0)
    s_color = s_color * light[:, None]
    haze = (1 - torch.exp(-s_t * s_dir.norm(dim=-1) / 350.0))[:, None]
    color[surf] = s_color * (1 - haze) + scene.sky_horizon * haze
    name[surf] = s_name
    return color.clamp(0, 1).reshape(*shape, 3), name.reshape(shape)


def render_views(scene: Scene, rig: CameraRig, tile: int = 16, antialias: int = 1) -> RenderedViews:
    """Render every camera of the rig.

    Args:
        scene: the world in the ego frame.
        rig: the cameras (one image size H x W for all).
        tile: culling tile edge [px].
        antialias: odd supersampling factor k for RGB (k x k rays per pixel, box-filtered); depth
            and labels come from the centre ray, i.e. exactly the pixel centre.
    Returns:
        ``RenderedViews``.
    """
    if antialias < 1 or antialias % 2 == 0:
        raise ValueError(f"antialias must be an odd factor >= 1, got {antialias}")
    h, w = rig.image_size
    fine = rig if antialias == 1 else rig.scaled(h * antialias, w * antialias)
    t, hit, origins, directions = cast_rays(scene, fine, tile=tile)
    color, name = shade(scene, t, hit, origins, directions)
    if antialias > 1:
        k, c = antialias, antialias // 2
        color = F.avg_pool2d(color.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)
        t, name = t[:, c::k, c::k], name[:, c::k, c::k]
    rgb = (color * 255 + 0.5).to(torch.uint8).permute(0, 3, 1, 2).contiguous()
    depth = torch.where(torch.isfinite(t), t, torch.zeros_like(t)).float()
    occ = name_to_occ_class()[name]
    occ = torch.where(name == SKY_NAME_ID, torch.full_like(occ, SKY_CLASS), occ)
    return RenderedViews(rgb=rgb, depth=depth, occ_class=occ, name_id=name.to(torch.uint8))
