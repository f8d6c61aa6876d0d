"""Synthetic foundation-model targets: features from name embeddings, depth from true depth."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gausstr_core.data.depth import FAR_DEPTH
from gausstr_core.data.synthetic import SyntheticConfig, generate_sample, name_strings, random_embeddings
from gausstr_core.data.synthetic.targets import (
    DepthTargetConfig,
    FeatureTargetConfig,
    _gaussian_blur,
    depth_targets,
    feature_targets,
    sample_generator,
    segmentation_targets,
)

K = len(name_strings())


def test_features_without_blur_or_noise_are_patch_means_of_pixel_embeddings():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, K, (2, 32, 48), generator=g)
    emb = random_embeddings(K, 10, seed=1)
    feats = feature_targets(ids, emb, FeatureTargetConfig(patch_size=8, blur_sigma=0, noise_std=0))
    assert feats.shape == (2, 10, 4, 6) and feats.dtype == torch.float32
    # Reference: the mean of the per-pixel embeddings in each 8 x 8 patch.
    pixels = emb[ids].permute(0, 3, 1, 2)  # (V, D, H, W)
    reference = pixels.unfold(2, 8, 8).unfold(3, 8, 8).mean((-1, -2))
    torch.testing.assert_close(feats, reference, rtol=1e-5, atol=1e-6)


def test_feature_size_may_be_any_grid():
    ids = torch.zeros(1, 30, 50, dtype=torch.long)
    feats = feature_targets(
        ids, random_embeddings(K, 4), FeatureTargetConfig(feature_size=(7, 11), noise_std=0)
    )
    assert feats.shape == (1, 4, 7, 11)
    torch.testing.assert_close(feats[0, :, 3, 5], random_embeddings(K, 4)[0])


def test_blur_matches_a_direct_convolution():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 13, generator=g)
    sigma = 0.8
    r = math.ceil(3 * sigma)
    k1 = torch.exp(-0.5 * (torch.arange(-r, r + 1.0) / sigma) ** 2)
    k2 = torch.outer(k1, k1) / k1.sum() ** 2
    padded = F.pad(x.reshape(6, 1, 9, 13), (r, r, r, r), mode="replicate")
    reference = F.conv2d(padded, k2[None, None]).reshape(2, 3, 9, 13)
    torch.testing.assert_close(_gaussian_blur(x, sigma), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("source", ["random", "tiny_text_encoder"])
def test_nearest_text_embedding_recovers_the_pixel_class(source):
    config = SyntheticConfig(image_size=(96, 160))
    if source == "random":
        emb = random_embeddings(K, 64, seed=3)
    else:  # the project's CPU text tower (random weights, 64-d): the embeddings the tiny preset uses
        from gausstr_core.data.synthetic import name_embeddings
        from gausstr_core.presets import tiny_text

        emb = name_embeddings(tiny_text(0))
    sample = generate_sample(0, 0, 0, config, emb, with_labels=False)
    feats = sample.features  # (V, D, h, w), default blur and noise
    fractions = F.adaptive_avg_pool2d(
        F.one_hot(sample.views.name_id.long(), K).permute(0, 3, 1, 2).float(), feats.shape[-2:]
    )
    share, dominant = fractions.max(1)  # (V, h, w)
    nearest = torch.einsum("vdhw,kd->vkhw", F.normalize(feats, dim=1), emb).argmax(1)
    pure = share > 0.75
    assert int(pure.sum()) > 200
    accuracy = float((nearest[pure] == dominant[pure]).float().mean())
    assert accuracy > 0.9, accuracy


def test_features_are_deterministic_per_generator_and_noisy():
    ids = torch.randint(0, K, (1, 32, 32), generator=torch.Generator().manual_seed(0))
    emb = random_embeddings(K, 16)
    a = feature_targets(ids, emb, generator=sample_generator(0, 1, 2, 1))
    b = feature_targets(ids, emb, generator=sample_generator(0, 1, 2, 1))
    c = feature_targets(ids, emb, generator=sample_generator(0, 1, 3, 1))
    clean = feature_targets(ids, emb, FeatureTargetConfig(noise_std=0))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = (a - clean).norm(dim=1).mean()
    assert 0.1 < float(noise) < 0.3  # noise_std 0.2 of a unit embedding
    assert feature_targets(ids, emb, FeatureTargetConfig(dtype="float16")).dtype == torch.float16


def test_feature_target_errors_are_clear():
    emb = random_embeddings(K, 8)
    with pytest.raises(ValueError, match=r"name ids must be in \[0, "):
        feature_targets(torch.full((1, 16, 16), K), emb)
    with pytest.raises(ValueError, match="must be \\(V, H, W\\)"):
        feature_targets(torch.zeros(16, 16, dtype=torch.long), emb)
    with pytest.raises(ValueError, match="smaller than one"):
        feature_targets(torch.zeros(1, 8, 8, dtype=torch.long), emb)
    with pytest.raises(ValueError, match="dtype"):
        FeatureTargetConfig(dtype="int8")


@pytest.mark.parametrize(("far_field", "far"), [("far", FAR_DEPTH), ("invalid", 0.0)])
def test_depth_target_is_the_true_depth_without_noise_and_bias(far_field, far):
    depth = torch.tensor([[[0.0, 5.0, 20.0, 90.0, float("inf")]]])
    cfg = DepthTargetConfig(
        scale_bias=1.0,
        scale_jitter=0.0,
        smooth_noise_std=0.0,
        pixel_noise_std=0.0,
        max_depth=80.0,
        far_field=far_field,
    )
    out = depth_targets(depth, cfg)
    # sky (0 / inf in the true depth) and beyond max_depth: the far depth, or 0 in the ablation
    torch.testing.assert_close(out, torch.tensor([[[far, 5.0, 20.0, far, far]]]))


def test_depth_target_far_field_settings_are_checked():
    with pytest.raises(ValueError, match="far_field"):
        DepthTargetConfig(far_field="sky")
    with pytest.raises(ValueError, match="far_depth"):
        DepthTargetConfig(max_depth=80.0, far_depth=50.0)


def test_sky_pixels_reach_the_depth_loss_as_the_beyond_limit_target():
    """The official "render nothing here" target: a sky pixel's far depth becomes the loss' 1e-3 m
    target, so Gaussians rendered over the sky are penalised; the old (invalid) target hid them."""
    from types import SimpleNamespace

    from gausstr_core.batch import CameraBatch
    from gausstr_core.gaussians import Gaussians
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.losses.gausstr import GaussTRLoss

    h, w = 8, 12
    true_depth = torch.full((1, h, w), 10.0)
    true_depth[:, :3] = 0.0  # the top rows are sky
    cfg = DepthTargetConfig(scale_bias=1.0, scale_jitter=0.0, smooth_noise_std=0.0, pixel_noise_std=0.0)
    k = torch.tensor([[10.0, 0, w / 2 - 0.5], [0, 10.0, h / 2 - 0.5], [0, 0, 1]])
    # One big Gaussian 10 m ahead, covering the whole image (sky rows included).
    g = Gaussians(
        means=torch.tensor([[[0.0, 0.0, 10.0]]]),
        scales=torch.full((1, 1, 3), 20.0),
        rotations=torch.tensor([[[1.0, 0, 0, 0]]]),
        opacities=torch.tensor([[0.99]]),
        features=torch.zeros(1, 1, 0),
    )
    output = SimpleNamespace(
        gaussians=[g], target_features=None, predicted_depth=None, segment_heads=None, colors=None
    )
    loss = GaussTRLoss(LossConfig(render_backend="torch"))
    values = {}
    for mode in ("far", "invalid"):
        target = depth_targets(true_depth, dataclasses.replace(cfg, far_field=mode))
        batch = CameraBatch(
            images=torch.rand(1, 1, 3, h, w),
            intrinsics=k[None, None],
            cam_to_ego=torch.eye(4)[None, None],
            image_aug=torch.eye(3)[None, None],
            depth=target[None],
        )
        out = loss(output, batch)
        sky = out.target_depth[0, 0, :3]
        values[mode] = float(out.terms["layer0/depth"])
        if mode == "far":
            assert torch.all(sky == LossConfig().beyond_limit_depth), sky
        else:
            assert torch.all(sky == 0)  # invalid: masked out of the loss
    # Rendering 10 m over the sky costs something only with the far-field target.
    assert values["far"] > values["invalid"] + 0.1, values


def test_depth_target_has_the_configured_bias_and_noise():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(6, 60, 100, generator=g) * 40 + 2
    depth[:, :10] = 0  # sky
    cfg = DepthTargetConfig(scale_bias=1.1, scale_jitter=0.0, smooth_noise_std=0.05, pixel_noise_std=0.02)
    out = depth_targets(depth, cfg, sample_generator(1, 0, 0, 0))
    valid = depth > 0
    assert (out[~valid] == FAR_DEPTH).all() and (out[valid] > 0).all()
    log_ratio = torch.log(out[valid] / depth[valid])
    assert abs(float(log_ratio.median()) - math.log(1.1)) < 0.02
    assert 0.03 < float(log_ratio.std()) < 0.08  # sqrt(0.05^2 + 0.02^2) = 0.054
    again = depth_targets(depth, cfg, sample_generator(1, 0, 0, 0))
    assert torch.equal(out, again)


def test_synthetic_samples_are_deterministic():
    config = SyntheticConfig(image_size=(32, 56), visibility_spacing=(3.0, 3.0))
    emb = random_embeddings(K, 8)
    a = generate_sample(4, 2, 0, config, emb)
    b = generate_sample(4, 2, 0, config, emb)
    for name in ("rgb", "depth", "occ_class", "name_id"):
        assert torch.equal(getattr(a.views, name), getattr(b.views, name))
    assert torch.equal(a.depth_target, b.depth_target) and torch.equal(a.features, b.features)
    for name in ("semantics", "mask_camera", "mask_lidar"):
        assert torch.equal(getattr(a.labels, name), getattr(b.labels, name))
    c = generate_sample(4, 3, 0, config, emb, with_labels=False)
    assert c.labels is None and not torch.equal(a.views.rgb, c.views.rgb)


def test_segmentation_targets_are_the_surface_class_plus_one_and_zero_for_the_sky():
    from gausstr_core.data.synthetic.vocabulary import SKY_CLASS

    occ = torch.tensor([[[0, 4, SKY_CLASS], [16, SKY_CLASS, 10]]], dtype=torch.uint8)
    labels = segmentation_targets(occ)
    assert labels.dtype == torch.uint8
    assert labels.tolist() == [[[1, 5, 0], [17, 0, 11]]]
    sample = generate_sample(
        3, 1, 0, SyntheticConfig(image_size=(32, 56), visibility_spacing=(3.0, 3.0)), None
    )
    labels = segmentation_targets(sample.views.occ_class)
    sky = sample.views.occ_class == SKY_CLASS
    assert sky.any() and (~sky).any()
    assert bool((labels[sky] == 0).all())
    assert torch.equal(labels[~sky].long(), sample.views.occ_class[~sky].long() + 1)
    with pytest.raises(ValueError, match="occ_class must be"):
        segmentation_targets(occ[0])
