"""CUDA-graph replay of ``OccupancyPredictor``'s per-frame prediction (all of it but rendering).

Why: with fixed cameras every frame has the same shapes, and the eager prediction is bound by kernel
launches and host synchronisations far more than by arithmetic (the decoder and heads are small
matrices over 1,800 queries). A CUDA graph launches the whole recorded sequence at once.

What is captured: ``OccupancyPredictor._core`` with ``capturable=True``, i.e. the model forward
(bf16 autocast as configured), the prompt probabilities, the Gaussian filter, the CUDA voxelizer's
capturable forward (no host synchronisation; bitwise the eager kernel's output), prompt denoising
and the label decisions. Rendering (gsplat sizes its buffers from the data on the host) stays
eager, after the replay, and only runs when asked for.

Inputs are static buffers: the batch is copied into them (device to device) before each replay, and
so are the text prototypes, so changing ``categories`` to another vocabulary with the same layout
(number of used prompts, free prompts, classes) costs a copy; another layout is captured afresh
(after it has been seen twice, like any new shape) and replaces the old graph (one graph is kept, so
GPU memory stays that of one prediction). Outputs are cloned out of the graph's buffers, so a
prediction stays valid after the next one.

Anything that fails (capture or replay) makes that signature eager for good; the reason is logged
and kept in ``status()``. Thread safety: calls are serialised; each replay waits (on the device) for
the previous one's outputs to have been cloned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from typing import Any

import torch
from torch import Tensor

from gausstr_core.batch import CameraBatch

log = logging.getLogger(__name__)

BATCH_FIELDS = ("images", "intrinsics", "cam_to_ego", "image_aug", "depth", "features")
PROMPT_FIELDS = ("prototypes", "groups", "predictable")


def signature(batch: CameraBatch, prompts: Any) -> tuple:
    """What a captured graph depends on besides values: the batch's and the prompts' shapes,
    dtypes and devices, and the number of free-space prompts."""
    parts: list[Any] = []
    for name in BATCH_FIELDS:
        t = getattr(batch, name)
        parts.append(None if t is None else (name, tuple(t.shape), t.dtype, str(t.device)))
    for name in PROMPT_FIELDS:
        t = getattr(prompts, name)
        parts.append((name, tuple(t.shape), t.dtype, str(t.device)))
    parts.append(("num_free", prompts.num_free, prompts.vocabulary.num_classes))
    return tuple(parts)


class CapturedPrediction:
    """One CUDA graph of ``predictor._core`` for one signature, with its static inputs and outputs.

    Args:
        core: ``(batch, prompts) -> dict of tensors``, run with capturable settings.
        batch, prompts: the first inputs (their values fill the static buffers).
        warmup: eager runs on the capture stream before capturing (lazy initialisation, library
            handles and workspaces must exist before capture).
    Raises:
        Exception: whatever the warm-up or the capture raised (the caller falls back to eager).
    """

    def __init__(self, core, batch: CameraBatch, prompts: Any, warmup: int = 2):
        device = batch.images.device
        self.device = device
        self.inputs = CameraBatch(
            **{
                name: None if getattr(batch, name) is None else getattr(batch, name).clone()
                for name in BATCH_FIELDS
            }
        )
        self.prompts = dataclasses.replace(
            prompts, **{name: getattr(prompts, name).clone() for name in PROMPT_FIELDS}
        )
        self._source = prompts  # the vocabulary whose values the prompt buffers hold
        self._done: torch.cuda.Event | None = None
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                core(self.inputs, self.prompts)
        torch.cuda.current_stream(device).wait_stream(stream)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (e.g. the node's publisher reading host arrays) may use CUDA
        # meanwhile; only this thread's calls must be capturable.
        with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
            self.outputs: dict[str, Tensor] = core(self.inputs, self.prompts)
        torch.cuda.synchronize(device)

    def run(self, batch: CameraBatch, prompts: Any) -> dict[str, Tensor]:
        """Copy the inputs in, replay, and return clones of the outputs (on the current stream)."""
        stream = torch.cuda.current_stream(self.device)
        if self._done is not None:
            stream.wait_event(self._done)  # the previous outputs have been cloned
        for name in BATCH_FIELDS:
            src = getattr(batch, name)
            if src is not None:
                getattr(self.inputs, name).copy_(src, non_blocking=True)
        if prompts is not self._source:
            for name in PROMPT_FIELDS:
                getattr(self.prompts, name).copy_(getattr(prompts, name), non_blocking=True)
            self._source = prompts
        self.graph.replay()
        out = {name: t.clone() for name, t in self.outputs.items()}
        self._done = torch.cuda.Event()
        self._done.record(stream)
        return out


class CudaGraphPredict:
    """The predictor's graph cache: captures on the second call with a signature, replays after.

    Args:
        predictor: the ``OccupancyPredictor`` (its ``_core``).
        capture_after: calls with a new signature that run eagerly before it is captured (one-off
            shapes, such as the last partial batch of an evaluation, never cost a capture).
        max_graphs: graphs kept (each holds the GPU memory of one prediction).
    """

    def __init__(self, predictor: Any, capture_after: int = 1, max_graphs: int = 1):
        self.predictor = predictor
        self.capture_after = capture_after
        self.max_graphs = max_graphs
        self._graphs: dict[tuple, CapturedPrediction] = {}
        self._seen: Counter = Counter()
        self._failed: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.counts = Counter()
        self.capture_ms: list[float] = []

    def _core(self, batch: CameraBatch, prompts: Any) -> dict[str, Tensor]:
        return self.predictor._core(batch, prompts, capturable=True)

    def clear(self) -> None:
        """Forget every graph (settings that are baked into them changed)."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
            self._failed.clear()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": True,
                "graphs": len(self._graphs),
                "captures": self.counts["captures"],
                "replays": self.counts["replays"],
                "eager": self.counts["eager"],
                "capture_ms": list(self.capture_ms),
                "failures": list(self._failed.values()),
            }

    def run(self, batch: CameraBatch, prompts: Any) -> dict[str, Tensor] | None:
        """The core outputs from a graph, or None: run it eagerly (not captured (yet), or failed)."""
        if not _on_cuda(batch):
            return None
        key = signature(batch, prompts)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                if key in self._failed or self._seen[key] < self.capture_after:
                    self._seen[key] += 1
                    self.counts["eager"] += 1
                    return None
                graph = self._capture(key, batch, prompts)
                if graph is None:
                    self.counts["eager"] += 1
                    return None
            try:
                out = graph.run(batch, prompts)
            except Exception as exc:  # never seen; keep the node running on the eager path
                self._fail(key, f"replay failed: {type(exc).__name__}: {exc}")
                self._graphs.pop(key, None)
                self.counts["eager"] += 1
                return None
            self.counts["replays"] += 1
            return out

    def _capture(self, key: tuple, batch: CameraBatch, prompts: Any) -> CapturedPrediction | None:
        while len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        start = time.perf_counter()
        try:
            graph = CapturedPrediction(self._core, batch, prompts)
        except Exception as exc:
            self._fail(key, f"capture failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):  # best effort: leave the device usable for eager
                torch.cuda.synchronize(batch.images.device)
            return None
        ms = 1e3 * (time.perf_counter() - start)
        self.capture_ms.append(ms)
        self.counts["captures"] += 1
        self._graphs[key] = graph
        log.info("captured the prediction in a CUDA graph in %.0f ms (%s)", ms, _describe(key))
        return graph

    def _fail(self, key: tuple, reason: str) -> None:
        self._failed[key] = reason
        log.warning("CUDA graph path off for %s, running eagerly: %s", _describe(key), reason)


def _on_cuda(batch: CameraBatch) -> bool:
    return batch.images.device.type == "cuda"


def _describe(key: tuple) -> str:
    shapes = [f"{part[0]} {'x'.join(map(str, part[1]))}" for part in key if part and part[0] in ("images",)]
    return ", ".join(shapes) or "this input"
