"""GaussRender: voxel -> Gaussian conversion, the three camera strategies, the orthographic and tiled
renderer paths, the semantic + depth L1 loss, its gradients, the metric, and the trainer hook."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from gausstr_core.batch import CameraBatch
from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_core.evaluation.projective import ProjectiveConsistency
from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import quaternion_to_matrix
from gausstr_core.grid import VoxelGrid
from gausstr_core.losses.config import GaussRenderConfig
from gausstr_core.losses.gaussrender import (
    ClassPrototypes,
    coarse_grid,
    coarsen_labels,
    gaussrender_loss,
    gaussrender_terms,
    ground_truth_occupancy,
    render_views,
)
from gausstr_core.render import gsplat_available, render_gaussians
from gausstr_core.render.common import EPS2D
from gausstr_core.render.reference import project_gaussians, render_reference
from gausstr_core.render.views import bev_view, elevated_poses, sensor_view
from gausstr_core.voxelize.voxel_gaussians import voxel_gaussians

K = 17
FREE = 17


def _rig_batch(size=(36, 64)) -> CameraBatch:
    """The nuScenes rig (6 cameras) rendered straight at ``size``; images are placeholders."""
    rig = nuscenes_rig(*size)
    v = rig.num_views
    return CameraBatch(
        images=torch.zeros(1, v, 3, *size),
        intrinsics=rig.intrinsics()[None],
        cam_to_ego=rig.cam_to_ego()[None],
        image_aug=CameraBatch.identity_aug(1, v),
    )


def _scene_labels(grid: VoxelGrid) -> torch.Tensor:
    """(1, X, Y, Z) labels: a patch of road, a car-like block ahead and a wall to the left."""
    sem = torch.full((1, *grid.shape), FREE, dtype=torch.uint8)
    sem[0, 100:150, 70:135, 2] = 11  # driveable surface at z = 0, 0-20 m ahead
    sem[0, 120:130, 95:105, 3:6] = 4  # "car" 8-12 m ahead
    sem[0, 80:140, 130:132, 3:10] = 15  # "manmade" wall ~11 m to the left
    return sem


# --- voxel -> Gaussian conversion -----------------------------------------------------------------


def test_voxel_gaussians_place_centres_and_scales_exactly():
    grid = VoxelGrid((-1.0, 0.0, -0.4, 1.0, 1.2, 0.4), 0.4)  # 5 x 3 x 2 voxels
    g = torch.Generator().manual_seed(0)
    include = torch.rand(2, *grid.shape, generator=g) > 0.5
    include[1] = False
    include[1, 4, 2, 1] = True  # scene 1: one voxel, padded to scene 0's count
    colors = torch.rand(2, *grid.shape, 3, generator=g, dtype=torch.float64)
    opacity = torch.rand(2, *grid.shape, generator=g, dtype=torch.float64)
    out = voxel_gaussians(colors, opacity, include, grid, scale=0.675)
    n0 = int(include[0].sum())
    assert out.num_gaussians == n0
    idx = include[0].nonzero()  # C order, as the Gaussians
    expected = torch.tensor(grid.lower, dtype=torch.float64) + (idx.double() + 0.5) * 0.4
    torch.testing.assert_close(out.means[0], expected, rtol=0, atol=1e-12)
    assert torch.all(out.scales == 0.675 * 0.4)
    identity = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand_as(out.rotations)
    torch.testing.assert_close(out.rotations, identity)
    torch.testing.assert_close(out.opacities[0], opacity[0][include[0]])
    torch.testing.assert_close(out.features[0], colors[0][include[0]])
    # Scene 1: its one voxel first (centre (0.8, 1.0, 0.2)), then opacity-0, colour-0 padding.
    torch.testing.assert_close(out.means[1, 0], torch.tensor([0.8, 1.0, 0.2], dtype=torch.float64))
    assert out.opacities[1, 0] == opacity[1, 4, 2, 1] and torch.all(out.opacities[1, 1:] == 0)
    assert torch.all(out.features[1, 1:] == 0)


def test_occ3d_corner_voxels_and_ground_truth_colours():
    grid = VoxelGrid()
    sem = torch.full((1, *grid.shape), FREE, dtype=torch.uint8)
    sem[0, 0, 0, 0], sem[0, 199, 199, 15], sem[0, 10, 20, 3] = 0, 16, 255  # 255: ignored
    colors, opacity, ignored = ground_truth_occupancy(sem, K)
    assert colors.shape == (1, 200, 200, 16, K) and colors.sum() == 2
    assert colors[0, 0, 0, 0, 0] == 1 and colors[0, 199, 199, 15, 16] == 1
    assert opacity.sum() == 2 and ignored.sum() == 1 and ignored[0, 10, 20, 3]
    out = voxel_gaussians(colors, opacity, opacity > 0, grid)
    torch.testing.assert_close(out.means[0], torch.tensor([[-39.8, -39.8, -0.8], [39.8, 39.8, 5.2]]))
    torch.testing.assert_close(out.scales, torch.full((1, 2, 3), 0.27))
    with pytest.raises(ValueError, match="colors must be"):
        voxel_gaussians(colors[:, :10], opacity, opacity > 0, grid)
    with pytest.raises(ValueError, match="bool"):
        voxel_gaussians(colors, opacity, opacity, grid)


def test_coarse_ground_truth_keeps_majority_labels_and_any_visibility():
    grid = VoxelGrid((0.0, 0.0, 0.0, 1.6, 1.6, 0.8), 0.4)  # 4 x 4 x 2
    sem = torch.full((1, 4, 4, 2), FREE, dtype=torch.uint8)
    sem[0, 0, 0, 0], sem[0, 1, 0, 0], sem[0, 0, 1, 1] = 3, 3, 5  # block (0,0,0): 3 wins 2:1
    sem[0, 2, 2, 0], sem[0, 3, 3, 1] = 7, 2  # block (1,1,0): tie 1:1 -> the lower label
    sem[0, 2:, :2] = 255  # block (1,0,0): all ignored
    mask = torch.zeros(1, 4, 4, 2, dtype=torch.bool)
    mask[0, 3, 3, 1] = True
    coarse, coarse_mask = coarsen_labels(sem, mask, K, 2)
    assert coarse.shape == (1, 2, 2, 1) and coarse_grid(grid, 2).shape == (2, 2, 1)
    assert coarse[0, 0, 0, 0] == 3 and coarse[0, 1, 1, 0] == 2 and coarse[0, 1, 0, 0] == 18
    assert coarse[0, 0, 1, 0] == FREE
    assert coarse_mask[0].flatten().tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="divisible"):
        coarse_grid(VoxelGrid((0.0, 0.0, 0.0, 1.2, 1.2, 1.2), 0.4), 2)


# --- cameras ----------------------------------------------------------------------------------------


def test_elevated_cameras_are_lifted_pitched_turned_and_shifted():
    rig = nuscenes_rig(36, 64)
    pose = rig.cam_to_ego().double()[:1]  # CAM_FRONT, level, looking along +x
    out = elevated_poses(
        pose,
        8.0,
        20.0,
        torch.tensor([5.0], dtype=torch.float64),
        torch.tensor([[2.0, -3.0]], dtype=torch.float64),
    )
    moved = torch.tensor([2.0, -3.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(out[0, :3, 3], pose[0, :3, 3] + moved)
    axis = out[0, :3, 2]  # optical z in the ego frame
    assert axis[2].item() == pytest.approx(-math.sin(math.radians(20)), abs=1e-12)  # 20 deg down
    heading = math.degrees(math.atan2(axis[1].item(), axis[0].item()))
    source = math.degrees(math.atan2(pose[0, 1, 2].item(), pose[0, 0, 2].item()))
    assert heading - source == pytest.approx(5.0, abs=1e-9)  # turned 5 deg to the left
    rot = out[0, :3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64))
    assert torch.linalg.det(rot).item() == pytest.approx(1.0)


def test_render_views_builds_the_three_kinds():
    cameras = _rig_batch()
    cfg = GaussRenderConfig(weight=1.0, sensor_views=2, elevated_views=3, render_scale=0.5)
    views = render_views(cameras, VoxelGrid(), cfg, torch.Generator().manual_seed(0))
    assert [v.kind for v in views] == ["sensor", "elevated", "bev"]
    assert views[0].intrinsics.shape == (1, 2, 3, 3) and views[0].image_size == (18, 32)
    assert views[1].cam_to_ego.shape == (1, 3, 4, 4)
    assert (views[1].cam_to_ego[0, :, 2, 3] > 8.0).all()  # lifted above the 1.5 m rig
    assert views[2].image_size == (100, 100) and views[2].camera_model == "ortho"
    full = render_views(cameras, VoxelGrid(), cfg, all_sensors=True)
    assert full[0].intrinsics.shape == (1, 6, 3, 3)


def test_bev_camera_maps_voxel_columns_to_pixels_and_depth_to_height():
    grid = VoxelGrid()
    view = bev_view(grid, 1, 0.4)
    assert view.image_size == (200, 200)
    sem = torch.full((1, *grid.shape), FREE, dtype=torch.uint8)
    sem[0, 150, 60, 4] = 1  # x = 20.2 m ahead, y = -15.8 m (right), z = 0.8 m
    colors, opacity, _ = ground_truth_occupancy(sem, K)
    g = voxel_gaussians(colors, opacity, opacity > 0, grid)
    out = render_gaussians(
        g, view.intrinsics, view.cam_to_ego, view.image_size, view.near, view.far, camera_model="ortho"
    )
    # Forward is up: row = 199 - ix; the ego's left is left: column = 199 - iy.
    assert out.alpha[0, 0].flatten().argmax().item() == (199 - 150) * 200 + (199 - 60)
    assert out.expected_depth()[0, 0, 49, 139].item() == pytest.approx(5.4 + 1.0 - 0.8, abs=1e-4)
    assert out.features[0, 0, 1, 49, 139].item() == pytest.approx(0.999, abs=1e-6)  # opacity 1 -> max alpha


# --- the orthographic and tiled renderer paths ----------------------------------------------------


def test_the_orthographic_camera_renders_a_known_pattern():
    # Looking down from 10 m at 4 px per metre: an "L" of three Gaussians on the ground plane.
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    pose[2, 3] = 10.0
    k = torch.tensor([[4.0, 0.0, 20.0], [0.0, 4.0, 15.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, -3.0, 2.0]], dtype=torch.float64)
    n = 3
    f64 = dict(dtype=torch.float64)
    g = Gaussians(
        means[None],
        torch.full((1, n, 3), 0.25, **f64),
        torch.tensor([[1.0, 0, 0, 0]] * n, **f64)[None],
        torch.tensor([[0.8, 0.6, 0.5]], **f64),
        torch.eye(3, **f64)[None],
    )
    out = render_gaussians(g, k[None, None], pose[None, None], (30, 40), camera_model="ortho")
    # u = 4 * (-y) + 20, v = 4 * (-x) + 15: pixel centres at (row, col) (15, 20), (7, 20), (15, 32).
    for i, (row, col) in enumerate([(15, 20), (7, 20), (15, 32)]):
        assert out.features[0, 0, i].flatten().argmax().item() == row * 40 + col
        assert out.features[0, 0, i, row, col].item() == pytest.approx(g.opacities[0, i].item(), rel=1e-9)
    # The footprint does not shrink with distance (the third is 2 m closer): variance (4 * 0.25)^2 + eps.
    for i, (row, col) in enumerate([(15, 20), (15, 32)]):
        o = g.opacities[0, 2 * i].item()
        expected = o * math.exp(-0.5 / (1.0 + EPS2D))
        assert out.features[0, 0, 2 * i, row, col + 1].item() == pytest.approx(expected, rel=1e-9)
    assert out.expected_depth()[0, 0, 15, 32].item() == pytest.approx(8.0, rel=1e-9)
    assert out.expected_depth()[0, 0, 7, 20].item() == pytest.approx(10.0, rel=1e-9)


def test_orthographic_projection_matches_gsplats_own_pytorch_projection():
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed")
    from gausstr_core.geometry import invert_rigid
    from gausstr_core.render.common import gsplat_intrinsics

    g = torch.Generator().manual_seed(3)
    n = 50
    means = torch.randn(1, n, 3, generator=g, dtype=torch.float64) * 5
    f64 = dict(generator=g, dtype=torch.float64)
    gauss = Gaussians(
        means,
        0.1 + torch.rand(1, n, 3, **f64),
        torch.randn(1, n, 4, **f64),
        torch.rand(1, n, **f64),
        torch.zeros(1, n, 0, dtype=torch.float64),
    )
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = quaternion_to_matrix(torch.randn(4, generator=g, dtype=torch.float64))
    pose[:3, 3] = -30 * pose[:3, 2]  # 30 m back along the optical axis: everything in front
    k = torch.tensor([[3.0, 0.0, 31.5], [0.0, 3.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    means2d, conics, depths, valid = project_gaussians(
        gauss, k[None, None], pose[None, None], (48, 64), 0.1, 100.0, camera_model="ortho"
    )
    _, means2d_gs, depths_gs, conics_gs, _ = torch_impl._fully_fused_projection(
        means[0],
        gauss.covariances()[0],
        invert_rigid(pose)[None],
        gsplat_intrinsics(k)[None],
        64,
        48,
        eps2d=EPS2D,
        near_plane=0.1,
        far_plane=100.0,
        camera_model="ortho",
    )
    sel = valid[0, 0]
    assert sel.sum() > 20
    torch.testing.assert_close(means2d[0, 0][sel], means2d_gs[0][sel], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(conics[0, 0][sel], conics_gs[0][sel], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(depths[0, 0][sel], depths_gs[0][sel], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
def test_tiles_give_the_same_image_and_gradients_as_the_dense_renderer(camera_model):
    g = torch.Generator().manual_seed(5)
    n, h, w = 300, 21, 37  # not multiples of the tile size
    if camera_model == "pinhole":
        rig = nuscenes_rig(h, w)
        k, pose = rig.intrinsics().double()[None, :3], rig.cam_to_ego().double()[None, :3]
        means = torch.randn(1, n, 3, generator=g, dtype=torch.float64) * torch.tensor([12.0, 12.0, 1.5])
    else:
        view = bev_view(VoxelGrid((-8.0, -8.0, -1.0, 8.0, 8.0, 3.0), 0.4), 1, 0.5)
        k, pose = view.intrinsics.double(), view.cam_to_ego.double()
        h, w = view.image_size
        extent = torch.tensor([16.0, 16.0, 4.0])
        means = (torch.rand(1, n, 3, generator=g, dtype=torch.float64) - 0.5) * extent
    f64 = dict(generator=g, dtype=torch.float64)
    params = [
        means,
        0.05 + 0.6 * torch.rand(1, n, 3, **f64),
        torch.randn(1, n, 4, **f64),
        torch.rand(1, n, **f64),
        torch.randn(1, n, 4, **f64),
    ]
    weights = None
    results = {}
    for tile in (None, 8, 3):
        leaves = [p.clone().requires_grad_(True) for p in params]
        out = render_reference(
            Gaussians(*leaves),
            k,
            pose,
            (h, w),
            camera_model=camera_model,
            tile_size=tile,
            block_elements=20_000,
        )
        if weights is None:
            weights = torch.randn(out.features.shape, generator=g, dtype=torch.float64)
            assert out.alpha.mean() > 0.05
        ((out.features * weights).sum() + out.depth.sum() + out.alpha.sum()).backward()
        results[tile] = (out, [p.grad for p in leaves])
    ref, ref_grads = results[None]
    for tile in (8, 3):
        out, grads = results[tile]
        torch.testing.assert_close(out.features, ref.features, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out.depth, ref.depth, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out.alpha, ref.alpha, rtol=1e-10, atol=1e-12)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_bad_camera_models_and_tiles_are_rejected():
    g = Gaussians(
        torch.zeros(1, 1, 3),
        torch.ones(1, 1, 3),
        torch.tensor([[[1.0, 0, 0, 0]]]),
        torch.ones(1, 1),
        torch.zeros(1, 1, 0),
    )
    k, pose = torch.eye(3)[None, None], torch.eye(4)[None, None]
    with pytest.raises(ValueError, match="camera_model"):
        render_gaussians(g, k, pose, (4, 4), camera_model="fisheye")
    with pytest.raises(ValueError, match="tile_size"):
        render_reference(g, k, pose, (4, 4), tile_size=0)


# --- ground truth renders ---------------------------------------------------------------------------


def _normals(points: torch.Tensor, depth: torch.Tensor):
    """Unit normals of an (H, W, 3) grid of surface points and where they are defined (no depth edge)."""
    dx, dy = points[1:-1, 2:] - points[1:-1, :-2], points[2:, 1:-1] - points[:-2, 1:-1]
    n = torch.nn.functional.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
    d = depth
    centre = d[1:-1, 1:-1]
    smooth = (centre > 0) & ((d[1:-1, 2:] - d[1:-1, :-2]).abs() < 0.05 * centre)
    smooth &= (d[2:, 1:-1] - d[:-2, 1:-1]).abs() < 0.05 * centre
    smooth &= (d[1:-1, 2:] > 0) & (d[1:-1, :-2] > 0) & (d[2:, 1:-1] > 0) & (d[:-2, 1:-1] > 0)
    return n, smooth


def test_rendering_the_ground_truth_reproduces_sensor_depth_within_a_voxel():
    """The synthetic world's exact per-pixel depth against the expected depth of its Occ3D ground truth
    rendered as GaussRender Gaussians (camera-visible occupied voxels, 0.27 m) from the same cameras.

    A voxel's Gaussian stands for the surface inside it, so each rendered point should lie within a
    voxel (0.4 m) of the true surface, measured along the surface normal. Along the ray the error of
    grazing surfaces (the far ground) is that times 1 / cos(incidence), and 0.27 m blobs bleed a few
    pixels over silhouettes, so the depth itself is checked where the surface faces the camera."""
    from gausstr_core.data.synthetic.samples import SyntheticConfig, generate_sample
    from gausstr_core.geometry import unproject

    size = (45, 80)
    sample = generate_sample(0, 3, 0, SyntheticConfig(image_size=size), None)
    grid = VoxelGrid()
    sem = torch.as_tensor(sample.labels.semantics)[None]
    mask = torch.as_tensor(sample.labels.mask_camera)[None].bool()
    colors, opacity, _ = ground_truth_occupancy(sem, K)
    g = voxel_gaussians(colors, opacity, mask & (opacity > 0), grid)
    k, pose = sample.rig.intrinsics()[None], sample.rig.cam_to_ego()[None]
    rendered = render_gaussians(g, k, pose, size, tile_size=8).expected_depth(0.5)[0]
    true = torch.as_tensor(sample.views.depth).float()
    pixels = torch.stack(torch.meshgrid(torch.arange(size[1]), torch.arange(size[0]), indexing="xy"), -1)
    pixels = pixels.reshape(-1, 2).float()
    normal_errors, facing_errors = [], []
    for v in range(6):
        lift = lambda d: unproject(pixels, d.reshape(-1), k[0, v], pose[0, v]).reshape(*size, 3)  # noqa: B023
        p_true, p_rendered = lift(true[v]), lift(rendered[v])
        normal, smooth = _normals(p_true, true[v])
        ok = smooth & (rendered[v, 1:-1, 1:-1] > 0) & (true[v, 1:-1, 1:-1] < 40)
        gap = (p_rendered - p_true)[1:-1, 1:-1]
        normal_errors.append((gap * normal).sum(-1).abs()[ok])
        ray = torch.nn.functional.normalize(p_true[1:-1, 1:-1] - pose[0, v, :3, 3], dim=-1)
        facing = ok & ((ray * normal).sum(-1).abs() > 0.5)  # within 60 degrees of head-on
        facing_errors.append((rendered[v] - true[v])[1:-1, 1:-1].abs()[facing])
    normal_errors, facing_errors = torch.cat(normal_errors), torch.cat(facing_errors)
    assert normal_errors.numel() > 3000 and facing_errors.numel() > 1000
    assert normal_errors.median() < 0.4 * 0.5  # half a voxel
    assert (normal_errors < 0.4).float().mean() > 0.6
    assert facing_errors.median() < 0.4
    # Coverage: almost every pixel with a surface within 40 m renders something.
    seen = (true > 0) & (true < 40)
    assert ((rendered > 0) & seen).sum() > 0.9 * seen.sum()


# --- the loss -----------------------------------------------------------------------------------------


def _terms(pred_sem, gt_sem, cameras, cfg, grid=None):
    grid = grid or VoxelGrid()
    pc, po, _ = ground_truth_occupancy(pred_sem, K)
    tc, to, _ = ground_truth_occupancy(gt_sem, K)
    views = render_views(cameras, grid, cfg, torch.Generator().manual_seed(0), all_sensors=True)
    return gaussrender_terms(pc, po, po > 0, tc, to, to > 0, views, grid, cfg)


def test_the_loss_is_zero_for_a_perfect_prediction_and_grows_when_a_voxel_moves():
    grid = VoxelGrid()
    cameras = _rig_batch()
    cfg = GaussRenderConfig(weight=1.0, elevated_views=2, render_scale=1.0, bev_resolution=0.8)
    gt = _scene_labels(grid)
    perfect = _terms(gt, gt, cameras, cfg)
    assert perfect["total"].item() == 0.0
    assert all(v.item() == 0.0 for v in perfect.values())
    totals = []
    for shift in (1, 2, 4):
        moved = gt.clone()
        moved[0, 120:130, 95:105, 3:6] = FREE
        moved[0, 120 + shift : 130 + shift, 95:105, 3:6] = 4  # the car drives `shift` voxels further away
        terms = _terms(moved, gt, cameras, cfg)
        assert terms["sensor/depth"] > 0 and terms["sensor/semantic"] > 0 and terms["bev/semantic"] > 0
        totals.append(terms["total"].item())
    assert totals[0] < totals[1] < totals[2]
    # A wrong class at the right place costs semantics only.
    relabelled = gt.clone()
    relabelled[0, 120:130, 95:105, 3:6] = 9
    terms = _terms(relabelled, gt, cameras, cfg)
    assert terms["sensor/semantic"] > 0 and terms["sensor/depth"] == 0 and terms["bev/depth"] == 0


def _model_like_gaussians(n=60, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack(
        [
            4 + 10 * torch.rand(n, generator=g),
            -5 + 10 * torch.rand(n, generator=g),
            2 * torch.rand(n, generator=g),
        ],
        -1,
    )[None]
    return Gaussians(
        means,
        0.2 + 0.5 * torch.rand(1, n, 3, generator=g),
        torch.randn(1, n, 4, generator=g),
        0.2 + 0.7 * torch.rand(1, n, generator=g),
        torch.randn(1, n, d, generator=g),
    )


def test_gradients_flow_from_the_loss_to_every_gaussian_parameter():
    grid = VoxelGrid()
    cameras = _rig_batch()
    proto_gen = torch.Generator().manual_seed(1)
    unit = torch.nn.functional.normalize(torch.randn(K + 1, 8, generator=proto_gen), dim=-1)
    prototypes = ClassPrototypes(unit, torch.arange(K), K, logit_scale=10.0)
    visible = torch.ones(1, *grid.shape, dtype=torch.bool)
    gt = SimpleNamespace(semantics=_scene_labels(grid), mask_camera=visible)
    base = _model_like_gaussians()
    leaves = [
        t.clone().requires_grad_(True)
        for t in (base.means, base.scales, base.rotations, base.opacities, base.features)
    ]
    cfg = GaussRenderConfig(weight=10.0, grid_factor=2, render_scale=1.0)
    torch.manual_seed(0)
    terms = gaussrender_loss(Gaussians(*leaves), prototypes, gt, cameras, grid, cfg)
    assert terms["loss"].item() == pytest.approx(10.0 * terms["total"].item())
    terms["loss"].backward()
    for name, p in zip(("means", "scales", "rotations", "opacities", "features"), leaves):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # Gradient descent on the opacities lowers the loss (the direction is right, not just non-zero).
    with torch.no_grad():
        leaves[3] -= 0.02 * leaves[3].grad / leaves[3].grad.abs().max()
    torch.manual_seed(0)
    after = gaussrender_loss(Gaussians(*[t.detach() for t in leaves]), prototypes, gt, cameras, grid, cfg)
    assert after["loss"] < terms["loss"]


def test_class_probabilities_sum_each_class_prompts_and_leave_free_mass_out():
    protos = ClassPrototypes(torch.eye(4), torch.tensor([0, 0, 1]), 2, logit_scale=None)
    features = torch.tensor([[[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]]])
    probs = protos.probabilities(features)
    soft = features.softmax(-1)
    torch.testing.assert_close(probs[..., 0], soft[..., 0] + soft[..., 1])
    torch.testing.assert_close(probs[..., 1], soft[..., 2])
    assert probs[0, 1].sum() < 0.1  # a "sky" Gaussian colours (almost) nothing


def test_projective_consistency_metric_scores_zero_for_the_truth_and_more_for_worse():
    grid = VoxelGrid()
    cameras = _rig_batch()
    gt = _scene_labels(grid)
    mask = torch.ones_like(gt, dtype=torch.bool)
    cfg = GaussRenderConfig(render_scale=1.0, grid_factor=2, elevated_views=1)
    metric = ProjectiveConsistency(K, grid, cfg, seed=0)
    perfect = metric.update(gt, gt, mask, cameras)
    assert all(v == 0.0 for v in perfect.values())
    moved = gt.clone()
    moved[0, 120:130, 95:105, 3:6] = FREE
    moved[0, 126:136, 95:105, 3:6] = 4
    worse = ProjectiveConsistency(K, grid, cfg, seed=0).update(moved, gt, mask, cameras)
    free = ProjectiveConsistency(K, grid, cfg, seed=0).update(torch.full_like(gt, FREE), gt, mask, cameras)
    assert 0 < worse["sensor/depth_error_m"] < free["sensor/depth_error_m"]
    assert 0 < worse["bev/semantic_l1"] < free["bev/semantic_l1"]
    metric.update(moved, gt, mask, cameras)
    summary = metric.compute()
    assert metric.frames == 2
    assert summary["sensor/depth_error_m"] == pytest.approx(worse["sensor/depth_error_m"] / 2)


def test_config_section_round_trips_and_validates():
    from gausstr_core.config import from_dict, to_dict
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.presets import preset
    from gausstr_core.train.config import apply_overrides

    cfg = preset("tiny")
    assert cfg.loss.gaussrender.weight == 0 and not cfg.loss.gaussrender.enabled  # off by default
    assert cfg.loss.gaussrender.grid_factor == 2
    changes = ["loss.gaussrender.weight=10", "loss.gaussrender.elevated_views=0"]
    data = apply_overrides(to_dict(cfg), changes, "test")
    back = from_dict(type(cfg), data)
    assert isinstance(back.loss.gaussrender, GaussRenderConfig)
    assert back.loss.gaussrender.weight == 10.0 and back.loss.gaussrender.elevated_views == 0
    with pytest.raises(ValueError, match=r"gaussrender\.scale"):
        GaussRenderConfig(scale=0)
    with pytest.raises(ValueError, match="unknown config key"):
        from_dict(LossConfig, {"gaussrender": {"lambda": 1}})


def test_the_loss_module_needs_ground_truth_and_prototypes_when_on():
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.losses.gausstr import GaussTRLoss

    loss = GaussTRLoss(LossConfig(gaussrender=GaussRenderConfig(weight=1.0)))
    assert loss.needs_ground_truth and not GaussTRLoss(LossConfig()).needs_ground_truth
    output = SimpleNamespace(gaussians=[_model_like_gaussians()], colors=None)
    with pytest.raises(ValueError, match="ground_truth"):
        loss(output, _rig_batch())
    with pytest.raises(ValueError, match="class_prototypes"):
        loss(output, _rig_batch(), ground_truth=SimpleNamespace(semantics=None))


def test_the_trainer_trains_with_gaussrender_on_ground_truth_items(tmp_path):
    from torch.utils.data import Dataset

    from gausstr_core.data.transforms import resize_matrix
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.config import TrainConfig
    from gausstr_core.train.distributed import DistributedContext
    from gausstr_core.train.trainer import Trainer

    size = (48, 88)

    class Scenes(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            rig = nuscenes_rig()
            depth = 4 + 20 * torch.rand(1, 6, *size, generator=g)
            aug = resize_matrix(rig.image_size, size).expand(1, 6, 3, 3).clone()
            batch = CameraBatch(
                torch.rand(1, 6, 3, *size, generator=g),
                rig.intrinsics()[None],
                rig.cam_to_ego()[None],
                aug,
                depth,
                torch.randn(1, 6, 64, size[0] // 8, size[1] // 8, generator=g),
            )
            grid = VoxelGrid()
            return batch, SimpleNamespace(
                semantics=_scene_labels(grid), mask_camera=torch.ones(1, *grid.shape, dtype=torch.bool)
            )

    overrides = [
        "model.image_size=[48, 88]",
        "loss.pca_dims=16",
        "model.decoder.queries_per_view=8",
        "loss.gaussrender.weight=10",
        "loss.gaussrender.bev_resolution=1.6",
    ]
    cfg = TrainConfig(
        preset="tiny",
        out=str(tmp_path),
        max_steps=2,
        epochs=10,
        warmup_steps=1,
        checkpoint_every=5,
        log_every=1,
        image_every=1,
        eval_at_end=False,
        overrides=overrides,
        threads=1,
        device="cpu",
        amp="off",
    )
    trainer = Trainer(cfg, DistributedContext(), build_model_config(cfg), train_set=Scenes())
    assert trainer.needs_ground_truth and trainer.loss_fn.class_prototypes.num_classes == K
    trainer._epoch_slice.indices = [0]
    result, _, loss_out = trainer.train_step(next(iter(trainer._loader())))
    assert "gaussrender" in result.losses and math.isfinite(result.losses["loss"])
    assert result.losses["gaussrender"] > 0 and not result.skipped
    assert "gaussrender/sensor/depth" in loss_out.terms
    trainer.fit()
    assert trainer.step == 2


@pytest.mark.gpu
@pytest.mark.skipif(not gsplat_available(), reason="gsplat is not installed (pip install gsplat==1.5.3)")
def test_gsplat_orthographic_and_voxel_renders_match_the_reference():
    grid = VoxelGrid()
    gt = _scene_labels(grid)
    colors, opacity, _ = ground_truth_occupancy(gt, K)
    g = voxel_gaussians(colors, opacity * 0.9, opacity > 0, grid).to("cuda")
    views = render_views(
        _rig_batch((90, 160)).to("cuda"),
        grid,
        GaussRenderConfig(render_scale=1.0),
        torch.Generator().manual_seed(0),
        all_sensors=True,
    )
    for view in views:
        ref = render_gaussians(
            g,
            view.intrinsics,
            view.cam_to_ego,
            view.image_size,
            view.near,
            view.far,
            backend="torch",
            camera_model=view.camera_model,
            tile_size=16,
        )
        out = render_gaussians(
            g,
            view.intrinsics,
            view.cam_to_ego,
            view.image_size,
            view.near,
            view.far,
            backend="gsplat",
            camera_model=view.camera_model,
        )
        assert ref.alpha.mean() > 0.01, view.kind
        rel = lambda a, b: ((a - b).norm() / b.norm()).item()
        assert rel(out.features, ref.features) < 1e-3, view.kind
        assert rel(out.depth, ref.depth) < 1e-3, view.kind
        assert rel(out.alpha, ref.alpha) < 1e-3, view.kind
    # Gradients of an orthographic render (opacities and colours: what GaussRender trains).
    view = views[-1]
    grads = {}
    for backend in ("torch", "gsplat"):
        o = g.opacities.clone().requires_grad_(True)
        f = g.features.clone().requires_grad_(True)
        out = render_gaussians(
            Gaussians(g.means, g.scales, g.rotations, o, f),
            view.intrinsics,
            view.cam_to_ego,
            view.image_size,
            view.near,
            view.far,
            backend=backend,
            camera_model="ortho",
        )
        (out.features.square().sum() + out.depth.sum()).backward()
        grads[backend] = (o.grad, f.grad)
    for a, b in zip(grads["gsplat"], grads["torch"]):
        assert ((a - b).norm() / b.norm()).item() < 1e-2


def test_sensor_view_scales_intrinsics_to_the_render_size():
    cameras = _rig_batch((36, 64))
    view = sensor_view(cameras, (18, 32), torch.tensor([[2, 0]]))
    k = cameras.intrinsics[0]
    assert view.intrinsics[0, 0, 0, 0].item() == pytest.approx(k[2, 0, 0].item() / 2)
    assert view.intrinsics[0, 1, 0, 2].item() == pytest.approx((k[0, 0, 2].item() + 0.5) / 2 - 0.5)
    torch.testing.assert_close(view.cam_to_ego[0, 1], cameras.cam_to_ego[0, 0])
