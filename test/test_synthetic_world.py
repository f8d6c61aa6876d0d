"""The synthetic world: determinism, exact ray casting, exact occupancy, Occ3D-style visibility."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.data.nuscenes import CAMERA_CHANNELS
from gausstr_core.data.occ3d import CLASS_ID, FREE_LABEL
from gausstr_core.data.synthetic import occupancy as occ
from gausstr_core.data.synthetic.primitives import (
    BOX,
    CYLINDER,
    ELLIPSOID,
    Primitives,
    contains,
    ray_hit,
    surface_normal,
)
from gausstr_core.data.synthetic.raycast import camera_rays, cast_rays, render_views
from gausstr_core.data.synthetic.rig import CameraRig, nuscenes_rig
from gausstr_core.data.synthetic.vocabulary import (
    NAME_ID,
    SKY_CLASS,
    SYNTHETIC_NAMES,
    name_to_occ_class,
    synthetic_vocabulary,
)
from gausstr_core.data.synthetic.world import GroundLayout, Scene, WorldConfig, generate_world
from gausstr_core.geometry import project
from gausstr_core.grid import VoxelGrid


def make_scene(solids: list[tuple], ground: bool = True) -> Scene:
    """A scene of explicit solids (kind, centre, half size, yaw, name) on plain grass."""
    prims = (
        Primitives(
            kind=torch.tensor([s[0] for s in solids], dtype=torch.long),
            center=torch.tensor([s[1] for s in solids], dtype=torch.float32).reshape(-1, 3),
            half_size=torch.tensor([s[2] for s in solids], dtype=torch.float32).reshape(-1, 3),
            yaw=torch.tensor([s[3] for s in solids], dtype=torch.float32),
            name_id=torch.tensor([NAME_ID[s[4]] for s in solids], dtype=torch.long),
            color=torch.full((len(solids), 3), 0.5),
        )
        if solids
        else Primitives.empty()
    )
    layout = GroundLayout(
        torch.zeros(0, 2),
        torch.zeros(0),
        torch.zeros(0),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 3),
        torch.zeros(0),
        torch.zeros(0),
        torch.zeros(0),
        torch.zeros(2),
        150.0 if ground else 1e-3,
    )
    return Scene(prims, layout, torch.tensor([0.0, 0.0, 1.0]), torch.full((3,), 0.8), torch.full((3,), 0.5))


def random_primitives(n: int, seed: int) -> Primitives:
    g = torch.Generator().manual_seed(seed)
    return Primitives(
        kind=torch.randint(0, 3, (n,), generator=g),
        center=torch.rand(n, 3, generator=g) * torch.tensor([8.0, 8.0, 4.0]) - torch.tensor([4.0, 4.0, 0.0]),
        half_size=torch.rand(n, 3, generator=g) * 1.5 + 0.2,
        yaw=torch.rand(n, generator=g) * 2 * math.pi,
        name_id=torch.zeros(n, dtype=torch.long),
        color=torch.zeros(n, 3),
    )


# --- world generation ------------------------------------------------------------------------


def test_worlds_are_deterministic_per_seed_and_differ_across_seeds():
    a, b, c = (
        generate_world(7, num_samples=2),
        generate_world(7, num_samples=2),
        generate_world(8, num_samples=2),
    )
    for name in ("kind", "center", "half_size", "yaw", "name_id", "color"):
        assert torch.equal(getattr(a.scene.primitives, name), getattr(b.scene.primitives, name))
    assert torch.equal(a.scene.ground.center, b.scene.ground.center)
    assert torch.equal(a.ego_poses, b.ego_poses)
    assert len(a.scene.primitives) != len(c.scene.primitives) or not torch.equal(
        a.scene.primitives.center, c.scene.primitives.center
    )


def test_worlds_hold_the_driving_classes_and_keep_the_ego_clear():
    seen = set()
    for seed in range(30):
        world = generate_world(seed)
        prims = world.scene.primitives
        seen.update(SYNTHETIC_NAMES[i].name for i in prims.name_id.tolist())
        # Nothing intersects the ego car and its cameras (x in [-1, 4.5], |y| < 1, z < 2).
        probe = torch.stack(
            torch.meshgrid(
                torch.linspace(-1, 4.5, 12),
                torch.linspace(-1, 1, 5),
                torch.linspace(0.05, 2, 5),
                indexing="ij",
            ),
            -1,
        ).reshape(-1, 1, 3)
        inside = contains(probe, prims.kind, prims.center, prims.half_size, prims.yaw)
        assert not bool(inside.any()), f"seed {seed}: a solid overlaps the ego"
    required = {
        "car",
        "truck",
        "bus",
        "pedestrian",
        "pole",
        "building",
        "tree",
        "tree trunk",
        "bush",
        "traffic cone",
        "barrier",
        "traffic sign",
        "wall",
    }
    assert required <= seen, f"missing {required - seen}"


def test_optional_classes_appear_when_asked_for():
    cfg = WorldConfig(
        bicycles=(2, 2), motorcycles=(2, 2), trailers=(1, 1), construction_vehicles=(1, 1), trash_bins=(2, 2)
    )
    names = set()
    for seed in range(5):
        names.update(
            SYNTHETIC_NAMES[i].name for i in generate_world(seed, cfg).scene.primitives.name_id.tolist()
        )
    assert {"bicycle", "motorcycle", "trailer", "construction vehicle", "trash bin"} <= names


def test_key_frames_move_the_world_into_each_ego_frame():
    world = generate_world(3, num_samples=3)
    assert world.ego_poses[1, 0] > 0  # the ego drives forward
    for k in range(3):
        scene = world.sample(k)
        pose = world.ego_to_world(k)
        local = scene.primitives.center.double()
        back = (pose[:3, :3] @ local.T).T + pose[:3, 3]
        torch.testing.assert_close(back.float(), world.scene.primitives.center, atol=1e-4, rtol=0)
    with pytest.raises(IndexError):
        world.sample(3)


def test_bad_world_arguments_raise():
    with pytest.raises(ValueError, match="seed"):
        generate_world(-1)
    with pytest.raises(ValueError, match="range"):
        WorldConfig(pedestrians=(5, 2))


def test_vocabulary_maps_names_to_occ3d_classes():
    groups = synthetic_vocabulary()
    assert len(groups) == 17
    assert "building" in groups[CLASS_ID["manmade"]] and "pole" in groups[CLASS_ID["manmade"]]
    assert groups[CLASS_ID["driveable_surface"]].split("|")[0] == "road"
    classes = name_to_occ_class()
    assert int(classes[NAME_ID["sky"]]) == SKY_CLASS
    assert int(classes[NAME_ID["tree trunk"]]) == CLASS_ID["vegetation"]


# --- primitives: intersection, normals, membership --------------------------------------------


def test_ray_hits_match_a_marching_reference():
    prims = random_primitives(24, seed=0)
    g = torch.Generator().manual_seed(1)
    origins = torch.tensor([0.0, -12.0, 2.0]) + torch.randn(64, 3, generator=g) * 0.5
    targets = prims.center[torch.randint(0, 24, (64,), generator=g)] + torch.randn(64, 3, generator=g) * 0.5
    dirs = targets - origins
    t = ray_hit(origins[:, None], dirs[:, None], prims.kind, prims.center, prims.half_size, prims.yaw)
    # Reference: march each ray in steps of 1e-3 (in units of t) and take the first inside sample.
    steps = torch.arange(0, 2.0, 1e-3)
    points = origins[:, None, None] + steps[None, :, None, None] * dirs[:, None, None]  # (R, S, 1, 3)
    inside = contains(points, prims.kind, prims.center, prims.half_size, prims.yaw)  # (R, S, P)
    first = torch.where(inside.any(1), steps[inside.float().argmax(1)], torch.full((64, 24), float("inf")))
    ours = t < 1.99
    reference = first < 1.99
    near_end = (t > 1.98) & (t < 2.0)
    assert int(reference.sum()) > 40
    assert torch.equal(ours[~near_end], reference[~near_end])
    torch.testing.assert_close(t[reference & ours], first[reference & ours], atol=1.1e-3, rtol=0)


def test_normals_point_out_of_the_surface():
    prims = random_primitives(30, seed=2)
    origins = torch.tensor([0.0, -15.0, 3.0]).expand(30, 3)
    t = ray_hit(origins, prims.center - origins, prims.kind, prims.center, prims.half_size, prims.yaw)
    assert torch.isfinite(t).all()
    points = origins + t[:, None] * (prims.center - origins)
    n = surface_normal(points, prims.kind, prims.center, prims.half_size, prims.yaw)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(30))
    outside = contains(points + 0.01 * n, prims.kind, prims.center, prims.half_size, prims.yaw)
    inside = contains(points - 0.01 * n, prims.kind, prims.center, prims.half_size, prims.yaw)
    assert not outside.any() and inside.all()
    # Facing the camera: the normal and the ray direction are opposed.
    assert ((n * (prims.center - origins)).sum(-1) < 0).all()


def test_primitive_validation():
    with pytest.raises(ValueError, match="half_size"):
        Primitives(
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 3),
            -torch.ones(1, 3),
            torch.zeros(1),
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 3),
        )
    with pytest.raises(ValueError, match=r"center must be \(1, 3\)"):
        Primitives(
            torch.zeros(1, dtype=torch.long),
            torch.zeros(2, 3),
            torch.ones(1, 3),
            torch.zeros(1),
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 3),
        )


# --- camera rig and rendering ------------------------------------------------------------------


def test_rig_is_nuscenes_like_and_scales_exactly():
    rig = nuscenes_rig()
    assert rig.names == CAMERA_CHANNELS and rig.image_size == (900, 1600)
    front = rig.camera("CAM_FRONT")
    assert 1.4 < front.translation[2] < 1.7 and abs(front.fx - 1266.4) < 1
    fov = [2 * math.degrees(math.atan(c.width / 2 / c.fx)) for c in rig.cameras]
    assert all(60 < f < 70 for i, f in enumerate(fov) if i != 3) and 85 < fov[3] < 95
    # Optical axes in the ego frame point along the cameras' yaws.
    axes = rig.cam_to_ego()[:, :3, 2]
    yaws = torch.rad2deg(torch.atan2(axes[:, 1], axes[:, 0]))
    torch.testing.assert_close(yaws, torch.tensor([0.0, -55, 55, 180, 110, -110]), atol=1e-3, rtol=0)
    # Scaling: an ego point projects to the same relative image position.
    small = rig.scaled(225, 400)
    point = torch.tensor([[20.0, 3.0, 1.0]])
    big_px, _ = project(point, rig.intrinsics()[0], rig.cam_to_ego()[0])
    small_px, _ = project(point, small.intrinsics()[0], small.cam_to_ego()[0])
    torch.testing.assert_close((small_px + 0.5) * 4, big_px + 0.5, atol=1e-3, rtol=0)


def test_box_in_front_of_cam_front_renders_at_its_exact_depth():
    # A 2 m box centred 20 m ahead: its near face at x = 19, i.e. z-depth 19 - 1.701 for CAM_FRONT.
    scene = make_scene([(BOX, (20.0, 0.0, 1.5), (1.0, 2.0, 1.5), 0.0, "car")], ground=False)
    rig = CameraRig((nuscenes_rig(90, 160).camera("CAM_FRONT"),))
    views = render_views(scene, rig)
    car = views.occ_class[0] == CLASS_ID["car"]
    assert 100 < int(car.sum()) < 90 * 160
    front = rig.cameras[0]
    torch.testing.assert_close(
        views.depth[0][car], torch.full((int(car.sum()),), 19.0 - front.translation[0]), atol=1e-4, rtol=0
    )
    assert (views.depth[0][~car] == 0).all() and (views.occ_class[0][~car] == SKY_CLASS).all()
    # Its image extent is the projection of the face's edges y = +-2 m (camera x axis = -y).
    cols = torch.nonzero(car.any(0)).squeeze(1)
    z = 19.0 - front.translation[0]
    u_left = front.cx + front.fx * -(2.0 - front.translation[1]) / z
    u_right = front.cx + front.fx * (2.0 + front.translation[1]) / z
    assert int(cols.min()) == math.ceil(u_left) and int(cols.max()) == math.floor(u_right)


def test_ground_depth_follows_the_camera_height():
    scene = make_scene([])
    rig = CameraRig((nuscenes_rig(90, 160).camera("CAM_FRONT"),))
    views = render_views(scene, rig)
    cam = rig.cameras[0]
    rows = torch.arange(60, 90)
    expected = cam.translation[2] * cam.fy / (rows.float() - cam.cy)  # level camera: z = h f / (v - cy)
    torch.testing.assert_close(views.depth[0, 60:, 80], expected, rtol=1e-4, atol=1e-4)
    assert (views.occ_class[0, 60:] == CLASS_ID["terrain"]).all()
    assert (views.occ_class[0, :40] == SKY_CLASS).all()


def test_tiled_ray_casting_equals_brute_force():
    world = generate_world(5)
    scene = world.sample(0)
    rig = nuscenes_rig(36, 64)
    t, hit, origins, dirs = cast_rays(scene, rig, tile=8)
    prims = scene.primitives
    o = origins[:, None, None, None, :]  # (V, 1, 1, 1, 3)
    d = dirs[..., None, :]  # (V, H, W, 1, 3)
    brute = ray_hit(o, d, prims.kind, prims.center, prims.half_size, prims.yaw, near=0.05)  # (V, H, W, P)
    ground_t = torch.where(dirs[..., 2] < 0, -origins[:, None, None, 2] / dirs[..., 2], torch.inf)
    ground_xy = origins[:, None, None, :2] + ground_t.clamp_max(1e6)[..., None] * dirs[..., :2]
    ground_t = torch.where(ground_xy.norm(dim=-1) <= scene.ground.radius, ground_t, torch.inf)
    all_t = torch.cat([brute, ground_t[..., None]], dim=-1)
    best, index = all_t.min(-1)
    index = torch.where(torch.isfinite(best), index, torch.full_like(index, -1))
    agree = index == hit
    assert float(agree.float().mean()) > 0.999, "the tile culling dropped visible solids"
    finite = torch.isfinite(best)
    torch.testing.assert_close(t[finite], best[finite], rtol=1e-5, atol=1e-4)


def test_render_outputs_are_consistent():
    scene = generate_world(9).sample(0)
    views = render_views(scene, nuscenes_rig(45, 80))
    assert views.rgb.shape == (6, 3, 45, 80) and views.rgb.dtype == torch.uint8
    sky = views.occ_class == SKY_CLASS
    assert ((views.depth == 0) == sky).all()
    assert (name_to_occ_class()[views.name_id.long()] == views.occ_class).all()
    assert float(views.rgb.float().std()) > 20  # textured and shaded, not flat
    front = CameraRig(nuscenes_rig(45, 80).cameras[:1])
    aa = render_views(scene, front, antialias=3)
    assert torch.equal(aa.depth, views.depth[:1]) and torch.equal(aa.occ_class, views.occ_class[:1])
    with pytest.raises(ValueError, match="odd"):
        render_views(scene, nuscenes_rig(45, 80), antialias=2)


# --- occupancy ---------------------------------------------------------------------------------


def test_occupancy_of_a_voxel_aligned_box_is_exact():
    # x in [4, 6], y in [-1.2, 0.8], z in [0.2, 1.8]: exactly voxels ix 110..114, iy 97..101, iz 3..6.
    scene = make_scene([(BOX, (5.0, -0.2, 1.0), (1.0, 1.0, 0.8), 0.0, "car")])
    sem = occ.semantic_occupancy(scene)
    car = sem == CLASS_ID["car"]
    expected = torch.zeros_like(car)
    expected[110:115, 97:102, 3:7] = True
    assert torch.equal(car, expected)
    # The ground is the single voxel layer holding z = 0 (iz = 2), grass everywhere here.
    assert (sem[:, :, 2] == CLASS_ID["terrain"]).all()
    assert (sem[:, :, :2] == FREE_LABEL).all() and (sem[:, :, 7:] == FREE_LABEL).all()
    assert int((sem[:, :, 3:7] != FREE_LABEL).sum()) == int(expected.sum())


def test_semantic_occupancy_matches_a_brute_force_reference():
    world = generate_world(4)
    scene = world.sample(0)
    grid = VoxelGrid(range=(-2.0, -12.0, -1.0, 14.0, 12.0, 5.4))
    sem = occ.semantic_occupancy(scene, grid, subsamples=2)
    # Reference: every voxel against every solid, sub-sample by sub-sample; majority of classes,
    # ties to the higher-priority class.
    prims = scene.primitives
    centres = grid.centers()
    offsets = torch.tensor([[a, b, c] for a in (-0.1, 0.1) for b in (-0.1, 0.1) for c in (-0.1, 0.1)])
    points = centres[..., None, :] + offsets  # (X, Y, Z, 8, 3)
    classes = name_to_occ_class().long()[prims.name_id]
    priority = occ.CLASS_PRIORITY[classes]
    best = torch.full(points.shape[:-1], -1, dtype=torch.long)  # (X, Y, Z, 8)
    for p in range(len(prims)):
        inside = contains(points, prims.kind[p], prims.center[p], prims.half_size[p], prims.yaw[p])
        best = torch.where(inside, torch.maximum(best, priority[p] * 32 + classes[p]), best)
    ground = (points[..., 2] < 0) & (points[..., 2] >= -0.2)
    g_names, _ = scene.ground.region(points[..., :2].reshape(-1, 2))
    g_class = name_to_occ_class().long()[g_names].reshape(ground.shape)
    best = torch.where(ground, torch.maximum(best, occ.CLASS_PRIORITY[g_class] * 32 + g_class), best)
    cls = torch.where(best >= 0, best % 32, torch.full_like(best, -1))
    votes = (cls[..., :, None] == cls[..., None, :]).sum(-1)
    score = torch.where(cls >= 0, votes * 64 + best // 32, torch.full_like(best, -1))
    pick = cls.gather(-1, score.argmax(-1, keepdim=True))[..., 0]
    reference = torch.where((cls >= 0).any(-1), pick, torch.full_like(pick, FREE_LABEL)).to(torch.uint8)
    assert int((reference != FREE_LABEL).sum()) > 500
    assert torch.equal(sem, reference)


def test_traversal_visits_what_dense_sampling_visits():
    grid = VoxelGrid()
    g = torch.Generator().manual_seed(0)
    occupied = torch.rand(grid.shape, generator=g) < 0.002
    origins = torch.tensor([1.5, 0.2, 1.6]).expand(100, 3)
    dirs = torch.nn.functional.normalize(torch.randn(100, 3, generator=g), dim=-1)
    visited = occ.traverse(occupied, origins, dirs, grid)
    # Reference: sample every ray every 5 mm until it leaves the grid or enters an occupied voxel.
    t = torch.arange(0, 60, 0.005)
    points = origins[:, None] + t[None, :, None] * dirs[:, None]
    idx, inside = grid.voxel_index(points)
    flat = (idx[..., 0] * 200 + idx[..., 1]) * 16 + idx[..., 2]
    flat = torch.where(inside, flat, torch.zeros_like(flat))
    hit = occupied.reshape(-1)[flat] & inside
    stop = torch.where(hit.any(1), hit.float().argmax(1), (inside.cumprod(1).sum(1)).long())
    keep = (torch.arange(t.numel())[None] <= stop[:, None]) & inside
    reference = torch.zeros(grid.num_voxels, dtype=torch.bool)
    reference[flat[keep]] = True
    assert bool((reference & ~visited.reshape(-1)).sum() == 0)
    extra = int((visited.reshape(-1) & ~reference).sum())  # corners grazed by less than 5 mm
    assert extra <= 0.005 * int(reference.sum())


def test_mask_camera_excludes_voxels_behind_a_wall():
    # A wall 10 m ahead of the ego (x in [10, 10.4]), wider and taller than the front view.
    scene = make_scene([(BOX, (10.2, 0.0, 3.0), (0.2, 30.0, 3.0), 0.0, "wall")])
    rig = nuscenes_rig(90, 160)
    labels = occ.occupancy_labels(scene, rig, spacing=2.0, ground_spacing=2.0)
    mask, sem = labels.mask_camera, labels.semantics
    ix = lambda x: int((x + 40) / 0.4)
    iy, iz = 100, 6  # y ~ 0, z ~ 1.6
    assert sem[ix(10.1), iy, iz] == CLASS_ID["manmade"] and mask[ix(10.1), iy, iz]  # the wall face
    assert mask[ix(5.0), iy, iz]  # free space in front of it
    assert not mask[ix(10.5) :, 80:120, 3:].any()  # everything behind it
    assert not mask[:, :, :2].any()  # below the ground surface
    assert sem[ix(5.0), iy, iz] == FREE_LABEL
    # The LiDAR on the roof sees the wall too and nothing behind it.
    assert labels.mask_lidar[ix(10.1), iy, 5] and not labels.mask_lidar[ix(11.0) :, 90:110, 3:].any()


def test_visibility_rays_leave_no_gaps_on_the_far_ground():
    scene = make_scene([])
    labels = occ.occupancy_labels(scene, CameraRig((nuscenes_rig().camera("CAM_FRONT"),)))
    seen = labels.mask_camera[:, :, 2]  # the ground layer
    # Straight ahead along the optical axis, every ground voxel from 6 m to the grid edge is seen.
    ahead = seen[int((6 + 40) / 0.4) :, 99:101]
    assert bool(ahead.all())


def test_traverse_rejects_origins_outside_the_grid():
    with pytest.raises(ValueError, match="inside the grid"):
        occ.traverse(
            torch.zeros(200, 200, 16, dtype=torch.bool),
            torch.tensor([[0.0, 0.0, 9.0]]),
            torch.tensor([[1.0, 0.0, 0.0]]),
            VoxelGrid(),
        )


def test_camera_rays_have_unit_optical_depth():
    rig = nuscenes_rig(18, 32)
    origins, dirs = camera_rays(rig)
    optical = (dirs[..., None, :] @ rig.cam_to_ego()[:, None, None, :3, 2:3])[..., 0, 0]
    torch.testing.assert_close(optical, torch.ones_like(optical))
    torch.testing.assert_close(origins, rig.cam_to_ego()[:, :3, 3])


def test_cylinders_and_ellipsoids_fill_the_voxels_their_subsamples_fall_in():
    scene = make_scene(
        [
            (CYLINDER, (8.2, 2.2, 2.0), (0.5, 0.5, 1.0), 0.0, "pole"),
            (ELLIPSOID, (-8.0, 3.0, 3.0), (1.0, 0.6, 0.8), 0.4, "tree"),
        ]
    )
    sem = occ.semantic_occupancy(scene, subsamples=2)
    centres = VoxelGrid().centers()
    offsets = torch.tensor([[a, b, c] for a in (-0.1, 0.1) for b in (-0.1, 0.1) for c in (-0.1, 0.1)])
    prims = scene.primitives
    for i, cls in ((0, "manmade"), (1, "vegetation")):
        inside = contains(
            centres[..., None, :] + offsets, prims.kind[i], prims.center[i], prims.half_size[i], prims.yaw[i]
        ).any(-1)
        assert torch.equal(sem == CLASS_ID[cls], inside)
