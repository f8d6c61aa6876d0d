"""The node's parameters: config/occupancy.yaml lists every one with its default, each is declared with
a descriptor (description, range, read-only), invalid values stop start-up, and live changes work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gausstr_ros.node.params import PARAM_SPECS, NodeConfig, check_value
from gausstr_testing.ros_node_env import running_node

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_the_yaml_file_lists_every_parameter_with_its_default():
    data = yaml.safe_load((ROOT / "config" / "occupancy.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert list(params) == [s.name for s in PARAM_SPECS]
    for spec in PARAM_SPECS:
        assert params[spec.name] == spec.default, spec.name
        assert type(params[spec.name]) is type(spec.default), f"{spec.name}: YAML type differs (1 vs 1.0?)"
    NodeConfig(**params).validate(require_model=False)


def test_specs_are_consistent():
    for spec in PARAM_SPECS:
        assert spec.description.strip(), spec.name
        assert check_value(spec, spec.default) is None, spec.name
    assert check_value(next(s for s in PARAM_SPECS if s.name == "sync_slop_s"), 2.0) is not None
    with pytest.raises(ValueError, match="image_topics needs one topic per camera"):
        NodeConfig(**{**vars(NodeConfig.defaults()), "image_topics": ["/a"]}).validate(require_model=False)
    NodeConfig.defaults().validate()  # no checkpoint and no preset = the built-in model
    # a params file read without a node (gausstr-bag-eval) gets the descriptors' ranges and choices too
    with pytest.raises(ValueError, match=r"sync_slop_s must be in"):
        NodeConfig(**{**vars(NodeConfig.defaults()), "sync_slop_s": 5.0}).validate()
    with pytest.raises(ValueError, match="image_qos must be one of"):
        NodeConfig(**{**vars(NodeConfig.defaults()), "image_qos": "best_effort"}).validate()
    with pytest.raises(ValueError, match="input topics must all differ"):
        c = NodeConfig.defaults()
        c.camera_info_topics = list(c.image_topics)
        c.validate(require_model=False)


@pytest.mark.ros
def test_every_parameter_is_declared_with_a_descriptor(ros_context, predictor):
    from rcl_interfaces.msg import ParameterType

    with running_node(ros_context, predictor) as (node, _):
        names = [s.name for s in PARAM_SPECS]
        descriptors = node.describe_parameters(names)
        for spec, d in zip(PARAM_SPECS, descriptors):
            assert d.description == spec.description and d.read_only == spec.read_only, spec.name
            if spec.range is None:
                continue
            if d.type in (ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_INTEGER_ARRAY):
                r = d.integer_range[0]
            else:
                r = d.floating_point_range[0]
            assert (r.from_value, r.to_value) == pytest.approx(spec.range), spec.name


@pytest.mark.ros
@pytest.mark.parametrize(
    "override,match",
    [
        ({"sync_slop_s": 5.0}, "out of range"),
        ({"synchronizer": "exact"}, "synchronizer must be one of"),
        ({"grid_range": [1.0, 2.0]}, "grid_range needs 6 numbers"),
        ({"categories": ["car", "car"]}, "duplicates"),
        ({"camera_names": ["a", "a", "b", "c", "d", "e"]}, "must be unique"),
        ({"prompt_templates": ["a photo without a placeholder"]}, r"exactly one '\{\}'"),
        ({"voxel_size": 0.3}, "not a whole number"),
        ({"output_process": "sometimes"}, "output_process must be one of"),
        # the fifth sitting's boolean: a clear type error naming the parameter, not a silent default
        ({"output_process": True}, "output_process"),
    ],
)
def test_invalid_parameters_stop_startup_in_process(ros_context, predictor, override, match):
    from gausstr_ros.node.occupancy_node import OccupancyNode
    from gausstr_ros.predictor import StartupError
    from gausstr_testing.ros_harness import as_parameters

    with pytest.raises(StartupError, match=match):
        OccupancyNode(predictor=predictor, context=ros_context, parameter_overrides=as_parameters(override))


def test_output_process_auto_means_on_with_cuda_only():
    """auto: the output process where inference runs on CUDA (there the interpreter lock is the
    limit), the outputs in the node on the CPU; always and never regardless of the device."""
    c = NodeConfig.defaults()
    assert c.output_process == "auto"
    assert c.output_process_on("cuda") and c.output_process_on("cuda:1")
    assert not c.output_process_on("cpu")
    for setting, expected in (("always", True), ("never", False)):
        c.output_process = setting
        assert c.output_process_on("cpu") is expected and c.output_process_on("cuda:0") is expected
    c.output_process = "yes"
    with pytest.raises(ValueError, match="output_process must be one of"):
        c.validate()


@pytest.mark.ros
def test_the_node_on_the_cpu_publishes_its_outputs_itself_by_default(ros_context, predictor):
    from gausstr_ros.node.outputs import OutputPublishers

    with running_node(ros_context, predictor) as (node, _):
        assert node.config.output_process == "auto" and not node.outputs_in_process
        assert type(node.outputs) is OutputPublishers


@pytest.mark.ros
def test_live_and_read_only_parameters(ros_context, predictor):
    from rclpy.parameter import Parameter

    with running_node(ros_context, predictor, publish_rendered_depth=False) as (node, harness):
        result = node.set_parameters([Parameter("target_frame", value="map")])[0]
        assert not result.successful and "read-only" in result.reason
        result = node.set_parameters([Parameter("max_rate_hz", value=-1.0)])[0]
        assert not result.successful
        assert node.set_parameters([Parameter("publish_markers", value=False)])[0].successful
        harness.publish_frame(0, T0)
        harness.wait_for_stamp("occupancy", T0)
        harness.wait_for_stamp("gaussians", T0)
        assert not harness.by_stamp("gaussian_markers", T0)
        assert node.set_parameters([Parameter("publish_markers", value=True)])[0].successful
        # max_rate_hz = 2: sets closer than 0.5 s (of stamps) to the last one are skipped
        assert node.set_parameters([Parameter("max_rate_hz", value=2.0)])[0].successful
        harness.publish_frame(1, T0 + S)
        harness.wait_for_stamp("gaussian_markers", T0 + S)
        harness.publish_frame(2, T0 + S + S // 10)
        harness.publish_frame(3, T0 + 2 * S)
        harness.wait_for_stamp("occupancy", T0 + 2 * S)
        assert not harness.by_stamp("occupancy", T0 + S + S // 10)
        assert node.inputs.sets_rate_limited == 1


@pytest.mark.ros
def test_a_model_without_depth_head_needs_depth_topics(ros_context):
    from types import SimpleNamespace

    from gausstr_ros.node.occupancy_node import OccupancyNode
    from gausstr_ros.predictor import StartupError

    no_depth_head = SimpleNamespace(model=SimpleNamespace(depth_head=None))
    with pytest.raises(StartupError, match=r"no depth head.*use_depth: true"):
        OccupancyNode(predictor=no_depth_head, context=ros_context)


@pytest.mark.ros
def test_load_predictor_from_a_preset_and_a_checkpoint_error(tmp_path):
    from gausstr_ros.predictor import StartupError, load_predictor

    config = NodeConfig.defaults()
    config.model_preset, config.device = "tiny", "cpu"
    predictor = load_predictor(config)
    assert predictor.input_size == (112, 200) and str(predictor.device) == "cpu"
    config.checkpoint = str(tmp_path / "missing.safetensors")
    with pytest.raises(StartupError, match="does not exist"):
        load_predictor(config)
    config.checkpoint, config.device = "", "cuda:99"
    with pytest.raises(StartupError, match="cannot load the model from preset 'tiny'"):
        load_predictor(config)


@pytest.mark.ros
def test_the_node_sets_the_python_switch_interval(ros_context, predictor):
    import sys

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        with running_node(ros_context, predictor, python_switch_interval_ms=0.25):
            assert sys.getswitchinterval() == pytest.approx(0.25e-3)
        sys.setswitchinterval(0.005)
        with running_node(ros_context, predictor, python_switch_interval_ms=0.0):
            assert sys.getswitchinterval() == pytest.approx(0.005)  # 0 leaves it alone
    finally:
        sys.setswitchinterval(before)


@pytest.mark.ros
@pytest.mark.parametrize("output_process", ["never", "always"])
def test_occupancy_confidence_is_a_live_switch_in_either_publisher(ros_context, predictor, output_process):
    """``occupancy_confidence: false`` leaves SemanticOccupancy.confidence empty (labels unchanged,
    the cloud keeps its confidences); the node's own publishers and its output process alike."""
    from rclpy.parameter import Parameter

    with running_node(
        ros_context, predictor, publish_rendered_depth=False, output_process=output_process
    ) as (
        node,
        harness,
    ):
        harness.publish_frame(0, T0)
        first = harness.wait_for_stamp("occupancy", T0)
        voxels = first.size_x * first.size_y * first.size_z
        assert len(first.labels) == voxels and len(first.confidence) == voxels
        assert node.set_parameters([Parameter("occupancy_confidence", value=False)])[0].successful
        harness.publish_frame(1, T0 + S)
        second = harness.wait_for_stamp("occupancy", T0 + S)
        assert len(second.labels) == voxels and len(second.confidence) == 0
        cloud = harness.wait_for_stamp("occupancy_cloud", T0 + S)
        assert "confidence" in [f.name for f in cloud.fields]
        assert node.set_parameters([Parameter("occupancy_confidence", value=True)])[0].successful
        harness.publish_frame(2, T0 + 2 * S)
        assert len(harness.wait_for_stamp("occupancy", T0 + 2 * S).confidence) == voxels
