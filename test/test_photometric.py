"""GaussianCross options: SSIM and the photometric loss, the RGB head rendered with the features,
point-cloud initialisation in the unit cuboid, and opacity pruning."""

from __future__ import annotations

import math

import pytest
import torch

from gausstr_core.batch import CameraBatch
from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import project
from gausstr_core.losses.config import PhotometricConfig
from gausstr_core.losses.photometric import SSIM_C1, SSIM_C2, gaussian_window, photometric_loss, ssim
from gausstr_core.losses.pruning import prune_by_opacity
from gausstr_core.model.point_cloud_init import (
    cell_representatives,
    depth_point_cloud,
    normalize_to_unit_cuboid,
    point_cloud_reference_points,
)
from gausstr_core.render import render_gaussians

# --- SSIM -------------------------------------------------------------------------------------------


def _ssim_loop(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Oracle: SSIM of one (H, W) channel, pixel by pixel, with an explicit 2D window over the
    reflection-padded images (the textbook definition, no separable filtering)."""
    r = size // 2
    w1 = gaussian_window(size, sigma, torch.float64)
    w2 = w1[:, None] * w1[None, :]
    xp = torch.nn.functional.pad(x[None, None], (r, r, r, r), mode="reflect")[0, 0]
    yp = torch.nn.functional.pad(y[None, None], (r, r, r, r), mode="reflect")[0, 0]
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a, b = xp[i : i + size, j : j + size], yp[i : i + size, j : j + size]
            mx, my = (w2 * a).sum(), (w2 * b).sum()
            vx, vy = (w2 * (a - mx) ** 2).sum(), (w2 * (b - my) ** 2).sum()
            cov = (w2 * (a - mx) * (b - my)).sum()
            out[i, j] = (
                (2 * mx * my + SSIM_C1)
                * (2 * cov + SSIM_C2)
                / ((mx**2 + my**2 + SSIM_C1) * (vx + vy + SSIM_C2))
            )
    return out


def test_ssim_hand_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ssim(x, x), torch.ones_like(x))
    # Constant images: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1) everywhere.
    a, b = 0.3, 0.7
    full = lambda value: torch.full((1, 16, 16), value, dtype=torch.float64)
    out = ssim(full(a), full(b))
    torch.testing.assert_close(out, torch.full_like(out, (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)))
    # Structure reversed (x against 1 - x, equal means and variances): the covariance is negative.
    assert ssim(x, 1 - x).mean() < 0
    # Symmetric, and bounded by 1.
    y = (x + 0.2 * torch.rand(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(ssim(x, y), ssim(y, x))
    assert ssim(x, y).max() <= 1 + 1e-12


def test_ssim_matches_a_per_pixel_loop_of_its_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(13, 17, generator=g, dtype=torch.float64)
    y = 0.6 * x + 0.4 * torch.rand(13, 17, generator=g, dtype=torch.float64)
    expected = _ssim_loop(x, y)
    torch.testing.assert_close(ssim(x[None], y[None])[0], expected, rtol=1e-10, atol=1e-12)


def test_photometric_loss_hand_cases_mask_and_gradient():
    a, b = 0.25, 0.5
    x = torch.full((1, 2, 3, 12, 12), a, dtype=torch.float64)
    y = torch.full_like(x, b)
    s = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)
    assert photometric_loss(x, y).item() == pytest.approx(0.85 * (1 - s) / 2 + 0.15 * (b - a), rel=1e-12)
    assert photometric_loss(y, y).item() == pytest.approx(0.0, abs=1e-12)
    # The mask picks pixels; SSIM still sees their neighbourhood (window radius 5).
    z = y.clone()
    z[..., :, :6] = a  # the left half is wrong
    far = torch.zeros(1, 2, 12, 12, dtype=torch.bool)
    far[..., 11:] = True  # the last column: 5 pixels from the edit, outside every window touching it
    assert photometric_loss(z, y, far).item() == pytest.approx(0.0, abs=1e-12)
    assert photometric_loss(z, y, ~far).item() > 0
    assert photometric_loss(z, y, torch.zeros_like(far)).item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        photometric_loss(z, y, far[..., 0])
    leaf = z.clone().requires_grad_(True)
    photometric_loss(leaf, y).backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad[..., :6].abs().sum() > 0


def test_photometric_loss_of_a_render_is_zero_at_the_truth_and_grows_as_a_gaussian_moves():
    rig = nuscenes_rig(36, 64)
    k, pose = rig.intrinsics()[None, :1], rig.cam_to_ego()[None, :1]
    g = torch.Generator().manual_seed(0)
    n = 30
    means = torch.stack(
        [
            6 + 10 * torch.rand(n, generator=g),
            -4 + 8 * torch.rand(n, generator=g),
            3 * torch.rand(n, generator=g),
        ],
        -1,
    )[None]
    truth = Gaussians(
        means,
        0.3 + 0.3 * torch.rand(1, n, 3, generator=g),
        torch.randn(1, n, 4, generator=g),
        0.6 + 0.3 * torch.rand(1, n, generator=g),
        torch.rand(1, n, 3, generator=g),
    )
    target = render_gaussians(truth, k, pose, (36, 64)).features
    losses = []
    for shift in (0.0, 0.3, 0.6, 1.2):  # the nearest Gaussian moves sideways [m]
        moved = truth.means.clone()
        nearest = int(truth.means[0, :, 0].argmin())
        moved[0, nearest, 1] += shift
        pred = Gaussians(moved, truth.scales, truth.rotations, truth.opacities, truth.features)
        losses.append(photometric_loss(render_gaussians(pred, k, pose, (36, 64)).features, target).item())
    assert losses[0] == pytest.approx(0.0, abs=1e-7)
    assert 0 < losses[1] < losses[2] < losses[3]


def test_photometric_config_validates():
    assert not PhotometricConfig().enabled
    with pytest.raises(ValueError, match="window"):
        PhotometricConfig(window=4)
    with pytest.raises(ValueError, match="ssim_weight"):
        PhotometricConfig(ssim_weight=1.5)


# --- the RGB head, rendered with the features ----------------------------------------------------


def _tiny_model(**head):
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset

    cfg = preset("tiny")
    cfg.model.image_size = (48, 88)
    cfg.model.decoder.queries_per_view = 8
    for k, v in head.items():
        setattr(cfg.model.head, k, v)
    torch.manual_seed(0)
    return GaussTR(cfg.model), cfg


def _batch(seed=0, size=(48, 88)):
    from gausstr_core.data.transforms import resize_matrix

    g = torch.Generator().manual_seed(seed)
    rig = nuscenes_rig()
    depth = torch.nn.functional.interpolate(
        4 + 30 * torch.rand(6, 1, 3, 5, generator=g), size=size, mode="bilinear", align_corners=False
    )[:, 0]
    return CameraBatch(
        images=torch.rand(1, 6, 3, *size, generator=g),
        intrinsics=rig.intrinsics()[None],
        cam_to_ego=rig.cam_to_ego()[None],
        image_aug=resize_matrix(rig.image_size, size).expand(1, 6, 3, 3).clone(),
        depth=depth[None],
        features=torch.randn(1, 6, 64, size[0] // 8, size[1] // 8, generator=g),
    )


def test_the_rgb_head_is_absent_by_default_and_changes_nothing_when_off():
    plain, _ = _tiny_model()
    with_rgb, _ = _tiny_model(rgb_head=True)
    extra = set(with_rgb.state_dict()) - set(plain.state_dict())
    assert extra and all(".rgb." in k for k in extra)
    assert not any(".rgb." in k for k in plain.state_dict())
    batch = _batch()
    plain.eval()
    out = plain(batch)
    assert out.colors is None
    # Same weights for everything but the RGB head: identical Gaussians with or without it.
    with_rgb.load_state_dict(plain.state_dict(), strict=False)
    with_rgb.eval()
    out_rgb = with_rgb(batch)
    for a, b in zip(out.gaussians, out_rgb.gaussians):
        torch.testing.assert_close(a.means, b.means)
        torch.testing.assert_close(a.features, b.features)
    assert len(out_rgb.colors) == 2 and out_rgb.colors[-1].shape == (1, 48, 3)
    assert out_rgb.colors[-1].min() >= 0 and out_rgb.colors[-1].max() <= 1


def test_the_photometric_loss_renders_colours_in_the_same_pass_and_trains_the_head():
    from gausstr_core.losses.gausstr import GaussTRLoss

    model, cfg = _tiny_model(rgb_head=True)
    cfg.loss.pca_dims = 16
    base = GaussTRLoss(cfg.loss)
    cfg.loss.photometric = PhotometricConfig(weight=1.0)
    loss = GaussTRLoss(cfg.loss)
    batch = _batch()
    model.train()
    torch.manual_seed(3)
    out = model(batch)
    torch.manual_seed(7)  # the randomized PCA of the feature loss
    result = loss(out, batch)
    assert {"layer0/photometric", "layer1/photometric"} <= set(result.terms)
    assert result.rendered_rgb.shape == (1, 6, 3, 24, 44)
    assert result.rendered.features.shape[2] == 16  # the colour channels are split off again
    # The other terms are exactly those of a render without colours (same pass, extra channels).
    torch.manual_seed(7)
    reference = base(out, batch)
    for name in ("layer1/feature", "layer1/depth"):
        torch.testing.assert_close(result.terms[name], reference.terms[name], rtol=1e-5, atol=1e-6)
    # Colours are rendered with the same weights: a Gaussian-colour render equals the RGB channels.
    g = out.gaussians[-1]
    from gausstr_core.data.transforms import resize_matrix

    k = resize_matrix((48, 88), (24, 44)) @ batch.input_intrinsics()
    direct = render_gaussians(g.with_features(out.colors[-1]), k, batch.cam_to_ego, (24, 44))
    torch.testing.assert_close(result.rendered_rgb, direct.features, rtol=1e-5, atol=1e-6)
    result.terms["layer1/photometric"].backward()
    grads = [p.grad for n, p in model.named_parameters() if "heads.1.rgb" in n]
    assert grads and all(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_photometric_loss_without_an_rgb_head_is_a_clear_error():
    from gausstr_core.losses.gausstr import GaussTRLoss

    model, cfg = _tiny_model()
    cfg.loss.pca_dims = 16
    cfg.loss.photometric = PhotometricConfig(weight=1.0)
    with pytest.raises(ValueError, match="rgb_head"):
        GaussTRLoss(cfg.loss)(model(_batch()), _batch())


# --- point-cloud initialisation -------------------------------------------------------------------


def test_unit_cuboid_normalisation_keeps_the_aspect_and_ignores_invalid_points():
    points = torch.tensor([[[2.0, 1.0, 0.0], [6.0, 3.0, 1.0], [4.0, 2.0, 0.5], [100.0, 100.0, 100.0]]])
    valid = torch.tensor([[True, True, True, False]])
    normalized, lower, extent = normalize_to_unit_cuboid(points, valid)
    torch.testing.assert_close(lower, torch.tensor([[2.0, 1.0, 0.0]]))
    assert extent.item() == 4.0  # the longest side (x) becomes 1
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.25], [0.5, 0.25, 0.125]])
    torch.testing.assert_close(normalized[0, :3], expected)
    assert normalized[0, 3].abs().sum() == 0
    # Invariant to the scene's scale and position.
    again, _, _ = normalize_to_unit_cuboid(points * 7 - 3, valid)
    torch.testing.assert_close(again, normalized)
    nan = torch.tensor([[[1.0, 1.0, 1.0], [float("nan"), 0.0, 0.0]]])
    out, _, extent = normalize_to_unit_cuboid(nan)
    assert torch.isfinite(out).all() and extent.item() == 1.0


def test_one_point_survives_per_occupied_cell():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 500, 3, generator=g) * torch.tensor([10.0, 5.0, 2.0])
    valid = torch.rand(2, 500, generator=g) > 0.2
    keep = cell_representatives(points, valid, cells=4, generator=g)
    assert not (keep & ~valid).any()
    for i in range(2):
        normalized, _, _ = normalize_to_unit_cuboid(points[i : i + 1], valid[i : i + 1])
        cells = (normalized[0] * 4).long().clamp(0, 3)
        keys = cells[:, 0] * 16 + cells[:, 1] * 4 + cells[:, 2]
        occupied = torch.unique(keys[valid[i]])
        assert keep[i].sum() == occupied.numel()
        assert torch.equal(torch.sort(keys[keep[i]]).values, occupied)


def test_depth_point_clouds_project_back_onto_their_pixels():
    rig = nuscenes_rig(24, 40)
    k, pose = rig.intrinsics()[None], rig.cam_to_ego()[None]
    g = torch.Generator().manual_seed(2)
    depth = 2 + 20 * torch.rand(1, 6, 24, 40, generator=g)
    depth[0, 0, :8] = 0  # invalid
    points, valid = depth_point_cloud(depth, k, pose, stride=4, max_depth=21.0)
    assert points.shape == (1, 6 * 6 * 10, 3)
    expected = (depth[..., 1::4, 1::4] > 0) & (depth[..., 1::4, 1::4] < 21.0)
    assert torch.equal(valid, expected.reshape(1, -1))
    pixels, z = project(points.reshape(1, 6, 60, 3), k, pose)
    rows, cols = torch.meshgrid(torch.arange(1, 24, 4.0), torch.arange(1, 40, 4.0), indexing="ij")
    sel = valid.reshape(1, 6, 60)
    torch.testing.assert_close(pixels[..., 0][sel], cols.reshape(-1).expand(1, 6, 60)[sel], atol=1e-3, rtol=0)
    torch.testing.assert_close(pixels[..., 1][sel], rows.reshape(-1).expand(1, 6, 60)[sel], atol=1e-3, rtol=0)
    torch.testing.assert_close(z[sel], depth[..., 1::4, 1::4].reshape(1, 6, 60)[sel], rtol=1e-5, atol=1e-5)


def test_reference_points_start_at_the_clouds_pixels_and_cover_sparse_structures():
    rig = nuscenes_rig(48, 88)
    k, pose = rig.intrinsics()[None], rig.cam_to_ego()[None]
    from gausstr_core.data.transforms import resize_matrix

    k = resize_matrix(rig.image_size, (48, 88)) @ k if rig.image_size != (48, 88) else k
    g = torch.Generator().manual_seed(4)
    # In front of the front camera: a dense patch of ground (2,000 points on 1 m^2) and a sparse post
    # (20 points along 3 m) 4 m to its left.
    ground = torch.stack(
        [8 + torch.rand(2000, generator=g), -1 + torch.rand(2000, generator=g), torch.zeros(2000)], -1
    )
    post = torch.stack([torch.full((20,), 10.0), torch.full((20,), 3.0), torch.linspace(0, 3, 20)], -1)
    points = torch.cat([ground, post])[None]
    valid = torch.ones(1, 2020, dtype=torch.bool)
    pixels, _ = project(points[:, None].expand(1, 6, 2020, 3), k, pose)
    on_post = []
    for _ in range(10):
        refs = point_cloud_reference_points(points, valid, k, pose, (48, 88), 12, cells=32, generator=g)
        assert refs.shape == (1, 6, 12, 2) and refs.min() >= 0 and refs.max() <= 1
        front = refs[0, 0] * torch.tensor([88.0, 48.0]) - 0.5  # back to pixel coordinates
        # Every reference point is one of the cloud's pixels (exact distances: no matmul expansion).
        dist = torch.cdist(front, pixels[0, 0], compute_mode="donot_use_mm_for_euclid_dist")
        assert dist.min(1).values.max() < 1e-3
        on_post.append((dist.argmin(1) >= 2000).float().mean())
    # Cells, not points, are sampled: the post (1% of the points, ~1/3 of the occupied cells) gets
    # a share of the queries near its share of cells, not of points.
    assert torch.stack(on_post).mean() > 0.15
    # A view that sees nothing falls back to uniform random points; eval-style seeding repeats.
    again = point_cloud_reference_points(
        points, valid, k, pose, (48, 88), 12, 32, generator=torch.Generator().manual_seed(4)
    )
    same = point_cloud_reference_points(
        points, valid, k, pose, (48, 88), 12, 32, generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(again, same)


def test_the_model_starts_its_queries_from_a_point_cloud_when_asked():
    model, _ = _tiny_model()
    model.config.decoder.reference_init = "point_cloud"
    model.eval()
    batch = _batch()
    out = model(batch)
    out2 = model(batch)
    torch.testing.assert_close(out.final.means, out2.final.means)  # seeded in eval mode
    assert torch.isfinite(out.final.means).all()
    # An explicit cloud (e.g. LiDAR) replaces the depth map's: here everything 10 m ahead of the car.
    cloud = torch.tensor([[[10.0, y, 0.5] for y in torch.linspace(-3, 3, 30).tolist()]])
    out3 = model(batch, point_cloud=cloud)
    assert not torch.allclose(out3.final.means, out.final.means)
    with pytest.raises(ValueError, match="point_cloud"):
        model(batch, point_cloud=cloud[0])
    from gausstr_core.model.config import DecoderConfig

    with pytest.raises(ValueError, match="reference_init"):
        DecoderConfig(reference_init="lidar")


# --- pruning -----------------------------------------------------------------------------------------


def test_pruning_keeps_the_high_opacity_gaussians_in_order():
    g = torch.Generator().manual_seed(0)
    n = 10
    opac = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.05, 0.7, 0.2, 0.95, 0.3, 0.01, 0.6],
            [0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    ids = torch.arange(2 * n, dtype=torch.float32).view(2, n, 1)
    gauss = Gaussians(
        torch.randn(2, n, 3, generator=g),
        torch.rand(2, n, 3, generator=g) + 0.1,
        torch.randn(2, n, 4, generator=g),
        opac,
        ids,
    )
    pruned, keep = prune_by_opacity(gauss, 0.4)
    assert keep[0].tolist() == [o > 0.4 for o in opac[0].tolist()]
    assert pruned.num_gaussians == 5  # scene 0 keeps 5, scene 1 one and 4 padding
    assert pruned.features[0, :, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 9.0]
    torch.testing.assert_close(pruned.opacities[0], opac[0, [0, 2, 4, 6, 9]])
    assert pruned.opacities[1, 0] == 0.8 and torch.all(pruned.opacities[1, 1:] == 0)
    # Rendering the pruned set equals rendering with the dropped ones' opacities set to 0.
    rig = nuscenes_rig(24, 40)
    gauss.means[:] = torch.tensor([8.0, 0.0, 1.5]) + gauss.means
    zeroed = Gaussians(
        gauss.means, gauss.scales, gauss.rotations, torch.where(keep, opac, 0.0), gauss.features
    )
    k, pose = rig.intrinsics()[None].expand(2, 6, 3, 3), rig.cam_to_ego()[None].expand(2, 6, 4, 4)
    a = render_gaussians(prune_by_opacity(gauss, 0.4)[0], k, pose, (24, 40))
    b = render_gaussians(zeroed, k, pose, (24, 40))
    assert b.alpha.max() > 0.3
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.alpha, b.alpha)
    with pytest.raises(ValueError, match="threshold"):
        prune_by_opacity(gauss, 1.0)


def test_loss_prune_option_leaves_low_opacity_gaussians_out_of_the_render():
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.losses.gausstr import GaussTRLoss

    model, _ = _tiny_model()
    batch = _batch()
    out = model(batch)
    cut = float(out.final.opacities.detach().median())
    plain = GaussTRLoss(LossConfig(pca_dims=16, render_scale=0.5))(out, batch)
    pruned = GaussTRLoss(LossConfig(pca_dims=16, render_scale=0.5, prune_opacity=cut))(out, batch)
    assert pruned.rendered.alpha.sum() < plain.rendered.alpha.sum()
    assert math.isfinite(pruned.terms["loss"].item())
    with pytest.raises(ValueError, match="prune_opacity"):
        LossConfig(prune_opacity=1.0)


def test_loss_prune_keeps_a_scene_whose_every_gaussian_is_below_the_cut():
    """Found on the GPU (paper-scale featup, prune_opacity 0.3, step 77): every opacity fell below the
    cut, everything was pruned, and backward failed ("element 0 of tensors does not require grad").
    A scene pruned to nothing now keeps all its Gaussians, so the loss still trains the opacities."""
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.losses.gausstr import GaussTRLoss

    model, _ = _tiny_model()
    batch = _batch()
    out = model(batch)
    # above every opacity of every layer: nothing survives
    cut = max(float(g.opacities.detach().max()) for g in out.gaussians) + 1e-3
    assert cut < 1
    loss = GaussTRLoss(LossConfig(pca_dims=16, render_scale=0.5, prune_opacity=cut))(out, batch)
    plain = GaussTRLoss(LossConfig(pca_dims=16, render_scale=0.5))(out, batch)
    torch.testing.assert_close(loss.rendered.alpha, plain.rendered.alpha)
    assert all(loss.terms[f"metric/layer{i}_kept_fraction"].item() == 1.0 for i in range(len(out.gaussians)))
    loss.terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(torch.count_nonzero(gr) > 0 for gr in grads)
    # per scene: scene 1 below the cut keeps all, scene 0 keeps its one Gaussian above it
    opac = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.2, 0.05]])
    g = Gaussians(torch.zeros(2, 3, 3), torch.ones(2, 3, 3), torch.randn(2, 3, 4), opac, torch.zeros(2, 3, 1))
    _, keep = prune_by_opacity(g, 0.3, keep_all_when_none_left=True)
    assert keep.tolist() == [[True, False, False], [True, True, True]]
    _, keep = prune_by_opacity(g, 0.3)
    assert keep.tolist() == [[True, False, False], [False, False, False]]
