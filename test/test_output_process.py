"""The output process (node parameter ``output_process``): what it publishes is what the in-process
publishers publish, byte for byte; unsubscribed outputs are skipped; a failing set is reported and the
child keeps going; a dead child is reported and replaced; the whole node works with it."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

from gausstr_core.grid import VoxelGrid

pytestmark = pytest.mark.ros

CAMERAS = ["CAM_FRONT", "CAM_BACK"]
S = 1_000_000_000


def frame_result(seed: int, stamp_ns: int, depth: bool = True):
    """A small FrameResult with random content (8 x 8 x 4 voxels of 0.5 m, 12 Gaussians)."""
    from gausstr_ros.pipeline import FrameResult

    rng = np.random.default_rng(seed)
    grid = VoxelGrid(range=(-2.0, -2.0, -1.0, 2.0, 2.0, 1.0), voxel_size=0.5)
    names = ["car", "road", "tree"]
    rotations = rng.normal(size=(12, 4)).astype(np.float32)
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    return FrameResult(
        stamp_ns=stamp_ns,
        labels=rng.integers(0, len(names) + 1, grid.shape).astype(np.uint8),
        confidence=rng.random(grid.shape, dtype=np.float32),
        means=rng.normal(size=(12, 3)).astype(np.float32),
        scales=(0.1 + rng.random((12, 3), dtype=np.float32)).astype(np.float32),
        rotations=rotations,
        opacities=rng.random(12, dtype=np.float32),
        gaussian_labels=rng.integers(0, len(names) + 1, 12).astype(np.uint8),
        gaussian_confidence=rng.random(12, dtype=np.float32),
        rendered_depth=(50 * rng.random((len(CAMERAS), 6, 10), dtype=np.float32)) if depth else None,
        class_names=names,
        free_label=len(names),
        grid=grid,
    )


class Recorder:
    """A node in the test process subscribed (as serialized bytes) to every output of a namespace."""

    def __init__(self, context, namespace: str, depth_topics: bool = True):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from gausstr_ros.msg import GaussianArray, InferenceStatus, SemanticOccupancy
        from gausstr_ros.node.outputs import depth_topic

        self.node = rclpy.create_node(
            f"recorder_{uuid.uuid4().hex[:6]}", namespace=namespace, context=context
        )
        self.received: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        topics = [("occupancy", SemanticOccupancy), ("occupancy_cloud", PointCloud2)]
        topics += [
            ("gaussians", GaussianArray),
            ("gaussian_markers", MarkerArray),
            ("status", InferenceStatus),
        ]
        if depth_topics:
            topics += [(depth_topic(c), Image) for c in CAMERAS]
        for topic, kind in topics:
            self.node.create_subscription(kind, topic, self._record(topic), 10, raw=True)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _record(self, topic):
        def record(data: bytes) -> None:
            with self._lock:
                self.received.setdefault(topic, []).append(data)

        return record

    def wait(self, topic: str, count: int, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = list(self.received.get(topic, []))
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"{count} message(s) on {topic} within {timeout} s; got {len(got)}")

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()


def message_difference(a, b, path: str = "") -> str | None:
    """Where two ROS messages (or field values) differ, or None when every field is equal."""
    if hasattr(a, "get_fields_and_field_types"):
        for name in a.get_fields_and_field_types():
            problem = message_difference(getattr(a, name), getattr(b, name), f"{path}.{name}")
            if problem:
                return problem
        return None
    if isinstance(a, (list, tuple)) and a and hasattr(a[0], "get_fields_and_field_types"):
        if len(a) != len(b):
            return f"{path}: {len(a)} against {len(b)} elements"
        return next(
            (p for k, (x, y) in enumerate(zip(a, b)) if (p := message_difference(x, y, f"{path}[{k}]"))), None
        )
    if isinstance(a, (str, int, float, bool)):
        return None if a == b else f"{path}: {a!r} against {b!r}"
    x, y = np.asarray(a), np.asarray(b)
    return None if x.shape == y.shape and np.array_equal(x, y) else f"{path}: arrays differ"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


@pytest.fixture
def namespace():
    return f"/op{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher_node(ros_context, namespace):
    import rclpy

    node = rclpy.create_node("occupancy_node", namespace=namespace, context=ros_context)
    yield node
    node.destroy_node()


def test_the_output_process_publishes_what_the_node_would(ros_context, namespace, publisher_node):
    """Every output, byte for byte against OutputPublishers in this process; the occupancy time comes
    back; the status goes out too."""
    import rclpy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from gausstr_ros.msg import GaussianArray, InferenceStatus, SemanticOccupancy
    from gausstr_ros.node.output_process import OutputProcess
    from gausstr_ros.node.outputs import OutputPublishers, PublishSwitches, depth_topic
    from gausstr_ros.node.stats import PipelineStats

    recorder = Recorder(ros_context, namespace)
    logs: list[str] = []
    outputs = OutputProcess(publisher_node, CAMERAS, "base_link", log=logs.append)
    # the reference: the same publishers in this process, under another namespace
    ref_ns = namespace + "_ref"
    ref_node = rclpy.create_node("occupancy_node", namespace=ref_ns, context=ros_context)
    ref_recorder = Recorder(ros_context, ref_ns)
    reference = OutputPublishers(ref_node, CAMERAS, "base_link")
    try:
        switches = PublishSwitches()
        assert outputs.spec.node_name == "occupancy_node_outputs"
        assert outputs.spec.topics["occupancy"] == f"{namespace}/occupancy"
        wait_until(lambda: outputs.wants_rendered_depth(switches), 20, "depth subscribers seen by the child")
        wait_until(
            lambda: all(c > 0 for c in outputs.subscription_counts().values()), 20, "every output subscribed"
        )
        wait_until(lambda: reference.wants_rendered_depth(switches), 20, "reference subscribed")
        time.sleep(0.3)
        published_at: list[float] = []
        errors: list[Exception] = []
        for k in range(3):
            result = frame_result(k, (1_700_000_000 + k) * S)
            before = time.monotonic()
            names = outputs.publish(
                result, ["front_optical", "back_optical"], switches, published_at.append, errors.append
            )
            assert set(names) == {"occupancy", "occupancy_cloud", "gaussians", "gaussian_markers"} | {
                depth_topic(c) for c in CAMERAS
            }
            reference.publish(result, ["front_optical", "back_optical"], switches)
            recorder.wait("occupancy", k + 1)
            wait_until(lambda k=k: len(published_at) == k + 1, 10, "the occupancy time back")  # after the set
            assert before <= published_at[-1] <= time.monotonic(), published_at
        kinds = {"occupancy": SemanticOccupancy, "occupancy_cloud": PointCloud2, "gaussians": GaussianArray}
        kinds |= {"gaussian_markers": MarkerArray} | {depth_topic(c): Image for c in CAMERAS}
        for topic, kind in kinds.items():
            # compared as messages: serialized payloads differ in their padding bytes
            ours = [deserialize_message(b, kind) for b in recorder.wait(topic, 3)]
            theirs = [deserialize_message(b, kind) for b in ref_recorder.wait(topic, 3)]
            for k, (a, b) in enumerate(zip(ours, theirs)):
                problem = message_difference(a, b)
                assert problem is None, f"{topic}, set {k}: {problem}"
        assert not errors and not logs, (errors, logs)
        stats = PipelineStats(10)
        stats.record_published(0.05)
        now = publisher_node.get_clock().now().to_msg()
        outputs.publish_status(stats.snapshot(), now, "cpu", 3)
        status = deserialize_message(recorder.wait("status", 1)[0], InferenceStatus)
        assert status.frames_processed == 1 and status.device == "cpu" and status.num_classes == 3
    finally:
        outputs.close()
        for close in (ref_recorder.close, ref_node.destroy_node, recorder.close):
            close()
    assert not outputs.alive


def test_unsubscribed_depth_is_neither_wanted_nor_sent(ros_context, namespace, publisher_node):
    from gausstr_ros.node.output_process import OutputProcess
    from gausstr_ros.node.outputs import PublishSwitches

    recorder = Recorder(ros_context, namespace, depth_topics=False)
    outputs = OutputProcess(publisher_node, CAMERAS, "base_link")
    try:
        switches = PublishSwitches()
        wait_until(lambda: outputs.subscription_counts()["occupancy"] > 0, 20, "occupancy subscribed")
        assert not outputs.wants_rendered_depth(switches)
        names = outputs.publish(frame_result(0, S), ["f", "b"], switches)
        assert "occupancy" in names and not any(n.startswith("rendered_depth") for n in names), names
        recorder.wait("occupancy", 1)
        off = PublishSwitches(occupancy=False)
        names = outputs.publish(frame_result(1, 2 * S), ["f", "b"], off)
        assert "occupancy" not in names
        recorder.wait("occupancy_cloud", 2)
        assert len(recorder.received["occupancy"]) == 1  # switched off: not published
    finally:
        outputs.close()
        recorder.close()


def test_a_set_the_child_cannot_publish_is_reported_and_the_next_one_goes_out(
    ros_context, namespace, publisher_node
):
    from gausstr_ros.node.output_process import OutputProcess, OutputProcessError
    from gausstr_ros.node.outputs import PublishSwitches

    recorder = Recorder(ros_context, namespace)
    outputs = OutputProcess(publisher_node, CAMERAS, "base_link")
    try:
        switches = PublishSwitches()
        wait_until(lambda: outputs.subscription_counts()["occupancy"] > 0, 20, "occupancy subscribed")
        bad = frame_result(0, S)
        bad.labels = bad.labels[:, :, :2].copy()  # does not fit the grid: the occupancy builder refuses it
        errors: list[Exception] = []
        outputs.publish(bad, ["f", "b"], switches, on_error=errors.append)
        wait_until(lambda: errors, 20, "the failure reported")
        assert isinstance(errors[0], OutputProcessError) and "publishing failed" in str(errors[0])
        published: list[float] = []
        outputs.publish(frame_result(1, 2 * S), ["f", "b"], switches, published.append)
        recorder.wait("occupancy", 1)
        wait_until(lambda: published, 10, "occupancy time of the good set")
        assert outputs.alive and outputs.starts == 1
    finally:
        outputs.close()
        recorder.close()


def test_a_dead_output_process_loses_its_sets_loudly_and_is_replaced(ros_context, namespace, publisher_node):
    from gausstr_ros.node.output_process import OutputProcess, OutputProcessError
    from gausstr_ros.node.outputs import PublishSwitches

    recorder = Recorder(ros_context, namespace)
    logs: list[str] = []
    outputs = OutputProcess(publisher_node, CAMERAS, "base_link", log=logs.append, restart_period_s=60.0)
    try:
        switches = PublishSwitches()
        wait_until(lambda: outputs.subscription_counts()["occupancy"] > 0, 20, "occupancy subscribed")
        pid = outputs.pid
        os.kill(pid, signal.SIGSTOP)  # holds the next set without publishing it
        errors: list[Exception] = []
        outputs.publish(frame_result(0, S), ["f", "b"], switches, on_error=errors.append)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: errors, 20, "the lost set reported")
        assert "exited with code -9" in str(errors[0]), errors
        assert any("exited with code -9" in line and "1 frame set(s)" in line for line in logs), logs
        assert not outputs.alive
        assert outputs.subscription_counts()["occupancy"] == 0  # nothing to publish to while down
        from gausstr_ros.node.stats import PipelineStats

        stats = PipelineStats(10)
        stats.set_error("the output process exited")
        outputs.publish_status(stats.snapshot(), publisher_node.get_clock().now().to_msg(), "cpu", 3)
        recorder.wait("status", 1)  # the status goes on while the child is down (the node sends it)
        with pytest.raises(OutputProcessError, match="down; a new one starts in"):
            outputs.publish(frame_result(1, 2 * S), ["f", "b"], switches)
        outputs.restart_period_s = 0.0
        published: list[float] = []
        outputs.publish(frame_result(2, 3 * S), ["f", "b"], switches, published.append)  # a new child
        assert outputs.starts == 2 and outputs.pid != pid and outputs.alive
        wait_until(lambda: published, 20, "the new child published")
        # its first set may go out before DDS matched the new publishers (volatile: lost); the next
        # one after they match arrives
        wait_until(lambda: outputs.subscription_counts()["occupancy"] > 0, 20, "the new child's subscriber")
        outputs.publish(frame_result(3, 4 * S), ["f", "b"], switches)
        recorder.wait("occupancy", 1)
    finally:
        outputs.close()
        recorder.close()


def test_the_node_with_its_output_process_publishes_every_output(ros_context, predictor):
    from gausstr_ros.node.output_process import OutputProcess
    from gausstr_testing.node_outputs import T0, check_frame_outputs
    from gausstr_testing.ros_node_env import running_node

    with running_node(ros_context, predictor, output_process="always") as (node, harness):
        assert isinstance(node.outputs, OutputProcess) and node.outputs.alive
        harness.wait_for(lambda: node.outputs.wants_rendered_depth(node.switches), 20, "depth subscribed")
        stamps = [T0 + k * S // 10 for k in range(2)]
        for k, stamp in enumerate(stamps):
            harness.publish_frame(k, stamp)
            harness.wait_for_stamp("occupancy", stamp)
        for stamp in stamps:
            check_frame_outputs(harness, stamp, list(node.predictor.class_names), predictor)
        status = harness.wait_for_status(lambda s: s.frames_processed >= 2)
        assert status.frames_rejected == 0 and status.latency_p50_ms > 0
        child = node.outputs
    assert not child.alive  # destroying the node stopped its output process
