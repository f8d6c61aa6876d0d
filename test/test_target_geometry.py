"""gausstr_core.losses.target_geometry on constructed targets whose geometry is known exactly."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gausstr_core.losses.target_geometry import CosineSpread, target_geometry

ROOT = Path(__file__).resolve().parents[1]


def _classes(seed: int, common: float, residual: float, k: int = 4, c: int = 16, per_class: int = 50):
    """k class vectors ``common * e0 + residual * e_(1+i)`` and ``per_class`` noisy samples of each."""
    g = torch.Generator().manual_seed(seed)
    noise = 1e-4
    prototypes = torch.zeros(k, c, dtype=torch.float64)
    prototypes[:, 0] = common
    prototypes[torch.arange(k), 1 + torch.arange(k)] = residual
    samples = prototypes.repeat_interleave(per_class, 0)
    samples = samples + noise * torch.randn(samples.shape, generator=g, dtype=torch.float64)
    return samples, prototypes


def test_without_pca_a_shared_component_saturates_the_term_and_centring_removes_it(seed):
    samples, prototypes = _classes(seed, common=3.0, residual=0.5)
    geo = target_geometry(samples, pca_dims=None, prototypes=prototypes)
    # class pairs: 9 / (9 + 0.25); the batch mean 3 e0 + 0.125 sum e_k: cos = 9.125 / (3.041 * 3.0414)
    expected_pair = 9.0 / 9.25
    mean = prototypes.mean(0)
    expected_score = (torch.nn.functional.cosine_similarity(prototypes, mean[None], dim=1)).mean().item()
    assert geo.classes_raw.mean == pytest.approx(expected_pair, rel=1e-6), f"seed {seed}"
    assert geo.classes_projected == geo.classes_raw
    assert geo.mean_score_raw == pytest.approx(expected_score, rel=1e-4), f"seed {seed}"
    assert geo.mean_score_projected == geo.mean_score_raw
    # centred: a regular simplex of 4 vertices, every pair at -1/3
    assert geo.classes_centred.mean == pytest.approx(-1 / 3, rel=1e-3), f"seed {seed}"
    assert geo.classes_centred.max == pytest.approx(-1 / 3, rel=1e-3), f"seed {seed}"
    assert geo.common_norm == pytest.approx(mean.norm().item(), rel=1e-4)
    assert geo.residual_norm == pytest.approx((prototypes - mean).norm(dim=1).mean().item(), rel=1e-3)


def test_pca_drops_a_shared_component_only_when_no_direction_of_variation_carries_it(seed):
    # the 3 directions of variation of 4 classes are orthogonal to e0: the loss's projection onto them
    # leaves no common part, so the official term is discriminative by itself
    samples, prototypes = _classes(seed, common=3.0, residual=0.5)
    geo = target_geometry(samples, pca_dims=3, prototypes=prototypes)
    assert geo.classes_projected.mean == pytest.approx(-1 / 3, abs=1e-3), f"seed {seed}"
    assert abs(geo.mean_score_projected) < 1e-2, f"seed {seed}"
    assert geo.common_norm < 1e-3
    # the same classes tilted so that the variation carries the common direction: it survives
    tilted = prototypes.clone()
    tilted[:, 0] += torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    samples = tilted.repeat_interleave(50, 0)
    geo = target_geometry(samples, pca_dims=3, prototypes=tilted)
    assert geo.classes_projected.mean > geo.classes_centred.mean + 0.3, f"seed {seed}"
    assert geo.mean_score_projected > 0.3, f"seed {seed}"


def test_cosine_spread_needs_two_vectors():
    with pytest.raises(ValueError, match="K >= 2"):
        CosineSpread.of(torch.ones(1, 3))
    with pytest.raises(ValueError, match="samples must be"):
        target_geometry(torch.ones(4), pca_dims=None)


def test_the_script_reports_a_synthetic_dataset(tmp_path):
    from gausstr_core.data.synthetic.samples import SyntheticConfig
    from gausstr_core.data.synthetic.targets import FeatureTargetConfig, name_embeddings
    from gausstr_core.data.synthetic.writer import write_dataset
    from gausstr_core.presets import tiny_text

    config = SyntheticConfig(image_size=(48, 88), features=FeatureTargetConfig(patch_size=8))
    write_dataset(tmp_path, 2, seed=3, config=config, embeddings=name_embeddings(tiny_text()), progress=False)
    cmd = [sys.executable, str(ROOT / "scripts" / "feature_target_geometry.py"), "--data", str(tmp_path)]
    out = subprocess.run(
        [*cmd, "--preset", "tiny", "--batches", "2"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    table = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "PCA to 32 dims" in out.stdout
    # the tiny text tower's names share a common direction: the official term's space keeps part of it
    score = float(table["projected (official term)"].split("|")[2])
    assert 0.2 < score < 1.0, out.stdout
    assert table["centred (centred term)"].split("|")[2].strip() == "-"
