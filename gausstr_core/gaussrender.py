"""GaussRender (Chambon et al., ICCV 2025): occupancy grids rendered as Gaussians, compared in 2D.

Both the predicted and the ground-truth occupancy become grids of simple Gaussians:

* one Gaussian per rendered voxel, centred at the voxel centre, isotropic with standard deviation
  ``scale * voxel_size`` (the official 0.27 m for 0.4 m Occ3D voxels: ``scale = 0.675``), identity
  rotation;
* colour = class probabilities (K channels, free space has no channel): the prediction's
  density-weighted class probabilities, the ground truth's one-hot labels;
* opacity: prediction 1 - exp(-gain * density), the probability that the voxel is non-empty under a
  Beer-Lambert reading of the density (``gain`` = ln 2 / 0.04 by default, so the inference threshold
  of 0.04 renders half opaque); ground truth 1 for occupied voxels (free voxels are not rendered).

They are rendered from three kinds of cameras (``render_views``):

1. sensor: the input cameras (a random subset per step during training);
2. elevated: sensor cameras lifted ``elevation`` m, pitched ``pitch`` degrees down, turned by a random
   yaw of up to ``yaw_jitter`` degrees and moved up to ``around`` m horizontally around the ego;
3. bird's-eye view: one fixed orthographic camera above the grid looking down.

The loss is, per kind, the L1 difference of the rendered semantics (mean over pixels and classes)
plus the L1 difference of the rendered (accumulated) depths divided by a maximum depth, over the
pixels where the ground truth renders something (official: depth > 0.1 m; perspective views
normalised by 50 m, the BEV by its camera height above the grid floor); the sum over kinds is
weighted by ``weight`` (lambda; official 10).

Only voxels that can matter are rendered: with ``visible_only`` the camera-visible ones (Occ3D's
``mask_camera``, as the official code ignores unobserved voxels), of those the ground truth's
occupied voxels and the predicted voxels with density above ``density_floor`` (a voxel below it
renders below gsplat's 1/255 alpha skip in any case). The same renders score any prediction as a
projective-consistency metric (``ProjectiveConsistency``).

Our model predicts Gaussians, not voxels: its last layer's Gaussians are voxelized
(``voxelize_gaussians``, differentiable) with per-Gaussian class probabilities from the text
prototypes of the vocabulary (``ClassPrototypes``), so the loss reaches every Gaussian parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gausstr_core.data.batch import CameraBatch
from gausstr_core.data.transforms import resize_matrix
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.render import RenderOutput, render_gaussians

VIEW_KINDS = ("sensor", "elevated", "bev")
DEFAULT_GAIN = math.log(2.0) / 0.04  # the inference density threshold renders at opacity 0.5


@dataclass
class GaussRenderConfig:
    """The GaussRender loss (a section of ``LossConfig``; off while ``weight`` is 0).

    Attributes:
        weight: lambda, the weight of the whole term (official 10); 0 = off.
        semantic_weight, depth_weight: weights of the semantic and the depth L1 inside it.
        scale: Gaussian standard deviation as a fraction of the voxel size (official 0.27 m / 0.4 m).
        sensor_views: sensor cameras rendered per scene (chosen at random each step; -1 = all).
        elevated_views: elevated cameras per scene (each from a random sensor camera; 0 = none).
        elevation: how far the elevated cameras are lifted [m] (official 8).
        pitch: how far they look down [deg] (official 20).
        yaw_jitter: their random turn about the vertical, up to this [deg] (official 5).
        around: their random horizontal shift around the ego, up to this per axis [m].
        bev: render the orthographic bird's-eye view.
        bev_resolution: its pixel size [m] (the grid's extent / this = the image size).
        render_scale: perspective renders at this fraction of the network input size.
        max_depth: depth normaliser of the perspective views [m] (official 50).
        density_floor: predicted voxels at or below this density are not rendered.
        occupancy_gain: predicted opacity = 1 - exp(-gain * density).
        visible_only: render only the camera-visible voxels (``mask_camera``) when the ground truth
            has a mask (the official behaviour: unobserved voxels are ignored).
        grid_factor: render a grid this many times coarser per axis (1 = the ground truth's own).
            The prediction is voxelized straight into the coarse grid; a coarse ground-truth voxel is
            occupied when any of its fine voxels is (majority label), visible when any is. A
            CPU-cost knob: 2 renders 8x fewer voxels (the tiny preset's setting).
        tile_size: tile edge of the CPU reference renderer (voxel Gaussians are small).
    """

    weight: float = 0.0
    semantic_weight: float = 1.0
    depth_weight: float = 1.0
    scale: float = 0.675
    sensor_views: int = 1
    elevated_views: int = 1
    elevation: float = 8.0
    pitch: float = 20.0
    yaw_jitter: float = 5.0
    around: float = 10.0
    bev: bool = True
    bev_resolution: float = 0.8
    render_scale: float = 0.5
    max_depth: float = 50.0
    density_floor: float = 1e-3
    occupancy_gain: float = DEFAULT_GAIN
    visible_only: bool = True
    grid_factor: int = 1
    tile_size: int = 8

    def __post_init__(self) -> None:
        for name in ("weight", "semantic_weight", "depth_weight", "density_floor", "around", "yaw_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.gaussrender.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "bev_resolution", "render_scale", "max_depth", "occupancy_gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"loss.gaussrender.{name} must be positive, got {getattr(self, name)}")
        if self.sensor_views < -1 or self.elevated_views < 0:
            raise ValueError(
                f"loss.gaussrender needs sensor_views >= -1 and elevated_views >= 0, got "
                f"{self.sensor_views}, {self.elevated_views}"
            )
        if not 0 <= self.pitch < 90:
            raise ValueError(f"loss.gaussrender.pitch must be in [0, 90) degrees, got {self.pitch}")
        if self.tile_size < 1 or self.grid_factor < 1:
            raise ValueError(
                f"loss.gaussrender.tile_size and grid_factor must be >= 1, got "
                f"{self.tile_size}, {self.grid_factor}"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0


# --- voxels -> Gaussians --------------------------------------------------------------------------


def voxel_gaussians(
    colors: Tensor, opacities: Tensor, include: Tensor, grid: VoxelGrid, scale: float = 0.675
) -> Gaussians:
    """The included voxels of B grids as isotropic Gaussians at the voxel centres.

    Args:
        colors: (B, X, Y, Z, K) per-voxel colours (class probabilities).
        opacities: (B, X, Y, Z) in [0, 1].
        include: (B, X, Y, Z) bool, the voxels to turn into Gaussians.
        grid: the voxel grid (centres, voxel size).
        scale: standard deviation as a fraction of the voxel size.
    Returns:
        Gaussians with N = the largest count of included voxels of a scene: means (B, N, 3) at the
        voxel centres (C order [ix, iy, iz]), scales all ``scale * voxel_size``, rotations identity,
        opacities and colours of the voxels; scenes with fewer voxels are padded with Gaussians of
        opacity 0 and colour 0 (the renderer culls them).
    """
    if colors.dim() != 5 or colors.shape[1:4] != grid.shape:
        raise ValueError(
            f"colors must be (B, X, Y, Z, K) with (X, Y, Z) = {grid.shape}, got {tuple(colors.shape)}"
        )
    b, k = colors.shape[0], colors.shape[-1]
    if tuple(opacities.shape) != (b, *grid.shape) or tuple(include.shape) != (b, *grid.shape):
        raise ValueError(
            f"opacities and include must be (B, X, Y, Z) = {(b, *grid.shape)}, got "
            f"{tuple(opacities.shape)} and {tuple(include.shape)}"
        )
    if include.dtype != torch.bool:
        raise ValueError(f"include must be a bool mask, got {include.dtype}")
    dev, dtype = colors.device, colors.dtype
    centers = grid.centers(dev, dtype).reshape(-1, 3)
    flat = include.reshape(b, -1)
    counts = flat.sum(1)
    n = int(counts.max()) if b else 0
    # Each scene's included voxels first (in grid order), then padding: a stable sort of "excluded".
    order = torch.sort((~flat).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # (B, N)
    present = torch.arange(n, device=dev)[None] < counts[:, None]
    means = centers[order]
    take = lambda t: torch.gather(
        t.reshape(b, -1, *t.shape[4:]), 1, order if t.dim() == 4 else order[..., None].expand(b, n, k)
    )
    gathered_colors = torch.where(present[..., None], take(colors), torch.zeros((), device=dev, dtype=dtype))
    gathered_opacity = torch.where(present, take(opacities), torch.zeros((), device=dev, dtype=dtype))
    rotations = torch.zeros(b, n, 4, device=dev, dtype=dtype)
    rotations[..., 0] = 1
    scales = torch.full((b, n, 3), scale * grid.voxel_size, device=dev, dtype=dtype)
    return Gaussians(means, scales, rotations, gathered_opacity, gathered_colors)


def ground_truth_occupancy(semantics: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """One-hot colours and opacities of ground-truth labels.

    Args:
        semantics: (B, X, Y, Z) integer labels, 0..K-1 classes, K = free, anything larger ignored.
        num_classes: K.
    Returns:
        colors (B, X, Y, Z, K) float32 one-hot (zero for free and ignored voxels), opacities
        (B, X, Y, Z) float32 (1 occupied, 0 free), ignored (B, X, Y, Z) bool (labels > K).
    """
    labels = semantics.long()
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    occupied = labels < num_classes
    colors = torch.nn.functional.one_hot(labels.clamp(max=num_classes), num_classes + 1)[..., :num_classes]
    return colors.float(), occupied.float(), labels > num_classes


def coarse_grid(grid: VoxelGrid, factor: int) -> VoxelGrid:
    """The grid with ``factor`` times larger voxels over the same range (its shape must divide)."""
    if factor == 1:
        return grid
    if any(n % factor for n in grid.shape):
        raise ValueError(f"grid shape {grid.shape} is not divisible by grid_factor {factor}")
    return VoxelGrid(grid.range, grid.voxel_size * factor)


def coarsen_labels(
    semantics: Tensor, mask: Tensor | None, num_classes: int, factor: int
) -> tuple[Tensor, Tensor | None]:
    """Ground truth on a ``factor`` times coarser grid.

    Args:
        semantics: (B, X, Y, Z) labels (K = free, > K ignored); mask: (B, X, Y, Z) bool or None.
        num_classes: K.
    Returns:
        semantics (B, X/f, Y/f, Z/f): the most frequent class among a block's occupied voxels (ties:
        the lower label), free when none is occupied, ignored (K + 1) when every voxel is ignored;
        mask: true where any voxel of the block is.
    """
    if factor == 1:
        return semantics, mask
    b, x, y, z = semantics.shape
    f, k2 = factor, num_classes + 2
    labels = semantics.long().clamp(max=num_classes + 1)  # K + 1 = ignored
    coarse = (b, x // f, y // f, z // f)
    ix, iy, iz = (torch.arange(n, device=labels.device) // f for n in (x, y, z))
    block = ((ix[:, None, None] * coarse[2] + iy[None, :, None]) * coarse[3] + iz[None, None, :]).reshape(-1)
    scene = torch.arange(b, device=labels.device)[:, None] * (coarse[1] * coarse[2] * coarse[3])
    key = ((scene + block[None]) * k2 + labels.reshape(b, -1)).reshape(-1)
    counts = torch.bincount(key, minlength=b * coarse[1] * coarse[2] * coarse[3] * k2).reshape(*coarse, k2)
    counts = counts.movedim(-1, 1)  # (B, K + 2, X/f, Y/f, Z/f)
    occupied = counts[:, :num_classes].sum(1) > 0
    majority = counts[:, :num_classes].argmax(1)
    all_ignored = counts[:, num_classes + 1] == f**3
    out = torch.where(occupied, majority, torch.where(all_ignored, num_classes + 1, num_classes))
    coarse_mask = None
    if mask is not None:
        coarse_mask = mask.bool().reshape(b, x // f, f, y // f, f, z // f, f).any(6).any(4).any(2)
    return out.to(semantics.dtype), coarse_mask


# --- cameras --------------------------------------------------------------------------------------


@dataclass
class RenderView:
    """A set of cameras of one kind, rendered together.

    Attributes:
        kind: "sensor", "elevated" or "bev".
        intrinsics: (B, V, 3, 3) of the rendered image (pixels per metre for "ortho").
        cam_to_ego: (B, V, 4, 4).
        image_size: (H, W).
        camera_model: "pinhole" or "ortho".
        max_depth: the depth normaliser of the depth L1 [m].
        near, far: renderer culling planes [m].
    """

    kind: str
    intrinsics: Tensor
    cam_to_ego: Tensor
    image_size: tuple[int, int]
    camera_model: str
    max_depth: float
    near: float = 0.1
    far: float = 100.0


def sensor_view(
    cameras: CameraBatch, size: tuple[int, int], views: Tensor | None = None, max_depth: float = 50.0
) -> RenderView:
    """The input cameras at ``size`` (all of them, or ``views`` (B, V') indices per scene)."""
    k = (resize_matrix(cameras.image_size, size).to(cameras.intrinsics) @ cameras.input_intrinsics()).float()
    pose = cameras.cam_to_ego.float()
    if views is not None:
        k = torch.gather(k, 1, views[..., None, None].expand(*views.shape, 3, 3))
        pose = torch.gather(pose, 1, views[..., None, None].expand(*views.shape, 4, 4))
    return RenderView("sensor", k, pose, tuple(size), "pinhole", max_depth)


def elevated_poses(
    cam_to_ego: Tensor, elevation: float, pitch_deg: float, yaw_deg: Tensor, shift: Tensor
) -> Tensor:
    """Cameras lifted, pitched down, turned and moved (GaussRender's "elevated" strategy).

    Args:
        cam_to_ego: (..., 4, 4) source cameras (optical frame: x right, y down, z forward).
        elevation: lift along ego z [m].
        pitch_deg: downward tilt about each camera's own x axis [deg].
        yaw_deg: (...) turn about the vertical through the camera [deg].
        shift: (..., 2) horizontal translation in the ego frame [m].
    Returns:
        (..., 4, 4) the new camera -> ego transforms.
    """
    t = math.radians(pitch_deg)
    # Columns: the new camera axes in the old camera frame; z' = (0, sin, cos) leans down (+y).
    tilt = cam_to_ego.new_tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(t), math.sin(t)], [0.0, -math.sin(t), math.cos(t)]]
    )
    yaw = torch.deg2rad(yaw_deg.to(cam_to_ego.dtype))
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    turn = torch.stack(
        [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1), torch.stack([zero, zero, one], -1)],
        -2,
    )
    out = cam_to_ego.clone()
    out[..., :3, :3] = turn @ cam_to_ego[..., :3, :3] @ tilt
    out[..., 0, 3] = cam_to_ego[..., 0, 3] + shift[..., 0]
    out[..., 1, 3] = cam_to_ego[..., 1, 3] + shift[..., 1]
    out[..., 2, 3] = cam_to_ego[..., 2, 3] + elevation
    return out


def elevated_view(
    cameras: CameraBatch,
    size: tuple[int, int],
    config: GaussRenderConfig,
    count: int,
    generator: torch.Generator | None = None,
) -> RenderView:
    """``count`` elevated cameras per scene, each from a random sensor camera (random yaw and shift)."""
    b, v = cameras.batch_size, cameras.num_views
    base = sensor_view(cameras, size, max_depth=config.max_depth)
    gen_device = generator.device if generator is not None else "cpu"
    source = torch.randint(0, v, (b, count), generator=generator, device=gen_device)
    source = source.to(base.intrinsics.device)
    yaw = (2 * torch.rand(b, count, generator=generator, device=gen_device) - 1) * config.yaw_jitter
    shift = (2 * torch.rand(b, count, 2, generator=generator, device=gen_device) - 1) * config.around
    k = torch.gather(base.intrinsics, 1, source[..., None, None].expand(b, count, 3, 3))
    pose = torch.gather(base.cam_to_ego, 1, source[..., None, None].expand(b, count, 4, 4))
    pose = elevated_poses(pose, config.elevation, config.pitch, yaw.to(pose), shift.to(pose))
    return RenderView("elevated", k, pose, tuple(size), "pinhole", config.max_depth)


def bev_view(
    grid: VoxelGrid, batch_size: int, resolution: float, device=None, height: float = 1.0
) -> RenderView:
    """The fixed orthographic camera ``height`` m above the grid's top, looking straight down.

    Image rows run from the grid's front (x max, top row) to its back, columns from its left (y max)
    to its right, each pixel ``resolution`` m; depth is the drop below the camera.
    """
    x0, y0, z0, x1, y1, z1 = grid.range
    h, w = round((x1 - x0) / resolution), round((y1 - y0) / resolution)
    if h < 1 or w < 1:
        raise ValueError(f"bev_resolution {resolution} m is coarser than the grid {grid.range}")
    pose = torch.eye(4, device=device)
    # Optical axes in the ego frame: x right = -y (ego right), y down = -x (backwards), z = down.
    pose[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], device=device)
    pose[:3, 3] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, z1 + height], device=device)
    f = 1.0 / resolution
    k = torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]], device=device)
    depth_range = z1 + height - z0
    return RenderView(
        "bev",
        k.expand(batch_size, 1, 3, 3).clone(),
        pose.expand(batch_size, 1, 4, 4).clone(),
        (h, w),
        "ortho",
        depth_range,
        near=0.5 * height,
        far=depth_range + 1.0,
    )


def render_views(
    cameras: CameraBatch,
    grid: VoxelGrid,
    config: GaussRenderConfig,
    generator: torch.Generator | None = None,
    all_sensors: bool = False,
) -> list[RenderView]:
    """The cameras of one GaussRender evaluation (sensor, elevated, BEV) as the config asks.

    ``all_sensors`` renders every sensor camera (the metric); otherwise ``config.sensor_views``
    random ones per scene.
    """
    b, v = cameras.batch_size, cameras.num_views
    h, w = cameras.image_size
    size = (max(1, round(h * config.render_scale)), max(1, round(w * config.render_scale)))
    views = []
    count = v if (all_sensors or config.sensor_views < 0) else min(config.sensor_views, v)
    if count > 0:
        chosen = None
        if count < v:
            gen_device = generator.device if generator is not None else "cpu"
            chosen = torch.stack(
                [torch.randperm(v, generator=generator, device=gen_device)[:count] for _ in range(b)]
            ).to(cameras.images.device)
        views.append(sensor_view(cameras, size, chosen, config.max_depth))
    if config.elevated_views > 0:
        views.append(elevated_view(cameras, size, config, config.elevated_views, generator))
    if config.bev:
        views.append(bev_view(grid, b, config.bev_resolution, cameras.images.device))
    return views


# --- the loss -------------------------------------------------------------------------------------


def render_occupancy(
    gaussians: Gaussians, view: RenderView, tile_size: int | None = 8, backend: str = "auto"
) -> RenderOutput:
    """Render voxel Gaussians into a view: semantics (B, V, K, H, W), accumulated depth (B, V, H, W)."""
    k, pose = view.intrinsics.to(gaussians.means), view.cam_to_ego.to(gaussians.means)
    return render_gaussians(
        gaussians,
        k,
        pose,
        view.image_size,
        near=view.near,
        far=view.far,
        backend=backend,
        camera_model=view.camera_model,
        tile_size=tile_size,
    )


def view_errors(pred: RenderOutput, target: RenderOutput, max_depth: float) -> tuple[Tensor, Tensor]:
    """Semantic L1 (mean over pixels and classes) and depth L1 / max_depth over the pixels where the
    target's accumulated depth exceeds 0.1 m (0 when there are none)."""
    semantic = (pred.features - target.features).abs().mean()
    covered = target.depth > 0.1
    diff = torch.where(covered, (pred.depth - target.depth).abs(), torch.zeros_like(pred.depth))
    depth = diff.sum() / covered.sum().clamp_min(1) / max_depth
    return semantic, depth


def gaussrender_terms(
    pred_colors: Tensor,
    pred_opacity: Tensor,
    pred_include: Tensor,
    target_colors: Tensor,
    target_opacity: Tensor,
    target_include: Tensor,
    views: list[RenderView],
    grid: VoxelGrid,
    config: GaussRenderConfig,
    backend: str = "auto",
) -> dict[str, Tensor]:
    """Render prediction and target voxel grids into every view and compare them.

    Args:
        pred_colors, target_colors: (B, X, Y, Z, K) class probabilities / one-hot labels.
        pred_opacity, target_opacity: (B, X, Y, Z) in [0, 1].
        pred_include, target_include: (B, X, Y, Z) bool, the voxels to render of each.
        views: the cameras (``render_views``).
        grid, config: the grid and the GaussRender settings (scale, weights, tile size).
    Returns:
        per view kind ``<kind>/semantic`` and ``<kind>/depth`` (unweighted), and ``total`` =
        sum over kinds of semantic_weight * semantic + depth_weight * depth (not yet times
        ``config.weight``).
    """
    pred = voxel_gaussians(pred_colors, pred_opacity, pred_include, grid, config.scale)
    with torch.no_grad():
        target = voxel_gaussians(
            target_colors.to(pred_colors), target_opacity.to(pred_colors), target_include, grid, config.scale
        )
    terms: dict[str, Tensor] = {}
    total = pred_colors.new_zeros(())
    for view in views:
        rendered = render_occupancy(pred, view, config.tile_size, backend)
        with torch.no_grad():
            reference = render_occupancy(target, view, config.tile_size, backend)
        semantic, depth = view_errors(rendered, reference, view.max_depth)
        terms[f"{view.kind}/semantic"] = semantic
        terms[f"{view.kind}/depth"] = depth
        total = total + config.semantic_weight * semantic + config.depth_weight * depth
    terms["total"] = total
    return terms


@dataclass
class ClassPrototypes:
    """What turns Gaussian features into class probabilities (as inference does, differentiably).

    Attributes:
        prototypes: (P + F, D) unit text embeddings of the P vocabulary prompts, then F free-space
            prompts (e.g. "sky").
        groups: (P,) the class of each vocabulary prompt.
        num_classes: K.
        logit_scale: None = raw features . prototypes (official), else cosine x this.
    """

    prototypes: Tensor
    groups: Tensor
    num_classes: int
    logit_scale: float | None = None

    def probabilities(self, features: Tensor) -> Tensor:
        """(B, N, D) Gaussian features -> (B, N, K) class probabilities: the softmax over all
        prompts, summed over each class's prompts (free-space prompts keep their mass out of the K
        classes, so such a Gaussian colours nothing)."""
        protos = self.prototypes.to(features)
        if self.logit_scale is None:
            logits = features @ protos.T
        else:
            logits = self.logit_scale * (torch.nn.functional.normalize(features, dim=-1) @ protos.T)
        probs = logits.softmax(-1)
        p = self.groups.shape[0]
        out = probs.new_zeros(*probs.shape[:-1], self.num_classes)
        return out.index_add(-1, self.groups.to(probs.device), probs[..., :p])

    def to(self, device) -> ClassPrototypes:
        return ClassPrototypes(
            self.prototypes.to(device), self.groups.to(device), self.num_classes, self.logit_scale
        )

    @classmethod
    def from_config(cls, config, categories, device="cpu") -> ClassPrototypes:
        """Prototypes of a vocabulary with the text encoder and free prompts of a ``GaussTRConfig``."""
        import dataclasses

        from gausstr_core.text import TextEncoder, Vocabulary

        vocabulary = Vocabulary.parse(categories)
        known = {q.casefold() for q in vocabulary.prompts}
        free = [q for q in config.inference.free_prompts if q.casefold() not in known]
        encoder = TextEncoder(dataclasses.replace(config.text, device=str(device)))
        with torch.no_grad():
            prototypes = encoder.encode(list(vocabulary.prompts) + free).float().to(device)
        groups = torch.tensor(vocabulary.groups, dtype=torch.long, device=device)
        return cls(prototypes, groups, vocabulary.num_classes, config.inference.logit_scale)


def predicted_occupancy(
    gaussians: Gaussians,
    class_probs: Tensor,
    grid: VoxelGrid,
    gain: float = DEFAULT_GAIN,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Voxelize Gaussians with their class probabilities (differentiable).

    Args:
        gaussians: B scenes of N Gaussians (ego frame).
        class_probs: (B, N, K) per-Gaussian class probabilities.
        grid: the voxel grid.
        gain: opacity = 1 - exp(-gain * density).
        backend: voxelizer backend.
    Returns:
        colors (B, X, Y, Z, K) density-weighted class probabilities, opacity (B, X, Y, Z), density
        (B, X, Y, Z). Gaussians whose mean lies outside the grid are left out (as at inference).
    """
    from gausstr_core.voxelize import filter_gaussians, voxelize_gaussians

    covariances = gaussians.covariances()
    valid = filter_gaussians(gaussians.means, covariances, gaussians.opacities, grid)
    density, colors = voxelize_gaussians(
        gaussians.means, covariances, gaussians.opacities, class_probs, grid, valid, backend=backend
    )
    return colors, 1 - torch.exp(-gain * density), density


def gaussrender_loss(
    gaussians: Gaussians,
    prototypes: ClassPrototypes,
    ground_truth,
    cameras: CameraBatch,
    grid: VoxelGrid,
    config: GaussRenderConfig,
    render_backend: str = "auto",
    voxelizer_backend: str = "auto",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The GaussRender loss of the model's Gaussians against ground-truth occupancy.

    Args:
        gaussians: the prediction (usually the last decoder layer), features (B, N, D).
        prototypes: class prototypes of the ground truth's vocabulary (K classes, free = K).
        ground_truth: ``semantics`` (B, X, Y, Z) and optional ``mask_camera`` (B, X, Y, Z).
        cameras: the batch's cameras (sensor and elevated views).
        grid: the voxel grid of the ground truth.
        config: GaussRender settings.
        generator: random cameras (None = torch's global generator, seeded per step by the trainer).
    Returns:
        the terms of ``gaussrender_terms`` plus "loss" = ``config.weight * total``.
    """
    semantics = ground_truth.semantics.to(gaussians.means.device)
    if tuple(semantics.shape) != (gaussians.batch_size, *grid.shape):
        raise ValueError(
            f"ground-truth semantics must be (B, X, Y, Z) = "
            f"{(gaussians.batch_size, *grid.shape)}, got {tuple(semantics.shape)}"
        )
    k = prototypes.num_classes
    mask = getattr(ground_truth, "mask_camera", None)
    mask = None if mask is None else mask.to(semantics.device)
    semantics, mask = coarsen_labels(semantics, mask, k, config.grid_factor)
    grid = coarse_grid(grid, config.grid_factor)
    probs = prototypes.probabilities(gaussians.features.float())
    pred_colors, pred_opacity, density = predicted_occupancy(
        gaussians, probs, grid, config.occupancy_gain, voxelizer_backend
    )
    target_colors, target_opacity, ignored = ground_truth_occupancy(semantics, k)
    considered = ~ignored
    if config.visible_only and mask is not None:
        considered &= mask.bool()
    target_include = considered & (target_opacity > 0)
    pred_include = considered & ((density.detach() > config.density_floor) | target_include)
    views = render_views(cameras, grid, config, generator)
    terms = gaussrender_terms(
        pred_colors,
        pred_opacity,
        pred_include,
        target_colors,
        target_opacity,
        target_include,
        views,
        grid,
        config,
        render_backend,
    )
    terms["loss"] = config.weight * terms["total"]
    return terms


# --- the metric -----------------------------------------------------------------------------------


class ProjectiveConsistency:
    """GaussRender's renders as a metric of any label prediction: accumulated over a dataset.

    ``update(labels, semantics, mask, cameras)`` renders the predicted and the ground-truth label
    grids (one-hot colours, opacity 1 where not free, camera-visible voxels only when a mask is
    given) from every sensor camera, ``elevated_views`` elevated cameras per scene (from a seeded
    generator, so every model sees the same cameras) and the BEV camera; ``compute()`` returns per
    view kind the mean semantic L1 (x K: the fraction of rendered class mass that differs, in
    [0, 2]) and the mean depth error [m] over pixels the ground truth covers. Lower is better; a
    prediction equal to the ground truth scores 0.
    """

    def __init__(
        self,
        num_classes: int,
        grid: VoxelGrid | None = None,
        config: GaussRenderConfig | None = None,
        seed: int = 0,
        render_backend: str = "auto",
    ):
        self.num_classes = num_classes
        self.grid = grid or VoxelGrid()
        self.config = config or GaussRenderConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.render_backend = render_backend
        self.sums: dict[str, float] = {}
        self.frames = 0

    @torch.no_grad()
    def update(
        self, labels: Tensor, semantics: Tensor, mask: Tensor | None, cameras: CameraBatch
    ) -> dict[str, float]:
        """Add B scenes: labels and semantics (B, X, Y, Z), mask (B, X, Y, Z) bool or None. Returns
        this batch's scores."""
        if labels.shape != semantics.shape:
            raise ValueError(f"labels {tuple(labels.shape)} and ground truth {tuple(semantics.shape)} differ")
        k = self.num_classes
        device = cameras.images.device
        labels, semantics = labels.to(device), semantics.to(device)
        factor = self.config.grid_factor
        grid = coarse_grid(self.grid, factor)
        labels, _ = coarsen_labels(labels, None, k, factor)
        semantics, mask = coarsen_labels(semantics, None if mask is None else mask.to(device), k, factor)
        pred_colors, pred_opacity, pred_ignored = ground_truth_occupancy(labels, k)
        gt_colors, gt_opacity, ignored = ground_truth_occupancy(semantics, k)
        considered = ~ignored & ~pred_ignored
        if mask is not None:
            considered &= mask.to(device).bool()
        views = render_views(cameras, grid, self.config, self.generator, all_sensors=True)
        terms = gaussrender_terms(
            pred_colors,
            pred_opacity,
            considered & (pred_opacity > 0),
            gt_colors,
            gt_opacity,
            considered & (gt_opacity > 0),
            views,
            grid,
            self.config,
            self.render_backend,
        )
        scores = {}
        for view in views:
            scores[f"{view.kind}/semantic_l1"] = float(terms[f"{view.kind}/semantic"]) * k
            scores[f"{view.kind}/depth_error_m"] = float(terms[f"{view.kind}/depth"]) * view.max_depth
        b = labels.shape[0]
        for name, value in scores.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * b
        self.frames += b
        return scores

    def compute(self) -> dict[str, float]:
        """Mean of every score over the scenes added (empty before the first update)."""
        return {name: value / max(self.frames, 1) for name, value in self.sums.items()}
