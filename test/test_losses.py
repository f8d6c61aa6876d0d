"""Training losses: hand-computed SILog, L1 and PCA-cosine values, depth-limit handling, terms per layer,
gradients, and the real tiny model end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.losses.config import LossConfig
from gausstr_core.losses.gausstr import (
    GaussTRLoss,
    LossOutput,
    cosine_loss,
    depth_loss,
    masked_l1,
    pca_basis,
    silog_loss,
)
from gausstr_core.model.gausstr import GaussTROutput

torch.set_num_threads(1)
LOG2 = math.log(2.0)


def test_silog_hand_computed():
    # d = log target - log pred = (log 2, 0): mean d^2 = log2^2 / 2, mean d = log2 / 2.
    pred = torch.tensor([[1.0, 2.0, 7.0]])
    target = torch.tensor([[2.0, 2.0, 0.0]])  # the third pixel is invalid
    expected = math.sqrt(LOG2**2 / 2 - 0.5 * (LOG2 / 2) ** 2)  # = log 2 * sqrt(3/8)
    assert silog_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(LOG2 * math.sqrt(3 / 8))
    # Per-image values are averaged over images; a perfect image contributes 0.
    two = silog_loss(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[2.0, 2.0], [3.0, 4.0]]))
    assert two.item() == pytest.approx(expected / 2, rel=1e-6)
    # Predictions below eps are clamped, not log(0).
    assert torch.isfinite(silog_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])))
    # lambda = 1 makes it scale invariant.
    t = torch.rand(1, 50) + 0.5
    assert silog_loss(3 * t, t, lam=1.0).item() == pytest.approx(0.0, abs=1e-3)


def test_silog_gradient_is_finite_for_perfect_and_empty_images():
    pred = torch.tensor([[2.0, 3.0], [1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[2.0, 3.0], [0.0, 0.0]])
    loss = silog_loss(pred, target)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(pred.grad).all()


def test_l1_and_combined_depth_loss_hand_computed():
    pred = torch.tensor([[1.0, 2.0, 5.0, 9.0]])
    target = torch.tensor([[2.0, 2.0, 3.0, 0.0]])
    assert masked_l1(pred, target).item() == pytest.approx((1 + 0 + 2) / 3)
    expected = silog_loss(pred, target).item() + 0.2 * 1.0
    assert depth_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert masked_l1(pred, torch.zeros_like(target)).item() == 0.0


def test_pca_basis_finds_the_feature_subspace():
    g = torch.Generator().manual_seed(0)
    # Features varying only in the (x, y) plane of 3-D space, with an offset along z.
    xy = torch.randn(500, 2, generator=g) * torch.tensor([3.0, 1.0])
    feats = torch.cat([xy, torch.full((500, 1), 4.0)], dim=1)
    basis = pca_basis(feats, 2)
    assert basis.shape == (3, 2)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2), atol=1e-6, rtol=0)
    assert basis[2].abs().max() < 1e-6  # no z component: the offset is removed by centring
    assert abs(basis[0, 0]) == pytest.approx(1.0, abs=1e-4)  # first component = the larger variance


def test_cosine_loss_hand_computed():
    rendered = torch.tensor([1.0, 1.0, 5.0]).reshape(1, 1, 3, 1, 1)
    target = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1, 1)
    assert cosine_loss(rendered, target).item() == pytest.approx(1 - 1 / math.sqrt(27), rel=1e-6)
    with pytest.raises(ValueError, match="differ"):
        cosine_loss(rendered, target[:, :, :2])


def _camera_batch(h=8, w=12, c=3, th=2, tw=3, depth=None, features=None, v=1):
    """V cameras at the origin looking along ego z (identity cam_to_ego), f = w."""
    k = torch.tensor([[float(w), 0.0, (w - 1) / 2], [0.0, float(w), (h - 1) / 2], [0.0, 0.0, 1.0]])
    return CameraBatch(
        images=torch.rand(1, v, 3, h, w),
        intrinsics=k.expand(1, v, 3, 3).clone(),
        cam_to_ego=torch.eye(4).expand(1, v, 4, 4).clone(),
        image_aug=torch.eye(3).expand(1, v, 3, 3).clone(),
        depth=depth,
        features=features if features is not None else torch.randn(1, v, c, th, tw),
    )


def _one_big_gaussian(feature, z=10.0, opacity=0.9, layers=1, requires_grad=False):
    """One Gaussian straight ahead, so large it covers every pixel (its rendered feature direction
    is the same everywhere), repeated as the output of ``layers`` decoder layers."""
    feature = torch.as_tensor(feature, dtype=torch.float32)
    params = [
        torch.tensor([[[0.0, 0.0, z]]]),
        torch.full((1, 1, 3), 30.0),
        torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]),
        torch.tensor([[opacity]]),
        feature.reshape(1, 1, -1),
    ]
    params = [p.clone().requires_grad_(requires_grad) for p in params]
    g = Gaussians(*params)
    return _output([g] * layers), params


def _output(gaussians, target_features=None, predicted_depth=None, segment_heads=None):
    b = gaussians[0].batch_size
    return GaussTROutput(
        gaussians=gaussians,
        reference_points=[torch.zeros(b, 1, 1, 2)] * len(gaussians),
        depth=torch.zeros(b, 1, 1, 1),
        predicted_depth=predicted_depth,
        target_features=target_features,
        segment_heads=segment_heads,
    )


def test_feature_loss_end_to_end_without_and_with_pca():
    # Without reduction (q = C: the basis is a rotation, cosines are unchanged): constant target.
    batch = _camera_batch()
    target = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 3).clone()
    out, _ = _one_big_gaussian([1.0, 1.0, 5.0])
    out.target_features = target
    for q in (None, 3):
        result = GaussTRLoss(LossConfig(pca_dims=q))(out, batch)
        assert isinstance(result, LossOutput)
        assert result.rendered.alpha.min() > 0.5
        expected = 5 * (1 - 1 / math.sqrt(27))
        assert result.terms["layer0/feature"].item() == pytest.approx(expected, rel=1e-5)

    # With PCA to 2 dims: targets in the x-y plane, so the rendered (1, 1, 5) counts as (1, 1).
    g = torch.Generator().manual_seed(1)
    target = torch.cat([torch.randn(1, 1, 2, 2, 3, generator=g) + 2, torch.full((1, 1, 1, 2, 3), 4.0)], 2)
    out.target_features = target
    result = GaussTRLoss(LossConfig(pca_dims=2))(out, batch)
    up = F.interpolate(target[0], size=(8, 12), mode="bilinear", align_corners=False)[0]  # (3, 8, 12)
    cos = (up[0] + up[1]) / (math.sqrt(2) * up[:2].norm(dim=0))
    expected = 5 * (1 - cos).mean().item()
    assert result.terms["layer0/feature"].item() == pytest.approx(expected, rel=1e-4)
    full = GaussTRLoss(LossConfig(pca_dims=None))(out, batch).terms["layer0/feature"].item()
    assert abs(full - expected) > 0.05  # the reduction matters
    assert result.target_features.shape == (1, 1, 2, 8, 12)


def test_depth_targets_beyond_the_limit_become_near_zero_and_invalid_pixels_are_ignored():
    depth = torch.full((1, 1, 8, 12), 20.0)
    depth[..., 0, 0] = 60.0  # beyond 51.2
    depth[..., 0, 1] = 0.0  # invalid
    depth[..., 0, 2] = float("nan")  # invalid
    depth[..., 0, 3] = float("inf")  # invalid
    batch = _camera_batch(depth=depth)
    out, _ = _one_big_gaussian([1.0, 0.0, 0.0])
    out.target_features = None
    result = GaussTRLoss()(out, batch)
    t = result.target_depth
    assert t[0, 0, 0, 0].item() == pytest.approx(1e-3)
    assert t[0, 0, 0, 1] == 0 and t[0, 0, 0, 2] == 0 and t[0, 0, 0, 3] == 0
    assert "layer0/feature" not in result.terms
    rendered = result.rendered.depth
    expected = depth_loss(rendered.flatten(0, 1), t.flatten(0, 1)).item()
    assert result.terms["layer0/depth"].item() == pytest.approx(expected, rel=1e-6)
    # By hand: the rendered depth is alpha * z with alpha ~0.9 everywhere.
    assert rendered[0, 0, 4, 6].item() == pytest.approx(0.9 * 10.0, rel=1e-3)
    assert result.terms["metric/depth_mae"].item() == pytest.approx(masked_l1(rendered, t).item())
    assert result.terms["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_terms_per_layer_sum_to_the_total_and_gradients_reach_the_gaussians():
    depth = torch.rand(1, 1, 8, 12) * 30 + 2
    batch = _camera_batch(depth=depth)
    out, params = _one_big_gaussian([0.3, -1.0, 2.0], layers=3, requires_grad=True)
    out.target_features = torch.randn(1, 1, 3, 2, 3)
    out.predicted_depth = (depth + torch.randn_like(depth)).requires_grad_(True)
    result = GaussTRLoss(LossConfig(pca_dims=2))(out, batch)
    names = {f"layer{i}/{t}" for i in range(3) for t in ("feature", "depth")} | {"depth_head"}
    assert names <= set(result.terms)
    total = sum(v for k, v in result.terms.items() if k in names)
    assert result.terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    result.terms["loss"].backward()
    for name, p in zip(("means", "scales", "rotations", "opacities", "features"), params):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for p in (params[0], params[3], params[4]):  # means, opacities, features
        assert p.grad.abs().sum() > 0
    assert out.predicted_depth.grad.abs().sum() > 0


def test_segmentation_term_uses_the_model_heads_and_ignores_label_zero():
    head = torch.nn.Linear(2, 4)
    labels = torch.randint(1, 4, (1, 1, 8, 12))
    labels[..., :4] = 0
    out, _ = _one_big_gaussian([1.0, 2.0, 0.5])
    out.target_features = torch.randn(1, 1, 3, 2, 3)
    out.segment_heads = [head]
    loss = GaussTRLoss(LossConfig(pca_dims=2))
    result = loss(out, _camera_batch(), segmentation=labels)
    logits = head(result.rendered.features[0, 0].permute(1, 2, 0))  # (8, 12, 4)
    expected = F.cross_entropy(logits.reshape(-1, 4), labels.flatten(), ignore_index=0)
    assert result.terms["layer0/segmentation"].item() == pytest.approx(expected.item(), rel=1e-5)
    none_labelled = loss(out, _camera_batch(), segmentation=torch.zeros_like(labels))
    assert none_labelled.terms["layer0/segmentation"].item() == 0.0
    with pytest.raises(ValueError, match="segmentation labels must be"):
        loss(out, _camera_batch(), segmentation=labels[..., :5])


def test_render_scale_renders_smaller_images():
    depth = torch.full((1, 1, 8, 12), 9.0)
    out, _ = _one_big_gaussian([1.0, 0.0, 0.0])
    out.target_features = torch.randn(1, 1, 3, 2, 3)
    result = GaussTRLoss(LossConfig(pca_dims=2, render_scale=0.5))(out, _camera_batch(depth=depth))
    assert result.rendered.features.shape == (1, 1, 2, 4, 6)
    assert result.target_depth.shape == (1, 1, 4, 6) and result.target_features.shape == (1, 1, 2, 4, 6)
    # The intrinsics are scaled with the image: the big Gaussian still sits at the image centre.
    assert result.rendered.alpha[0, 0].argmax().item() in (1 * 6 + 2, 1 * 6 + 3, 2 * 6 + 2, 2 * 6 + 3)


def test_config_validation():
    for bad in (
        dict(pca_dims=0),
        dict(render_scale=0),
        dict(render_backend="vulkan"),
        dict(beyond_limit_depth=60.0),
        dict(feature_weight=-1),
    ):
        with pytest.raises(ValueError):
            LossConfig(**bad)
    out, _ = _one_big_gaussian([1.0, 0.0, 0.0])
    out.target_features = torch.randn(1, 1, 3, 2, 3)
    with pytest.raises(ValueError, match="pca_dims"):
        GaussTRLoss(LossConfig(pca_dims=5))(out, _camera_batch())


def test_real_tiny_model_end_to_end_with_gradients_under_autocast():
    from gausstr_core.data.transforms import resize_matrix
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset_model

    torch.manual_seed(0)
    cfg = preset_model("tiny")
    model = GaussTR(cfg)
    h, w = cfg.image_size
    v = 2
    k = torch.tensor([[0.6 * w, 0.0, w / 2], [0.0, 0.6 * w, h / 2], [0.0, 0.0, 1.0]])
    poses = torch.eye(4).repeat(v, 1, 1)
    poses[1, :3, :3] = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])  # looking backwards
    batch = CameraBatch(
        images=torch.rand(1, v, 3, h, w),
        intrinsics=k.expand(1, v, 3, 3).clone(),
        cam_to_ego=poses[None],
        image_aug=resize_matrix((h, w), (h, w)).expand(1, v, 3, 3).clone(),
        depth=torch.rand(1, v, h, w) * 40 + 2,
        features=torch.randn(1, v, cfg.head.feature_dim, h // 8, w // 8),
    )
    loss_fn = GaussTRLoss(LossConfig(pca_dims=16, render_scale=0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(batch)
        result = loss_fn(output, batch)
    loss = result.terms["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = {"layer0/feature", "layer1/feature", "layer0/depth", "layer1/depth", "depth_head"}
    assert expected <= set(result.terms)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.gpu
def test_gsplat_and_reference_losses_agree_on_the_gpu():
    """The loss through gsplat matches the loss through the reference renderer (values to 1e-3,
    gradients of every model parameter in direction), on the real tiny model."""
    from gausstr_core.data.transforms import resize_matrix
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset_model
    from gausstr_core.render import gsplat_available

    if not gsplat_available():
        pytest.skip("gsplat is not installed")
    torch.manual_seed(0)
    cfg = preset_model("tiny")
    model = GaussTR(cfg).cuda()
    h, w = cfg.image_size
    k = torch.tensor([[0.6 * w, 0.0, w / 2], [0.0, 0.6 * w, h / 2], [0.0, 0.0, 1.0]])
    batch = CameraBatch(
        images=torch.rand(2, 1, 3, h, w),
        intrinsics=k.expand(2, 1, 3, 3).clone(),
        cam_to_ego=torch.eye(4).expand(2, 1, 4, 4).clone(),
        image_aug=resize_matrix((h, w), (h, w)).expand(2, 1, 3, 3).clone(),
        depth=torch.rand(2, 1, h, w) * 40 + 2,
        features=torch.randn(2, 1, cfg.head.feature_dim, h // 8, w // 8),
    ).to("cuda")
    output = model(batch)
    results, grads = {}, {}
    for backend in ("torch", "gsplat"):
        torch.manual_seed(1)  # the same randomized PCA basis
        model.zero_grad()
        result = GaussTRLoss(LossConfig(pca_dims=16, render_backend=backend))(output, batch)
        result.terms["loss"].backward(retain_graph=True)
        results[backend] = {k: v.item() for k, v in result.terms.items()}
        grads[backend] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for name, ref in results["torch"].items():
        assert results["gsplat"][name] == pytest.approx(ref, rel=1e-3, abs=1e-6), name
    cos = F.cosine_similarity(grads["gsplat"], grads["torch"], dim=0).item()
    assert cos > 0.99


def _scattered_gaussians(n=12, c=3, seed=0, requires_grad=False):
    """n smallish Gaussians spread over the view of ``_camera_batch`` (f = w, z in [5, 15])."""
    g = torch.Generator().manual_seed(seed)
    z = 5 + 10 * torch.rand(1, n, 1, generator=g)
    xy = (torch.rand(1, n, 2, generator=g) - 0.5) * z * torch.tensor([0.9, 0.6])
    params = [
        torch.cat([xy, z], -1),
        0.3 + torch.rand(1, n, 3, generator=g),
        F.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        0.3 + 0.6 * torch.rand(1, n, generator=g),
        torch.randn(1, n, c, generator=g),
    ]
    params = [p.clone().requires_grad_(requires_grad) for p in params]
    return Gaussians(*params), params


def test_centered_feature_term_equals_the_cosine_of_the_render_of_centred_features():
    """Reference: render the Gaussian features minus the batch's mean target explicitly and take the
    cosine with the centred, upsampled targets. The loss uses F - alpha mu of the one render."""
    from gausstr_core.render import render_gaussians

    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        gaussians, _ = _scattered_gaussians(seed=seed)
        offset = torch.tensor([2.0, -1.0, 0.5]).view(1, 1, 3, 1, 1)
        targets = torch.randn(1, 1, 3, 2, 3, generator=g) + offset
        out = _output([gaussians])
        out.target_features = targets
        batch = _camera_batch()
        mu = targets.mean(dim=(0, 1, 3, 4))
        ref_render = render_gaussians(
            gaussians.with_features(gaussians.features - mu),
            batch.input_intrinsics(),
            batch.cam_to_ego,
            (8, 12),
            backend="torch",
        )
        up = F.interpolate(targets[0], size=(8, 12), mode="bilinear", align_corners=False)[None]
        expected = 2.0 * cosine_loss(ref_render.features, up - mu.view(1, 1, 3, 1, 1)).item()
        # q = C: the PCA basis is a rotation, so the centred cosine is the same as without PCA.
        for q in (None, 3):
            config = LossConfig(pca_dims=q, feature_weight=0.0, centered_feature_weight=2.0)
            result = GaussTRLoss(config)(out, batch)
            assert "layer0/feature" not in result.terms
            assert result.terms["layer0/feature_centered"].item() == pytest.approx(expected, rel=1e-4)
            assert result.terms["loss"].item() == pytest.approx(expected, rel=1e-4)


def test_centered_term_sees_the_class_residual_that_the_official_term_barely_sees():
    """Two classes whose embeddings share a large common part (cosine 0.6, like the tiny text
    prototypes): a model that renders their mean everywhere is almost perfect for the official
    cosine, but as wrong as can be for the centred one; the exact targets are perfect for both."""
    c = 3
    # cos(e0, e1) = cos^2 a - sin^2 a = 0.8 - 0.2 = 0.6
    e0 = torch.tensor([math.sqrt(0.8), math.sqrt(0.2), 0.0])
    e1 = torch.tensor([math.sqrt(0.8), -math.sqrt(0.2), 0.0])
    assert F.cosine_similarity(e0, e1, dim=0).item() == pytest.approx(0.6, abs=1e-6)
    # Left half of the view class 0, right half class 1 (at patch and pixel resolution).
    targets = torch.stack([e0, e0, e1, e1], -1).reshape(1, 1, c, 1, 4).expand(1, 1, c, 2, 4).clone()
    batch = _camera_batch(h=8, w=16, th=2, tw=4)
    cfg = LossConfig(pca_dims=None, feature_weight=1.0, centered_feature_weight=1.0)

    def loss_of(left, right):
        # Two big Gaussians, one per half, rendering their feature on their half.
        means = torch.tensor([[[-4.0, 0.0, 10.0], [4.0, 0.0, 10.0]]])
        scales = torch.tensor([[[1.2, 30.0, 1.0], [1.2, 30.0, 1.0]]])
        rot = torch.tensor([[[1.0, 0.0, 0.0, 0.0]] * 2])
        gs = Gaussians(means, scales, rot, torch.tensor([[0.99, 0.99]]), torch.stack([left, right])[None])
        out = _output([gs])
        out.target_features = targets
        return GaussTRLoss(cfg)(out, batch).terms

    mean = (e0 + e1) / 2
    blurred = loss_of(mean, mean)
    exact = loss_of(e0, e1)
    assert blurred["layer0/feature"].item() < 0.2
    assert blurred["layer0/feature_centered"].item() > 0.6
    assert exact["layer0/feature_centered"].item() < 0.5 * blurred["layer0/feature_centered"].item()
    assert exact["layer0/feature"].item() < blurred["layer0/feature"].item()


def test_centered_term_is_off_in_the_paper_presets_and_validated():
    from gausstr_core.presets import featup_loss, talk2dino_loss

    assert talk2dino_loss().centered_feature_weight == 0 and featup_loss().centered_feature_weight == 0
    out, _ = _one_big_gaussian([1.0, 0.0, 0.0])
    out.target_features = torch.randn(1, 1, 3, 2, 3)
    terms = GaussTRLoss(LossConfig(pca_dims=2))(out, _camera_batch()).terms
    assert "layer0/feature_centered" not in terms and "layer0/feature" in terms
    with pytest.raises(ValueError, match="centered_feature_weight"):
        LossConfig(centered_feature_weight=-1.0)


def test_paper_presets_render_the_loss_at_half_the_input_and_the_official_scale_is_one_flag_away():
    """The paper presets train at half the input resolution (docs/results.md: better maps per minute);
    the official full-resolution render stays the dataclass default and a ``--set`` away."""
    from gausstr_core.config import GaussTRConfig, from_dict, to_dict
    from gausstr_core.presets import PAPER_RENDER_SCALE, preset
    from gausstr_core.train.config import apply_overrides

    assert PAPER_RENDER_SCALE == 0.5
    for name in ("talk2dino", "featup"):
        cfg = preset(name)
        assert cfg.loss.render_scale == 0.5, (name, cfg.loss.render_scale)
        official = from_dict(GaussTRConfig, apply_overrides(to_dict(cfg), ["loss.render_scale=1"], "test"))
        assert official.loss.render_scale == 1.0, name
    assert LossConfig().render_scale == 1.0


def test_a_late_centered_term_is_off_before_its_start_and_the_same_term_after():
    out, _ = _one_big_gaussian([1.0, 0.0, 0.0])
    out.target_features = torch.randn(1, 1, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    batch = _camera_batch()
    late = GaussTRLoss(LossConfig(pca_dims=2, centered_feature_weight=5.0, centered_feature_start=0.4))
    always = GaussTRLoss(LossConfig(pca_dims=2, centered_feature_weight=5.0))
    plain = GaussTRLoss(LossConfig(pca_dims=2))

    def terms_of(loss, **progress):
        torch.manual_seed(0)  # the PCA basis is drawn (torch.pca_lowrank): the same draw each call
        return loss(out, batch, **progress).terms

    before = terms_of(late, progress=0.39)
    assert "layer0/feature_centered" not in before
    assert before["loss"].item() == pytest.approx(terms_of(plain)["loss"].item(), rel=1e-6)
    after = terms_of(late, progress=0.4)
    reference = terms_of(always, progress=0.0)  # start 0: on from the first step
    assert after["layer0/feature_centered"].item() > 0
    assert after["layer0/feature_centered"].item() == pytest.approx(
        reference["layer0/feature_centered"].item(), rel=1e-6
    )
    # outside a training run (no progress given) every term is on
    assert "layer0/feature_centered" in terms_of(late)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="centered_feature_start"):
            LossConfig(centered_feature_start=bad)


def test_a_geometry_detached_centered_term_has_the_same_value_and_moves_only_the_features():
    """Detached, the centred term is computed on a second render whose geometry is detached: the
    same value, the same feature gradient, and no gradient on means, scales, rotations, opacities."""
    for seed in range(3):
        g = torch.Generator().manual_seed(200 + seed)
        targets = torch.randn(1, 1, 3, 2, 3, generator=g) + torch.tensor([2.0, -1.0, 0.5]).view(1, 1, 3, 1, 1)
        batch = _camera_batch()
        results = {}
        for detached in (False, True):
            gaussians, params = _scattered_gaussians(seed=seed, requires_grad=True)
            out = _output([gaussians])
            out.target_features = targets
            cfg = LossConfig(
                pca_dims=None,
                feature_weight=0.0,
                depth_weight=0.0,
                centered_feature_weight=2.0,
                centered_feature_geometry_detached=detached,
                render_backend="torch",
            )
            loss = GaussTRLoss(cfg)(out, batch).terms["loss"]
            loss.backward()
            results[detached] = (loss.item(), [p.grad for p in params])
        (value, grads), (value_d, grads_d) = results[False], results[True]
        assert value_d == pytest.approx(value, rel=1e-6), f"seed {seed}"
        torch.testing.assert_close(grads_d[4], grads[4], rtol=1e-5, atol=1e-7, msg=f"seed {seed}")
        assert grads[0].abs().sum() > 0 and grads[3].abs().sum() > 0, f"seed {seed}"
        for name, grad in zip(("means", "scales", "rotations", "opacities"), grads_d[:4]):
            assert grad is None or grad.abs().sum() == 0, f"seed {seed}: {name} got a gradient"


def test_tiled_rendering_gives_the_same_loss_and_gradients():
    depth = torch.rand(1, 1, 8, 12) * 10 + 5
    batch = _camera_batch(depth=depth)
    targets = torch.randn(1, 1, 3, 2, 3)
    values, grads = {}, {}
    for tile in (None, 4):
        gaussians, params = _scattered_gaussians(requires_grad=True)
        out = _output([gaussians])
        out.target_features = targets
        cfg = LossConfig(pca_dims=None, centered_feature_weight=1.0, render_tile_size=tile)
        terms = GaussTRLoss(cfg)(out, batch).terms
        terms["loss"].backward()
        values[tile] = {k: v.item() for k, v in terms.items()}
        grads[tile] = torch.cat([p.grad.flatten() for p in params])
    for name, ref in values[None].items():
        assert values[4][name] == pytest.approx(ref, rel=1e-5, abs=1e-7), name
    torch.testing.assert_close(grads[4], grads[None], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="render_tile_size"):
        LossConfig(render_tile_size=0)


def test_the_flatten_term_is_the_weighted_mean_smallest_axis_and_only_thins_that_axis():
    """loss.flatten_weight: per layer, weight x the mean over Gaussians of the smallest scale axis;
    its gradient reaches only each Gaussian's smallest axis (pushing it down), and the term is absent
    at weight 0 (the default: the same loss as before)."""
    depth = torch.rand(1, 1, 8, 12) * 10 + 5
    batch = _camera_batch(depth=depth)
    g, params = _scattered_gaussians(n=12, seed=3, requires_grad=True)
    out = _output([g, g])
    plain = GaussTRLoss(LossConfig(pca_dims=None, feature_weight=0.0))(out, batch).terms
    assert not any("flatten" in k for k in plain)
    result = GaussTRLoss(LossConfig(pca_dims=None, feature_weight=0.0, flatten_weight=2.0))(out, batch)
    expected = 2.0 * params[1].detach().min(dim=-1).values.mean()
    for i in range(2):
        assert result.terms[f"layer{i}/flatten"].item() == pytest.approx(expected.item(), rel=1e-6), "seed 3"
    assert result.terms["loss"].item() == pytest.approx(
        (plain["loss"] + 2 * result.terms["layer0/flatten"]).item(), rel=1e-5
    )
    flatten = result.terms["layer0/flatten"] + result.terms["layer1/flatten"]
    (grad,) = torch.autograd.grad(flatten, params[1])
    smallest = F.one_hot(params[1].detach().argmin(-1), 3).bool()
    assert (grad[smallest] > 0).all() and (grad[~smallest] == 0).all()
    with pytest.raises(ValueError, match="flatten_weight"):
        LossConfig(flatten_weight=-1.0)
