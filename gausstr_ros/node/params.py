"""The occupancy node's parameters: one table of specs (default, description, range, read-only),
declared with ParameterDescriptors and read into a ``NodeConfig`` dataclass.

``config/occupancy.yaml`` lists every parameter with its default; ``test_node_params.py`` checks
that the file and this table agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gausstr_core.data.nuscenes import CAMERA_CHANNELS
from gausstr_core.grid import OCC3D_RANGE, OCC3D_VOXEL_SIZE
from gausstr_core.text.vocabulary import MAX_CATEGORIES, OCC3D_CATEGORIES

# The camera order the models are trained with (nuScenes, mmdetection3d's order).
DEFAULT_CAMERAS = tuple(CAMERA_CHANNELS)
DEFAULT_CATEGORIES = tuple(OCC3D_CATEGORIES)
__all__ = ["MAX_CATEGORIES", "PARAM_SPECS", "NodeConfig", "declare_parameters"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (which fixes its type), description, and constraints.

    Attributes:
        range: (min, max) inclusive for numbers, or None.
        choices: allowed values for strings, or None.
        read_only: changing it at run time is not supported (rejected by rclpy).
    """

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True


# output_process: "auto" = on where inference runs on CUDA. There the node's interpreter lock is the
# limit and the child halved the latency under a 30 Hz load (H100, docs/benchmarks.md); on the CPU
# the frame's inference dwarfs message building and the child only competes for the few cores.
OUTPUT_PROCESS_CHOICES = ("auto", "always", "never")


def _cams(fmt: str) -> list[str]:
    return [fmt.format(c.lower()) for c in DEFAULT_CAMERAS]


PARAM_SPECS: tuple[ParamSpec, ...] = (
    # Inputs
    ParamSpec(
        "camera_names",
        list(DEFAULT_CAMERAS),
        "Camera names, one per camera (logs, rendered depth topics). The model sees the cameras "
        "in this order.",
    ),
    ParamSpec(
        "image_topics",
        _cams("/{}/image_rect"),
        "Rectified colour image topic per camera (sensor_msgs/Image rgb8, bgr8, rgba8, bgra8 or mono8), "
        "same order as camera_names. A topic ending in /compressed is a sensor_msgs/CompressedImage "
        "(JPEG/PNG, image_transport 'compressed').",
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "image_transport of the image_topics: raw, or compressed (subscribes <topic>/compressed, "
        "CompressedImage) like image_transport's parameter; a topic that names its transport keeps it.",
        choices=("raw", "compressed"),
    ),
    ParamSpec(
        "camera_info_topics",
        _cams("/{}/camera_info"),
        "CameraInfo topic per camera; the latest one received is used with each image.",
    ),
    ParamSpec(
        "use_depth",
        False,
        "Use the depth_topics (metric depth registered to each image); false = the model's own "
        "depth head. All cameras or none.",
    ),
    ParamSpec(
        "depth_topics",
        _cams("/{}/depth"),
        "Depth image topic per camera (32FC1 metres, 16UC1 or mono16 millimetres), used when use_depth. "
        "A topic ending in /compressedDepth or /compressed is a CompressedImage (16-bit PNG).",
    ),
    ParamSpec(
        "depth_transport",
        "raw",
        "image_transport of the depth_topics: raw, compressedDepth or compressed (subscribes "
        "<topic>/<transport>); a topic that names its transport keeps it.",
        choices=("raw", "compressedDepth", "compressed"),
    ),
    ParamSpec(
        "image_qos",
        "auto",
        "Reliability of the image and depth subscriptions: auto (reliable when every publisher of the "
        "topic is reliable, else best effort; full-size images need it, docs/node.md), reliable, or "
        "sensor_data (best effort). CameraInfo is always best effort.",
        choices=("auto", "reliable", "sensor_data"),
    ),
    ParamSpec(
        "queue_depth",
        5,
        "History depth of the input subscriptions and the output publishers.",
        range=(1, 1000),
    ),
    ParamSpec(
        "target_frame",
        "base_link",
        "Frame of the outputs (REP-103: x forward, y left, z up); cameras are looked up in TF "
        "into it at each image stamp.",
    ),
    ParamSpec(
        "synchronizer",
        "auto",
        "Approximate-time synchronizer: auto (= builtin: message_filters' sets with a pruned search, "
        "fast for 12-18 topics), builtin, or message_filters (needs it installed).",
        choices=("auto", "message_filters", "builtin"),
    ),
    ParamSpec(
        "sync_slop_s", 0.05, "Largest stamp spread [s] within one synchronized frame set.", range=(0.001, 1.0)
    ),
    ParamSpec(
        "sync_queue_size", 10, "Messages kept per input while waiting for a set to complete.", range=(1, 100)
    ),
    ParamSpec(
        "sync_timeout_s",
        1.0,
        "An input silent for longer than this while others publish is reported (log, status).",
        range=(0.05, 60.0),
        read_only=False,
    ),
    ParamSpec(
        "time_jump_reset_s",
        1.0,
        "A stamp this much older than the previous one on a topic is a time reset (bag loop): "
        "queues and dynamic TF are cleared. Smaller steps back are rejected as out of order.",
        range=(0.0, 3600.0),
        read_only=False,
    ),
    ParamSpec(
        "tf_timeout_s",
        0.05,
        "How long to wait for TF at an image stamp before skipping the frame.",
        range=(0.0, 5.0),
        read_only=False,
    ),
    ParamSpec("tf_cache_s", 10.0, "History kept of dynamic transforms [s].", range=(0.5, 600.0)),
    ParamSpec(
        "min_valid_depth_fraction",
        0.0,
        "Depth images with a smaller fraction of valid (finite, > 0) pixels skip the frame; "
        "images without any valid pixel are always skipped.",
        range=(0.0, 1.0),
        read_only=False,
    ),
    # Model
    ParamSpec(
        "checkpoint",
        "",
        "GaussTR checkpoint (.safetensors with its JSON config, gausstr_core.io.checkpoint). Empty = "
        "the built-in model (gausstr_ros/assets/tiny_synthetic.safetensors, trained on the synthetic "
        "world) unless model_preset is set.",
    ),
    ParamSpec(
        "model_preset",
        "",
        "Without a checkpoint: build this preset (tiny, talk2dino, featup) with RANDOM weights, for "
        "tests and benchmarks only. Ignored when checkpoint is set.",
        choices=("", "tiny", "talk2dino", "featup"),
    ),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available), cuda, cuda:N or cpu."),
    ParamSpec("input_size", [0, 0], "Network input [H, W] px; [0, 0] = the model's."),
    ParamSpec(
        "categories",
        list(DEFAULT_CATEGORIES),
        "Open vocabulary, label k = categories[k]; 'name|prompt 2|...' groups prompts under one "
        "name. Live: a new list applies to the next frame. Left at this default with the built-in "
        "model, the built-in model's own vocabulary is used.",
        read_only=False,
    ),
    ParamSpec(
        "prompt_templates",
        [""],
        "Text prompt templates with '{}' for the category, e.g. 'a photo of a {}.'; [''] = the model's own.",
    ),
    ParamSpec(
        "grid_range",
        list(OCC3D_RANGE),
        "Voxel grid [x_min, y_min, z_min, x_max, y_max, z_max] in the target frame [m].",
    ),
    ParamSpec("voxel_size", OCC3D_VOXEL_SIZE, "Voxel edge [m].", range=(0.01, 10.0)),
    ParamSpec(
        "density_threshold",
        -1.0,
        "Voxels with less Gaussian density are free; -1 = the model's (official 0.04).",
        range=(-1.0, 1000.0),
    ),
    # Outputs
    ParamSpec(
        "publish_occupancy", True, "Publish occupancy (gausstr_ros/SemanticOccupancy).", read_only=False
    ),
    ParamSpec(
        "occupancy_confidence",
        True,
        "Fill the occupancy's per-voxel confidence (one float32 per voxel: 2.56 MB of the Occ3D grid's "
        "3.2 MB); false leaves it empty (the message allows that).",
        read_only=False,
    ),
    ParamSpec(
        "publish_pointcloud",
        True,
        "Publish occupancy_cloud (PointCloud2 of occupied voxels).",
        read_only=False,
    ),
    ParamSpec("publish_gaussians", True, "Publish gaussians (gausstr_ros/GaussianArray).", read_only=False),
    ParamSpec(
        "publish_markers", True, "Publish gaussian_markers (MarkerArray of ellipsoids).", read_only=False
    ),
    ParamSpec(
        "publish_rendered_depth", True, "Publish rendered_depth/<camera> (32FC1 Image).", read_only=False
    ),
    ParamSpec(
        "max_gaussian_markers",
        2000,
        "Most opaque Gaussians drawn as ellipsoid markers (RViz renders each one as a mesh).",
        range=(0, 100000),
        read_only=False,
    ),
    ParamSpec(
        "marker_sigma",
        2.0,
        "Marker ellipsoid radius in standard deviations (diameter = 2*k*sigma).",
        range=(0.1, 10.0),
        read_only=False,
    ),
    ParamSpec(
        "max_rate_hz",
        0.0,
        "Process at most this many frame sets per second of stamps; 0 = all.",
        range=(0.0, 1000.0),
        read_only=False,
    ),
    ParamSpec("status_period_s", 1.0, "Period of the status topic [s].", range=(0.05, 60.0)),
    ParamSpec(
        "stats_window", 100, "Frames the latency percentiles and rate are computed over.", range=(1, 100000)
    ),
    ParamSpec(
        "input_process",
        False,
        "Subscribe to the cameras and synchronize them in a child process (its own Python "
        "interpreter; the image bytes pass through shared memory), so that taking the images does "
        "not compete with the inference threads for the node's interpreter lock. Costs one copy of "
        "each image and a second process (about 1-3 s to start).",
    ),
    ParamSpec(
        "output_process",
        "auto",
        "Build and publish the outputs in a child process (its own Python interpreter; the arrays "
        "pass through shared memory), so that message building does not compete with the executor "
        "and the inference threads for the node's interpreter lock: auto (when the model runs on "
        "CUDA, where the lock is the limit), always, or never. Costs one copy of each set's arrays "
        "and a second process (about 1-3 s to start).",
        choices=OUTPUT_PROCESS_CHOICES,
    ),
    ParamSpec(
        "executor_coalesce_ms",
        0.0,
        "Sleep this long [ms] before each wait of the node's executor, so that several images of a "
        "frame set are taken from one wait (rclpy rebuilds its wait set in Python, under the "
        "interpreter lock the inference threads need); 0 = off. Adds up to this much latency to "
        "every input.",
        range=(0.0, 20.0),
    ),
    ParamSpec(
        "python_switch_interval_ms",
        0.5,
        "Python's thread switch interval (sys.setswitchinterval) set at start-up, for the whole "
        "process [ms]. The inference thread waits on the GPU many times per frame set; after each "
        "wait it must win the GIL back from the threads that receive and publish messages, which "
        "Python hands over only every switch interval (its default 5 ms). 0 = leave it as it is.",
        range=(0.0, 100.0),
    ),
)

SPECS_BY_NAME = {s.name: s for s in PARAM_SPECS}


@dataclass
class NodeConfig:
    """Values of every parameter (see PARAM_SPECS for their meaning)."""

    camera_names: list[str]
    image_topics: list[str]
    image_transport: str
    camera_info_topics: list[str]
    use_depth: bool
    depth_topics: list[str]
    depth_transport: str
    image_qos: str
    queue_depth: int
    target_frame: str
    synchronizer: str
    sync_slop_s: float
    sync_queue_size: int
    sync_timeout_s: float
    time_jump_reset_s: float
    tf_timeout_s: float
    tf_cache_s: float
    min_valid_depth_fraction: float
    checkpoint: str
    model_preset: str
    device: str
    input_size: list[int]
    categories: list[str]
    prompt_templates: list[str]
    grid_range: list[float]
    voxel_size: float
    density_threshold: float
    publish_occupancy: bool
    occupancy_confidence: bool
    publish_pointcloud: bool
    publish_gaussians: bool
    publish_markers: bool
    publish_rendered_depth: bool
    max_gaussian_markers: int
    marker_sigma: float
    max_rate_hz: float
    status_period_s: float
    stats_window: int
    input_process: bool
    output_process: str
    executor_coalesce_ms: float
    python_switch_interval_ms: float

    @classmethod
    def defaults(cls) -> NodeConfig:
        return cls(**{s.name: _copy(s.default) for s in PARAM_SPECS})

    def validate(self, require_model: bool = True) -> None:
        """Each value's range and choices, then cross-parameter checks; ValueError names the parameter
        and what was expected.

        Also resolves ``image_transport`` / ``depth_transport`` into the topic names, as image_transport
        does (``/cam/image_rect`` + compressed = ``/cam/image_rect/compressed``); idempotent.

        Args:
            require_model: kept for compatibility; an empty checkpoint and model_preset now select the
                built-in model, so nothing is required.
        """
        from gausstr_ros.node.transport import with_transport

        # each value's own range and choices (the node's descriptors; a params file read without a node)
        for spec in PARAM_SPECS:
            problem = check_value(spec, getattr(self, spec.name))
            if problem:
                raise ValueError(problem)
        self.image_topics = [with_transport(t, self.image_transport) for t in self.image_topics]
        self.depth_topics = [with_transport(t, self.depth_transport) for t in self.depth_topics]
        n = len(self.camera_names)
        if n == 0:
            raise ValueError("camera_names must name at least one camera")
        if len(set(self.camera_names)) != n or any(not c for c in self.camera_names):
            raise ValueError(f"camera_names must be unique and non-empty, got {self.camera_names}")
        lists = {"image_topics": self.image_topics, "camera_info_topics": self.camera_info_topics}
        if self.use_depth:
            lists["depth_topics"] = self.depth_topics
        for name, values in lists.items():
            if len(values) != n:
                raise ValueError(
                    f"{name} needs one topic per camera ({n}: {self.camera_names}), got "
                    f"{len(values)}: {values}"
                )
            if any(not v for v in values):
                raise ValueError(f"{name} has an empty topic name: {values}")
        topics = self.image_topics + self.camera_info_topics + (self.depth_topics if self.use_depth else [])
        if len(set(topics)) != len(topics):
            raise ValueError(f"input topics must all differ, got {topics}")
        if not self.target_frame:
            raise ValueError("target_frame must not be empty")
        if (
            len(self.input_size) != 2
            or any(v < 0 for v in self.input_size)
            or (0 in self.input_size and tuple(self.input_size) != (0, 0))
        ):
            raise ValueError(f"input_size must be [H, W] > 0 or [0, 0], got {self.input_size}")
        if len(self.grid_range) != 6:
            raise ValueError(f"grid_range needs 6 numbers, got {self.grid_range}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def output_process_on(self, device: Any) -> bool:
        """Whether the outputs go through the output process when inference runs on ``device``
        (a torch.device or its name): ``always``, ``never``, or for ``auto`` whether it is CUDA."""
        if self.output_process == "auto":
            return str(device).startswith("cuda")
        return self.output_process == "always"

    @property
    def prompt_template_list(self) -> list[str] | None:
        """The templates, or None for the model's own (the parameter's [''])."""
        templates = [t for t in self.prompt_templates if t]
        return templates or None

    @property
    def input_size_override(self) -> tuple[int, int] | None:
        if tuple(self.input_size) == (0, 0):
            return None
        return int(self.input_size[0]), int(self.input_size[1])


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not allowed for ``spec`` (range, choices), or None when it is."""
    if spec.range is not None:
        values = value if isinstance(value, (list, tuple)) else [value]
        lo, hi = spec.range
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            return f"{spec.name} must be in [{lo}, {hi}], got {value}"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name} must be one of {list(spec.choices)}, got {value!r}"
    return None


def descriptor(spec: ParamSpec):
    """rcl_interfaces/ParameterDescriptor of a spec (ranges as Floating/IntegerRange)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int) or (
            isinstance(spec.default, list) and spec.default and isinstance(spec.default[0], int)
        ):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if spec.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    return d


def declare_parameters(node, require_model: bool = True) -> NodeConfig:
    """Declare every parameter on an rclpy node and return their values.

    Raises:
        ValueError: a value outside its range or choices, or inconsistent values (validate()).
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    values = {}
    for spec in PARAM_SPECS:
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ValueError(f"{spec.name}: {exc}") from exc
        value = param.value
        values[spec.name] = list(value) if isinstance(value, (list, tuple)) else value
    config = NodeConfig(**values)
    config.validate(require_model)
    return config


def parameter_names() -> list[str]:
    return [f.name for f in fields(NodeConfig)]


def yaml_defaults(node_name: str = "occupancy_node") -> dict[str, Any]:
    """The ``--params-file`` structure of the defaults ({node: {ros__parameters: {...}}})."""
    return {node_name: {"ros__parameters": {s.name: _copy(s.default) for s in PARAM_SPECS}}}
