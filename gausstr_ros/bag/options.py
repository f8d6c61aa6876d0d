"""What a bag evaluation runs with: the options of ``gausstr-bag-eval``, the node's parameters read from a
params file, and their resolution into one ``NodeConfig`` that the offline evaluator and the live node
both use (so both modes run with identical settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gausstr_ros.node.params import SPECS_BY_NAME, NodeConfig, check_value

DEFAULT_GROUND_TRUTH_TOPIC = "/ground_truth/occupancy"
# rclpy's own parameters a params file may carry; they do not configure the pipeline.
_RCLPY_PARAMETERS = {"use_sim_time", "start_type_description_service"}


@dataclass
class BagEvalOptions:
    """Options of a bag evaluation (``gausstr-bag-eval``; None = not given).

    Attributes:
        bag: bag directory or .mcap/.db3 file (default: the built-in bag)
        out: report directory, created atomically
        checkpoint: model checkpoint (default: the params file's, else the built-in model)
        params: the node's params file, e.g. config/occupancy.yaml (topics, frames, model)
        categories: vocabulary, e.g. 'car|sedan' road (default: the params file's, else the
            checkpoint's own)
        camera_names: camera names (overrides the params' camera_names)
        image_topics: image topic per camera
        camera_info_topics: CameraInfo topic per camera
        depth_topics: depth topic per camera
        image_transport: compressed = read <image topic>/compressed (CompressedImage, JPEG/PNG), like
            image_transport
        depth_transport: compressedDepth (or compressed) = read <depth topic>/compressedDepth
            CompressedImage depth
        use_depth: feed the depth topics to the model (default: the params' use_depth)
        target_frame: output frame (default: the params' target_frame)
        ground_truth_topic: SemanticOccupancy ground truth (default /ground_truth/occupancy when the
            bag has it)
        occ3d: Occ3D dataset directory (nuScenes layout) to take the ground truth from instead
        gt_tolerance_ms: largest stamp difference between a frame and its ground truth
        device: inference device: auto, cpu, cuda (default: the params' device)
        max_frames: evaluate at most N frame sets (0 = all)
        pictures: frames drawn as pictures (BEV, depth, Gaussians), spread over the bag
        threads: torch CPU threads (default: torch's)
        overwrite: replace an existing report directory
        record: also write the predictions as a bag in the report (predictions/); live mode always
            records the node's outputs (outputs/)
        live: play the bag into the real node through rclpy instead of running inference in-process
            (needs ROS 2)
        rate: live playback speed, 1 = real time, 0 = lockstep (each frame set waits for the node's
            answer, so nothing is dropped)
        namespace: live: ROS namespace of the node and of the replayed topics ("" = the bag's names)
        node_timeout_s: live: seconds the node may take to start, and to answer in lockstep
        progress: show progress bars
        extra_node_parameters: further node parameters of the live node (not a flag)
    """

    bag: Path | None = None
    out: Path = Path("runs/bag_eval")
    checkpoint: Path | None = None
    params: Path | None = None
    categories: list[str] | None = None
    camera_names: list[str] | None = None
    image_topics: list[str] | None = None
    camera_info_topics: list[str] | None = None
    depth_topics: list[str] | None = None
    image_transport: Literal["raw", "compressed"] | None = None
    depth_transport: Literal["raw", "compressedDepth", "compressed"] | None = None
    use_depth: bool | None = None
    target_frame: str | None = None
    ground_truth_topic: str | None = None
    occ3d: Path | None = None
    gt_tolerance_ms: float = 50.0
    device: str | None = None
    max_frames: int = 0
    pictures: int = 4
    threads: int | None = None
    overwrite: bool = False
    record: bool = False
    live: bool = False
    rate: float = 1.0
    namespace: str = ""
    node_timeout_s: float = 120.0
    progress: bool = True
    extra_node_parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_frames < 0 or self.pictures < 0:
            raise ValueError(f"max_frames and pictures must be >= 0, got {self.max_frames}, {self.pictures}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0 (0 = lockstep), got {self.rate}")
        if not self.gt_tolerance_ms >= 0:
            raise ValueError(f"gt_tolerance_ms must be >= 0, got {self.gt_tolerance_ms}")
        if self.namespace and not self.namespace.startswith("/"):
            self.namespace = "/" + self.namespace
        self.namespace = self.namespace.rstrip("/")


def read_params_file(path: str | Path, node_name: str = "occupancy_node") -> dict[str, Any]:
    """The node's parameter values in a ROS 2 params file (``{node: {ros__parameters: {...}}}``).

    Sections for ``/**`` apply first, then those naming the node (``occupancy_node``, ``/occupancy_node``
    or ``/<ns>/occupancy_node``). Values are checked against the node's parameter specs.

    Raises:
        ValueError: unreadable YAML, no ros__parameters section, unknown parameters, wrong types or
            values outside their ranges.
    """
    import yaml

    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read params file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"params file {path} must map node names to {{ros__parameters: ...}}")
    wildcard, specific = {}, {}
    for key, section in data.items():
        if not isinstance(section, dict) or "ros__parameters" not in section:
            continue
        name = str(key)
        if name in ("/**", "**"):
            wildcard.update(section["ros__parameters"] or {})
        elif name.rstrip("/").split("/")[-1] == node_name:
            specific.update(section["ros__parameters"] or {})
    values = {**wildcard, **specific}
    if not values and not any(isinstance(s, dict) and "ros__parameters" in s for s in data.values()):
        raise ValueError(f"params file {path} has no ros__parameters section for /** or {node_name}")
    out = {}
    for name, value in values.items():
        if name in _RCLPY_PARAMETERS:
            continue
        spec = SPECS_BY_NAME.get(name)
        if spec is None:
            raise ValueError(
                f"params file {path}: unknown parameter {name!r} (the node's parameters: "
                f"{', '.join(sorted(SPECS_BY_NAME))})"
            )
        value = _typed(spec.default, value, f"params file {path}: {name}")
        problem = check_value(spec, value)
        if problem:
            raise ValueError(f"params file {path}: {problem}")
        out[name] = value
    return out


def _typed(default: Any, value: Any, where: str) -> Any:
    """``value`` converted to the type of the parameter's default (ints are accepted for floats)."""
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        if default:
            return [_typed(default[0], v, where) for v in value]
        return list(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    return value


@dataclass
class ResolvedSetup:
    """The resolved configuration of an evaluation.

    Attributes:
        config: the node parameters both modes run with (checkpoint and categories filled in).
        bag: the bag path.
        checkpoint_source, categories_source, bag_source: where each came from (for the report).
    """

    config: NodeConfig
    bag: Path
    checkpoint_source: str
    categories_source: str
    bag_source: str


def resolve_setup(options: BagEvalOptions) -> ResolvedSetup:
    """Merge defaults, the params file and the options into one NodeConfig.

    Raises:
        ValueError: inconsistent parameters (``NodeConfig.validate``), e.g. a camera count that does not
            match the number of topics.
        FileNotFoundError: a missing checkpoint, or missing built-in data.
    """
    from gausstr_ros.assets import checkpoint_vocabulary, default_bag, default_checkpoint
    from gausstr_ros.predictor import effective_categories

    config = NodeConfig.defaults()
    from_file = read_params_file(options.params) if options.params is not None else {}
    for name, value in from_file.items():
        setattr(config, name, value)
    for name in (
        "camera_names",
        "image_topics",
        "camera_info_topics",
        "depth_topics",
        "image_transport",
        "depth_transport",
        "use_depth",
        "target_frame",
        "device",
    ):
        value = getattr(options, name)
        if value is not None:
            setattr(config, name, list(value) if isinstance(value, (list, tuple)) else value)
    for name, value in options.extra_node_parameters.items():
        if name not in SPECS_BY_NAME:
            raise ValueError(f"unknown node parameter {name!r}")
        setattr(config, name, value)

    if options.checkpoint is not None:
        config.checkpoint, checkpoint_source = str(options.checkpoint), "--checkpoint"
    elif config.checkpoint:
        checkpoint_source = f"params file {options.params}"
    elif config.model_preset:
        checkpoint_source = f"preset {config.model_preset!r} with RANDOM weights (params file)"
    else:
        config.checkpoint, checkpoint_source = str(default_checkpoint()), "built-in default"
    if config.checkpoint and not Path(config.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint {config.checkpoint} does not exist ({checkpoint_source})")

    if options.categories is not None:
        config.categories, categories_source = list(options.categories), "--categories"
    elif "categories" in from_file:
        categories_source = f"params file {options.params}"
        builtin = effective_categories(config.categories, config.checkpoint, config.model_preset)
        if builtin != config.categories:  # the node's rule for its default list with the built-in model
            config.categories = builtin
            categories_source = "the built-in model's own vocabulary (params file: the default list)"
    else:
        stored = checkpoint_vocabulary(config.checkpoint) if config.checkpoint else None
        if stored:
            config.categories, categories_source = stored, "the checkpoint's own vocabulary"
        else:
            categories_source = "the node's default (Occ3D)"
    config.validate(require_model=True)

    if options.bag is not None:
        bag, bag_source = Path(options.bag).expanduser(), "argument"
    else:
        bag, bag_source = default_bag(), "built-in default"
    return ResolvedSetup(config, bag, checkpoint_source, categories_source, bag_source)


def params_yaml(config: NodeConfig) -> str:
    """A params file setting every parameter of ``config`` (what the live node is started with; the
    ``/**`` section matches the node whatever its name and namespace)."""
    import dataclasses

    import yaml

    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return yaml.safe_dump({"/**": {"ros__parameters": values}}, sort_keys=False)
