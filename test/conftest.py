"""Shared pytest set-up: markers that skip with a reason when the machine lacks what they need, a fixed
seed for every test (reported with its failures), and the fixtures several test files use."""

from __future__ import annotations

import importlib.util
import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

SEED_VARIABLE = "GAUSSTR_TEST_SEED"


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


# --- seeds ----------------------------------------------------------------------------------------


def seed_of(nodeid: str) -> int:
    """A test's seed: $GAUSSTR_TEST_SEED when set (to replay or explore), else the CRC-32 of its id, the
    same in every run and on every machine, different from test to test."""
    return int(os.environ.get(SEED_VARIABLE) or zlib.crc32(nodeid.encode()) & 0x7FFFFFFF)


@pytest.fixture(autouse=True)
def _seeded(request) -> int:
    """Every test starts from its seed in torch's, numpy's and Python's global generators, so that it
    gives the same result alone or in any order."""
    import torch

    seed = seed_of(request.node.nodeid)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    return seed


@pytest.fixture
def seed(_seeded) -> int:
    """This test's seed (see ``seed_of``), for generators of its own."""
    return _seeded


@pytest.fixture
def gen(seed):
    """A torch.Generator seeded with this test's seed."""
    import torch

    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    seeds = [value for name, value in item.user_properties if name == "seed"]
    if report.failed and seeds:
        report.sections.append(
            ("seed", f"{item.nodeid} ran with seed {seeds[0]}; replay it with {SEED_VARIABLE}={seeds[0]}")
        )


# --- fixtures of several test files -------------------------------------------------------------


@pytest.fixture(scope="session")
def ros_context():
    """An initialised rclpy context shared by the in-process ROS tests of a session."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny-preset checkpoint with seeded random weights and the synthetic world's vocabulary."""
    from gausstr_testing.bag_samples import random_tiny_checkpoint

    return random_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset's GaussTR with random weights from seed 0."""
    import torch

    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset_model

    torch.manual_seed(0)
    return GaussTR(preset_model("tiny"))


@pytest.fixture(scope="module")
def tiny_text_encoder():
    """The tiny preset's random text tower (64-d, seed 0)."""
    from gausstr_core.presets import tiny_text
    from gausstr_core.text.encoder import TextEncoder

    return TextEncoder(tiny_text())


@pytest.fixture(scope="module")
def predictor():
    """The node tests' predictor (``gausstr_testing.ros_predictor.node_predictor``), one per module."""
    from gausstr_testing.ros_predictor import node_predictor

    return node_predictor()
