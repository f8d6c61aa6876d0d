"""A predictor with a GPU's timing, for measuring the node's host side on a machine without a GPU.

``node_latency.py --simulated-device-ms T`` runs the real node (real rclpy, real messages, real
conversions and publishers) around this stand-in: it holds ONE real prediction of the preset (random
weights, computed once on the CPU at start-up, so the outputs have the real sizes: voxels,
Gaussians, 6 rendered depth images) and answers every ``predict`` with it at once, while the device
time is modelled as an in-order queue: the work of a frame set queued at time q ends at
``max(q, end of the previous set) + T``. ``prediction.check()``, which the node's second stage calls
where it waits for the CUDA event on a real GPU, sleeps until that end (``time.sleep`` releases the
interpreter lock, as waiting for a CUDA event does).

What it measures: whether the node's Python (executor, input conversion, output messages,
publishing) keeps up with the rate when the device needs T ms per set. What it does not: the batch
preparation as on a GPU host (its tensor operations, queued kernels there, run on this CPU here, so
stage 1 is far slower than on the GPU host), host-device copies, the GPU's own contention.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import torch


class SimulatedDevicePredictor:
    """Wraps an ``OccupancyPredictor``: real attributes, one real prediction, simulated device time.

    Args:
        predictor: the real predictor (its ``device`` should be the CPU).
        batch: a batch of the right shapes, predicted once (with rendered depth; the prediction
            without it is the same minus the depth images).
        device_ms: simulated device time per frame set [ms], rendered depth included.
    """

    def __init__(self, predictor: Any, batch: Any, device_ms: float):
        if device_ms <= 0:
            raise ValueError(f"device_ms must be positive, got {device_ms}")
        self._real = predictor
        self.device_ms = float(device_ms)
        with torch.inference_mode():
            self._with_depth = predictor.predict(batch, render_depth=True)
            self._without_depth = dataclasses.replace(self._with_depth, rendered_depth=None)
        self._lock = threading.Lock()
        self._device_free_at = 0.0

    def __getattr__(self, name: str) -> Any:  # everything but predict: the real predictor's
        return getattr(self._real, name)

    def render_depth(self, gaussians: Any, intrinsics: Any, cam_to_ego: Any, image_size: Any) -> Any:
        """The held prediction's rendered depth (the pipeline renders late, in its second thread;
        the simulated device time of ``predict`` covers the render)."""
        return self._with_depth.rendered_depth

    def predict(self, batch: Any, render_depth: bool | None = None, defer_checks: bool = False) -> Any:
        """The held prediction, whose ``check()`` waits for the simulated device to finish this set."""
        render = self._real.config.render_depth if render_depth is None else render_depth
        with self._lock:
            start = max(time.perf_counter(), self._device_free_at)
            end = start + self.device_ms / 1e3
            self._device_free_at = end

        def wait_for_device() -> None:
            left = end - time.perf_counter()
            if left > 0:
                time.sleep(left)

        held = self._with_depth if render else self._without_depth
        prediction = dataclasses.replace(held, deferred_check=wait_for_device)
        if not defer_checks:  # the eager path waits inside predict
            prediction.check()
        return prediction
