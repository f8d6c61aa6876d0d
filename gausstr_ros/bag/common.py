"""What offline and live bag evaluation share: the checks of a bag against the node configuration, the
ground-truth source, the setup part of the summary and the pictures' input views."""

from __future__ import annotations

from contextlib import ExitStack, closing
from typing import Any

import numpy as np

from gausstr_ros.bag.options import DEFAULT_GROUND_TRUTH_TOPIC, BagEvalOptions, ResolvedSetup
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.results import FrameViews
from gausstr_ros.bag.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, SEMANTIC_OCCUPANCY, TF_MESSAGE
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.transport import message_type_name

TF_TOPICS = ("/tf_static", "/tf")


def check_inputs(source: BagSource, config: NodeConfig) -> list[str]:
    """Check that the bag has what the configuration needs; returns the TF topics it has.

    Raises:
        BagError: missing topics (naming what the bag has), wrong types, unknown types, no TF, or a
            bag with a different number of cameras than the configuration.
    """
    compressed = [t for t in config.image_topics if f"{t}/compressed" in source.topics]
    if compressed and not any(t in source.topics for t in config.image_topics):
        raise BagError(
            f"bag {source.path} has the camera images as CompressedImage topics "
            f"({[f'{t}/compressed' for t in compressed]}), not {config.image_topics}: add "
            f"--image-transport compressed (params: image_transport: compressed)"
        )
    packed = [t for t in config.depth_topics if f"{t}/compressedDepth" in source.topics]
    if config.use_depth and packed and not any(t in source.topics for t in config.depth_topics):
        raise BagError(
            f"bag {source.path} has the depth images as compressedDepth topics "
            f"({[f'{t}/compressedDepth' for t in packed]}), not {config.depth_topics}: add "
            f"--depth-transport compressedDepth (params: depth_transport: compressedDepth)"
        )
    n = len(config.camera_names)
    images_in_bag = [t.name for t in source.topics.values() if t.msgtype == IMAGE]
    missing = [t for t in config.image_topics if t not in source.topics]
    if missing and images_in_bag and len([t for t in images_in_bag if "depth" not in t]) != n:
        raise BagError(
            f"the configuration has {n} cameras ({config.camera_names}) with image topics "
            f"{config.image_topics}, but bag {source.path} has {len(images_in_bag)} Image topics: "
            f"{sorted(images_in_bag)}; set camera_names and the topic lists to match the bag "
            f"(--cameras/--image-topics/--camera-info-topics or a params file)"
        )
    roles = [("camera images (image_topics)", config.image_topics)]
    if config.use_depth:
        roles.append(("depth images (depth_topics, use_depth is true)", config.depth_topics))
    for role, topics in roles:  # Image, or CompressedImage for image_transport's compressed topics
        for msgtype in (IMAGE, COMPRESSED_IMAGE):
            same = [t for t in topics if message_type_name(t) == msgtype]
            if same:
                source.require(same, msgtype, role)
    source.require(config.camera_info_topics, CAMERA_INFO, "camera calibration (camera_info_topics)")
    tf_topics = [t for t in TF_TOPICS if t in source.topics]
    if not tf_topics:
        raise BagError(
            f"bag {source.path} has neither /tf_static nor /tf, so the camera poses "
            f"({config.target_frame} <- camera frames) are unknown; topics in the bag: "
            f"{source.describe_topics()}"
        )
    source.require(tf_topics, TF_MESSAGE, "transforms")
    return tf_topics


def picture_depth_topics(source: BagSource, config: NodeConfig) -> list[str] | None:
    """The depth topics to show next to rendered depth: the inputs, or (without use_depth) the bag's
    depth topics when it has all of them as Image topics; None otherwise."""
    present = all(
        source.topics.get(t) is not None
        and source.topics[t].msgtype in (IMAGE, COMPRESSED_IMAGE)
        and source.topics[t].msgtype not in source.unknown_types
        for t in config.depth_topics
    )
    return list(config.depth_topics) if present else None


def open_ground_truth(source: BagSource, options: BagEvalOptions, stack: ExitStack):
    """The ground-truth source the options ask for (closed with ``stack``), or None (then nothing is
    scored).

    Raises:
        BagError: an explicitly requested topic is missing or of another type; both a topic and an
            Occ3D directory were given.
    """
    from gausstr_ros.bag.groundtruth import BagGroundTruth, Occ3DGroundTruth

    tolerance = round(options.gt_tolerance_ms * 1e6)
    if options.occ3d is not None:
        if options.ground_truth_topic is not None:
            raise BagError("give either --ground-truth-topic or --occ3d, not both")
        return stack.enter_context(closing(Occ3DGroundTruth(options.occ3d, tolerance)))
    topic = options.ground_truth_topic
    if topic is None:
        info = source.topics.get(DEFAULT_GROUND_TRUTH_TOPIC)
        if info is None or info.msgtype != SEMANTIC_OCCUPANCY:
            return None
        topic = DEFAULT_GROUND_TRUTH_TOPIC
    source.require([topic], SEMANTIC_OCCUPANCY, "ground truth (--ground-truth-topic)")
    return stack.enter_context(closing(BagGroundTruth(source.path, topic, tolerance)))


def setup_summary(setup: ResolvedSetup, mode: str) -> dict[str, Any]:
    c = setup.config
    return {
        "mode": mode,
        "bag": str(setup.bag),
        "bag_source": setup.bag_source,
        "checkpoint": c.checkpoint or None,
        "model_preset": c.model_preset or None,
        "checkpoint_source": setup.checkpoint_source,
        "categories": list(c.categories),
        "categories_source": setup.categories_source,
        "cameras": list(c.camera_names),
        "image_topics": list(c.image_topics),
        "use_depth": c.use_depth,
        "target_frame": c.target_frame,
        "grid_range": list(c.grid_range),
        "voxel_size": c.voxel_size,
        "sync_slop_s": c.sync_slop_s,
    }


def frame_views(images, depths) -> FrameViews:
    """Host copies of a frame set's images (RGB) and depth maps (metres) for pictures."""
    from gausstr_ros.conversions import ConversionError
    from gausstr_ros.conversions.images import depth_image_to_metres, image_to_rgb

    rgb = [np.ascontiguousarray(image_to_rgb(m)) for m in images]
    depth = None
    if depths is not None:
        depth = []
        for m in depths:
            try:
                depth.append(None if m is None else np.array(depth_image_to_metres(m), dtype=np.float32))
            except ConversionError:
                depth.append(None)
    return FrameViews(rgb, depth)
