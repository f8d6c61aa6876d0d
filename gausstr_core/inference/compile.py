"""``torch.compile`` of the image backbone for ``OccupancyPredictor`` (``InferenceConfig.compile_backbone``).

Why: at the node's size (talk2dino, 6 x 504 x 896) the frozen ViT-B/14 is about half of the prediction,
and it is bound by arithmetic and memory traffic, not by kernel launches, so the CUDA graph of the
prediction does not make it faster. Inductor fuses its LayerNorms, LayerScales, GELUs, residual adds
and the input normalisation into their neighbours, which saves whole passes over the token tensors.

Mode: Inductor's default. "reduce-overhead" is excluded: Inductor's own CUDA graphs (cudagraph trees)
conflict with the predictor's capture of the whole prediction around the backbone. Not
"max-autotune-no-cudagraphs" either (not measured): its GEMM autotuning lengthens the first frame
for matrix products that cuBLAS already runs well in bf16; the gain sought is the fusion of the
memory-bound operations, which the default mode does (measured on an H100: 22.6 ms against 25.8 ms
for the prediction, docs/benchmarks.md). ``dynamic=False``: the node sees one input
shape; another shape compiles once more.

When: compilation is lazy, at the first call of the backbone, i.e. in the first (eager) prediction:
the graph path captures a shape only after it has been seen twice, and runs eager warm-ups before
capturing, so nothing is compiled inside a capture. The autocast weight-cache flag, which the graph
path turns off and the eager path leaves on, is part of TorchDynamo's guards; it is set off around
every compiled call (inside a compiled graph the cache does nothing: casts are graph operations), so
that both paths share one compilation.

Rounding: eager bf16 arithmetic rounds every operation's result to bf16; a fused Inductor kernel
keeps the intermediate results of its operations in float32 unless ``emulate_precision_casts`` is on
(``InferenceConfig.compile_emulate_precision_casts``, default on), which makes it round where eager
does. Either way 99.5-99.9 % of the labels of a random-weight model matched the eager path's (H100,
2026-12-07: 99.53-99.88 % on, 99.46-99.79 % off), short of the 99.9 % the CUDA graphs meet.

Failures (no triton, no compiler, an unsupported operation): the call is rerun with the eager
backbone; when that succeeds, compilation is off for good, and the reason is logged once and kept
in ``status()``; when it fails too, the input is at fault and its error is raised (compilation stays
on). During a CUDA-graph capture nothing is caught: the capture fails and the graph path falls back
(``gausstr_core.inference.graphs``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CompiledBackbone:
    """The backbone's ``forward`` replaced (an instance attribute: module tree, parameters and state-dict
    keys stay as they were) by a compiled one that falls back to the eager forward.

    Args:
        backbone: the image backbone, ``(BV, 3, H, W) -> (BV, C, h, w)``.
        emulate_precision_casts: Inductor rounds fused intermediate results to the autocast dtype
            where eager arithmetic does (module docstring).
    """

    def __init__(self, backbone: nn.Module, emulate_precision_casts: bool = True):
        self.backbone = backbone
        self.emulate_precision_casts = bool(emulate_precision_casts)
        self._eager = backbone.forward
        self._lock = threading.Lock()
        self._compiled: Any = None
        self.failures: list[str] = []
        self.compile_s: float | None = None
        self.calls = 0
        try:
            # Looked up on the module at call time, so that tests can make it fail.
            self._compiled = torch.compile(
                self._eager, dynamic=False, options={"emulate_precision_casts": self.emulate_precision_casts}
            )
        except Exception as exc:  # e.g. a Python version TorchDynamo does not support
            self._fail(f"torch.compile failed: {type(exc).__name__}: {exc}")
            return
        backbone.forward = self.forward

    @property
    def active(self) -> bool:
        """Whether the compiled forward is in use (no failure so far)."""
        return self._compiled is not None

    def forward(self, images: Tensor) -> Tensor:
        """(BV, 3, H, W) -> (BV, C, h, w), compiled (the first call compiles) or eager after a failure."""
        compiled = self._compiled
        if compiled is None:
            return self._eager(images)
        start = time.perf_counter()
        try:
            with _autocast_cache_off():
                out = compiled(images)
        except Exception as exc:
            if _capturing(images):
                raise
            out = self._eager(images)  # raises the input's own error when the input is at fault
            self._fail(f"compiled backbone failed: {type(exc).__name__}: {exc}")
            return out
        with self._lock:
            self.calls += 1
            if self.compile_s is None:
                self.compile_s = time.perf_counter() - start
                log.info(
                    "compiled the image backbone in %.1f s (first call, %s)",
                    self.compile_s,
                    "x".join(map(str, images.shape)),
                )
        return out

    def remove(self) -> None:
        """Put the eager forward back."""
        if self.backbone.__dict__.get("forward") == self.forward:
            del self.backbone.forward

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": True,
                "compiled": self.active,
                "emulate_precision_casts": self.emulate_precision_casts,
                "compile_s": self.compile_s,
                "compiled_calls": self.calls,
                "failures": list(self.failures),
            }

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._compiled is None and self.failures:
                return  # another thread already reported it
            self._compiled = None
            self.failures.append(reason)
        log.warning("image backbone not compiled, running it eagerly: %s", reason)


@contextlib.contextmanager
def _autocast_cache_off() -> Iterator[None]:
    was = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(was)


def _capturing(images: Tensor) -> bool:
    return images.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
