"""The zero-shot label term: labels = each target patch's nearest prompt (against a per-pixel loop),
the splatted class distribution, its cross-entropy (against a per-pixel loop), its place in
GaussTRLoss (off by default, extra channels of the one render, gradients), and the trainer wiring."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gausstr_core.batch import CameraBatch
from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_core.gaussians import Gaussians
from gausstr_core.losses.config import LossConfig
from gausstr_core.losses.gaussrender import ClassPrototypes
from gausstr_core.losses.gausstr import GaussTRLoss
from gausstr_core.losses.zero_shot import (
    PROBABILITY_FLOOR,
    class_channels,
    zero_shot_label_loss,
    zero_shot_labels,
)

D = 12


def _prototypes(seed: int, k: int = 4, extra_prompts: int = 2, free: int = 1) -> ClassPrototypes:
    """k classes; the first ``extra_prompts`` classes have a second prompt; ``free`` free prompts."""
    g = torch.Generator().manual_seed(seed)
    groups = list(range(k)) + list(range(extra_prompts))
    protos = F.normalize(torch.randn(len(groups) + free, D, generator=g), dim=-1)
    return ClassPrototypes(protos, torch.tensor(groups), k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_are_the_nearest_prompts_class_like_a_per_pixel_loop(seed):
    protos = _prototypes(seed)
    g = torch.Generator().manual_seed(100 + seed)
    targets = torch.randn(2, 3, D, 4, 5, generator=g) * (1 + 3 * torch.rand(2, 3, 1, 4, 5, generator=g))
    labels = zero_shot_labels(targets, protos, (4, 5))
    assert labels.shape == (2, 3, 4, 5) and labels.dtype == torch.int64
    p = protos.groups.shape[0]
    for b in range(2):
        for v in range(3):
            for y in range(4):
                for x in range(5):
                    f = targets[b, v, :, y, x]
                    cos = [float(F.cosine_similarity(f, q, dim=0)) for q in protos.prototypes]
                    best = max(range(len(cos)), key=cos.__getitem__)
                    want = int(protos.groups[best]) if best < p else protos.num_classes
                    assert int(labels[b, v, y, x]) == want, f"seed {seed}, pixel {(b, v, y, x)}"
    # upsampled to the rendered size by nearest neighbour: every label block repeats its patch's
    up = zero_shot_labels(targets, protos, (8, 15))
    assert torch.equal(up, labels.repeat_interleave(2, dim=2).repeat_interleave(3, dim=3)), f"seed {seed}"


def test_a_free_prompt_nearest_gives_the_free_label():
    protos = _prototypes(0)
    sky = protos.prototypes[-1]
    targets = (3.0 * sky).view(1, 1, D, 1, 1).expand(1, 2, D, 2, 2)
    assert (zero_shot_labels(targets, protos, (2, 2)) == protos.num_classes).all()


@pytest.mark.parametrize("seed", [0, 3])
def test_class_channels_are_the_inference_distribution_with_the_free_share_last(seed):
    protos = _prototypes(seed)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 7, D, generator=g)
    channels = class_channels(features, protos, 50.0)
    assert channels.shape == (2, 7, protos.num_classes + 1)
    assert torch.allclose(channels.sum(-1), torch.ones(2, 7), atol=1e-5), f"seed {seed}"
    logits = 50.0 * F.normalize(features, dim=-1) @ protos.prototypes.T
    probs = logits.softmax(-1)
    p = protos.groups.shape[0]
    for k in range(protos.num_classes):
        want = probs[..., :p][..., protos.groups == k].sum(-1)
        assert torch.allclose(channels[..., k], want, rtol=1e-5, atol=1e-6), f"seed {seed}, class {k}"
    assert torch.allclose(channels[..., -1], probs[..., p:].sum(-1), rtol=1e-4, atol=1e-6), f"seed {seed}"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_cross_entropy_is_a_per_pixel_loop_over_the_shown_class_of_the_counted_pixels(seed):
    g = torch.Generator().manual_seed(seed)
    k1 = 5
    alpha = torch.rand(1, 2, 3, 4, generator=g)
    share = torch.rand(1, 2, k1, 3, 4, generator=g)
    rendered = share / share.sum(2, keepdim=True) * alpha.unsqueeze(2)
    labels = torch.randint(0, k1, (1, 2, 3, 4), generator=g)
    labels[0, 0, 0, 0] = k1 - 1  # a free label: not counted
    valid = torch.rand(1, 2, 3, 4, generator=g) > 0.25
    # a counted pixel whose Gaussians give its label nothing: the floor, not infinity
    rendered[0, 1, 0, 2, 3] = 0.0
    labels[0, 1, 2, 3] = 0
    valid[0, 1, 2, 3] = True
    loss = zero_shot_label_loss(rendered, alpha, labels, valid)
    total, n = 0.0, 0
    for v in range(2):
        for y in range(3):
            for x in range(4):
                label = int(labels[0, v, y, x])
                if label == k1 - 1 or not bool(valid[0, v, y, x]):
                    continue
                p = float(rendered[0, v, label, y, x]) / float(alpha[0, v, y, x])
                total += -math.log(min(max(p, PROBABILITY_FLOOR), 1.0))
                n += 1
    assert n > 0
    assert math.isclose(float(loss), total / n, rel_tol=1e-5), f"seed {seed}: {float(loss)} vs {total / n}"
    # the opacity itself does not matter: the same class shares at a tenth of the opacity
    tenth = zero_shot_label_loss(rendered / 10, alpha / 10, labels, valid)
    assert math.isclose(float(tenth), float(loss), rel_tol=1e-4), f"seed {seed}"


def test_the_cross_entropy_is_zero_for_the_labels_own_class_and_zero_when_nothing_counts():
    labels = torch.tensor([[[[0, 1], [2, 3]]]])  # (1, 1, 2, 2), 3 = free
    rendered = 0.7 * F.one_hot(labels, 4).permute(0, 1, 4, 2, 3).float()
    alpha = torch.full((1, 1, 2, 2), 0.7)
    assert float(zero_shot_label_loss(rendered, alpha, labels)) == pytest.approx(0.0, abs=1e-6)
    free = torch.full_like(labels, 3)
    assert float(zero_shot_label_loss(rendered, alpha, free)) == 0.0
    nothing = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    assert float(zero_shot_label_loss(rendered, alpha, labels, nothing)) == 0.0


def _rig_batch(size=(18, 32), c=D, seed=0) -> CameraBatch:
    rig = nuscenes_rig(*size)
    v = rig.num_views
    g = torch.Generator().manual_seed(seed)
    return CameraBatch(
        images=torch.zeros(1, v, 3, *size),
        intrinsics=rig.intrinsics()[None],
        cam_to_ego=rig.cam_to_ego()[None],
        image_aug=CameraBatch.identity_aug(1, v),
        depth=4 + 20 * torch.rand(1, v, *size, generator=g),
    )


def _gaussians(n=80, d=D, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    radius = 3 + 8 * torch.rand(n, generator=g)
    means = torch.stack(
        [radius * torch.cos(angle), radius * torch.sin(angle), 2 * torch.rand(n, generator=g)], -1
    )
    return Gaussians(
        means[None],
        0.5 + 0.5 * torch.rand(1, n, 3, generator=g),
        F.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        0.3 + 0.6 * torch.rand(1, n, generator=g),
        torch.randn(1, n, d, generator=g).requires_grad_(True),
    )


def _output(gaussians: Gaussians, targets: torch.Tensor):
    return SimpleNamespace(
        gaussians=[gaussians],
        target_features=targets,
        predicted_depth=None,
        segment_heads=None,
        colors=None,
    )


def test_the_term_is_off_by_default_and_on_it_adds_a_term_that_trains_the_features():
    protos = _prototypes(0)
    batch = _rig_batch()
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(5))
    config = dict(pca_dims=None, render_backend="torch", render_scale=0.5)
    off = GaussTRLoss(LossConfig(**config))
    on = GaussTRLoss(LossConfig(**config, zero_shot_label_weight=2.0), class_prototypes=protos)
    assert not off.needs_prototypes and on.needs_prototypes and not on.needs_ground_truth
    gaussians = _gaussians()
    base = off(_output(gaussians, targets), batch).terms
    with_term = on(_output(gaussians, targets), batch).terms
    assert "layer0/zero_shot" not in base and "layer0/zero_shot" in with_term
    # the other terms do not change: the class channels ride along in the same render
    for name in ("layer0/feature", "layer0/depth"):
        assert torch.allclose(base[name], with_term[name], rtol=1e-5), name
    assert torch.allclose(with_term["loss"], base["loss"] + with_term["layer0/zero_shot"], rtol=1e-5)
    # weight 2 x the cross-entropy of the splatted distribution
    one = GaussTRLoss(LossConfig(**config, zero_shot_label_weight=1.0), class_prototypes=protos)
    single = one(_output(gaussians, targets), batch).terms["layer0/zero_shot"]
    assert float(with_term["layer0/zero_shot"].detach()) == pytest.approx(
        2 * float(single.detach()), rel=1e-5
    )
    with_term["layer0/zero_shot"].backward()
    assert gaussians.features.grad is not None and gaussians.features.grad.abs().sum() > 0


def test_with_the_geometry_detached_the_term_has_the_same_value_and_trains_only_the_features():
    """loss.zero_shot_geometry_detached: the class channels get a render of their own with detached
    means, scales, rotations and opacities: every term keeps its value, and the zero-shot term's
    gradient reaches the features but no longer the geometry (which it does when attached)."""
    protos = _prototypes(0)
    batch = _rig_batch()
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(5))
    config = dict(pca_dims=None, render_backend="torch", render_scale=0.5, zero_shot_label_weight=1.0)
    grads = {}
    terms = {}
    for detached in (False, True):
        loss = GaussTRLoss(
            LossConfig(**config, zero_shot_geometry_detached=detached), class_prototypes=protos
        )
        g = _gaussians()
        for t in (g.means, g.scales, g.opacities):
            t.requires_grad_(True)
        out = loss(_output(g, targets), batch).terms
        terms[detached] = {k: float(v.detach()) for k, v in out.items()}
        out["layer0/zero_shot"].backward()
        grads[detached] = {
            name: torch.zeros(()) if t.grad is None else t.grad.abs().sum()
            for name, t in (("means", g.means), ("features", g.features))
        }
    for name, value in terms[False].items():
        assert terms[True][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert grads[False]["means"] > 0 and grads[False]["features"] > 0
    assert grads[True]["means"] == 0 and grads[True]["features"] > 0
    assert torch.allclose(grads[True]["features"], grads[False]["features"], rtol=1e-4)


def test_training_the_features_on_the_term_makes_the_render_agree_with_the_labels():
    """Adam on the Gaussians' features alone: the term falls and the rendered argmax class agrees
    with more of the zero-shot labels."""
    protos = _prototypes(1)
    batch = _rig_batch(seed=1)
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(2))
    loss = GaussTRLoss(
        LossConfig(
            pca_dims=None,
            render_backend="torch",
            render_scale=0.5,
            feature_weight=0.0,
            depth_weight=0.0,
            zero_shot_label_weight=1.0,
        ),
        class_prototypes=protos,
    )
    gaussians = _gaussians(seed=1)
    optimizer = torch.optim.Adam([gaussians.features], lr=0.05)
    values = []
    for _ in range(30):
        term = loss(_output(gaussians, targets), batch).terms["layer0/zero_shot"]
        values.append(float(term))
        optimizer.zero_grad()
        term.backward()
        optimizer.step()
    assert values[-1] < 0.8 * values[0], values


def test_the_term_needs_prototypes_and_target_features():
    protos = _prototypes(0)
    loss = GaussTRLoss(LossConfig(pca_dims=None, render_backend="torch", zero_shot_label_weight=1.0))
    targets = torch.randn(1, 6, D, 3, 4)
    with pytest.raises(ValueError, match="class_prototypes"):
        loss(_output(_gaussians(), targets), _rig_batch())
    loss.class_prototypes = protos
    with pytest.raises(ValueError, match="target features"):
        loss(_output(_gaussians(), None), _rig_batch())
    with pytest.raises(ValueError, match="zero_shot_label_weight"):
        LossConfig(zero_shot_label_weight=-1)
    with pytest.raises(ValueError, match="zero_shot_logit_scale"):
        LossConfig(zero_shot_logit_scale=0)


def test_the_trainer_builds_the_prototypes_and_trains_with_the_term_on_label_free_items(tmp_path):
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.distributed import DistributedContext
    from gausstr_core.train.trainer import Trainer
    from gausstr_testing.training import OVERRIDES, RandomScenes, train_config

    cfg = train_config(tmp_path, overrides=[*OVERRIDES, "loss.zero_shot_label_weight=1"], max_steps=2)
    trainer = Trainer(cfg, DistributedContext(), build_model_config(cfg), train_set=RandomScenes(4))
    assert not trainer.needs_ground_truth
    assert trainer.loss_fn.class_prototypes is not None and trainer.loss_fn.class_prototypes.num_classes == 17
    trainer._epoch_slice.indices = [0]
    result, _, _ = trainer.train_step(next(iter(trainer._loader())))
    assert "layer0/zero_shot" in result.losses and math.isfinite(result.losses["layer0/zero_shot"])
    assert result.losses["layer0/zero_shot"] > 0 and not result.skipped
    trainer.fit()
    assert trainer.step == 2


def test_a_vocabulary_of_its_own_labels_with_its_own_prompts_not_the_evaluation_ones():
    """``zero_shot_prototypes`` (from ``loss.zero_shot_categories``) replace ``class_prototypes`` in
    the term: the term equals the one computed with those prototypes as the evaluation vocabulary."""
    evaluation, own = _prototypes(0), _prototypes(7, k=3, extra_prompts=1)
    batch = _rig_batch(seed=3)
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(9))
    config = LossConfig(pca_dims=None, render_backend="torch", render_scale=0.5, zero_shot_label_weight=1.0)
    gaussians = _gaussians(seed=3)
    split = GaussTRLoss(config, class_prototypes=evaluation, zero_shot_prototypes=own)
    assert split.label_prototypes is own
    as_evaluation = GaussTRLoss(config, class_prototypes=own)
    on_evaluation = GaussTRLoss(config, class_prototypes=evaluation)

    def term(loss: GaussTRLoss) -> float:
        return float(loss(_output(gaussians, targets), batch).terms["layer0/zero_shot"].detach())

    assert term(split) == pytest.approx(term(as_evaluation), rel=1e-6)
    assert abs(term(split) - term(on_evaluation)) > 1e-3
    # the own vocabulary alone is enough for the term (GaussRender still needs the evaluation one)
    assert term(GaussTRLoss(config, zero_shot_prototypes=own)) == pytest.approx(term(as_evaluation), rel=1e-6)


def test_the_categories_of_the_term_are_checked_when_the_config_is_made():
    assert LossConfig(zero_shot_categories=("car", "road|lane marking")).zero_shot_categories == (
        "car",
        "road|lane marking",
    )
    with pytest.raises(ValueError, match=r"zero_shot_categories.*duplicates"):
        LossConfig(zero_shot_categories=("car", "Car"))
    with pytest.raises(ValueError, match=r"zero_shot_categories.*empty prompt"):
        LossConfig(zero_shot_categories=("car|",))


def test_the_trainer_builds_the_terms_own_vocabulary_beside_the_evaluation_one(tmp_path):
    from gausstr_core.presets import build_model_config
    from gausstr_core.train.distributed import DistributedContext
    from gausstr_core.train.trainer import Trainer
    from gausstr_testing.training import OVERRIDES, RandomScenes, train_config

    overrides = [
        *OVERRIDES,
        "loss.zero_shot_label_weight=1",
        'loss.zero_shot_categories=["car", "road|lane marking", "building"]',
    ]
    cfg = train_config(tmp_path, overrides=overrides, max_steps=1)
    trainer = Trainer(cfg, DistributedContext(), build_model_config(cfg), train_set=RandomScenes(4))
    assert trainer.loss_fn.class_prototypes.num_classes == 17
    own = trainer.loss_fn.zero_shot_prototypes
    assert own.num_classes == 3 and own.groups.tolist()[:4] == [0, 1, 1, 2]
    trainer._epoch_slice.indices = [0]
    result, _, _ = trainer.train_step(next(iter(trainer._loader())))
    assert math.isfinite(result.losses["layer0/zero_shot"]) and result.losses["layer0/zero_shot"] > 0


@pytest.mark.gpu
def test_the_term_through_gsplat_matches_the_reference_renderer_on_the_gpu():
    """The class channels ride in gsplat's render as in the reference renderer's: the term's value to
    1e-3 and its gradient on the Gaussians' features in direction."""
    from gausstr_core.render import gsplat_available

    if not gsplat_available():
        pytest.skip("gsplat is not installed")
    protos = _prototypes(0)
    protos = ClassPrototypes(protos.prototypes.cuda(), protos.groups.cuda(), protos.num_classes)
    batch = _rig_batch(seed=3).to("cuda")
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(4)).cuda()
    values, grads = {}, {}
    for backend in ("torch", "gsplat"):
        loss = GaussTRLoss(
            LossConfig(pca_dims=None, render_backend=backend, render_scale=0.5, zero_shot_label_weight=1.0),
            class_prototypes=protos,
        )
        g = _gaussians(seed=3)
        g = Gaussians(
            g.means.cuda(),
            g.scales.cuda(),
            g.rotations.cuda(),
            g.opacities.cuda(),
            g.features.detach().cuda().requires_grad_(True),
        )
        term = loss(_output(g, targets), batch).terms["layer0/zero_shot"]
        term.backward()
        values[backend], grads[backend] = float(term.detach()), g.features.grad.flatten()
    assert values["gsplat"] == pytest.approx(values["torch"], rel=1e-3), values
    cos = F.cosine_similarity(grads["gsplat"], grads["torch"], dim=0)
    assert float(cos) > 0.99, float(cos)


def test_the_label_quality_script_reports_labels_that_mostly_match_the_world():
    """scripts/zero_shot_label_quality.py on two small tiny-tower scenes: the labels agree with the
    generator's per-pixel classes far above chance (17 classes and free), and the table lists classes."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "zero_shot_label_quality.py"
    args = ["--preset", "tiny", "--resolution", "48", "88", "--scenes", "2"]
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(s for s in out.stdout.splitlines() if s.startswith("pixel accuracy"))
    accuracy = float(line.split(":")[1].split("%")[0])
    assert 50.0 < accuracy <= 100.0, out.stdout
    rows = [s for s in out.stdout.splitlines() if s.startswith("| ") and "---" not in s and "class" not in s]
    assert len(rows) >= 3 and any(r.startswith("| free (sky)") for r in rows), out.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("detached", [False, True])
def test_the_term_s_gradients_through_gsplat_match_the_reference_renderer(detached):
    """The term attached and detached through gsplat on the GPU: every term's value and the
    gradients of the whole loss for means, scales, opacities and features match the reference
    renderer's (the detached form renders twice per layer, once from detached copies)."""
    from gausstr_core.render import gsplat_available

    if not gsplat_available() or not torch.cuda.is_available():
        pytest.skip("needs gsplat and a CUDA device")
    protos = _prototypes(0)
    protos = ClassPrototypes(protos.prototypes.cuda(), protos.groups.cuda(), protos.num_classes)
    batch = _rig_batch().to("cuda")
    targets = torch.randn(1, 6, D, 3, 4, generator=torch.Generator().manual_seed(5)).cuda()
    terms, grads = {}, {}
    for backend in ("torch", "gsplat"):
        config = LossConfig(
            pca_dims=None,
            render_backend=backend,
            render_scale=0.5,
            zero_shot_label_weight=3.0,
            zero_shot_geometry_detached=detached,
        )
        cpu = _gaussians()
        g = Gaussians(
            *(
                t.detach().cuda().requires_grad_(True)
                for t in (cpu.means, cpu.scales, cpu.rotations, cpu.opacities, cpu.features)
            )
        )
        out = GaussTRLoss(config, class_prototypes=protos)(_output(g, targets), batch).terms
        terms[backend] = {k: float(v.detach()) for k, v in out.items()}
        out["loss"].backward()
        grads[backend] = {
            n: t.grad.detach().cpu()
            for n, t in (
                ("means", g.means),
                ("scales", g.scales),
                ("opacities", g.opacities),
                ("features", g.features),
            )
        }
    for name, ref in terms["torch"].items():
        assert terms["gsplat"][name] == pytest.approx(ref, rel=2e-3, abs=1e-6), f"detached={detached}: {name}"
    for name, ref in grads["torch"].items():
        cos = F.cosine_similarity(grads["gsplat"][name].flatten(), ref.flatten(), dim=0).item()
        rel = ((grads["gsplat"][name] - ref).norm() / ref.norm()).item()
        assert cos > 0.99 and rel < 0.05, f"detached={detached}: {name} cos {cos:.4f} rel {rel:.4f}"
