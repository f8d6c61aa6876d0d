"""Bad input never crashes the node and never publishes garbage: each case is skipped with a reason
(counted in the status topic), and good frames keep flowing afterwards."""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest

from gausstr_testing.ros_node_env import running_node

pytestmark = pytest.mark.ros

S = 1_000_000_000
T0 = 1_700_000_000 * S


# Rendering depth costs most of the CPU time per frame; these tests do not look at it.
FAST = {"publish_rendered_depth": False}
# The same rules with the cameras taken in the node's input process (input_process: true)
INPUTS = pytest.mark.parametrize(
    "inputs", [{}, {"input_process": True}], ids=["inputs_in_node", "input_process"]
)


def rejected(harness, kind_text: str, before: int, timeout: float = 20.0):
    """Wait until the status counts one more rejection and names the problem; return the status."""
    return harness.wait_for_status(
        lambda s: s.frames_rejected > before and kind_text in s.last_error,
        timeout,
        f"a rejection mentioning {kind_text!r}",
    )


def rejections(harness) -> int:
    status = harness.wait_for_status(lambda s: True)
    return status.frames_rejected


def good_frame_flows(harness, frame: int, stamp: int) -> None:
    harness.publish_frame(frame, stamp)
    harness.wait_for_stamp("occupancy", stamp)


@INPUTS
def test_each_bad_frame_is_skipped_with_a_reason(ros_context, predictor, inputs):
    """Wrong encoding, size mismatch, missing TF, all-invalid depth: skipped, then a good frame flows."""
    with running_node(ros_context, predictor, use_depth=True, **FAST, **inputs) as (_, harness):
        cams = harness.cams
        good_frame_flows(harness, 0, T0)
        stamp = T0

        def step(kind_text, **publish_kwargs):
            nonlocal stamp
            before = rejections(harness)
            stamp += S // 10
            harness.publish_frame(1, stamp, **publish_kwargs)
            status = rejected(harness, kind_text, before)
            assert not harness.by_stamp("occupancy", stamp), f"{kind_text}: a skipped frame was published"
            stamp += S // 10
            good_frame_flows(harness, 2, stamp)
            return status

        step(
            "CAM_FRONT_LEFT: colour image encoding 'bayer_rggb8' is not supported",
            image_overrides={2: cams.image_msg(2, 1, stamp + S // 10, encoding="bayer_rggb8")},
        )
        small = cams.rgb(3, 1)[:80, :150].copy()
        step(
            "image is 150x80 but its CameraInfo describes 160x90",
            image_overrides={3: cams.image_msg(3, 1, stamp + S // 10, pixels=small)},
        )
        lost = cams.image_msg(1, 1, stamp + S // 10)
        lost.header.frame_id = "nowhere_optical"
        step("no TF base_link <- nowhere_optical", image_overrides={1: lost})
        nan = np.full((cams.height, cams.width), np.nan, np.float32)
        step(
            "CAM_FRONT_LEFT: only 0.00% of depth pixels are valid",
            depth_overrides={2: cams.depth_msg(2, stamp + S // 10, depth=nan)},
        )
        step("depth image encoding 'rgb8'", depth_overrides={0: cams.image_msg(0, 1, stamp + S // 10)})
        harness.wait_for_status(lambda s: s.frames_processed >= 6, 10, "6 processed frames")


@INPUTS
def test_missing_camera_info_then_recovery(ros_context, predictor, inputs):
    with running_node(ros_context, predictor, send_camera_info=False, **FAST, **inputs) as (node, harness):
        harness.publish_infos_until(
            lambda: node.inputs.missing_camera_info() == [node.config.camera_info_topics[4]],
            what="CameraInfo of all but camera 4",
            skip={4},
        )
        harness.publish_frame(0, T0)
        rejected(harness, "CAM_BACK_LEFT: no CameraInfo received yet", -1)
        assert not harness.by_stamp("occupancy", T0)
        harness.publish_infos_until(lambda: not node.inputs.missing_camera_info(), what="every CameraInfo")
        good_frame_flows(harness, 1, T0 + S)


@INPUTS
def test_stamps_going_backwards_are_refused_and_a_time_reset_recovers(ros_context, predictor, inputs):
    with running_node(ros_context, predictor, **FAST, **inputs) as (node, harness):
        good_frame_flows(harness, 0, T0 + 10 * S)
        before = rejections(harness)
        harness.publish_frame(1, T0 + 10 * S - S // 2)  # 0.5 s back: out of order, refused per camera
        status = harness.wait_for_status(lambda s: s.frames_rejected >= before + 6, 20, "6 stamp rejections")
        assert "not newer than the previous" in status.last_error
        assert not harness.by_stamp("occupancy", T0 + 10 * S - S // 2)
        good_frame_flows(harness, 2, T0 + 11 * S)
        # A jump back by more than time_jump_reset_s (a bag that loops) resets and carries on.
        good_frame_flows(harness, 3, T0)
        assert "time jumped back by 11.000 s" in node.stats.snapshot().last_error
        good_frame_flows(harness, 4, T0 + S // 10)


def test_stale_tf_is_refused(ros_context, predictor):
    """With target_frame = odom, the cameras need the dynamic odom -> base_link transform at the image
    stamp: images newer than the newest /tf are skipped once tf_timeout_s passes."""
    from tf2_msgs.msg import TFMessage

    from gausstr_ros.conversions.transforms import matrix_to_transform_message

    env = running_node(ros_context, predictor, target_frame="odom", tf_timeout_s=0.1, **FAST)
    with env as (node, harness):
        cams = harness.cams

        def odom_at(stamp):
            msg = matrix_to_transform_message(np.eye(4), cams.header("odom", stamp), "base_link")
            harness.tf_pub.publish(TFMessage(transforms=[msg]))

        odom_at(T0 - S)
        odom_at(T0 + S)
        harness.wait_for(lambda: _has_odom(node, T0), 10, "odom transforms at the node")
        good_frame_flows(harness, 0, T0)
        before = rejections(harness)
        harness.publish_frame(1, T0 + 5 * S)  # TF ends at T0 + 1 s
        rejected(harness, "stale or missing TF odom <- cam_front_optical", before)
        odom_at(T0 + 6 * S)
        harness.publish_frame(2, T0 + 5 * S + S // 10)
        harness.wait_for_stamp("occupancy", T0 + 5 * S + S // 10)


def _has_odom(node, stamp) -> bool:
    try:
        node.tf.lookup("odom", "base_link", stamp, 0.0)
        return True
    except Exception:
        return False


@INPUTS
def test_a_camera_that_stops_is_reported(ros_context, predictor, inputs):
    with running_node(ros_context, predictor, sync_timeout_s=0.3, **FAST, **inputs) as (node, harness):
        good_frame_flows(harness, 0, T0)
        silent_topic = node.config.image_topics[5]
        for k in range(1, 8):  # camera 5 stops publishing; no set can complete
            harness.publish_frame(k, T0 + k * S // 10, skip={5})
            time.sleep(0.1)
        status = harness.wait_for_status(
            lambda s: silent_topic in s.last_error, 10, "the silent camera in status"
        )
        assert "silent input" in status.last_error
        assert not harness.by_stamp("occupancy", T0 + 7 * S // 10)
        good_frame_flows(harness, 10, T0 + S)


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_burst_of_1000_messages_keeps_memory_bounded_and_frames_flowing(ros_context, predictor):
    """1,000 image messages as fast as they can be published: the node keeps only the newest set
    (drops counted), its queues stay bounded, and it answers the next frame."""
    with running_node(ros_context, predictor, sync_queue_size=5, **FAST) as (node, harness):
        good_frame_flows(harness, 0, T0)
        rss_before = _rss_mb()
        cams = harness.cams
        frames = 1000 // len(cams.names) + 1
        messages = [cams.image_msg(k, 1, 0) for k in range(len(cams.names))]
        sent = 0
        for f in range(frames):
            stamp = T0 + S + f * S // 100
            for k, msg in enumerate(messages):
                if sent == 1000:
                    break
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, S)
                harness.image_pubs[k].publish(msg)
                sent += 1
        assert sent == 1000
        assert all(n <= 5 for n in node.inputs.synchronizer.queue_lengths())
        final = T0 + 10 * S
        harness.publish_frame(2, final)
        harness.wait_for_stamp("occupancy", final, timeout=60)
        status = harness.wait_for_status(lambda s: s.frames_dropped > 0, 10, "dropped frames in status")
        processed = status.frames_processed
        assert processed < frames, "every set of the burst was processed: the burst was not a burst"
        assert _rss_mb() - rss_before < 300, "memory grew with the burst"


def test_silent_topics_needs_others_to_keep_publishing(ros_context):
    """One frame set whose images arrive spread over more than the timeout (a loaded machine) is not
    a stopped camera; a camera that misses two sets while the others publish is."""
    import rclpy.node
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image

    from gausstr_ros.node.inputs import CameraInputs
    from gausstr_ros.node.params import NodeConfig

    now = [100.0]
    node = rclpy.node.Node("silent_topics_test", context=ros_context)
    try:
        inputs = CameraInputs(
            node,
            NodeConfig.defaults(),
            on_frame_set=lambda s: None,
            on_reject=lambda k, r: None,
            on_time_reset=lambda r: None,
            clock=lambda: now[0],
        )
        n = len(inputs.topics)

        def image(frame: int) -> Image:
            msg = Image()
            msg.header.stamp = Time(sec=1_700_000_000 + frame)
            return msg

        for i in range(n):  # set 0, delivered over 1.9 s with a 1 s timeout
            inputs.add(i, image(0))
            now[0] += 1.9 / n
        assert inputs.silent_topics(1.0) == []
        for frame in (1, 2):  # camera 0 stops; the others publish two more sets
            now[0] += 0.5
            for i in range(1, n):
                inputs.add(i, image(frame))
        silent = inputs.silent_topics(1.0)
        assert [t for t, _ in silent] == [inputs.topics[0]]
        now[0] += 5.0  # every topic quiet: the end of a bag, nothing to report
        assert inputs.silent_topics(1.0) == []
    finally:
        node.destroy_node()
