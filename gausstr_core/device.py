"""Choosing the torch device from a config value ("auto", "cpu", "cuda", "cuda:1", ...): the one rule
the text encoder, the predictor, the trainer (one process per GPU), the CLIs and the benchmarks use."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """ "auto" -> CUDA when available, else the CPU; anything else as ``torch.device``.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        local_rank: for one process per GPU (``torchrun``): a CUDA device without an index becomes
            ``cuda:<local_rank>``, and asking for CUDA where there is none is an error. None (a single
            process) leaves the index as given and checks nothing.
    Raises:
        ValueError: with ``local_rank``, a CUDA device on a machine without CUDA.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if local_rank is not None and dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev
