"""Resumable training state: written atomically, read back without unpickling code.

The file holds only tensors and plain Python data (dicts, lists, numbers, strings), saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``. It is written to a temporary file
in the same directory, flushed to disk, then moved over the old one with ``os.replace``, so a kill
at any instant leaves either the previous state or the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # Make the rename itself durable.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and ints (weights_only-loadable)."""
    # The legacy global numpy generator is what third-party code (and data augmentation) draws from.
    np_state = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "python": [int(v) for v in random.getstate()[1]] + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[-1], tuple(int(v) for v in py[:-1]), state["python_gauss"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), int(gauss[0]), float(gauss[1])))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by :func:`atomic_torch_save` (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a foreign or damaged file
        raise ValueError(f"{path} is not a readable training state: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(
            f"{path} is not a gausstr training state (version {STATE_VERSION}); "
            f"keys: {sorted(state)[:8] if isinstance(state, dict) else type(state).__name__}"
        )
    return state
