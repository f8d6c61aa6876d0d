"""The occupancy node in one process with real rclpy: synthetic 6-camera frames, camera_info and
tf_static in; every output checked for frame, stamp, shapes and class_names; live categories; depth."""

from __future__ import annotations

import numpy as np
import pytest

from gausstr_testing.node_outputs import check_frame_outputs
from gausstr_testing.ros_frames import SyntheticCameras
from gausstr_testing.ros_node_env import running_node

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_every_output_has_frame_stamp_shapes_and_class_names(ros_context, predictor):
    with running_node(ros_context, predictor) as (node, harness):
        stamps = [T0 + k * S // 10 for k in range(3)]
        for k, stamp in enumerate(stamps):
            harness.publish_frame(k, stamp)
            harness.wait_for_stamp("occupancy", stamp)  # one at a time: nothing is dropped
        names = list(node.predictor.class_names)
        assert len(names) == 17 and names[0] == "others"
        for stamp in stamps:
            check_frame_outputs(harness, stamp, names, predictor)
        status = harness.wait_for_status(lambda s: s.frames_processed >= 3)
        assert status.device == "cpu" and status.num_classes == 17
        assert status.frames_dropped == 0 and status.frames_rejected == 0
        assert 0 < status.latency_p50_ms <= status.latency_p99_ms


def set_categories(node_name: str, context, values, timeout: float = 10.0):
    """Set ``categories`` through the node's parameter service (what ``ros2 param set`` does)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client_node = rclpy.create_node("param_setter", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    try:
        client = AsyncParameterClient(client_node, node_name)
        assert client.wait_for_services(timeout_sec=timeout), f"no parameter services on {node_name}"
        param = Parameter("categories", Parameter.Type.STRING_ARRAY, list(values))
        future = client.set_parameters([param])
        executor.spin_until_future_complete(future, timeout_sec=timeout)
        assert future.done(), "set_parameters did not answer"
        return future.result().results[0]
    finally:
        executor.shutdown()
        client_node.destroy_node()


def test_live_categories_change_labels_and_class_names(ros_context, predictor):
    with running_node(ros_context, predictor) as (node, harness):
        full_name = node.get_fully_qualified_name()
        harness.publish_frame(0, T0)
        before = harness.wait_for_stamp("occupancy", T0)
        assert len(before.class_names) == 17

        result = set_categories(full_name, ros_context, ["car|sedan", "road", "tree"])
        assert result.successful, result.reason
        harness.publish_frame(1, T0 + S)
        occ = harness.wait_for_stamp("occupancy", T0 + S)
        assert list(occ.class_names) == ["car", "road", "tree"] and occ.free_label == 3
        assert np.asarray(occ.labels).max() <= 3
        gauss = harness.wait_for_stamp("gaussians", T0 + S)
        assert list(gauss.class_names) == ["car", "road", "tree"] and all(k < 3 for k in gauss.labels)

        refused = {
            "empty list": [],
            "duplicates": ["car", "road", "car"],
            "empty string": ["car", ""],
            "too many": [f"class {k}" for k in range(256)],
        }
        for what, value in refused.items():
            result = set_categories(full_name, ros_context, value)
            assert not result.successful, what
            assert result.reason, what
        harness.publish_frame(2, T0 + 2 * S)
        occ = harness.wait_for_stamp("occupancy", T0 + 2 * S)
        assert list(occ.class_names) == ["car", "road", "tree"]  # the old list stays active
        assert list(node.get_parameter("categories").value) == ["car|sedan", "road", "tree"]


def test_depth_topics_in_metres_and_millimetres(ros_context, predictor):
    cams = SyntheticCameras()
    with running_node(ros_context, predictor, cams, use_depth=True) as (node, harness):
        harness.publish_frame(0, T0, depth_encoding="32FC1")
        check_frame_outputs(harness, T0, list(node.predictor.class_names), predictor)
        harness.publish_frame(1, T0 + S, depth_encoding="16UC1")
        harness.wait_for_stamp("occupancy", T0 + S)
        # partly invalid depth (NaN, inf, negative) is accepted: those pixels count as invalid
        partial = cams.depth(0).copy()
        partial[:10] = np.nan
        partial[10:20] = np.inf
        partial[20:30] = -1.0
        harness.publish_frame(
            2, T0 + 2 * S, depth_overrides={0: cams.depth_msg(0, T0 + 2 * S, depth=partial)}
        )
        harness.wait_for_stamp("occupancy", T0 + 2 * S)
        assert harness.latest_status().frames_rejected == 0
