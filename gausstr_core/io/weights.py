"""Reading a weights file of foundation-model parts (backbones, the text projection) without ever
unpickling objects: ``.safetensors``, or a torch file read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local .safetensors or .pth/.pt/.bin file, never unpickling objects.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict readable with ``weights_only=True``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True) (TorchScript archives "
            f"and pickled objects are refused; export a plain state dict or safetensors): "
            f"{exc}"
        ) from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return data
