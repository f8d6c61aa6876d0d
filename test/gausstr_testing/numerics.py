"""Comparisons of numerical results in tests."""

from __future__ import annotations


def rel_err(actual, expected):
    """Largest absolute difference relative to the largest expected magnitude."""
    actual, expected = actual.detach(), expected.detach().to(actual.dtype)
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
