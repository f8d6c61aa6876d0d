"""The node's per-frame processing without rclpy: camera messages -> CameraBatch -> prediction -> arrays.

``FramePipeline`` is what the occupancy node runs in its worker thread for every synchronized frame
set, and what ``benchmarks/node_latency.py`` times on a GPU machine without ROS. It takes
message-like objects (rclpy messages, rosbags messages or anything with the same fields), validates
them (bad input raises ``FrameRejected`` with the reason, never produces garbage), builds the model
input at the predictor's input size and returns the prediction as numpy arrays ready for the message
builders in ``gausstr_ros.conversions``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from gausstr_core.batch import CameraBatch
from gausstr_core.data.depth import fill_invalid_depth, valid_depth
from gausstr_core.data.transforms import resize_views
from gausstr_core.grid import VoxelGrid
from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.camera import camera_info_to_camera, distortion_warning
from gausstr_ros.conversions.images import depth_image_to_metres, image_to_rgb


class Predictor(Protocol):
    """What the pipeline needs of ``gausstr_core.inference.predictor.OccupancyPredictor``."""

    class_names: Sequence[str]
    free_label: int

    def set_categories(self, categories: Sequence[str]) -> None: ...

    def predict(self, batch: CameraBatch, render_depth: bool | None = None) -> Any: ...

    # Optional: ``predict(..., defer_checks=True)`` returning a prediction with ``check()`` (the
    # OccupancyPredictor's CUDA-graph path), so that ``FramePipeline.start`` never waits for the GPU.


class FrameRejected(ValueError):
    """A frame set that must be skipped.

    Attributes:
        kind: short category for counters and throttled logs ("encoding", "size", "camera_info",
            "depth", "transform", "stamp", "sync").
        reason: what was wrong, naming the camera and what was expected.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass
class CameraFrame:
    """One camera's part of a synchronized frame set.

    Attributes:
        name: camera name (logs, rendered depth topic).
        image: sensor_msgs/Image-like, rgb8 / bgr8 / mono8, rectified.
        info: sensor_msgs/CameraInfo-like of that image.
        depth: optional sensor_msgs/Image-like depth registered to the image (32FC1 m / 16UC1 mm).
        cam_to_target: (4, 4) camera optical frame -> target frame at the image stamp.
    """

    name: str
    image: Any
    info: Any
    depth: Any | None
    cam_to_target: np.ndarray


@dataclass
class FrameResult:
    """The prediction for one frame set, on the host, as the message builders want it.

    Attributes:
        stamp_ns: stamp of the input images [ns].
        labels: (X, Y, Z) uint8 class per voxel, ``free_label`` = free.
        confidence: (X, Y, Z) float32 in [0, 1].
        means, scales: (N, 3) float32 [m] (scales are standard deviations).
        rotations: (N, 4) float32 unit quaternions (w, x, y, z).
        opacities: (N,) float32; gaussian_labels: (N,) uint8; gaussian_confidence: (N,) float32.
        rendered_depth: (V, h, w) float32 depth rendered from the Gaussians at the network input
            size, or None.
        class_names: the vocabulary these labels index; free_label: len(class_names).
        grid: the voxel grid of ``labels``.
        timings_ms: per-stage times ("prepare", "predict", "to_host", on CUDA "device"; see
            ``PendingFrame``).
    """

    stamp_ns: int
    labels: np.ndarray
    confidence: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    opacities: np.ndarray
    gaussian_labels: np.ndarray
    gaussian_confidence: np.ndarray
    rendered_depth: np.ndarray | None
    class_names: list[str]
    free_label: int
    grid: VoxelGrid
    timings_ms: dict[str, float] = field(default_factory=dict)


def predictor_input_size(predictor: Any) -> tuple[int, int]:
    """(H, W) network input size of a predictor (``input_size``, else its model config)."""
    size = getattr(predictor, "input_size", None)
    if size is None:
        config = getattr(predictor, "config", None)
        size = getattr(getattr(config, "model", None), "image_size", None)
    if size is None:
        raise ValueError(
            "the predictor exposes no input size (expected .input_size or .config.model.image_size)"
        )
    return int(size[0]), int(size[1])


def predictor_device(predictor: Any) -> torch.device:
    device = getattr(predictor, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


class FramePipeline:
    """Messages of one synchronized frame set -> ``FrameResult``.

    Args:
        predictor: an OccupancyPredictor (or anything with the same ``predict``).
        input_size: (H, W) network input; None = the predictor's.
        min_valid_depth_fraction: a depth image with a smaller fraction of valid (finite, > 0) pixels
            rejects the frame; invalid pixels of an accepted image become the far depth (what the
            model saw for the sky in training). The default rejects only depth images without a
            single valid pixel.
    """

    def __init__(
        self,
        predictor: Predictor,
        input_size: tuple[int, int] | None = None,
        min_valid_depth_fraction: float = 1e-9,
    ):
        if not 0 <= min_valid_depth_fraction <= 1:
            raise ValueError(f"min_valid_depth_fraction must be in [0, 1], got {min_valid_depth_fraction}")
        self.predictor = predictor
        self.input_size = tuple(input_size) if input_size else predictor_input_size(predictor)
        self.device = predictor_device(predictor)
        self.min_valid_depth_fraction = min_valid_depth_fraction
        self._staging: dict[tuple, list] = {}  # (name, shape, dtype) -> 2 x [pinned buffer, upload event]
        try:
            self._defers_checks = "defer_checks" in inspect.signature(predictor.predict).parameters
        except (TypeError, ValueError):
            self._defers_checks = False
        # Rendering reads a device value (gsplat sizes its tile lists on the host), i.e. waits for
        # the whole prediction: done in ``start`` it would hold the first worker thread for the
        # GPU's time. A predictor that can render on its own (``render_depth``) renders in
        # ``PendingFrame.result`` instead, on a stream of its own (``DeferredDepth``).
        self._defers_render = callable(getattr(predictor, "render_depth", None))
        self._render_stream = None

    # -- validation and model input -----------------------------------------------------------

    def _camera_arrays(self, cam: CameraFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(H, W, 3) uint8 RGB view, (3, 3) intrinsics, (H, W) float32 raw depth [m] or None of one
        camera (views of the messages where possible)."""
        if cam.info is None:
            raise FrameRejected("camera_info", f"camera {cam.name}: no CameraInfo received yet")
        try:
            model = camera_info_to_camera(cam.info)
        except ConversionError as exc:
            raise FrameRejected("camera_info", f"camera {cam.name}: {exc}") from exc
        try:
            rgb = image_to_rgb(cam.image)
        except ConversionError as exc:
            raise FrameRejected("encoding", f"camera {cam.name}: {exc}") from exc
        if rgb.shape[:2] != (model.height, model.width):
            raise FrameRejected(
                "size",
                f"camera {cam.name}: image is {rgb.shape[1]}x{rgb.shape[0]} but its "
                f"CameraInfo describes {model.width}x{model.height}",
            )
        depth = None
        if cam.depth is not None:
            try:
                raw = depth_image_to_metres(cam.depth)
            except ConversionError as exc:
                raise FrameRejected("encoding", f"camera {cam.name} depth: {exc}") from exc
            if raw.shape != rgb.shape[:2]:
                raise FrameRejected(
                    "size",
                    f"camera {cam.name}: depth is {raw.shape[1]}x{raw.shape[0]}, the "
                    f"image {rgb.shape[1]}x{rgb.shape[0]} (depth must be registered "
                    f"to the image)",
                )
            depth = raw  # validated and cleaned on the device, after upload
        transform = np.asarray(cam.cam_to_target, dtype=np.float64)
        if transform.shape != (4, 4) or not np.isfinite(transform).all():
            raise FrameRejected(
                "transform", f"camera {cam.name}: camera-to-target transform must be a finite (4, 4) matrix"
            )
        return rgb, model.intrinsics, depth

    def prepare(self, cameras: Sequence[CameraFrame]) -> CameraBatch:
        """Validate a frame set and build the (B=1) model input at the network input size.

        Raises:
            FrameRejected: anything wrong with the messages (the reason names the camera).
        """
        batch, fractions = self._prepare(cameras)
        if fractions is not None:
            self._check_depth(cameras, fractions.tolist())
        return batch

    def _prepare(self, cameras: Sequence[CameraFrame]) -> tuple[CameraBatch, torch.Tensor | None]:
        """``prepare`` without the one check that needs device values: the batch and the valid
        fraction (V,) of each raw depth image (a device tensor; None without depth), for
        ``_check_depth`` once the frame's results are on the host anyway. Nothing here waits for
        the device: host arrays go up through pinned buffers, asynchronously."""
        if not cameras:
            raise FrameRejected("sync", "empty frame set")
        arrays = [self._camera_arrays(cam) for cam in cameras]
        has_depth = [d is not None for _, _, d in arrays]
        if any(has_depth) and not all(has_depth):
            missing = [c.name for c, h in zip(cameras, has_depth) if not h]
            raise FrameRejected(
                "depth", f"depth is given for some cameras but not for {missing}: all or none"
            )
        intrinsics = self._upload([np.asarray(k, np.float64) for _, k, _ in arrays], "intrinsics").float()
        cam_to_target = self._upload(
            [np.asarray(c.cam_to_target, np.float64) for c in cameras], "cam_to_target"
        ).float()

        use_depth = all(has_depth)
        sizes = {rgb.shape for rgb, _, _ in arrays}
        if len(sizes) == 1:
            images, depth, aug, valid = self._resize_group(
                [a[0] for a in arrays], [a[2] for a in arrays] if use_depth else None
            )
        else:  # cameras of different sizes: resize each on its own
            parts = [
                self._resize_group([rgb], [d] if use_depth else None, key=str(i))
                for i, (rgb, _, d) in enumerate(arrays)
            ]
            images = torch.cat([p[0] for p in parts])
            depth = torch.cat([p[1] for p in parts]) if use_depth else None
            aug = torch.cat([p[2] for p in parts])
            valid = torch.cat([p[3] for p in parts]) if use_depth else None
        batch = CameraBatch(
            images=images[None],
            intrinsics=intrinsics[None],
            cam_to_ego=cam_to_target[None],
            image_aug=aug[None],
            depth=depth[None] if depth is not None else None,
        )
        return batch, valid

    def _check_depth(self, cameras: Sequence[CameraFrame], fractions: Sequence[float]) -> None:
        for cam, fraction in zip(cameras, fractions):
            if fraction < self.min_valid_depth_fraction or fraction == 0.0:
                need = 100 * self.min_valid_depth_fraction
                raise FrameRejected(
                    "depth",
                    f"camera {cam.name}: only {100 * fraction:.2f}% of depth "
                    f"pixels are valid (finite, > 0); need {need:.2f}% and at "
                    f"least one",
                )

    def _upload(self, arrays: list[np.ndarray], name: str) -> torch.Tensor:
        """(V, ...) device tensor of same-shape host arrays, in one host copy (which also makes
        reversed-channel and broadcast views contiguous).

        On CUDA the copy goes through one of two pinned staging buffers per (name, shape), each reused
        once its previous upload has completed (an event), and the upload is asynchronous: preparing
        the next frame never waits for the GPU to finish the current one.
        """
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(arrays))
        shape = (len(arrays), *arrays[0].shape)
        key = (name, shape, arrays[0].dtype.str)
        ring = self._staging.get(key)
        if ring is None:
            if len(self._staging) >= 32:
                self._staging.clear()
            ring = self._staging[key] = [
                [torch.from_numpy(np.empty(shape, arrays[0].dtype)).pin_memory(), None]
            ]
            ring.append([torch.from_numpy(np.empty(shape, arrays[0].dtype)).pin_memory(), None])
        staged = ring.pop(0)
        ring.append(staged)
        if staged[1] is not None:
            staged[1].synchronize()  # the upload two frames ago from this buffer is done
        buf = staged[0]
        host = buf.numpy()
        for i, a in enumerate(arrays):
            np.copyto(host[i], a)
        out = buf.to(self.device, non_blocking=True)
        staged[1] = torch.cuda.Event()
        staged[1].record()
        return out

    def _resize_group(self, rgbs: list[np.ndarray], depths: list[np.ndarray] | None, key: str = ""):
        """Same-size views -> device, resized there: images (V, 3, H', W'), depth (V, H', W') or None,
        image_aug (V, 3, 3), and the valid fraction (V,) of each raw depth image or None.

        Depth pixels that are not finite or not > 0 are unmeasured (a depth camera's sky, out of range)
        and become the far depth (``gausstr_core.data.depth.fill_invalid_depth``): the model was trained
        on metric depth that calls such pixels far, never missing. The valid fraction is measured on the
        raw image, before resizing."""
        # NCHW contiguous, the layout the model is built and benchmarked with (a uint8 copy on the device)
        images = self._upload(rgbs, "rgb" + key).permute(0, 3, 1, 2).contiguous()
        depth = valid = None
        if depths is not None:
            raw = self._upload(depths, "depth" + key).float()
            valid = valid_depth(raw).flatten(1).float().mean(1)
            depth = fill_invalid_depth(raw)
        images, depth, aug = resize_views(images, self.input_size, depth)
        return images, depth, aug, valid

    # -- inference ------------------------------------------------------------------------------

    def run(
        self, cameras: Sequence[CameraFrame], stamp_ns: int, render_depth: bool | None = None
    ) -> FrameResult:
        """Validate, predict, and copy the prediction to the host (``start(...).result()``).

        Args:
            render_depth: render depth into the cameras (None = the predictor's default); the node
                turns it off when nobody subscribes to the rendered depth.
        Raises:
            FrameRejected: bad input (nothing is published).
        """
        return self.start(cameras, stamp_ns, render_depth).result()

    def start(
        self, cameras: Sequence[CameraFrame], stamp_ns: int, render_depth: bool | None = None
    ) -> PendingFrame:
        """Validate and build the batch, queue the prediction and its copy to the host, and return
        without waiting for the device (on CUDA with the graph path; eager code may synchronise on
        its own). ``result()`` of the returned ``PendingFrame`` waits, checks and builds the arrays,
        so a caller can prepare the next frame set meanwhile (the node's two worker threads).

        Raises:
            FrameRejected: bad messages (found before anything is queued).
        """
        t0 = time.perf_counter()
        batch, fractions = self._prepare(cameras)
        t1 = time.perf_counter()
        device_start = _record_event(self.device)
        defer = bool(render_depth) and self._defers_render
        with torch.inference_mode():
            kwargs = {} if render_depth is None else {"render_depth": render_depth and not defer}
            if self._defers_checks:
                kwargs["defer_checks"] = True
            prediction = self.predictor.predict(batch, **kwargs)
            depth = DeferredDepth(self, prediction.gaussians, batch) if defer else None
        t2 = time.perf_counter()
        pending = PendingFrame(list(cameras), prediction, fractions, stamp_ns, self, device_start, depth)
        pending.timings_ms.update(prepare=1e3 * (t1 - t0), predict=1e3 * (t2 - t1))
        return pending

    @staticmethod
    def _to_host(prediction: Any, stamp_ns: int) -> FrameResult:
        """The prediction's arrays on the host (waits for the device)."""
        return PendingFrame([], prediction, None, stamp_ns, None, None).result()


class DeferredDepth:
    """The rendered depth of a queued prediction, rendered later (``FramePipeline.start`` ->
    ``PendingFrame.result``), so that queueing a prediction never waits for the GPU.

    At construction (the thread that queued the prediction, its stream) it copies the Gaussians and
    cameras out of the prediction, which on the CUDA-graph path live in buffers the next replay
    overwrites, and records an event; ``render()`` renders them on the pipeline's own CUDA stream
    once that event has passed, so the render of frame set n runs beside the prediction of set n + 1
    instead of queueing behind it. Same function and inputs as ``predict(render_depth=True)``.
    """

    def __init__(self, pipeline: FramePipeline, gaussians: Any, batch: CameraBatch):
        self._pipeline = pipeline
        self._gaussians = type(gaussians)(
            *(t.detach().clone() for t in (gaussians.means, gaussians.scales, gaussians.rotations)),
            gaussians.opacities.detach().clone(),
            gaussians.means.new_zeros(*gaussians.means.shape[:2], 0),
        )
        self._intrinsics = batch.input_intrinsics().float().clone()
        self._cam_to_ego = batch.cam_to_ego.float().clone()
        self._size = batch.image_size
        self._ready = None
        if self._intrinsics.is_cuda:
            self._ready = torch.cuda.Event()
            self._ready.record()

    def render(self) -> np.ndarray:
        """(V, H, W) float32 depth of the first scene on the host [m] (waits for the render)."""
        pipeline = self._pipeline
        on_stream = contextlib.nullcontext()
        if self._ready is not None:
            if pipeline._render_stream is None:
                pipeline._render_stream = torch.cuda.Stream(device=self._intrinsics.device)
            stream = pipeline._render_stream
            stream.wait_event(self._ready)
            g = self._gaussians
            for t in (self._intrinsics, self._cam_to_ego, g.means, g.scales, g.rotations, g.opacities):
                t.record_stream(stream)  # made on the first thread's stream, used on this one
            on_stream = torch.cuda.stream(stream)
        with torch.inference_mode(), on_stream:
            depth = pipeline.predictor.render_depth(
                self._gaussians, self._intrinsics, self._cam_to_ego, self._size
            )
            return depth[0].float().cpu().numpy()  # a synchronous copy: waits for this stream only


def _record_event(device: torch.device) -> torch.cuda.Event | None:
    if device.type != "cuda":
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


HOST_FIELDS = (
    ("labels", torch.uint8),
    ("confidence", torch.float32),
    ("gaussian_labels", torch.uint8),
    ("gaussian_confidence", torch.float32),
)
GAUSSIAN_FIELDS = ("means", "scales", "rotations", "opacities")


class PendingFrame:
    """A frame set whose prediction and host copies are queued on the device.

    The copies go to pinned host memory asynchronously (``non_blocking``), followed by an event;
    ``result()`` waits for that event, applies the checks that needed device values (the depth
    images' valid fractions, the predictor's deferred input check) and returns the ``FrameResult``.
    On the CPU everything is ready at once.

    Attributes:
        stamp_ns: the frame set's stamp; cameras: its ``CameraFrame``s.
        timings_ms: "prepare", "predict" (host time to queue the prediction), and after ``result()``
            "to_host" (waiting for the device and the copies; with a deferred depth render also
            that render, on its own in "render") and, on CUDA, "device" (GPU time from the start of
            the prediction to the end of the copies, CUDA events; without a deferred render).
    """

    def __init__(
        self,
        cameras: list[CameraFrame],
        prediction: Any,
        fractions: torch.Tensor | None,
        stamp_ns: int,
        pipeline: FramePipeline | None,
        device_start: torch.cuda.Event | None,
        deferred_depth: DeferredDepth | None = None,
    ):
        self.cameras = cameras
        self._deferred_depth = deferred_depth
        self.stamp_ns = stamp_ns
        self.timings_ms: dict[str, float] = {}
        self._prediction = prediction
        self._pipeline = pipeline
        self._device_start = device_start
        g = prediction.gaussians
        tensors = {name: getattr(prediction, name).detach()[0].to(dtype) for name, dtype in HOST_FIELDS}
        tensors.update({name: getattr(g, name).detach()[0].float() for name in GAUSSIAN_FIELDS})
        if prediction.rendered_depth is not None:
            tensors["rendered_depth"] = prediction.rendered_depth.detach()[0].float()
        if fractions is not None:
            tensors["depth_fractions"] = fractions.detach().double()
        cuda = tensors["labels"].is_cuda
        self._host = {name: t.to("cpu", non_blocking=cuda) for name, t in tensors.items()}
        self._done = None
        if cuda:
            self._done = torch.cuda.Event(enable_timing=device_start is not None)
            self._done.record()
        self._result: FrameResult | None = None

    def result(self) -> FrameResult:
        """Wait for the device and return the host arrays (once; later calls return the same).

        Raises:
            FrameRejected: a depth image without enough valid pixels.
            ValueError: the predictor's deferred check (e.g. non-finite Gaussians).
        """
        if self._result is not None:
            return self._result
        t0 = time.perf_counter()
        if self._done is not None:
            self._done.synchronize()
            if self._device_start is not None:
                self.timings_ms["device"] = self._device_start.elapsed_time(self._done)
        host = {name: t.numpy() for name, t in self._host.items()}
        if "depth_fractions" in host and self._pipeline is not None:
            self._pipeline._check_depth(self.cameras, host["depth_fractions"].tolist())
        check = getattr(self._prediction, "check", None)
        if callable(check):
            check()  # before rendering: never render Gaussians that failed it
        if self._deferred_depth is not None:
            t1 = time.perf_counter()
            host["rendered_depth"] = self._deferred_depth.render()
            self._deferred_depth = None
            self.timings_ms["render"] = 1e3 * (time.perf_counter() - t1)
        p = self._prediction
        self._result = FrameResult(
            stamp_ns=self.stamp_ns,
            labels=host["labels"],
            confidence=host["confidence"],
            means=host["means"],
            scales=host["scales"],
            rotations=host["rotations"],
            opacities=host["opacities"],
            gaussian_labels=host["gaussian_labels"],
            gaussian_confidence=host["gaussian_confidence"],
            rendered_depth=host.get("rendered_depth"),
            class_names=list(p.class_names),
            free_label=int(p.free_label),
            grid=p.grid,
        )
        self.timings_ms["to_host"] = 1e3 * (time.perf_counter() - t0)
        self._result.timings_ms = dict(self.timings_ms)
        self._prediction = None  # the device tensors can go
        return self._result


# ---------------------------------------------------------------------------------------------
# TF wiring and input warnings shared with the rosbag evaluator (no rclpy)
# ---------------------------------------------------------------------------------------------


def camera_frames_of(
    images: Sequence[Any],
    infos: Sequence[Any],
    depths: Sequence[Any] | None,
    camera_names: Sequence[str],
    target_frame: str,
    stamp_ns: int,
    lookup: Any,
) -> list[CameraFrame]:
    """The ``CameraFrame``s of one synchronized set: each image's camera pose from TF at the set stamp.

    Args:
        images, infos, depths: per camera (depths None without depth input).
        lookup: ``(target, source, stamp_ns) -> (4, 4)`` raising ``gausstr_ros.node.tf``
            TransformExtrapolation / TransformError (a TransformBuffer's ``lookup``, or the node's
            TfLookup with its timeout bound in).
    Raises:
        FrameRejected: an empty frame_id, or a missing or stale transform (kind "transform").
    """
    from gausstr_ros.node.tf import TransformError, TransformExtrapolation

    cameras = []
    for v, name in enumerate(camera_names):
        source = images[v].header.frame_id
        if not source:
            raise FrameRejected("transform", f"camera {name}: image has an empty header.frame_id")
        try:
            cam_to_target = lookup(target_frame, source, stamp_ns)
        except TransformExtrapolation as exc:
            raise FrameRejected(
                "transform",
                f"camera {name}: stale or missing TF {target_frame} <- {source} at the image stamp: {exc}",
            ) from exc
        except TransformError as exc:
            raise FrameRejected(
                "transform", f"camera {name}: no TF {target_frame} <- {source}: {exc}"
            ) from exc
        cameras.append(
            CameraFrame(name, images[v], infos[v], depths[v] if depths is not None else None, cam_to_target)
        )
    return cameras


class DistortionWarnings:
    """The warning for a camera whose CameraInfo has distortion coefficients (rectified images are
    expected), once per camera.

    Args:
        image_topics: the image topic of each camera (named in the warning).
    """

    def __init__(self, image_topics: Sequence[str]):
        self.image_topics = list(image_topics)
        self._warned: set[int] = set()

    def new(self, infos: Sequence[Any]) -> list[str]:
        """The warnings for the cameras of a frame set not warned about before."""
        out = []
        for v, info in enumerate(infos):
            if info is not None and v not in self._warned:
                text = distortion_warning(info, self.image_topics[v])
                if text:
                    self._warned.add(v)
                    out.append(text)
        return out
