"""The node's per-frame pipeline without rclpy (what the GPU benchmark times): model input built exactly
from message-like objects, bad input refused with its reason, prediction to host arrays; and the
small thread-safe helpers (latest-only slot, statistics, keyed log throttle)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gausstr_core.data.depth import FAR_DEPTH, fill_invalid_depth
from gausstr_core.data.transforms import resize_matrix, resize_views
from gausstr_ros.node.stats import PipelineStats
from gausstr_ros.node.worker import LatestSlot, TwoStageWorker
from gausstr_ros.pipeline import CameraFrame, FramePipeline, FrameRejected
from gausstr_testing.ros_frames import SyntheticCameras
from gausstr_testing.ros_message_like import camera_info_like, image_like

RNG = np.random.default_rng(0)


class RecordingPredictor:
    """Keeps the last batch; predicts nothing (prepare() tests)."""

    input_size = (48, 80)
    device = torch.device("cpu")
    class_names = ("a",)
    free_label = 1

    def set_categories(self, categories):
        pass

    def predict(self, batch, render_depth=None):
        self.batch = batch
        raise RuntimeError("not used")


def frame(
    cams: SyntheticCameras,
    k: int,
    encoding: str = "rgb8",
    depth: np.ndarray | None = None,
    depth_encoding: str = "32FC1",
):
    """A CameraFrame of message-like namespaces (no ROS), like rosbags messages."""
    spec = cams.rig.cameras[k]
    rgb = cams.rgb(k, 0)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1].copy(), "mono8": rgb[..., 0].copy()}[encoding]
    info = camera_info_like(
        k=(spec.fx, 0, spec.cx, 0, spec.fy, spec.cy, 0, 0, 1), width=cams.width, height=cams.height
    )
    depth_msg = None
    if depth is not None:
        millimetres = depth_encoding in ("16UC1", "mono16")
        values = np.round(depth * 1000).astype(np.uint16) if millimetres else depth
        depth_msg = image_like(values, depth_encoding)
    return CameraFrame(cams.names[k], image_like(pixels, encoding), info, depth_msg, cams.cam_to_target(k))


def test_prepare_builds_the_exact_model_input():
    cams = SyntheticCameras(height=60, width=100)
    pipeline = FramePipeline(RecordingPredictor())
    depth = [cams.depth(k) for k in range(6)]
    depth[1][:5] = np.nan
    frames = [frame(cams, k, encoding=("rgb8", "bgr8")[k % 2], depth=depth[k]) for k in range(6)]
    batch = pipeline.prepare(frames)
    raw = torch.from_numpy(np.stack([cams.rgb(k, 0) for k in range(6)])).permute(0, 3, 1, 2)
    # The depth rule (docs/node.md): unmeasured pixels (0, NaN, inf) reach the model as the far depth.
    filled = fill_invalid_depth(torch.from_numpy(np.stack(depth)))
    ref_images, ref_depth, ref_aug = resize_views(raw, (48, 80), filled)
    torch.testing.assert_close(batch.images[0], ref_images)
    torch.testing.assert_close(batch.depth[0], ref_depth)
    torch.testing.assert_close(batch.image_aug[0], ref_aug)
    torch.testing.assert_close(batch.image_aug[0, 0], resize_matrix((60, 100), (48, 80)))
    torch.testing.assert_close(batch.intrinsics[0], cams.rig.intrinsics())
    torch.testing.assert_close(batch.cam_to_ego[0], cams.rig.cam_to_ego())
    assert torch.isfinite(batch.depth).all() and (batch.depth[0, 1, :4] == FAR_DEPTH).all()


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1", "mono16"])
def test_unmeasured_depth_reaches_the_model_as_in_training(encoding):
    """A depth camera's sky (0, NaN, inf, negative) is what the synthetic targets call far: the model
    must see the far depth there, never 0 (0 would lift Gaussians onto the camera)."""
    from gausstr_core.data.synthetic.targets import DepthTargetConfig, depth_targets

    cams = SyntheticCameras(height=48, width=80)
    true = cams.depth(0)
    true[:6] = 0.0  # sky rows
    if encoding == "32FC1":
        true[6, :5], true[7, :5], true[8, :5] = np.nan, np.inf, -1.0
    training = depth_targets(
        torch.from_numpy(true)[None],
        DepthTargetConfig(scale_bias=1.0, scale_jitter=0.0, smooth_noise_std=0.0, pixel_noise_std=0.0),
    )[0]
    batch = FramePipeline(RecordingPredictor()).prepare([frame(cams, 0, depth=true, depth_encoding=encoding)])
    measured = torch.from_numpy(np.isfinite(true) & (true > 0))
    got = batch.depth[0, 0]
    assert torch.all(got[~measured] == FAR_DEPTH) and torch.all(training[~measured] == FAR_DEPTH)
    tolerance = 1e-3 if encoding != "32FC1" else 1e-6  # millimetre quantisation
    torch.testing.assert_close(got[measured], training[measured], atol=tolerance, rtol=0)


def test_millimetre_depth_and_mono_images():
    cams = SyntheticCameras(height=48, width=80)
    pipeline = FramePipeline(RecordingPredictor())
    d = cams.depth(0)
    batch = pipeline.prepare([frame(cams, 0, "mono8", depth=d, depth_encoding="16UC1")])
    torch.testing.assert_close(batch.depth[0, 0], torch.from_numpy(np.round(d * 1000) / 1000).float())
    mono = torch.from_numpy(cams.rgb(0, 0)[..., 0]).float() / 255
    torch.testing.assert_close(batch.images[0, 0], mono.expand(3, -1, -1))


def test_cameras_of_different_sizes_are_resized_each_on_their_own():
    small, big = SyntheticCameras(height=48, width=80), SyntheticCameras(height=96, width=160)
    pipeline = FramePipeline(RecordingPredictor())
    batch = pipeline.prepare([frame(small, 0), frame(big, 1)])
    torch.testing.assert_close(batch.image_aug[0, 0], resize_matrix((48, 80), (48, 80)))
    torch.testing.assert_close(batch.image_aug[0, 1], resize_matrix((96, 160), (48, 80)))
    ref, _, _ = resize_views(torch.from_numpy(big.rgb(1, 0)).permute(2, 0, 1)[None], (48, 80))
    torch.testing.assert_close(batch.images[0, 1], ref[0])


def test_bad_frames_are_refused_with_their_reason():
    cams = SyntheticCameras(height=48, width=80)
    pipeline = FramePipeline(RecordingPredictor(), min_valid_depth_fraction=0.5)
    good = frame(cams, 0)

    def refused(kind, text, cameras):
        with pytest.raises(FrameRejected, match=text) as info:
            pipeline.prepare(cameras)
        assert info.value.kind == kind

    refused("camera_info", "no CameraInfo", [CameraFrame("c", good.image, None, None, good.cam_to_target)])
    bad_info = camera_info_like(k=(0.0,) * 9, p=(0.0,) * 12, width=80, height=48)
    refused(
        "camera_info", "no valid pinhole", [CameraFrame("c", good.image, bad_info, None, good.cam_to_target)]
    )
    bayer = SimpleNamespace(**{**vars(good.image), "encoding": "bayer_rggb8"})
    bayer_frame = CameraFrame("c", bayer, good.info, None, good.cam_to_target)
    refused("encoding", "'bayer_rggb8' is not supported", [bayer_frame])
    other_size = camera_info_like(width=100, height=48)
    refused(
        "size",
        "image is 80x48 but its CameraInfo describes 100x48",
        [CameraFrame("c", good.image, other_size, None, good.cam_to_target)],
    )
    half = cams.depth(0).copy()
    half[:30] = np.inf
    refused("depth", "37.50% of depth pixels are valid", [frame(cams, 0, depth=half)])
    small_depth = image_like(np.ones((10, 10), np.float32), "32FC1")
    refused(
        "size",
        "depth must be registered",
        [CameraFrame("c", good.image, good.info, small_depth, good.cam_to_target)],
    )
    refused("depth", "all or none", [frame(cams, 0, depth=cams.depth(0)), frame(cams, 1)])
    refused("transform", "finite", [CameraFrame("c", good.image, good.info, None, np.full((4, 4), np.nan))])
    refused("sync", "empty frame set", [])


def test_run_returns_host_arrays_of_the_real_predictor():
    from gausstr_testing.ros_predictor import node_predictor

    predictor = node_predictor()
    cams = SyntheticCameras(height=56, width=100)
    pipeline = FramePipeline(predictor)
    frames = [frame(cams, k) for k in range(6)]
    result = pipeline.run(frames, stamp_ns=123, render_depth=True)
    grid = predictor.grid
    assert result.stamp_ns == 123 and result.grid == grid
    assert result.labels.shape == grid.shape and result.labels.dtype == np.uint8
    assert result.confidence.shape == grid.shape and result.confidence.dtype == np.float32
    n = 6 * predictor.model.config.decoder.queries_per_view
    assert result.means.shape == (n, 3) and result.rotations.shape == (n, 4)
    assert result.opacities.shape == (n,)
    assert result.gaussian_labels.dtype == np.uint8 and result.gaussian_labels.max() <= result.free_label
    assert result.rendered_depth.shape == (6, *predictor.input_size)
    assert result.class_names == predictor.class_names and result.free_label == len(result.class_names)
    assert set(result.timings_ms) == {"prepare", "predict", "to_host", "render"}  # depth rendered late
    assert pipeline.run(frames, stamp_ns=124, render_depth=False).rendered_depth is None


def test_the_late_depth_render_equals_the_predictors_own():
    """``start`` queues the prediction without its depth render and ``result`` renders it (so that
    queueing never waits for the device): the same depth as ``predict(render_depth=True)``, also when
    the next set's prediction was queued in between (on CUDA its graph replay reuses the buffers)."""
    from gausstr_testing.ros_predictor import node_predictor

    predictor = node_predictor()
    cams = SyntheticCameras(height=56, width=100)
    pipeline = FramePipeline(predictor)
    first = [frame(cams, k) for k in range(6)]
    second = [frame(cams, k, encoding="mono8") for k in range(6)]  # another image, another map
    pending = pipeline.start(first, 1, render_depth=True)
    assert pending.timings_ms and pending._host.get("rendered_depth") is None  # not rendered yet
    later = pipeline.start(second, 2, render_depth=True)
    got, got_later = pending.result().rendered_depth, later.result().rendered_depth
    for frames, depth in ((first, got), (second, got_later)):
        batch, _ = pipeline._prepare(frames)
        with torch.inference_mode():
            want = predictor.predict(batch, render_depth=True).rendered_depth[0]
        np.testing.assert_allclose(depth, want.float().numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, got_later)


def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 is dropped
    assert slot.get(timeout=0) == 2 and slot.get(timeout=0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.get(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    slot.put(3)
    consumer.join()
    assert got == [3]
    slot.close()
    assert slot.get(timeout=5) is None and slot.closed


def _run_two_stages(items, first_s, second_s, fail_first=(), fail_second=(), gap_s=None):
    """Feed items through a LatestSlot into a TwoStageWorker (as the node does), each once the slot is
    free (``gap_s`` None) or every ``gap_s`` s; returns what each stage saw, the errors and the number
    of items the slot dropped."""
    slot: LatestSlot[int] = LatestSlot()
    firsts, seconds, errors = [], [], []
    lock = threading.Lock()

    def first(item):
        time.sleep(first_s)
        with lock:
            firsts.append(item)
        if item in fail_first:
            raise FrameRejected("encoding", f"item {item}")
        return ("handle", item)

    def second(item, handle):
        assert handle == ("handle", item)
        time.sleep(second_s)
        if item in fail_second:
            raise ValueError(f"item {item}")
        with lock:
            seconds.append(item)

    def on_error(item, exc):
        with lock:
            errors.append((item, type(exc).__name__))

    worker = TwoStageWorker(slot, first, second, on_error, name="test")
    worker.start()
    dropped = 0
    for item in items:
        if gap_s is None:  # slow input: the next item only once the previous one left the slot
            while slot.pending():
                time.sleep(0.0005)
        if slot.put(item) is not None:
            dropped += 1
        if gap_s:
            time.sleep(gap_s)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            done = len(seconds) + len(errors) + dropped
        if done >= len(items) and not slot.pending():
            break
        time.sleep(0.01)
    time.sleep(0.05)
    worker.stop()
    assert not any(t.is_alive() for t in worker.threads)
    return firsts, seconds, errors, dropped


def test_two_stage_worker_keeps_order_and_loses_nothing():
    """Input that waits for the slot: every item passes both stages, in order."""
    items = list(range(30))
    firsts, seconds, errors, dropped = _run_two_stages(items, 0.002, 0.004)
    assert dropped == 0 and errors == []
    assert firsts == items and seconds == items


def test_two_stage_worker_drops_only_in_the_slot_and_counts_them():
    """Input faster than the stages: the slot replaces waiting items (counted by the producer, as
    the node counts drops); whatever got through is in order, and every item is accounted for."""
    items = list(range(200))
    firsts, seconds, errors, dropped = _run_two_stages(items, 0.003, 0.006, gap_s=0.0005)
    assert dropped > 0 and errors == []
    assert seconds == sorted(seconds) and firsts == sorted(firsts)
    assert seconds == firsts  # nothing lost between the stages
    assert len(seconds) + dropped == len(items)


def test_two_stage_worker_overlaps_the_stages():
    """Second stage of n runs while the first stage of n + 1 runs: 20 items of 20 ms + 20 ms take
    about 20 x 20 ms, not 20 x 40 ms."""
    items = list(range(20))
    start = time.perf_counter()
    slot: LatestSlot[int] = LatestSlot()
    seconds = []
    worker = TwoStageWorker(
        slot, lambda i: time.sleep(0.02) or i, lambda i, h: (time.sleep(0.02), seconds.append(i)), print
    )
    worker.start()
    for item in items:
        while slot.pending():
            time.sleep(0.001)
        slot.put(item)
    while len(seconds) < len(items) and time.perf_counter() - start < 10:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    worker.stop()
    assert seconds == items
    assert elapsed < 0.75 * len(items) * 0.04, f"{elapsed:.3f} s: the stages did not overlap"


def test_two_stage_worker_reports_errors_of_either_stage_and_goes_on():
    items = list(range(12))
    _, seconds, errors, dropped = _run_two_stages(items, 0.001, 0.001, fail_first={2, 7}, fail_second={4})
    assert dropped == 0
    assert errors == [(2, "FrameRejected"), (4, "ValueError"), (7, "FrameRejected")]
    assert seconds == [i for i in items if i not in (2, 4, 7)]


class _ConstantPredictor(RecordingPredictor):
    """Predicts an empty grid with two Gaussians, and checks nothing."""

    def predict(self, batch, render_depth=None):
        from gausstr_core.gaussians import Gaussians
        from gausstr_core.grid import VoxelGrid

        grid = VoxelGrid((0.0, 0.0, 0.0, 0.8, 0.8, 0.8), 0.4)
        g = Gaussians(
            torch.zeros(1, 2, 3),
            torch.ones(1, 2, 3),
            torch.ones(1, 2, 4),
            torch.ones(1, 2),
            torch.ones(1, 2, 1),
        )
        return SimpleNamespace(
            labels=torch.ones(1, *grid.shape, dtype=torch.uint8),
            confidence=torch.ones(1, *grid.shape),
            gaussians=g,
            gaussian_labels=torch.zeros(1, 2, dtype=torch.uint8),
            gaussian_confidence=torch.ones(1, 2),
            rendered_depth=None,
            class_names=["a"],
            free_label=1,
            grid=grid,
        )


def test_pending_frame_checks_depth_after_the_prediction():
    """The valid-depth check needs device values: start() queues the frame, result() rejects it."""
    cams = SyntheticCameras(height=24, width=40)
    bad = np.zeros((24, 40), np.float32)
    frames = [frame(cams, k, depth=cams.depth(k) if k else bad) for k in range(3)]
    pipeline = FramePipeline(_ConstantPredictor())
    pending = pipeline.start(frames, stamp_ns=5)
    with pytest.raises(FrameRejected, match=r"only 0\.00% of depth"):
        pending.result()
    with pytest.raises(FrameRejected, match=r"only 0\.00% of depth"):
        pipeline.prepare(frames)
    frames[0] = frame(cams, 0, depth=cams.depth(0))
    result = pipeline.start(frames, stamp_ns=6).result()
    assert result.stamp_ns == 6 and result.labels.shape == (2, 2, 2) and result.means.shape == (2, 3)


def test_stats_percentiles_rate_and_counters():
    now = [0.0]
    stats = PipelineStats(window=50, clock=lambda: now[0])
    latencies = RNG.uniform(0.01, 0.2, 80)
    for lat in latencies:
        now[0] += 0.1
        stats.record_published(lat)
    stats.record_dropped(3)
    stats.record_rejected("depth", "camera x: no valid depth")
    snap = stats.snapshot()
    assert snap.processed == 80 and snap.dropped == 3 and snap.rejected == 1 and snap.window == 50
    assert snap.latency_p50_ms == pytest.approx(np.percentile(latencies[-50:] * 1e3, 50))
    assert snap.latency_p99_ms == pytest.approx(np.percentile(latencies[-50:] * 1e3, 99))
    assert snap.rate_hz == pytest.approx(10.0)
    assert snap.rejected_by_kind == {"depth": 1} and snap.last_error == "camera x: no valid depth"


@pytest.mark.ros  # the throttle lives in the node module, which imports rclpy
def test_keyed_throttle_reports_suppressed_messages():
    from gausstr_ros.node.occupancy_node import KeyedThrottle

    now = [0.0]
    throttle = KeyedThrottle(2.0, clock=lambda: now[0])
    lines = []
    assert throttle(lines.append, "a", "first")
    assert not throttle(lines.append, "a", "again")
    assert throttle(lines.append, "b", "other key")
    now[0] = 2.5
    assert throttle(lines.append, "a", "later")
    assert lines == ["first", "other key", "later (1 more like this since the last report)"]


@pytest.mark.gpu
def test_prepare_on_cuda_matches_the_cpu():
    """Pinned host buffer, uint8 upload and resize on the GPU give the CPU's model input."""

    class CudaRecording(RecordingPredictor):
        device = torch.device("cuda")

    cams = SyntheticCameras(height=60, width=100)
    frames = [frame(cams, k, depth=cams.depth(k)) for k in range(6)]
    cpu = FramePipeline(RecordingPredictor()).prepare(frames)
    for _ in range(2):  # the second call reuses the pinned buffer
        gpu = FramePipeline(CudaRecording()).prepare(frames)
    assert gpu.images.is_cuda and gpu.depth.is_cuda and gpu.intrinsics.is_cuda
    torch.testing.assert_close(gpu.images.cpu(), cpu.images, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth)
    torch.testing.assert_close(gpu.image_aug.cpu(), cpu.image_aug)


@pytest.mark.gpu
def test_run_on_cuda_with_the_tiny_preset():
    from gausstr_core.inference.predictor import OccupancyPredictor

    predictor = OccupancyPredictor.from_preset("tiny", device="cuda")
    cams = SyntheticCameras(height=112, width=200)
    frames = [frame(cams, k) for k in range(6)]
    pipeline = FramePipeline(predictor)
    result = pipeline.run(frames, stamp_ns=1, render_depth=True)
    assert result.labels.shape == predictor.grid.shape and result.labels.dtype == np.uint8
    assert result.rendered_depth.shape == (6, 112, 200)
    assert np.isfinite(result.rendered_depth).all() and (result.rendered_depth >= 0).all()
    assert result.means.shape == (240, 3) and np.isfinite(result.means).all()


@pytest.mark.parametrize(
    ("fx", "fy", "text"),
    [
        (1e-300, 1e-300, "not a plausible focal length"),  # 0 in float32
        (1e300, 1e300, "non-finite"),  # inf in float32
        (1e-3, 1e-3, "not a plausible focal length"),  # 0.001 px for an 80 px wide image
        (1e5, 1e5, "not a plausible focal length"),
        (80.0, 4.0, "fx / fy"),
    ],
)
def test_intrinsics_are_checked_in_float32_with_a_plausible_range(fx, fy, text):
    """A float64 CameraInfo can pass every float64 check and still be 0 or inf for the model, which then
    makes every Gaussian NaN and publishes an all-free grid: refused with the reason instead."""
    cams = SyntheticCameras(height=48, width=80)
    good = frame(cams, 0)
    info = camera_info_like(k=(fx, 0, 40, 0, fy, 24, 0, 0, 1), width=80, height=48)
    with pytest.raises(FrameRejected, match=text) as caught:
        FramePipeline(RecordingPredictor()).prepare(
            [CameraFrame("c", good.image, info, None, good.cam_to_target)]
        )
    assert caught.value.kind == "camera_info" and "camera c" in caught.value.reason
    ok = camera_info_like(k=(2.0, 0, 40, 0, 2.0, 24, 0, 0, 1), width=80, height=48)  # 174 degrees: accepted
    FramePipeline(RecordingPredictor()).prepare([CameraFrame("c", good.image, ok, None, good.cam_to_target)])
