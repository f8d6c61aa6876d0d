"""The input process (node parameter ``input_process``): the node with its cameras taken and
synchronized in a child process publishes what it publishes without it, hands every set's shared
memory back, and survives the child's death; both helper processes together. (The stamp, CameraInfo
and bad-frame rules with the input process: test_node_bad_input.py, parametrized.)"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from gausstr_testing.ros_node_env import running_node

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_message_with_data_reads_as_the_message():
    from sensor_msgs.msg import Image

    from gausstr_ros.conversions.images import image_to_rgb
    from gausstr_ros.node.input_process import MessageWithData

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="rgb8", step=9, data=pixels.tobytes())
    msg.header.frame_id = "cam"
    bare = Image(height=2, width=3, encoding="rgb8", step=9)
    bare.header.frame_id = "cam"
    wrapped = MessageWithData(bare, np.frombuffer(pixels.tobytes(), np.uint8))
    assert wrapped.header.frame_id == "cam" and wrapped.encoding == "rgb8" and not hasattr(wrapped, "format")
    np.testing.assert_array_equal(image_to_rgb(wrapped), image_to_rgb(msg))


def test_the_node_with_its_input_process_publishes_every_output(ros_context, predictor):
    from gausstr_ros.node.input_process import InputProcess
    from gausstr_testing.node_outputs import check_frame_outputs

    with running_node(ros_context, predictor, input_process=True) as (node, harness):
        assert isinstance(node.inputs, InputProcess) and node.inputs.alive
        stamps = [T0 + k * S // 10 for k in range(2)]
        for k, stamp in enumerate(stamps):
            harness.publish_frame(k, stamp)
            harness.wait_for_stamp("occupancy", stamp)
        for stamp in stamps:
            check_frame_outputs(harness, stamp, list(node.predictor.class_names), predictor)
        status = harness.wait_for_status(lambda s: s.frames_processed >= 2)
        assert status.frames_rejected == 0 and status.frames_dropped == 0
        assert node.inputs.sets_emitted == 2
        child = node.inputs
    assert not child.alive  # destroying the node stopped its input process


def test_every_set_hands_its_slot_back(ros_context, predictor):
    """Twice as many sets as slots, one at a time: none is dropped for want of a slot; with depth."""
    from gausstr_ros.node.input_process import DEFAULT_SLOTS

    with running_node(
        ros_context, predictor, use_depth=True, input_process=True, publish_rendered_depth=False
    ) as (node, harness):
        for k in range(2 * DEFAULT_SLOTS):
            harness.publish_frame(k, T0 + k * S // 10)
            harness.wait_for_stamp("occupancy", T0 + k * S // 10)
        status = harness.wait_for_status(lambda s: s.frames_processed >= 2 * DEFAULT_SLOTS)
        assert status.frames_dropped == 0 and status.frames_rejected == 0, status
        assert node.inputs.sets_emitted == 2 * DEFAULT_SLOTS


def test_a_dead_input_process_is_reported_and_replaced(ros_context, predictor):
    with running_node(
        ros_context, predictor, input_process=True, output_process="always", publish_rendered_depth=False
    ) as (node, harness):
        harness.publish_frame(0, T0)
        harness.wait_for_stamp("occupancy", T0)
        node.inputs.restart_period_s = 60.0
        pid = node.inputs.pid
        os.kill(pid, signal.SIGKILL)
        status = harness.wait_for_status(
            lambda s: "input process is down" in s.last_error, 20, "the dead input process in the status"
        )
        assert node.inputs.starts == 1
        node.inputs.restart_period_s = 0.0  # the watchdog starts a new one at its next check
        # in a thread of its own: the executor (which publishes this status) goes on meanwhile
        harness.wait_for_status(
            lambda s: "a new one is starting" in s.last_error, 20, "the restart in the status"
        )
        harness.wait_for(lambda: node.inputs.alive and node.inputs.pid != pid, 30, "a new input process")
        assert node.inputs.starts == 2
        harness.wait_connected()  # the new child's subscriptions matched
        harness.publish_infos_until(
            lambda: not node.inputs.missing_camera_info(), what="CameraInfo in the new child"
        )
        harness.publish_frame(1, T0 + S)
        harness.wait_for_stamp("occupancy", T0 + S)
        assert status.frames_processed >= 1


def test_live_parameters_reach_the_input_process(ros_context, predictor):
    """max_rate_hz changed at run time limits the sets the child emits (its synchronizer's rule)."""
    from rclpy.parameter import Parameter

    with running_node(ros_context, predictor, input_process=True, publish_rendered_depth=False) as (
        node,
        harness,
    ):
        assert node.set_parameters([Parameter("max_rate_hz", value=2.0)])[0].successful
        for k in range(3):  # stamps 0.1 s apart: only the first passes 2 Hz of stamps
            harness.publish_frame(k, T0 + k * S // 10)
        harness.wait_for_stamp("occupancy", T0)
        harness.wait_for(lambda: node.inputs.sets_rate_limited == 2, 10, "two sets limited in the child")
        assert not harness.by_stamp("occupancy", T0 + S // 10) and node.inputs.sets_emitted == 1
        harness.publish_frame(5, T0 + S // 2)  # 0.5 s later: passes
        harness.wait_for_stamp("occupancy", T0 + S // 2)
