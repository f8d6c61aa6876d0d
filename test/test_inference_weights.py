"""Matrix-product weights cast once (``gausstr_core.inference.weights``, ``cast_weights_once``).

The claim is bit-identity with autocast's own per-call casts: on the CPU (autocast bf16 exists there
too) the tiny and talk2dino models' outputs are compared exactly, with and without the cast; the
float32 values come back exactly; ``nn.MultiheadAttention`` is left alone; the predictor applies it
only on CUDA with autocast and the trainer's evaluation never does. The same exactness through the
predictor on a GPU: ``test_inference_graphs.py::test_weights_cast_once_give_the_eager_results``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gausstr_core.batch import CameraBatch
from gausstr_core.data.transforms import resize_matrix
from gausstr_core.inference.weights import LowPrecisionWeights, cast_targets


def _batch(cfg, seed: int, v: int = 2) -> CameraBatch:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    k = torch.tensor([[0.6 * w, 0.0, w / 2], [0.0, 0.6 * w, h / 2], [0.0, 0.0, 1.0]])
    poses = torch.eye(4).repeat(v, 1, 1)
    poses[1, :3, :3] = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])
    return CameraBatch(
        images=torch.rand(1, v, 3, h, w, generator=g),
        intrinsics=k.expand(1, v, 3, 3).clone(),
        cam_to_ego=poses[None],
        image_aug=resize_matrix((h, w), (h, w)).expand(1, v, 3, 3).clone(),
        depth=torch.rand(1, v, h, w, generator=g) * 40 + 2,
    )


def _forward(model, batch):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        g = model(batch).gaussians[-1]
    return [g.means, g.scales, g.rotations, g.opacities, g.features]


@pytest.mark.parametrize("seed", [0, 1])
def test_cast_once_gives_the_same_bits_as_autocast_and_restores_float32(seed):
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset_model

    torch.manual_seed(seed)
    cfg = preset_model("tiny")
    model = GaussTR(cfg).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    batch = _batch(cfg, seed)
    reference = _forward(model, batch)

    cast = LowPrecisionWeights(model, torch.bfloat16)
    cast.apply()
    assert cast.applied and cast.cast_parameters > 0
    low = [p for p in model.parameters() if p.dtype == torch.bfloat16]
    assert len(low) == cast.cast_parameters, f"seed {seed}"
    fast = _forward(model, batch)
    for name, a, b in zip(("means", "scales", "rotations", "opacities", "features"), reference, fast):
        assert a.dtype == b.dtype and torch.equal(a, b), f"seed {seed}: {name} differ"

    cast.restore()
    assert not cast.applied and cast.cast_parameters == 0
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), f"seed {seed}: {name}"
        assert p.requires_grad == grads[name], f"seed {seed}: {name}"
    again = _forward(model, batch)
    assert all(torch.equal(a, b) for a, b in zip(reference, again)), f"seed {seed}"


def test_multihead_attention_and_norms_keep_float32():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.MultiheadAttention(8, 2), nn.Conv2d(3, 4, 3))
    targets = cast_targets(model)
    assert targets == [model[0], model[3]]  # not out_proj (a Linear) inside the attention
    cast = LowPrecisionWeights(model, torch.bfloat16)
    cast.apply()
    assert model[0].weight.dtype == model[0].bias.dtype == model[3].weight.dtype == torch.bfloat16
    assert model[1].weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model[2].parameters())
    assert cast.cast_parameters == 4
    cast.apply()  # twice is once
    assert cast.cast_parameters == 4


def test_the_predictor_casts_only_on_cuda_with_autocast(tiny_model, tiny_text_encoder):
    from gausstr_core.inference.config import InferenceConfig
    from gausstr_core.inference.predictor import OccupancyPredictor

    predictor = OccupancyPredictor(tiny_model, tiny_text_encoder, config=InferenceConfig())
    assert InferenceConfig().cast_weights_once
    assert predictor.cast_status == {"enabled": False}  # CPU: autocast is off, nothing is cast
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())


def test_the_trainers_evaluation_never_casts_its_model(monkeypatch, tiny_model):
    """evaluate_model hands the predictor a config with the cast off (the optimizer owns the weights)."""
    from gausstr_core.evaluation import runner
    from gausstr_core.inference import predictor as predictor_module
    from gausstr_core.presets import preset

    seen = {}

    class Stop(Exception):
        pass

    def spy(model, text, grid, inference, categories, device):
        seen["config"] = inference
        raise Stop

    monkeypatch.setattr(predictor_module, "OccupancyPredictor", spy)
    cfg = preset("tiny")
    with pytest.raises(Stop):
        runner.evaluate_model(tiny_model, cfg, [], ["car"])
    assert seen["config"].cast_weights_once is False
