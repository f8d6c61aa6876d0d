"""Shared pytest set-up: markers that skip with a reason when the machine lacks what they need."""

from __future__ import annotations

import importlib.util
import os

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _ros_reason() -> str | None:
    """None when rclpy and the package's generated messages import, else why not."""
    if importlib.util.find_spec("rclpy") is None:
        return "rclpy is not installed (run scripts/setup.sh, or source a ROS 2 install)"
    try:
        import gausstr_ros.msg  # noqa: F401
    except ImportError as exc:
        return f"the package's messages are not built ({exc}); run scripts/build_msgs.sh"
    return None


def pytest_configure(config):
    # One ROS domain per test session, inherited by the processes tests start, so that parallel
    # sessions on one machine never see each other's topics.
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))


def pytest_collection_modifyitems(config, items):
    cuda = _cuda_available()
    ros_reason = _ros_reason()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs a CUDA GPU (none here); run scripts/gpu_tests.sh on the GPU machine"
                )
            )
        if "ros" in item.keywords and ros_reason is not None:
            item.add_marker(pytest.mark.skip(reason=ros_reason))


@pytest.fixture(scope="session")
def ros_context():
    """An initialised rclpy context shared by the in-process ROS tests of a session."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    yield context
    rclpy.shutdown(context=context)
