"""Open-vocabulary inference with the real tiny GaussTR: shapes, vocabulary changes, free space, a
hand-built Gaussian scene, prompt denoising, settings, and loading from a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gausstr_core.batch import CameraBatch
from gausstr_core.gaussians import Gaussians
from gausstr_core.grid import VoxelGrid
from gausstr_core.inference.config import InferenceConfig
from gausstr_core.inference.predictor import OccupancyPrediction, OccupancyPredictor, denoise_prompts
from gausstr_core.presets import tiny_text
from gausstr_core.text.encoder import TextEncoder
from gausstr_core.text.vocabulary import OCC3D_CATEGORIES, OCC3D_UNPREDICTED

torch.set_num_threads(1)
GRID = VoxelGrid((-20.0, -20.0, -2.4, 20.0, 20.0, 4.0), 0.8)  # 50 x 50 x 8
CATEGORIES = ["car|sedan", "road", "building|wall", "tree"]


def _ring_batch(v: int, h: int, w: int, seed: int = 0, depth: bool = True) -> CameraBatch:
    """V cameras 1.6 m above the ego origin looking outwards."""
    g = torch.Generator().manual_seed(seed)
    k = torch.tensor([[0.6 * w, 0.0, (w - 1) / 2], [0.0, 0.6 * w, (h - 1) / 2], [0.0, 0.0, 1.0]])
    poses = []
    for i in range(v):
        yaw = 2 * math.pi * i / v
        pose = torch.eye(4)
        pose[:3, :3] = torch.tensor(
            [[math.sin(yaw), 0.0, math.cos(yaw)], [-math.cos(yaw), 0.0, math.sin(yaw)], [0.0, -1.0, 0.0]]
        )
        pose[:3, 3] = torch.tensor([0.0, 0.0, 1.6])
        poses.append(pose)
    return CameraBatch(
        images=torch.rand(1, v, 3, h, w, generator=g),
        intrinsics=k.expand(1, v, 3, 3).clone(),
        cam_to_ego=torch.stack(poses)[None],
        image_aug=torch.eye(3).expand(1, v, 3, 3).clone(),
        depth=(torch.rand(1, v, h, w, generator=g) * 15 + 2) if depth else None,
    )


@pytest.fixture(scope="module")
def batch(tiny_model) -> CameraBatch:
    h, w = tiny_model.config.image_size
    return _ring_batch(3, h, w)


def _predictor(tiny_model, tiny_text_encoder, categories=CATEGORIES, **config) -> OccupancyPredictor:
    return OccupancyPredictor(
        tiny_model, tiny_text_encoder, GRID, InferenceConfig(**config), categories, device="cpu"
    )


def test_real_model_prediction_shapes_types_and_ranges(tiny_model, tiny_text_encoder, batch):
    pred = _predictor(tiny_model, tiny_text_encoder)
    assert pred.input_size == tiny_model.config.image_size and pred.free_label == 4
    out = pred.predict(batch)
    assert isinstance(out, OccupancyPrediction)
    n = 3 * tiny_model.config.decoder.queries_per_view
    assert out.labels.shape == (1, *GRID.shape) and out.labels.dtype == torch.uint8
    assert out.confidence.shape == out.density.shape == out.labels.shape
    assert out.confidence.dtype == out.density.dtype == torch.float32
    assert int(out.labels.max()) <= 4 and (out.labels < 4).any() and (out.labels == 4).any()
    assert ((out.confidence >= 0) & (out.confidence <= 1)).all()
    assert out.gaussians.features.shape == (1, n, 4) and out.gaussians.means.dtype == torch.float32
    assert out.gaussian_labels.shape == (1, n) and out.gaussian_labels.dtype == torch.uint8
    assert out.gaussian_confidence.shape == (1, n)
    assert out.rendered_depth.shape == (1, 3, *tiny_model.config.image_size)
    assert out.rendered_depth.max() > 1.0 and (out.rendered_depth >= 0).all()
    assert out.class_names == ["car", "road", "building", "tree"] and out.free_label == 4 and out.grid == GRID
    assert pred.predict(batch, render_depth=False).rendered_depth is None
    # Deterministic: the model's eval-mode reference points are seeded.
    again = pred.predict(batch)
    assert torch.equal(again.labels, out.labels) and torch.equal(again.confidence, out.confidence)


def test_rendered_depth_is_the_same_with_cpu_tiles(tiny_model, tiny_text_encoder, batch):
    """The CPU renderer's tiles (inference.render_tile_size, several times faster) give the same depth."""
    tiled = _predictor(tiny_model, tiny_text_encoder, render_tile_size=8).predict(batch)
    full = _predictor(tiny_model, tiny_text_encoder, render_tile_size=None).predict(batch)
    assert tiled.rendered_depth is not None
    torch.testing.assert_close(tiled.rendered_depth, full.rendered_depth, rtol=1e-5, atol=1e-4)
    assert torch.equal(tiled.labels, full.labels)


def test_prototypes_change_when_the_names_change(tiny_model, tiny_text_encoder):
    pred = _predictor(tiny_model, tiny_text_encoder)
    before = pred._prompts.prototypes.clone()
    pred.set_categories(["truck", "road", "building|wall", "tree"])
    after = pred._prompts.prototypes
    assert (after[0] - before[0]).norm() > 0.1  # "car" -> "truck"
    torch.testing.assert_close(after[1:], before[2:])  # "sedan" is gone, the rest shifted by one
    assert pred.class_names[0] == "truck"


@pytest.mark.parametrize("denoise", [True, False])
def test_labels_follow_a_reversed_vocabulary(tiny_model, tiny_text_encoder, batch, denoise):
    forward = _predictor(tiny_model, tiny_text_encoder, prompt_denoising=denoise, logit_scale=30.0).predict(
        batch
    )
    reverse = _predictor(
        tiny_model, tiny_text_encoder, CATEGORIES[::-1], prompt_denoising=denoise, logit_scale=30.0
    ).predict(batch)
    free = 4
    occupied = (forward.labels != free) & (reverse.labels != free)
    assert occupied.sum() > 100
    assert torch.equal(reverse.labels == free, forward.labels == free)
    assert torch.equal(reverse.labels[occupied], 3 - forward.labels[occupied])
    torch.testing.assert_close(reverse.confidence, forward.confidence)
    g_occ = forward.gaussian_labels != free
    assert torch.equal(reverse.gaussian_labels[g_occ], 3 - forward.gaussian_labels[g_occ])


def test_free_where_density_is_low(tiny_model, tiny_text_encoder, batch):
    out = _predictor(tiny_model, tiny_text_encoder, density_threshold=0.2).predict(batch)
    low = out.density <= 0.2
    assert low.any() and (~low).any()
    assert (out.labels[low] == 4).all()
    torch.testing.assert_close(out.confidence[low], torch.exp(-out.density[low]))
    everything_free = _predictor(tiny_model, tiny_text_encoder, density_threshold=1e9).predict(batch)
    assert (everything_free.labels == 4).all()


class FixedGaussians(nn.Module):
    """Emits the same hand-built Gaussians for every batch (for the hand-computed scene only)."""

    def __init__(self, gaussians: Gaussians):
        super().__init__()
        self.g = gaussians
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, batch):
        return type("Output", (), {"gaussians": [self.g]})()


def _two_gaussian_scene(tiny_text_encoder, scale=10.0):
    protos = tiny_text_encoder.encode(["car", "road", "sky"])
    means = torch.tensor([[[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    g = Gaussians(
        means=means,
        scales=torch.full((1, 3, 3), 0.3),
        rotations=torch.tensor([[[1.0, 0, 0, 0]] * 3]),
        opacities=torch.tensor([[0.9, 0.9, 0.9]]),
        features=scale * protos[None],
    )
    return g, protos


def test_hand_built_scene_voxelizes_into_the_right_classes_in_the_right_voxels(tiny_text_encoder):
    g, protos = _two_gaussian_scene(tiny_text_encoder)
    grid = VoxelGrid((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), 0.4)
    pred = OccupancyPredictor(
        FixedGaussians(g), tiny_text_encoder, grid, InferenceConfig(), ["car", "road"], device="cpu"
    )
    out = pred.predict(_ring_batch(2, 24, 40), render_depth=True)
    car, road, sky = grid.voxel_index(g.means[0])[0].tolist()
    assert out.labels[0, car[0], car[1], car[2]] == 0
    assert out.labels[0, road[0], road[1], road[2]] == 1
    # The third Gaussian is "sky": a free-space prompt, so its voxel is free although dense.
    assert out.labels[0, sky[0], sky[1], sky[2]] == 2 and out.density[0, sky[0], sky[1], sky[2]] > 0.5
    # Far from the Gaussians: free. The labels are all the per-Gaussian ones and free.
    assert out.labels[0, 0, 0, 0] == 2 and set(out.labels.unique().tolist()) == {0, 1, 2}
    assert out.gaussian_labels.tolist() == [[0, 1, 2]]
    # Confidence at the car's centre voxel = its softmax probability (the voxel is all car).
    logits = 10.0 * protos[0] @ protos.T
    expected = logits.softmax(-1)[0].item()
    assert out.confidence[0, car[0], car[1], car[2]].item() == pytest.approx(expected, rel=1e-4)
    assert out.gaussian_confidence[0, 0].item() == pytest.approx(expected, rel=1e-4)
    assert out.gaussians.features.shape == (1, 3, 2)


def test_unpredicted_classes_and_filtered_gaussians(tiny_text_encoder):
    g, _ = _two_gaussian_scene(tiny_text_encoder)
    grid = VoxelGrid((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), 0.4)
    pred = OccupancyPredictor(
        FixedGaussians(g),
        tiny_text_encoder,
        grid,
        InferenceConfig(unpredicted_classes=("car",)),
        ["car", "road"],
        device="cpu",
    )
    out = pred.predict(_ring_batch(1, 16, 24), render_depth=False)
    assert not (out.labels == 0).any() and (out.labels == 1).any()
    with pytest.raises(ValueError, match="no category can be predicted"):
        config = InferenceConfig(unpredicted_classes=("car", "road"))
        OccupancyPredictor(FixedGaussians(g), tiny_text_encoder, grid, config, ["car", "road"], device="cpu")
    # Opacity filter: no Gaussian voxelized, all free, filtered Gaussians get the free label, conf 0.
    pred = OccupancyPredictor(
        FixedGaussians(g),
        tiny_text_encoder,
        grid,
        InferenceConfig(opacity_threshold=0.95),
        ["car", "road"],
        device="cpu",
    )
    out = pred.predict(_ring_batch(1, 16, 24), render_depth=False)
    assert (out.labels == 2).all() and (out.density == 0).all()
    assert out.gaussian_labels.tolist() == [[2, 2, 2]] and (out.gaussian_confidence == 0).all()


def test_prompt_denoising_drops_prompts_no_voxel_prefers():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.0, 0.0, 0.0]]).reshape(1, 3, 1, 1, 3)
    defined = torch.tensor([True, True, False]).reshape(1, 3, 1, 1)
    keep = denoise_prompts(p, defined)
    # softmax(100 p): prompt 0 wins voxel 0 clearly; prompt 1 reaches exp(-5) / (1 + ...) < 0.1 at best;
    # prompt 2 never; the empty voxel (uniform 1/3 > 0.1) is not considered.
    assert keep.tolist() == [[1.0, 0.0, 0.0]]
    assert denoise_prompts(p, torch.zeros_like(defined)).tolist() == [[1.0, 1.0, 1.0]]


def test_set_categories_validates_and_keeps_the_old_vocabulary_on_error(tiny_model, tiny_text_encoder):
    pred = _predictor(tiny_model, tiny_text_encoder)
    with pytest.raises(ValueError, match="must not be empty"):
        pred.set_categories([])
    with pytest.raises(ValueError, match="duplicates"):
        pred.set_categories(["car", "car"])
    assert pred.class_names == ["car", "road", "building", "tree"]
    pred.set_categories(OCC3D_CATEGORIES)
    assert pred.free_label == 17


def test_configure_changes_grid_threshold_and_templates(tiny_model, tiny_text_encoder, batch):
    enc = TextEncoder(tiny_text())
    pred = OccupancyPredictor(tiny_model, enc, GRID, InferenceConfig(), CATEGORIES, device="cpu")
    before = pred._prompts.prototypes.clone()
    with pytest.raises(ValueError):
        pred.configure(grid_range=(-1.0, -1.0, -1.0, 1.0, 1.0), voxel_size=0.5)
    assert pred.grid == GRID
    pred.configure(
        grid_range=(-8.0, -8.0, -2.0, 8.0, 8.0, 2.0),
        voxel_size=0.5,
        density_threshold=0.1,
        prompt_templates=["a photo of a {}."],
    )
    assert pred.grid.shape == (32, 32, 8) and pred.config.density_threshold == 0.1
    assert (pred._prompts.prototypes - before).norm() > 0.1
    assert pred.predict(batch, render_depth=False).labels.shape == (1, 32, 32, 8)
    pred.configure(prompt_templates=None)  # None keeps
    with pytest.raises(ValueError, match="exactly one"):
        pred.configure(prompt_templates=["no placeholder"])


def test_feature_and_text_widths_must_agree(tiny_model):
    from gausstr_core.text.config import TextEncoderConfig

    other = TextEncoder(
        TextEncoderConfig(
            model_name="gausstr-tiny", random_init_seed=0, embed_dim=32, projection=True, device="cpu"
        )
    )
    with pytest.raises(ValueError, match="must live in one space"):
        OccupancyPredictor(tiny_model, other, GRID, device="cpu")


def test_default_vocabulary_is_occ3d_and_official_unpredicted_classes(tiny_model, tiny_text_encoder, batch):
    pred = OccupancyPredictor(
        tiny_model,
        tiny_text_encoder,
        GRID,
        InferenceConfig(unpredicted_classes=OCC3D_UNPREDICTED),
        device="cpu",
    )
    assert pred.free_label == 17 and len(pred.class_names) == 17
    out = pred.predict(batch, render_depth=False)
    assert not ((out.labels == 0) | (out.labels == 12)).any()


def test_from_checkpoint_restores_model_text_grid_and_vocabulary(
    tmp_path, tiny_model, tiny_text_encoder, batch
):
    from gausstr_core.config import GaussTRConfig
    from gausstr_core.io.checkpoint import save_model_checkpoint
    from gausstr_core.losses.config import LossConfig

    cfg = GaussTRConfig(
        preset="tiny",
        model=tiny_model.config,
        text=tiny_text(),
        loss=LossConfig(pca_dims=16),
        inference=InferenceConfig(density_threshold=0.05),
        grid=GRID,
    )
    path = save_model_checkpoint(tmp_path / "tiny.safetensors", tiny_model, cfg, {"vocabulary": CATEGORIES})
    loaded = OccupancyPredictor.from_checkpoint(path, device="cpu")
    assert loaded.class_names == ["car", "road", "building", "tree"]
    assert loaded.grid == GRID and loaded.config.density_threshold == 0.05
    reference = _predictor(tiny_model, tiny_text_encoder, density_threshold=0.05).predict(batch)
    out = loaded.predict(batch)
    assert torch.equal(out.labels, reference.labels)
    torch.testing.assert_close(out.rendered_depth, reference.rendered_depth)
    chosen = OccupancyPredictor.from_checkpoint(path, device="cpu", categories=["road", "car"])
    assert chosen.class_names == ["road", "car"]


def test_inference_config_validation():
    for bad in (
        dict(density_threshold=-1),
        dict(logit_scale=0),
        dict(autocast_dtype="int8"),
        dict(voxelizer_backend="opencl"),
        dict(render_backend="gl"),
        dict(free_prompts=("",)),
        dict(depth_min_alpha=1.0),
        dict(render_tile_size=0),
    ):
        with pytest.raises(ValueError):
            InferenceConfig(**bad)


@pytest.mark.gpu
def test_cuda_prediction_matches_the_cpu(tiny_model, tiny_text_encoder, batch):
    """CUDA kernels (voxelizer, gsplat) against the CPU references, float32 end to end; bf16 runs."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # float32 convolutions, comparable with the CPU
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _compare_cuda_with_cpu(tiny_model, tiny_text_encoder, batch)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _compare_cuda_with_cpu(tiny_model, tiny_text_encoder, batch):
    import copy

    cpu = _predictor(tiny_model, tiny_text_encoder, autocast_dtype=None).predict(batch)
    gpu_model = copy.deepcopy(tiny_model).cuda()
    gpu_text = TextEncoder(tiny_text())
    gpu = OccupancyPredictor(
        gpu_model, gpu_text, GRID, InferenceConfig(autocast_dtype=None), CATEGORIES, device="cuda"
    ).predict(batch)
    assert gpu.labels.device.type == "cuda"
    agree = (gpu.labels.cpu() == cpu.labels).float().mean().item()
    assert agree > 0.995, agree
    # Pixels whose alpha sits at depth_min_alpha may be cut on one side only: compare where both render.
    gd, cd = gpu.rendered_depth.cpu(), cpu.rendered_depth
    both = (gd > 0) & (cd > 0)
    assert (both == (cd > 0)).float().mean() > 0.999
    rel = ((gd[both] - cd[both]).norm() / cd[both].norm()).item()
    assert rel < 1e-3, rel
    torch.testing.assert_close(gpu.density.cpu(), cpu.density, rtol=1e-3, atol=1e-4)
    bf16 = OccupancyPredictor(
        gpu_model, gpu_text, GRID, InferenceConfig(autocast_dtype="bfloat16"), CATEGORIES, device="cuda"
    ).predict(batch)
    assert bf16.labels.shape == cpu.labels.shape and bf16.confidence.dtype == torch.float32


def test_from_preset_tiny_runs_with_the_preset_sections(batch):
    pred = OccupancyPredictor.from_preset("tiny", device="cpu", categories=CATEGORIES)
    assert pred.config.logit_scale == 50.0 and pred.text_encoder.embed_dim == 64
    assert pred.input_size == (112, 200)
    pred.configure(grid_range=GRID.range, voxel_size=GRID.voxel_size)
    out = pred.predict(batch)
    assert out.labels.shape == (1, *GRID.shape) and out.rendered_depth.shape == (1, 3, 112, 200)


def test_official_prototype_table_next_to_a_checkpoint(tmp_path, tiny_model, tiny_text_encoder, batch):
    """A converted official checkpoint brings fixed prototypes: only their prompts are used, and a
    category without a known prompt (here "tree") is never predicted."""
    from safetensors.torch import save_file

    from gausstr_core.config import GaussTRConfig
    from gausstr_core.io.checkpoint import save_model_checkpoint
    from gausstr_core.losses.config import LossConfig
    from gausstr_core.text.config import TextEncoderConfig
    from gausstr_core.text.encoder import PrototypeTable

    table_prompts = ["car", "road", "building", "wall", "sky"]
    protos = tiny_text_encoder.encode(table_prompts)
    no_weights = TextEncoderConfig(model_name="gausstr-tiny", embed_dim=64, projection=False)
    cfg = GaussTRConfig(
        preset="tiny",
        model=tiny_model.config,
        text=no_weights,
        loss=LossConfig(pca_dims=16),
        inference=InferenceConfig(logit_scale=30.0),
        grid=GRID,
    )
    path = save_model_checkpoint(tmp_path / "conv.safetensors", tiny_model, cfg, {})
    save_file(
        {"prototypes": protos.contiguous()},
        str(tmp_path / "conv.text_prototypes.safetensors"),
        metadata={"prompts": json.dumps(table_prompts)},
    )
    loaded = OccupancyPredictor.from_checkpoint(path, device="cpu", categories=CATEGORIES)
    assert isinstance(loaded.text_encoder, PrototypeTable)
    assert loaded.class_names == ["car", "road", "building", "tree"]
    assert loaded._prompts.groups.tolist() == [0, 1, 2, 2] and loaded._prompts.num_free == 1
    out = loaded.predict(batch, render_depth=False)
    assert not (out.labels == 3).any() and not (out.gaussian_labels == 3).any()
    assert (out.labels < 3).any()
    # The same as a text encoder with the table's prompts only (there, free is 3 instead of 4).
    expected = _predictor(
        tiny_model, tiny_text_encoder, ["car", "road", "building|wall"], logit_scale=30.0
    ).predict(batch, render_depth=False)
    assert torch.equal(torch.where(out.labels == 4, 3, out.labels), expected.labels)
    torch.testing.assert_close(out.confidence, expected.confidence)
    with pytest.raises(ValueError, match="not in the prototype table"):
        loaded.text_encoder.encode(["tree"])


def test_cameras_without_depth_use_the_depth_head(tiny_model, tiny_text_encoder):
    h, w = tiny_model.config.image_size
    out = _predictor(tiny_model, tiny_text_encoder).predict(_ring_batch(2, h, w, depth=False))
    assert out.rendered_depth.shape == (1, 2, h, w) and torch.isfinite(out.rendered_depth).all()
    assert out.labels.shape == (1, *GRID.shape)


def test_centred_prototypes_undo_the_hub_of_a_shared_text_direction(tiny_model, tiny_text_encoder):
    """Prototypes that share a large common direction (as text embeddings of class names do) make the
    class whose prototype lies nearest to it a hub: a feature made of that common part and a weak
    class-k part is called the hub. Centring (``center_prototypes``) compares the class parts and
    calls it k; a feature equal to a prototype keeps its class either way. Seeded, exact."""
    g = torch.Generator().manual_seed(7)
    d, classes = 64, 4
    common = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    own = torch.linalg.qr(torch.randn(d, classes, generator=g))[0].T  # orthonormal class parts
    own = own - (own @ common)[:, None] * common  # orthogonal to the common part
    own = torch.nn.functional.normalize(own, dim=-1)
    share = torch.tensor([0.95, 0.94, 0.94, 0.94])  # class 0 lies nearest to the common direction
    prototypes = share[:, None] * common + (1 - share[:, None] ** 2).sqrt() * own
    weak = torch.stack([common + 0.02 * own[k] for k in range(classes)])[None]  # (1, 4, D)
    plain = _predictor(tiny_model, tiny_text_encoder, logit_scale=50.0, prompt_denoising=False)
    centred = _predictor(
        tiny_model, tiny_text_encoder, logit_scale=50.0, prompt_denoising=False, center_prototypes=True
    )
    assert plain.prompt_probabilities(weak, prototypes).argmax(-1).tolist() == [[0, 0, 0, 0]]
    assert centred.prompt_probabilities(weak, prototypes).argmax(-1).tolist() == [[0, 1, 2, 3]]
    exact = prototypes[None]
    for p in (plain, centred):
        assert p.prompt_probabilities(exact, prototypes).argmax(-1).tolist() == [[0, 1, 2, 3]]
    assert not InferenceConfig().center_prototypes  # the official logits stay the default


def test_hub_weights_divide_each_class_prompt_by_its_mean_share(seed):
    """hub_weights: 1 / m^t per class prompt over the occupied voxels only; free prompts and a scene
    without occupied voxels get 1. Reference: a loop over scenes and prompts."""
    from gausstr_core.inference.predictor import hub_weights

    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(2, 3, 4, 2, 5, generator=g)
    occupied = torch.rand(2, 3, 4, 2, generator=g) > 0.5
    occupied[1] = False  # the second scene is empty
    w = hub_weights(probs, occupied, num_class_prompts=4, power=0.5)
    assert w.shape == (2, 5)
    for p in range(4):
        m = probs[0][occupied[0]][:, p].mean()
        torch.testing.assert_close(w[0, p], m.pow(-0.5), msg=f"prompt {p}, seed {seed}")
    assert w[0, 4] == 1 and torch.all(w[1] == 1)


def test_balanced_prompts_take_the_hubs_blends_and_keep_the_confidence(tiny_model, tiny_text_encoder):
    """A prompt with a large share of every voxel (a hub) wins the voxels where it is only slightly
    ahead; balance_prompts gives those to the class that stands out against its own level, keeps
    clear wins, and reports the plain probability as the confidence. Seeded, exact."""
    from gausstr_core.inference.predictor import _Prompts

    plain = _predictor(tiny_model, tiny_text_encoder, prompt_denoising=False)
    balanced = _predictor(tiny_model, tiny_text_encoder, prompt_denoising=False, balance_prompts=1.0)
    prompts: _Prompts = plain._prompts
    p = prompts.groups.shape[0]
    # voxels: hub-ish blends (class 0 at 0.40 everywhere, one other class at 0.35) and clear wins
    k = prompts.vocabulary.num_classes
    probs = torch.full((1, 6, 1, 1, p + prompts.num_free), 0.01)
    first = {c: int(torch.nonzero(prompts.groups == c)[0]) for c in range(k)}  # a prompt of each class
    hub, others = first[0], [first[c] for c in (1, 2, 3)]
    probs[..., hub] = 0.40
    for v, q in enumerate(others):
        probs[0, v, 0, 0, q] = 0.35  # blends: the hub is only slightly ahead
    probs[0, 3, 0, 0, others[0]] = 0.90  # clear wins
    probs[0, 4, 0, 0, others[1]] = 0.90
    probs[0, 5, 0, 0, others[2]] = 0.90
    occupied = torch.ones(1, 6, 1, 1, dtype=torch.bool)
    from gausstr_core.inference.predictor import hub_weights

    weights = hub_weights(probs, occupied, p, 1.0)
    labels_plain, _ = plain._decide(probs, prompts)
    labels, confidence = balanced._decide(probs, prompts, weights)
    assert labels_plain[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2, 3]  # the hub takes the blends
    assert labels[0, :, 0, 0].tolist() == [1, 2, 3, 1, 2, 3]
    torch.testing.assert_close(confidence[0, :3, 0, 0], torch.full((3,), 0.35))
    assert InferenceConfig().balance_prompts == 0  # the official decision stays the default
