"""GaussTR in plain PyTorch."""
