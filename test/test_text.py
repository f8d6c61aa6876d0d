"""Text encoder (tiny random open_clip tower, projection, cache) and category vocabularies."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gausstr_core.presets import featup_text, talk2dino_text, tiny_text
from gausstr_core.text.config import DEFAULT_TEMPLATES, TINY_EMBED_DIM, TextEncoderConfig
from gausstr_core.text.encoder import TextEncoder, TextProjection
from gausstr_core.text.vocabulary import MAX_CATEGORIES, OCC3D_CATEGORIES, OCC3D_UNPREDICTED, Vocabulary


def test_tiny_encoder_gives_unit_prototypes_that_depend_on_the_names(tiny_text_encoder):
    emb = tiny_text_encoder.encode(["car", "road", "car"])
    assert emb.shape == (3, TINY_EMBED_DIM) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[0], emb[2])
    assert (emb[0] - emb[1]).norm() > 0.1
    other = tiny_text_encoder.encode(["truck", "sidewalk"])
    assert (other[0] - emb[0]).norm() > 0.1 and (other[1] - emb[1]).norm() > 0.1
    assert tiny_text_encoder.encode([]).shape == (0, TINY_EMBED_DIM)


def test_tiny_encoder_builds_quickly_and_is_deterministic_in_process(tiny_text_encoder):
    import time

    start = time.perf_counter()
    again = TextEncoder(tiny_text())
    assert time.perf_counter() - start < 2.0
    torch.testing.assert_close(
        again.encode(["traffic cone"]), tiny_text_encoder.encode(["traffic cone"]), rtol=0, atol=0
    )
    other_seed = TextEncoder(tiny_text(seed=1))
    assert (other_seed.encode(["traffic cone"]) - tiny_text_encoder.encode(["traffic cone"])).norm() > 0.1


def test_random_init_is_the_same_in_another_process(tiny_text_encoder):
    code = (
        "import json, torch; from gausstr_core.text.encoder import TextEncoder; "
        "from gausstr_core.presets import tiny_text; "
        "torch.manual_seed(1234); "  # the global RNG state must not matter
        "print(json.dumps(TextEncoder(tiny_text()).encode(['car', 'vegetation']).tolist()))"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    remote = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(remote, tiny_text_encoder.encode(["car", "vegetation"]), rtol=0, atol=1e-5)


def test_building_does_not_touch_the_global_random_state():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    TextEncoder(tiny_text())
    torch.testing.assert_close(torch.rand(3), expected)


def test_prototypes_average_the_templates_the_clip_way(tiny_text_encoder):
    cfg = tiny_text()
    cfg.templates = ("a photo of a {}.", "{} on the road.")
    enc = TextEncoder(cfg)
    tokens = enc.tokenizer(["a photo of a bus.", "bus on the road."])
    with torch.no_grad():
        raw = enc.model.encode_text(tokens)
    expected = F.normalize(F.normalize(raw, dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(enc.encode(["bus"])[0], expected, rtol=1e-5, atol=1e-6)
    # Changing the templates changes the prototype.
    assert (enc.encode(["bus"]) - tiny_text_encoder.encode(["bus"])).norm() > 1e-3


def test_projection_maps_the_template_average_then_normalises():
    cfg = TextEncoderConfig(
        model_name="gausstr-tiny",
        random_init_seed=3,
        templates=("{}", "a {}."),
        embed_dim=24,
        projection=True,
        projection_hidden_layers=2,
        device="cpu",
    )
    enc = TextEncoder(cfg)
    assert enc.projection is not None and len(enc.projection.hidden_layers) == 2
    tokens = enc.tokenizer(["pole", "a pole."])
    with torch.no_grad():
        raw = enc.model.encode_text(tokens)
        x = enc.projection.linear_layer(raw.mean(0))
        for layer in enc.projection.hidden_layers:
            x = layer(torch.tanh(x))
    out = enc.encode(["pole"])
    assert out.shape == (1, 24)
    torch.testing.assert_close(out[0], F.normalize(x, dim=-1), rtol=1e-5, atol=1e-6)


def test_cache_encodes_only_new_prompts(tiny_text_encoder):
    enc = TextEncoder(tiny_text())
    calls = []
    original = enc.model.encode_text
    enc.model.encode_text = lambda tokens: (calls.append(tokens.shape[0]), original(tokens))[1]
    first = enc.encode(["car", "road", "tree"])
    assert calls == [3] and enc.cache_size == 3
    again = enc.encode(["tree", "car", "building"])
    assert calls == [3, 1] and enc.cache_size == 4
    torch.testing.assert_close(again[0], first[2], rtol=0, atol=0)
    torch.testing.assert_close(again[2], tiny_text_encoder.encode(["building"])[0])


def test_weights_come_from_files_unless_random_init_is_asked_for(tmp_path):
    with pytest.raises(ValueError, match=r"text\.checkpoint is not set.*huggingface"):
        TextEncoder(TextEncoderConfig(projection=False, embed_dim=512))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder(
            TextEncoderConfig(checkpoint=str(tmp_path / "nope.safetensors"), projection=False, embed_dim=512)
        )
    with pytest.raises(ValueError, match=r"projection_checkpoint is not set.*Talk2DINO"):
        TextEncoder(
            TextEncoderConfig(
                model_name="gausstr-tiny", embed_dim=64, checkpoint=_save_tiny_checkpoint(tmp_path)
            )
        )
    with pytest.raises(ValueError, match="unknown open_clip model"):
        TextEncoder(TextEncoderConfig(model_name="ViT-Q-99", random_init_seed=0, projection=False))
    with pytest.raises(ValueError, match="embeds text in 64 dimensions"):
        TextEncoder(
            TextEncoderConfig(model_name="gausstr-tiny", random_init_seed=0, embed_dim=32, projection=False)
        )


def _save_tiny_checkpoint(tmp_path, seed: int = 7) -> str:
    """A full open_clip state dict of the tiny model (as an open_clip checkpoint would hold)."""
    import open_clip
    from safetensors.torch import save_file

    from gausstr_core.text.encoder import TINY_OPEN_CLIP_CONFIG

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CONFIG)
    path = tmp_path / f"tiny_{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_checkpoints_and_talk2dino_projection_files_load(tmp_path):
    ckpt = _save_tiny_checkpoint(tmp_path)
    proj = TextProjection(64, 48, hidden_layers=1, activation="tanh")
    state = {
        "linear_layer.weight": proj.linear_layer.weight.detach().clone(),
        "linear_layer.bias": proj.linear_layer.bias.detach().clone(),
        # Talk2DINO's older file layout and an image-side key it also stores
        "linear_layer2.weight": proj.hidden_layers[0].weight.detach().clone(),
        "linear_layer2.bias": proj.hidden_layers[0].bias.detach().clone(),
        "attn_weights": torch.rand(12),
    }
    torch.save(state, tmp_path / "talk2dino.pth")
    cfg = TextEncoderConfig(
        model_name="gausstr-tiny",
        checkpoint=ckpt,
        templates=("{}",),
        embed_dim=48,
        projection=True,
        projection_checkpoint=str(tmp_path / "talk2dino.pth"),
        device="cpu",
    )
    enc = TextEncoder(cfg)
    tokens = enc.tokenizer(["bus"])
    with torch.no_grad():
        expected = F.normalize(proj(enc.model.encode_text(tokens)), dim=-1)
    torch.testing.assert_close(enc.encode(["bus"]), expected, rtol=1e-5, atol=1e-6)

    # The checkpoint's weights are used, not the seed's.
    plain = TextEncoder(
        TextEncoderConfig(
            model_name="gausstr-tiny",
            checkpoint=ckpt,
            templates=("{}",),
            embed_dim=64,
            projection=False,
            device="cpu",
        )
    )
    seeded = TextEncoder(tiny_text(seed=0))
    assert (plain.encode(["bus"]) - seeded.encode(["bus"])).norm() > 0.1

    bad = dict(state, **{"linear_layer.weight": torch.zeros(48, 32)})
    torch.save(bad, tmp_path / "bad.pth")
    cfg.projection_checkpoint = str(tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"mis-shaped.*linear_layer\.weight"):
        TextEncoder(cfg)
    torch.save({"linear_layer.weight": state["linear_layer.weight"]}, tmp_path / "partial.pth")
    cfg.projection_checkpoint = str(tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing keys.*linear_layer\.bias"):
        TextEncoder(cfg)

    wrong = TextEncoderConfig(
        model_name="ViT-B-16-quickgelu", checkpoint=ckpt, projection=False, embed_dim=512
    )
    with pytest.raises(ValueError, match="cannot be loaded into open_clip"):
        TextEncoder(wrong)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="exactly one"):
        TextEncoderConfig(templates=("a photo",))
    with pytest.raises(ValueError, match="at least one template"):
        TextEncoderConfig(templates=())
    with pytest.raises(ValueError, match="projection_activation"):
        TextEncoderConfig(projection_activation="gelu")
    assert talk2dino_text().embed_dim == 768 and talk2dino_text().projection
    assert featup_text().embed_dim == 512 and not featup_text().projection
    assert tiny_text().embed_dim == TINY_EMBED_DIM
    assert TextEncoderConfig().templates == DEFAULT_TEMPLATES


def test_vocabulary_parses_groups_and_merges_by_max():
    vocab = Vocabulary.parse(["car|sedan| van ", "road", "  traffic   cone  "])
    assert vocab.names == ("car", "road", "traffic cone")
    assert vocab.prompts == ("car", "sedan", "van", "road", "traffic cone")
    assert vocab.groups == (0, 0, 0, 1, 2)
    assert vocab.num_classes == 3 and vocab.free_label == 3
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.3, 0.9], [0.7, 0.0, 0.1, 0.05, 0.15]])
    torch.testing.assert_close(vocab.merge(scores), torch.tensor([[0.5, 0.3, 0.9], [0.7, 0.05, 0.15]]))
    with pytest.raises(ValueError, match="prompt scores"):
        vocab.merge(scores[:, :4])


@pytest.mark.parametrize(
    ("categories", "reason"),
    [
        ([], "must not be empty"),
        ("car", "list of strings"),
        (None, "list of strings"),
        (["car", 3], "category 1 must be a string"),
        (["car", None], "category 1 must be a string"),
        (["car", "   "], "empty name"),
        (["car", "|road"], "empty name"),
        (["car|", "road"], "empty prompt"),
        (["car", "Car"], "duplicates category 0"),
        (["car|van", "truck|van"], "also in category 0"),
        (["car|sedan|sedan"], "twice in it"),
        ([f"class {i}" for i in range(MAX_CATEGORIES + 1)], "at most 255"),
    ],
)
def test_vocabulary_rejects_bad_input_with_reasons(categories, reason):
    with pytest.raises(ValueError, match=reason):
        Vocabulary.parse(categories)


def test_vocabulary_allows_the_maximum():
    assert Vocabulary.parse([f"class {i}" for i in range(MAX_CATEGORIES)]).free_label == 255


def test_occ3d_vocabulary_indexes_are_occ3d_labels():
    from gausstr_core.data.occ3d import FREE_LABEL, OCC3D_CLASS_NAMES

    vocab = Vocabulary.parse(OCC3D_CATEGORIES)
    assert vocab.free_label == FREE_LABEL == 17
    assert vocab.names == tuple(n.replace("_", " ") for n in OCC3D_CLASS_NAMES[:-1])
    assert "sky" not in vocab.prompts
    assert set(OCC3D_UNPREDICTED) <= set(vocab.names)
    # The official prompt groups are all there.
    for prompt in ("road", "grass", "building", "wall", "fence", "pole", "sign", "person", "cone"):
        assert prompt in vocab.prompts


def test_prototype_table_reads_the_converter_file_and_knows_only_its_prompts(tmp_path, tiny_text_encoder):
    from safetensors.torch import save_file

    from gausstr_core.text.encoder import PrototypeTable

    protos = tiny_text_encoder.encode(["road", "sky"])
    save_file(
        {"prototypes": protos.contiguous()},
        str(tmp_path / "t.safetensors"),
        metadata={"prompts": json.dumps(["road", "sky"])},
    )
    table = PrototypeTable.from_file(tmp_path / "t.safetensors")
    assert table.embed_dim == TINY_EMBED_DIM and table.knows(" Road ") and not table.knows("car")
    torch.testing.assert_close(table.encode(["sky", "road"]), protos.flip(0))
    with pytest.raises(ValueError, match="not in the prototype table"):
        table.encode(["car"])
    save_file(
        {"prototypes": protos.contiguous()}, str(tmp_path / "bare.safetensors"), metadata={"prompts": "[]"}
    )
    with pytest.raises(ValueError, match="does not list its prompts"):
        PrototypeTable.from_file(tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="distinct prompts"):
        PrototypeTable(["road", "road"], protos)


def test_prototypes_can_be_used_with_autograd(tiny_text_encoder):
    protos = tiny_text_encoder.encode(["car", "road"])
    features = torch.randn(5, TINY_EMBED_DIM, requires_grad=True)
    (features @ protos.T).softmax(-1).sum().backward()
    assert features.grad is not None
