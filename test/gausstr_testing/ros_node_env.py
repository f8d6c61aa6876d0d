"""Runs an OccupancyNode and a Harness in one process on one background executor (for the in-process
node tests)."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

from gausstr_testing.ros_frames import SyntheticCameras
from gausstr_testing.ros_harness import Harness, as_parameters, node_parameters


@contextmanager
def running_node(
    context,
    predictor,
    cams: SyntheticCameras | None = None,
    use_depth: bool = False,
    send_camera_info: bool = True,
    image_format: str = "png",
    **param_overrides,
):
    """Yields (node, harness) with both spinning; tears everything down afterwards.

    Args:
        send_camera_info: publish every camera's CameraInfo and wait until the node has them.
        image_format: jpeg or png, for image_transport compressed.
    """
    from gausstr_ros.node.executor import make_executor, spin
    from gausstr_ros.node.occupancy_node import OccupancyNode

    cams = cams or SyntheticCameras()
    namespace = f"/t{uuid.uuid4().hex[:8]}"
    values = node_parameters(cams, use_depth=use_depth, **param_overrides)
    node = OccupancyNode(
        predictor=predictor, context=context, namespace=namespace, parameter_overrides=as_parameters(values)
    )
    harness = Harness(
        context,
        cams,
        namespace,
        use_depth=use_depth,
        image_transport=values.get("image_transport", "raw"),
        depth_transport=values.get("depth_transport", "raw"),
        image_format=image_format,
    )
    executor = make_executor(context)  # the node's own (as deployed), the harness on it too
    executor.add_node(node)
    executor.add_node(harness.node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        harness.wait_connected()
        # and from the node's side: a publisher in another process (output_process) can match the
        # harness's subscriptions later than they see it, and would send the first sets to nobody
        harness.wait_for(lambda: all(node.outputs.subscription_counts().values()), 10.0, "outputs matched")
        if send_camera_info:
            harness.publish_infos_until(lambda: not node.inputs.missing_camera_info())
        yield node, harness
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(timeout=10)
        time.sleep(0.3)  # a callback still running when the spinner was not joined in time
        node.destroy_node()
        harness.destroy()
