"""The occupancy node: synchronized surround cameras (+ optional depth) and TF in; semantic occupancy,
occupied-voxel cloud, Gaussians, Gaussian markers, rendered depth and status out.

Threads: the executor (one thread, ``make_executor`` says why) runs the subscriptions, TF, timers and
parameter services; two inference threads (``TwoStageWorker``) take the newest complete frame set from a
latest-only slot: the first looks up the camera extrinsics, converts and uploads the images and queues
the prediction (``FramePipeline.start``), the second waits for it and builds and publishes the outputs,
so that the host work of one set overlaps the GPU work of the next. When inference falls behind, a
waiting set is replaced by a newer one and counted as dropped.

Run: ``occupancy_node --ros-args --params-file config/occupancy.yaml`` (or the launch file).
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from gausstr_core.text.vocabulary import Vocabulary
from gausstr_ros.node.executor import make_executor, spin
from gausstr_ros.node.input_process import InputProcess, InputProcessError
from gausstr_ros.node.inputs import CameraInputs, FrameSet
from gausstr_ros.node.output_process import OutputProcess, OutputProcessError
from gausstr_ros.node.outputs import OutputPublishers, PublishSwitches
from gausstr_ros.node.params import SPECS_BY_NAME, check_value, declare_parameters
from gausstr_ros.node.stats import PipelineStats
from gausstr_ros.node.tf import TfLookup
from gausstr_ros.node.worker import LatestSlot, TwoStageWorker
from gausstr_ros.pipeline import (
    CameraFrame,
    DistortionWarnings,
    FramePipeline,
    FrameRejected,
    PendingFrame,
    Predictor,
    camera_frames_of,
)
from gausstr_ros.predictor import StartupError, effective_categories, ready_predictor

NODE_NAME = "occupancy_node"


def validate_categories(categories) -> str | None:
    """Why a ``categories`` value is refused (``Vocabulary.parse``'s reason), or None."""
    try:
        Vocabulary.parse(list(categories))
    except ValueError as exc:
        return str(exc)
    return None


class KeyedThrottle:
    """Log at most once per ``period_s`` per key, reporting how many were suppressed in between."""

    def __init__(self, period_s: float = 2.0, clock=time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, log, key: str, text: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            suppressed = self._suppressed.pop(key, 0)
            self._last[key] = now
        log(text + (f" ({suppressed} more like this since the last report)" if suppressed else ""))
        return True


class OccupancyNode(Node):
    """The gausstr_ros occupancy node.

    Args:
        predictor: an already built predictor (tests, embedding); None = load it from the
            ``checkpoint`` / ``model_preset`` parameters.
        kwargs: forwarded to rclpy's Node (e.g. ``context``, ``parameter_overrides``).
    Raises:
        StartupError: invalid parameters or a model that cannot be loaded.
    """

    def __init__(self, predictor: Predictor | None = None, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._set_up(predictor)
        except BaseException:
            for helper in (getattr(self, "inputs", None), getattr(self, "outputs", None)):
                if isinstance(helper, (InputProcess, OutputProcess)):
                    helper.close()  # nor its helper processes
            super().destroy_node()  # a half-built node must not linger in the graph
            raise

    def _set_up(self, predictor: Predictor | None) -> None:
        try:
            self.config = declare_parameters(self, require_model=predictor is None)
        except ValueError as exc:
            raise StartupError(f"invalid parameters: {exc}") from exc
        c = self.config
        if c.python_switch_interval_ms > 0:
            # Process-wide on purpose: the GIL is. Python's 5 ms default makes the inference thread
            # wait up to 5 ms after each of its GPU waits while the executor or the publishing
            # thread runs Python (docs/node.md, "Threads, queues and rates").
            sys.setswitchinterval(c.python_switch_interval_ms / 1e3)
        self._log_throttle = KeyedThrottle(2.0)
        self.stats = PipelineStats(c.stats_window)
        self.switches = PublishSwitches.from_config(c)

        if predictor is None:
            categories = effective_categories(c.categories, c.checkpoint, c.model_preset)
            if categories != list(c.categories):
                self.get_logger().info(
                    f"categories left at the default with the built-in model: using its "
                    f"own vocabulary {categories}"
                )
                c.categories = categories
        self.predictor = ready_predictor(c, predictor, log=self.get_logger())
        self.pipeline = FramePipeline(
            self.predictor, c.input_size_override, min_valid_depth_fraction=c.min_valid_depth_fraction
        )
        self._pending_categories: list[str] | None = None
        self._categories_lock = threading.Lock()

        self._input_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.tf = TfLookup(self, self._tf_group, cache_time_s=c.tf_cache_s)
        self.outputs_in_process = c.output_process_on(self.pipeline.device)
        if self.outputs_in_process:
            try:
                self.outputs = OutputProcess(
                    self, c.camera_names, c.target_frame, c.queue_depth, log=self.get_logger().error
                )
            except OutputProcessError as exc:
                raise StartupError(str(exc)) from exc
        else:
            self.outputs = OutputPublishers(self, c.camera_names, c.target_frame, c.queue_depth)
        self._slot: LatestSlot[FrameSet] = LatestSlot()
        if c.input_process:
            try:
                self.inputs = InputProcess(
                    self,
                    c,
                    self._on_frame_set,
                    self._on_input_rejected,
                    self._on_time_reset,
                    on_lost=lambda topic, count: self.stats.record_lost(count),
                    on_dropped=self.stats.record_dropped,
                    log=self.get_logger().error,
                )
            except InputProcessError as exc:
                raise StartupError(str(exc)) from exc
        else:
            self.inputs = CameraInputs(
                self,
                c,
                self._on_frame_set,
                self._on_input_rejected,
                self._on_time_reset,
                callback_group=self._input_group,
                on_lost=lambda topic, count: self.stats.record_lost(count),
            )
        self._distortion = DistortionWarnings(c.image_topics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._status_timer = self.create_timer(
            c.status_period_s, self._publish_status, callback_group=self._timer_group
        )
        self._watchdog_timer = self.create_timer(
            min(0.5, c.sync_timeout_s / 2), self._check_inputs, callback_group=self._timer_group
        )
        self._worker = TwoStageWorker(
            self._slot, self._start_frame, self._finish_frame, self._on_frame_error, name="gausstr"
        )
        self._worker.start()
        self.get_logger().info(
            f"ready: {len(c.camera_names)} cameras -> {c.target_frame}, model input "
            f"{self.pipeline.input_size[0]}x{self.pipeline.input_size[1]} on {self.pipeline.device}, "
            f"{len(c.categories)} categories, depth {'from topics' if c.use_depth else 'from the model'}, "
            f"TF via {self.tf.backend}, sync via {self.inputs.synchronizer_name}, outputs published "
            f"{'from the output process' if self.outputs_in_process else 'by the node'} "
            f"(output_process: {c.output_process})"
        )

    # -- set-up helpers --------------------------------------------------------------------------

    def _log_limited(self, key: str, text: str, level: str = "warning") -> None:
        logger = self.get_logger()
        self._log_throttle(getattr(logger, level), key, text)

    # -- inputs ----------------------------------------------------------------------------------

    def _on_frame_set(self, frame: FrameSet) -> None:
        replaced = self._slot.put(frame)
        if replaced is not None:
            replaced.done()
            self.stats.record_dropped()

    def _on_input_rejected(self, kind: str, reason: str) -> None:
        self.stats.record_rejected(kind, reason)
        self._log_limited(f"reject:{kind}", f"skipped: {reason}")

    def _on_time_reset(self, reason: str) -> None:
        self.tf.clear()
        self.stats.set_error(reason)
        self.get_logger().warning(reason)

    def _check_inputs(self) -> None:
        if isinstance(self.inputs, InputProcess):
            down = self.inputs.check()  # starts a new input process if the last one died
            if down:
                self.stats.set_error(down)
                self._log_limited("inputs_down", down, level="error")
                return
        silent = self.inputs.silent_topics(self.config.sync_timeout_s)
        if not silent:
            return
        parts = [f"{t} ({'never' if age is None else f'{age:.1f} s ago'})" for t, age in silent]
        text = f"no frame sets: silent input topic(s) {', '.join(parts)}"
        self.stats.set_error(text)
        self._log_limited("silent", text)

    # -- parameters ------------------------------------------------------------------------------

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {}
        for p in params:
            spec = SPECS_BY_NAME.get(p.name)
            if spec is None:
                continue  # e.g. use_sim_time: rclpy handles it
            value = list(p.value) if isinstance(p.value, (list, tuple)) else p.value
            if p.name == "categories":
                problem = validate_categories(value)
            else:
                problem = check_value(spec, value)
            if problem:
                self.get_logger().warning(f"refused parameter {p.name}: {problem}")
                return SetParametersResult(successful=False, reason=problem)
            updates[p.name] = value
        if isinstance(self.inputs, InputProcess):
            self.inputs.update_config(updates)
        for name, value in updates.items():
            setattr(self.config, name, value)
            if name == "categories":
                with self._categories_lock:
                    self._pending_categories = list(value)
                self.get_logger().info(f"categories changed to {value}: applied from the next frame")
            elif name == "min_valid_depth_fraction":
                self.pipeline.min_valid_depth_fraction = value
        self.switches = PublishSwitches.from_config(self.config)
        return SetParametersResult(successful=True)

    def _apply_pending_categories(self) -> None:
        with self._categories_lock:
            pending, self._pending_categories = self._pending_categories, None
        if pending is None:
            return
        try:
            self.predictor.set_categories(pending)
        except Exception as exc:  # keep the previous vocabulary running
            text = f"could not apply categories {pending}: {type(exc).__name__}: {exc}"
            self.stats.set_error(text)
            self.get_logger().error(text)

    # -- inference thread ------------------------------------------------------------------------

    def _on_frame_error(self, frame: FrameSet, exc: Exception) -> None:
        frame.done()
        if isinstance(exc, FrameRejected):
            self.stats.record_rejected(exc.kind, exc.reason)
            self._log_limited(
                f"reject:{exc.kind}", f"frame {frame.stamp_ns / 1e9:.3f} s skipped: {exc.reason}"
            )
            return
        text = f"frame {frame.stamp_ns / 1e9:.3f} s failed: {type(exc).__name__}: {exc}"  # one bad frame
        self.stats.record_rejected("error", text)
        self._log_limited(f"error:{type(exc).__name__}", text, level="error")

    def _camera_frames(self, frame: FrameSet) -> list[CameraFrame]:
        c = self.config
        for warning in self._distortion.new(frame.infos):
            self.get_logger().warning(warning)
        deadline = time.monotonic() + c.tf_timeout_s

        def lookup(target: str, source: str, stamp_ns: int):
            return self.tf.lookup(target, source, stamp_ns, max(0.0, deadline - time.monotonic()))

        return camera_frames_of(
            frame.images, frame.infos, frame.depths, c.camera_names, c.target_frame, frame.stamp_ns, lookup
        )

    # The inference worker's two stages (TwoStageWorker): frame n's messages are built and published
    # while frame n + 1 is converted, uploaded and predicted.

    def _start_frame(self, frame: FrameSet) -> PendingFrame:
        self._apply_pending_categories()
        cameras = self._camera_frames(frame)
        return self.pipeline.start(
            cameras, frame.stamp_ns, render_depth=self.outputs.wants_rendered_depth(self.switches)
        )

    def _finish_frame(self, frame: FrameSet, pending: PendingFrame) -> None:
        result = pending.result()

        def done(t_published: float) -> None:
            self.stats.record_published(t_published - frame.arrival)

        try:
            self.outputs.publish(
                result,
                [cam.image.header.frame_id for cam in pending.cameras],
                self.switches,
                on_occupancy_published=done,
                on_error=lambda exc: self._on_frame_error(frame, exc),  # found by the output process
            )
        finally:
            frame.done()  # the set's images are no longer read

    # -- status ----------------------------------------------------------------------------------

    def _publish_status(self) -> None:
        snapshot = self.stats.snapshot()
        self.outputs.publish_status(
            snapshot,
            self.get_clock().now().to_msg(),
            str(self.pipeline.device),
            len(self.predictor.class_names),
        )

    def destroy_node(self) -> None:
        self._worker.stop(timeout=10.0)
        if isinstance(self.inputs, InputProcess):
            self.inputs.close()
        if isinstance(self.outputs, OutputProcess):
            self.outputs.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console entry point ``occupancy_node``: returns the process exit code."""
    rclpy.init(args=args)
    try:
        node = OccupancyNode()
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    executor = make_executor(coalesce_s=node.config.executor_coalesce_ms / 1e3)
    executor.add_node(node)
    try:
        spin(executor, node.get_logger())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
