"""GaussTR forward pass: shapes, gradients, geometry of the Gaussians, attention scope, modes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gausstr_core.geometry import project
from gausstr_core.model.config import BackboneConfig, DecoderConfig, HeadConfig, ModelConfig
from gausstr_core.model.decoder import sine_encoding
from gausstr_core.model.gausstr import GaussTR, GaussTROutput
from gausstr_core.model.heads import camera_ray_channels, reference_pixels, sample_depth
from gausstr_core.presets import preset_model
from gausstr_testing.cameras import rig

torch.set_num_threads(1)


def tiny(**changes) -> ModelConfig:
    cfg = preset_model("tiny")
    for section, values in changes.items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
    return cfg


@pytest.mark.parametrize(("b", "v", "h", "w"), [(1, 6, 112, 200), (2, 3, 64, 96), (1, 1, 48, 80)])
def test_shapes(tiny_model, b, v, h, w):
    batch = rig(b, v, h, w)
    out = tiny_model(batch)
    assert isinstance(out, GaussTROutput)
    q = tiny_model.config.decoder.queries_per_view
    assert out.num_layers == tiny_model.config.decoder.num_layers == len(out.reference_points)
    for g, ref in zip(out.gaussians, out.reference_points):
        assert g.means.shape == (b, v * q, 3) and g.scales.shape == (b, v * q, 3)
        assert g.rotations.shape == (b, v * q, 4) and g.opacities.shape == (b, v * q)
        assert g.features.shape == (b, v * q, tiny_model.config.head.feature_dim)
        assert g.features.dtype == torch.float32
        assert ref.shape == (b, v, q, 2) and ((ref > 0) & (ref < 1)).all()
        assert ((g.opacities > 0) & (g.opacities < 1)).all() and (g.scales > 0).all()
    assert out.depth is batch.depth
    assert out.predicted_depth.shape == (b, v, h, w)
    lo, hi = tiny_model.config.depth_head.min_depth, tiny_model.config.depth_head.max_depth
    assert ((out.predicted_depth >= lo) & (out.predicted_depth <= hi)).all()
    assert out.target_features is batch.features  # the tiny backbone trains: targets come from the batch
    assert out.segment_heads is None


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(1)
    cfg = tiny(head=dict(segment_classes=5, segment_input_dim=8))
    model = GaussTR(cfg).train()
    out = model(rig(1, 2, 48, 80))
    # A differentiable surrogate touching every output the losses use.
    loss = out.predicted_depth.mean()
    for g, seg in zip(out.gaussians, out.segment_heads):
        loss = loss + g.means.square().mean() + g.scales.mean() + g.opacities.mean()
        loss = loss + g.features.square().mean()
        loss = loss + seg(torch.randn(4, 8)).square().mean()
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, f"no gradient reaches {missing}"


def test_means_project_back_to_their_reference_pixel_at_the_sampled_depth():
    torch.manual_seed(2)
    model = GaussTR(tiny()).eval()
    for head in model.heads:  # depth multiplier delta = 0
        head.offset.layers[-1].weight.data[2].zero_()
        head.offset.layers[-1].bias.data[2].zero_()
    b, v, h, w = 2, 4, 64, 96
    batch = rig(b, v, h, w, seed=3)
    out = model(batch)
    q = model.config.decoder.queries_per_view
    intr = batch.input_intrinsics()
    limit = model.config.head.depth_limit
    for g, ref in zip(out.gaussians, out.reference_points):
        means = g.means.reshape(b, v, q, 3)
        pixels, z = project(means, intr, batch.cam_to_ego)
        torch.testing.assert_close(pixels, reference_pixels(ref, (h, w)), rtol=0, atol=1e-3)
        want_z = sample_depth(batch.depth.flatten(0, 1).clamp(max=limit), ref.flatten(0, 1)).view(b, v, q)
        torch.testing.assert_close(z, want_z, rtol=1e-5, atol=1e-4)


def test_covariances_are_spd_and_camera_aligned():
    torch.manual_seed(4)
    model = GaussTR(tiny()).eval()
    b, v = 1, 3
    batch = rig(b, v, 48, 80)
    g = model(batch).final
    cov = g.covariances().double()
    torch.testing.assert_close(cov, cov.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    # In the camera frame the covariance is diagonal with the scales squared.
    rot = batch.cam_to_ego[0, :, :3, :3].double().repeat_interleave(model.config.decoder.queries_per_view, 0)
    cam_cov = rot.transpose(-1, -2) @ cov[0] @ rot
    want = torch.diag_embed(g.scales[0].double() ** 2)
    # float32 quaternions: errors relative to the largest variance of each Gaussian
    tol = 1e-5 * want.amax(dim=(-1, -2), keepdim=True)
    assert ((cam_cov - want).abs() <= tol).all()


def test_scale_follows_depth_over_focal():
    torch.manual_seed(5)
    model = GaussTR(tiny()).eval()
    for head in model.heads:  # the scale sigmoid at 0.5 -> mid of the range
        head.scale.layers[-1].weight.data.zero_()
        head.scale.layers[-1].bias.data.zero_()
        head.offset.layers[-1].weight.data[2].zero_()
        head.offset.layers[-1].bias.data[2].zero_()
    batch = rig(1, 2, 48, 80)
    out = model(batch)
    cfg = model.config.head
    fx = batch.input_intrinsics()[0, 0, 0, 0]
    lo, hi = cfg.scale_range
    _, z = project(out.final.means.view(1, 2, -1, 3), batch.input_intrinsics(), batch.cam_to_ego)
    want = (lo + hi) / 2 * z.flatten() * cfg.scale_multiplier / fx
    torch.testing.assert_close(out.final.scales[0], want[:, None].expand(-1, 3), rtol=1e-4, atol=1e-6)


def test_frozen_backbone_no_grad_and_eval_in_train_mode():
    cfg = tiny(backbone=dict(frozen=True))
    model = GaussTR(cfg).train()
    assert model.training and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    out = model(rig(1, 2, 48, 80))
    assert out.target_features.shape == (1, 2, 128, 6, 10)  # a frozen backbone provides the targets
    sum(g.means.sum() for g in out.gaussians).backward()
    assert all(p.grad is None for p in model.backbone.parameters())


def test_precomputed_features_and_clear_errors():
    cfg = ModelConfig(
        image_size=(48, 80),
        embed_dim=32,
        backbone=BackboneConfig(kind="precomputed", channels=64, patch_size=8),
        decoder=DecoderConfig(num_layers=1, queries_per_view=8, num_heads=4, ffn_dim=64),
        head=HeadConfig(feature_dim=16),
    )
    model = GaussTR(cfg).eval()
    batch = rig(1, 2, 48, 80)
    out = model(batch)
    assert out.target_features is batch.features and out.final.features.shape == (1, 16, 16)
    with pytest.raises(ValueError, match=r"batch\.features"):
        model(dataclasses.replace(batch, features=None))
    with pytest.raises(ValueError, match="no depth head"):
        model(dataclasses.replace(batch, depth=None))
    with pytest.raises(ValueError, match="channels"):
        model(dataclasses.replace(batch, features=torch.randn(1, 2, 32, 6, 10)))


def test_depth_head_is_used_without_input_depth(tiny_model):
    batch = dataclasses.replace(rig(1, 2, 48, 80), depth=None)
    out = tiny_model.eval()(batch)
    assert out.depth is out.predicted_depth


def test_lift_fraction_lifts_at_the_heads_own_depth_in_training_only():
    """depth_head.lift_fraction = 1: every training step lifts the Gaussians at the depth head's
    (detached) prediction, as on a camera-only robot; evaluation and fraction 0 use the batch's."""
    batch = rig(1, 2, 48, 80)
    torch.manual_seed(2)
    model = GaussTR(tiny(depth_head=dict(lift_fraction=1.0)))
    out = model.train()(batch)
    torch.testing.assert_close(out.depth, out.predicted_depth.detach())
    assert not out.depth.requires_grad and out.predicted_depth.requires_grad
    assert not torch.allclose(out.depth, batch.depth)
    assert model.eval()(batch).depth is batch.depth
    torch.manual_seed(2)
    assert GaussTR(tiny()).train()(batch).depth is batch.depth
    with pytest.raises(ValueError, match="lift_fraction"):
        tiny(depth_head=dict(lift_fraction=1.5))


def test_camera_ray_channels_give_direction_and_the_ground_depth():
    """A level camera 1.6 m above the ego z = 0 plane: the ray of a cell d pixels below the principal
    point meets the ground at camera-z depth 1.6 fy / d; rays at or above the horizon read 1 (far);
    the direction channels are the unit ray rotated into the ego frame."""
    batch = rig(1, 2, 48, 80)
    k = batch.input_intrinsics().flatten(0, 1)
    pose = batch.cam_to_ego.flatten(0, 1)
    lo, hi = 0.5, 80.0
    rays = camera_ray_channels(k, pose, (12, 20), (48, 80), (lo, hi))
    assert rays.shape == (2, 4, 12, 20)
    torch.testing.assert_close(rays[:, :3].norm(dim=1), torch.ones(2, 12, 20))
    fy, cy = k[0, 1, 1].item(), k[0, 1, 2].item()
    for row in range(12):
        # pixels below the principal point of that row's cell centres (pixel centres at integers)
        d = (row + 0.5) * 4 - 0.5 - cy
        prior = rays[:, 3, row]
        if d <= 0:
            assert torch.equal(prior, torch.ones_like(prior)), row
            continue
        depth = min(max(1.6 * fy / d, lo), hi)
        expect = (math.log(depth) - math.log(lo)) / (math.log(hi) - math.log(lo))
        torch.testing.assert_close(prior, torch.full_like(prior, expect), rtol=1e-5, atol=1e-6)
    # the optical axis of camera 0 (yaw 0) looks along ego +x; its centre column points forward, down
    centre = rays[0, :3, 11, 10]
    assert centre[0] > 0.9 and centre[2] < 0 and abs(centre[1]) < 0.05


@pytest.mark.parametrize(
    ("change", "prefixes", "trained"),
    [
        (dict(camera_rays=True), ("depth_head.ray_proj.",), "ray_proj.weight"),
        (dict(context_blocks=2), ("depth_head.context.",), "context.1.out.weight"),
    ],
)
def test_depth_head_additions_start_as_a_no_op_and_then_learn(change, prefixes, trained):
    """depth_head.camera_rays and context_blocks add zero-initialised parts: with the other weights
    copied from a model without them the depth is identical, and they get gradients from the first
    step (only the new parts' keys are missing)."""
    torch.manual_seed(0)
    plain = GaussTR(tiny()).eval()
    grown = GaussTR(tiny(depth_head=change)).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(prefixes) for k in missing), missing
    assert grown.neutral_init_prefixes() == prefixes
    assert plain.neutral_init_prefixes() == ()
    batch = dataclasses.replace(rig(1, 2, 48, 80), depth=None)
    with torch.no_grad():
        torch.testing.assert_close(grown(batch).predicted_depth, plain(batch).predicted_depth, rtol=0, atol=0)
    grown.train()
    grown(batch).predicted_depth.log().mean().backward()
    assert grown.depth_head.get_parameter(trained).grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context_blocks must be >= 0"):
        tiny(depth_head=dict(context_blocks=-1))


def test_camera_rays_need_the_calibration():
    torch.manual_seed(0)
    rays = GaussTR(tiny(depth_head=dict(camera_rays=True))).eval()
    levels = [torch.zeros(1, rays.config.embed_dim, 12 // 2**i or 1, 20 // 2**i or 1) for i in range(4)]
    with pytest.raises(ValueError, match="camera_rays needs the input intrinsics"):
        rays.depth_head(levels, (48, 80))


def test_the_image_depth_head_reads_each_view_s_image_and_nothing_else():
    """depth_head.image_width builds ImageDepthNet: the camera-only depth is its output on each view's
    image, in the head's range, independent of the other views and of the neck (which it does not
    read); changing a view's image changes that view's depth only; and it trains."""
    from gausstr_core.model.image_depth import ImageDepthNet

    torch.manual_seed(0)
    model = GaussTR(tiny(depth_head=dict(image_width=8))).eval()
    assert isinstance(model.depth_head, ImageDepthNet)
    batch = dataclasses.replace(rig(1, 3, 48, 80), depth=None)
    with torch.no_grad():
        depth = model(batch).predicted_depth
        alone = model.depth_head(batch.images.flatten(0, 1)).reshape(depth.shape)
        model.neck.register_forward_hook(lambda m, i, out: [torch.randn_like(x) for x in out])
        without_neck = model(batch).predicted_depth
    assert depth.shape == (1, 3, 48, 80)
    torch.testing.assert_close(depth, alone, rtol=0, atol=0)
    torch.testing.assert_close(without_neck, depth, rtol=0, atol=0)
    cfg = model.config.depth_head
    assert depth.min() >= cfg.min_depth and depth.max() <= cfg.max_depth
    changed = dataclasses.replace(batch, images=batch.images.clone())
    changed.images[:, 1] = torch.rand_like(changed.images[:, 1])
    with torch.no_grad():
        moved = model(changed).predicted_depth
    assert torch.equal(moved[:, [0, 2]], depth[:, [0, 2]]) and not torch.equal(moved[:, 1], depth[:, 1])
    model.train()
    model(batch).predicted_depth.log().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.depth_head.parameters())


def test_the_image_depth_head_rejects_the_neck_head_s_options():
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny(depth_head=dict(image_width=12))
    with pytest.raises(ValueError, match=r"do not apply with depth_head\.image_width"):
        tiny(depth_head=dict(image_width=8, camera_rays=True))


def test_color_jitter_changes_only_the_image_head_s_training_input():
    """depth_head.color_jitter: jitter_colors keeps shape and range and scales each image by its own
    factors (0 = identity; brightness alone = a plain scale, clamped); in the model it changes the
    U-Net's input in training only, so evaluation (the node) is exactly the model without it."""
    from gausstr_core.model.image_depth import jitter_colors

    seed = 3
    torch.manual_seed(seed)
    images = torch.rand(4, 3, 16, 24)
    gen = lambda: torch.Generator().manual_seed(seed)
    assert torch.equal(jitter_colors(images, 0.0, gen()), images)
    out = jitter_colors(images, 0.4, gen())
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1, f"seed {seed}"
    assert all(not torch.equal(a, b) for a, b in zip(out, images)), f"seed {seed}"
    gray = images.mean(1, keepdim=True).expand_as(images).contiguous()  # saturation leaves gray alone
    factors = 1.0 + 0.4 * (2.0 * torch.rand(4, 3, generator=gen()) - 1.0)
    jittered = jitter_colors(gray, 0.4, gen())
    for i, (b, c, _) in enumerate(factors.tolist()):
        bright = (gray[i] * b).clamp(0, 1)
        mean = bright.mean()  # contrast blends with the image's mean gray level
        expected = (c * bright + (1 - c) * mean).clamp(0, 1)
        # 1e-4: torchvision's gray level weighs r, g, b with 0.2989 + 0.587 + 0.114 = 0.9999
        torch.testing.assert_close(jittered[i], expected, atol=1e-4, rtol=0, msg=f"seed {seed}, image {i}")

    torch.manual_seed(0)
    plain = GaussTR(tiny(depth_head=dict(image_width=8)))
    jittery = GaussTR(tiny(depth_head=dict(image_width=8, color_jitter=0.3)))
    jittery.load_state_dict(plain.state_dict())
    batch = dataclasses.replace(rig(1, 2, 48, 80), depth=None)
    with torch.no_grad():
        plain.eval(), jittery.eval()
        assert torch.equal(jittery(batch).predicted_depth, plain(batch).predicted_depth)
        plain.train(), jittery.train()
        torch.manual_seed(1)
        a = plain.depth_head(batch.images.flatten(0, 1))
        torch.manual_seed(1)
        b = jittery.depth_head(batch.images.flatten(0, 1))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match=r"color_jitter must be in \[0, 1\)"):
        tiny(depth_head=dict(image_width=8, color_jitter=1.0))
    with pytest.raises(ValueError, match="applies to the image U-Net"):
        tiny(depth_head=dict(color_jitter=0.2))


def test_view_attention_keeps_views_independent_and_scene_attention_mixes_them():
    batch = rig(1, 3, 48, 80)
    changed = dataclasses.replace(batch, images=batch.images.clone(), depth=batch.depth.clone())
    changed.images[:, 2] = torch.rand_like(changed.images[:, 2])
    changed.depth[:, 2] = changed.depth[:, 2] * 0.5
    q = 40
    for scope, independent in (("view", True), ("scene", False)):
        torch.manual_seed(6)
        model = GaussTR(tiny(decoder=dict(self_attention=scope))).eval()
        a, b = model(batch).final, model(changed).final
        same = torch.allclose(a.features[:, :q], b.features[:, :q], atol=1e-6)
        assert same == independent, scope


def test_eval_is_deterministic_and_training_draws_new_reference_points(tiny_model):
    batch = rig(1, 2, 48, 80)
    tiny_model.eval()
    torch.testing.assert_close(tiny_model(batch).final.means, tiny_model(batch).final.means)
    tiny_model.train()
    assert not torch.allclose(tiny_model(batch).reference_points[0], tiny_model(batch).reference_points[0])
    tiny_model.eval()


def test_grid_reference_init_covers_the_image():
    torch.manual_seed(0)
    m = GaussTR(tiny(decoder=dict(reference_init="grid"))).train()
    a, b = m(rig(1, 1, 48, 80)), m(rig(1, 1, 48, 80))
    torch.testing.assert_close(a.reference_points[0], b.reference_points[0])


def test_reference_sine_encoding_matches_the_official_layout():
    """(y block, x block), each sin/cos interleaved over frequencies 10000^(2 floor(i/2) / F)."""
    coords = torch.rand(3, 5, 2)
    f = 8
    got = sine_encoding(coords, f)
    dim_t = 10000 ** (2 * (torch.arange(f) // 2) / f)
    blocks = []
    for axis in (1, 0):
        a = coords[..., axis, None] * 2 * math.pi / dim_t
        blocks.append(torch.stack([a[..., 0::2].sin(), a[..., 1::2].cos()], dim=-1).flatten(-2))
    torch.testing.assert_close(got, torch.cat(blocks, dim=-1))
    assert sine_encoding(torch.rand(4, 3), 6).shape == (4, 18)


def test_bf16_autocast_forward_is_finite(tiny_model):
    batch = rig(1, 2, 48, 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model.eval()(batch)
    g = out.final
    for t in (g.means, g.scales, g.opacities, g.features):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


def test_paper_presets_build_with_official_sizes():
    cfg = preset_model("featup")
    model = GaussTR(cfg)
    assert model.backbone is None and model.query_embed.weight.shape == (300, 256)
    assert model.heads[0].feature.layers[1].weight.shape == (512, 1024)
    assert model.heads[0].segment.layers[1].weight.shape == (26, 512)
    assert len(model.decoder.layers) == 3 and model.decoder.layers[0].ffn.fc1.weight.shape == (2048, 256)
    talk = preset_model("talk2dino")
    talk.backbone = dataclasses.replace(talk.backbone, random_init=True)
    m2 = GaussTR(talk)
    assert sum(p.numel() for p in m2.backbone.parameters()) > 80e6  # ViT-B
    assert m2.heads[0].feature.layers[1].weight.shape == (768, 1024)
