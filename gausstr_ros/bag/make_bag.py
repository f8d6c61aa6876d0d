"""``gausstr-make-bag``: a drive through one synthetic-world street as a rosbag2 (mcap or sqlite3).

    gausstr-make-bag --out bags/synthetic --frames 20
    gausstr-make-bag --out bags/synthetic_db3 --storage sqlite3 --frames 40 --seed 3 --image-size 225 400
    gausstr-make-bag --out bags/synthetic_jpeg --image-format jpeg --depth-format png   # compressed topics

Topics (the node's default input topics, config/occupancy.yaml, so the node and gausstr-bag-eval read
the bag with no flags):

* ``/<camera>/image_rect`` (sensor_msgs/Image, rgb8) and ``/<camera>/camera_info`` (CameraInfo, with
  every image) of the six nuScenes-like cameras (``/cam_front/...``, ...); with ``--image-format
  jpeg|png`` the images are ``/<camera>/image_rect/compressed`` (sensor_msgs/CompressedImage, as
  compressed_image_transport publishes them: JPEG quality ``--jpeg-quality``, default 95);
* ``/<camera>/depth`` (Image, 32FC1 metres, 0 = invalid): the synthetic metric-depth prediction
  registered to each image (the stand-in for a metric depth source, the same target the model is
  trained against), written the way a depth camera reports it: the far field (sky, beyond the
  generator's range), which the training target calls "far", is 0 (unmeasured). The node and
  ``gausstr-bag-eval`` turn unmeasured pixels back into the far depth (docs/node.md), so the model
  sees exactly its training input; with ``--depth-format png`` the depth is
  ``/<camera>/depth/compressedDepth`` (CompressedImage: 16UC1 millimetres in a PNG, as
  compressed_depth_image_transport publishes a 16-bit depth camera);
* ``/tf_static`` (base_link -> ``<camera>_optical``, latched) and ``/tf`` (odom -> base_link per frame);
* ``/ground_truth/occupancy`` (gausstr_ros/SemanticOccupancy): the Occ3D ground truth in base_link at
  the frame's stamp; ``confidence`` holds Occ3D's ``mask_camera`` (1 = observed by a camera, 0 = not
  observed: the label there is unknown), which scoring uses like Occ3D does.

Timing: frames at ``--rate-hz`` (default 10 Hz); within a frame the cameras fire in order a few ms
apart (``--camera-offset-ms``, 8.3 ms as on the nuScenes car) with +-0.5 ms jitter; messages are logged a
few ms after their stamp (transport delay). The ego drives along its street at about 10 m/s. The
world is static, and all six images of a frame are rendered at the frame's ego pose. Deterministic
per (seed, scene) and configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gausstr_core.cli_flags import add_dataclass_flags, dataclass_from_args
from gausstr_ros.bag.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, SEMANTIC_OCCUPANCY, TF_MESSAGE
from gausstr_ros.bag.writer import STORAGES, BagWriter, occupancy_like, tf_message_like, transform_like
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.transport import COMPRESSED, COMPRESSED_DEPTH, with_transport

GROUND_TRUTH_TOPIC = "/ground_truth/occupancy"
ODOM_FRAME = "odom"
# Custom metadata key under which the generator's configuration is stored in the bag.
METADATA_KEY = "gausstr_ros.synthetic"


@dataclass
class SyntheticBagConfig:
    """What ``write_synthetic_bag`` writes.

    Attributes:
        frames: frame sets (key frames) in the bag
        seed: synthetic dataset seed (``gausstr_core.data.synthetic``)
        scene: world index within the seed
        image_size: camera image size (H, W); the default is the tiny preset's input size
        rate_hz: camera rate [Hz]
        speed_mps: (low, high) ego speed [m/s]; drawn once per bag from the world's seed
        camera_offset_ms: trigger delay between successive cameras of a frame
        jitter_ms: uniform stamp jitter (+-) of each camera image
        transport_ms: (low, high) delay between a message's stamp and its log time
        start_time_s: stamp of the first frame [s since the epoch]
        depth: write the depth topics
        ground_truth: write the ground-truth topic
        dynamic_tf: write /tf odom -> base_link
        storage: rosbag2 storage
        compress: zstd chunk compression (mcap only)
        image_format: camera images as sensor_msgs/Image rgb8 (raw), or as CompressedImage on
            <image topic>/compressed (jpeg, png)
        jpeg_quality: JPEG quality of image_format jpeg (compressed_image_transport's default 95)
        depth_format: depth as Image 32FC1 (raw), or as compressedDepth PNG (16UC1 millimetres, on
            <depth topic>/compressedDepth)
        target_frame: the ego frame (the node's default)
        image_topics: image topic per camera (the node's defaults)
        camera_info_topics: CameraInfo topic per camera (the node's defaults)
        depth_topics: depth topic per camera (the node's defaults)
        ground_truth_topic: topic of the SemanticOccupancy ground truth
    """

    frames: int = 20
    seed: int = 0
    scene: int = 0
    image_size: tuple[int, int] = (112, 200)
    rate_hz: float = 10.0
    speed_mps: tuple[float, float] = (8.0, 12.0)
    camera_offset_ms: float = 8.333
    jitter_ms: float = 0.5
    transport_ms: tuple[float, float] = (3.0, 12.0)
    start_time_s: float = 1_700_000_000.0
    depth: bool = True
    ground_truth: bool = True
    dynamic_tf: bool = True
    storage: Literal["mcap", "sqlite3"] = "mcap"
    compress: bool = True
    image_format: Literal["raw", "jpeg", "png"] = "raw"
    jpeg_quality: int = 95
    depth_format: Literal["raw", "png"] = "raw"
    target_frame: str = "base_link"
    image_topics: list[str] = field(default_factory=lambda: list(NodeConfig.defaults().image_topics))
    camera_info_topics: list[str] = field(
        default_factory=lambda: list(NodeConfig.defaults().camera_info_topics)
    )
    depth_topics: list[str] = field(default_factory=lambda: list(NodeConfig.defaults().depth_topics))
    ground_truth_topic: str = GROUND_TRUTH_TOPIC

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not 1.0 <= self.rate_hz <= 100.0:
            raise ValueError(f"rate_hz must be in [1, 100], got {self.rate_hz}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        if self.image_format not in ("raw", "jpeg", "png"):
            raise ValueError(f"image_format must be raw, jpeg or png, got {self.image_format!r}")
        if self.depth_format not in ("raw", "png"):
            raise ValueError(f"depth_format must be raw or png, got {self.depth_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        n = len(self.image_topics)
        for name in ("camera_info_topics", "depth_topics"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs one topic per camera ({n}), got {getattr(self, name)}")
        if n != 6:
            raise ValueError(f"the synthetic rig has 6 cameras; got {n} image topics")
        if self.jitter_ms < 0 or self.camera_offset_ms < 0 or min(self.transport_ms) < 0:
            raise ValueError("offsets, jitter and transport delays must be >= 0")
        # Every message of a frame must be logged before the next frame starts, so that the bag's
        # log order is the order a recorder would have seen.
        span_ms = 5 * self.camera_offset_ms + self.jitter_ms + max(self.transport_ms)
        if span_ms >= 1000.0 / self.rate_hz:
            raise ValueError(
                f"a frame's messages span {span_ms:.1f} ms, more than the frame period "
                f"{1000.0 / self.rate_hz:.1f} ms: lower camera_offset_ms or transport_ms"
            )


def _frame_times(config: SyntheticBagConfig, rng: np.random.Generator):
    """Per frame: the set stamp [ns], per-camera stamps [ns] and per-message transport delays."""
    period = 1e9 / config.rate_hz
    t0 = round(config.start_time_s * 1e9)
    for k in range(config.frames):
        base = t0 + round(k * period)
        offsets = np.arange(6) * config.camera_offset_ms * 1e6
        jitter = rng.uniform(-config.jitter_ms, config.jitter_ms, 6) * 1e6
        jitter[0] = 0.0  # the set stamp is CAM_FRONT's, exactly on the frame clock
        stamps = [base + round(o + j) for o, j in zip(offsets, jitter)]
        yield k, base, stamps


def image_topic(config: SyntheticBagConfig, v: int) -> tuple[str, str]:
    """(topic, type) of camera ``v``'s images: raw, or image_transport's ``<topic>/compressed``."""
    if config.image_format == "raw":
        return config.image_topics[v], IMAGE
    return with_transport(config.image_topics[v], COMPRESSED), COMPRESSED_IMAGE


def depth_topic(config: SyntheticBagConfig, v: int) -> tuple[str, str]:
    """(topic, type) of camera ``v``'s depth: raw, or image_transport's ``<topic>/compressedDepth``."""
    if config.depth_format == "raw":
        return config.depth_topics[v], IMAGE
    return with_transport(config.depth_topics[v], COMPRESSED_DEPTH), COMPRESSED_IMAGE


def bag_topics(config: SyntheticBagConfig) -> list[tuple[str, str, str]]:
    """(topic, message type, offered QoS kind) of every topic of the bag, in declaration order."""
    topics = [("/tf_static", TF_MESSAGE, "static")]
    if config.dynamic_tf:
        topics.append(("/tf", TF_MESSAGE, "reliable"))
    for v in range(len(config.image_topics)):
        topics.append((*image_topic(config, v), "sensor"))
        topics.append((config.camera_info_topics[v], CAMERA_INFO, "sensor"))
        if config.depth:
            topics.append((*depth_topic(config, v), "sensor"))
    if config.ground_truth:
        topics.append((config.ground_truth_topic, SEMANTIC_OCCUPANCY, "reliable"))
    return topics


def synthetic_bag_messages(
    config: SyntheticBagConfig, progress: bool = False
) -> Iterator[tuple[int, str, str, Any]]:
    """Every message of the bag as (log time [ns], topic, type, message-like object), in log-time order.

    Deterministic per configuration: the same arguments give the same messages.
    """
    import torch
    from tqdm import tqdm

    from gausstr_core.data.occ3d import OCC3D_CLASS_NAMES
    from gausstr_core.data.synthetic import generate_sample
    from gausstr_core.data.synthetic.samples import make_world
    from gausstr_ros.rig_messages import RigMessages, optical_frame

    rng = np.random.default_rng([config.seed, config.scene, 7])
    synthetic = synthetic_config(config)
    world = make_world(config.seed, config.scene, synthetic)
    rig = synthetic.rig()
    messages = RigMessages(rig, like=True)
    names = list(rig.names)
    free_label = len(OCC3D_CLASS_NAMES) - 1
    class_names = list(OCC3D_CLASS_NAMES[:-1])

    def delay() -> int:
        return round(rng.uniform(*config.transport_ms) * 1e6)

    t0 = round(config.start_time_s * 1e9)
    static = tf_message_like(
        [
            transform_like(config.target_frame, optical_frame(n), messages.cam_to_target(v), t0)
            for v, n in enumerate(names)
        ]
    )
    yield t0 - 50_000_000, "/tf_static", TF_MESSAGE, static

    frames = _frame_times(config, rng)
    for k, set_stamp, stamps in tqdm(
        frames, total=config.frames, desc="make-bag", unit="frame", disable=not progress, dynamic_ncols=True
    ):
        sample = generate_sample(
            config.seed, config.scene, k, synthetic, None, world=world, with_labels=config.ground_truth
        )
        out = []  # (log time, topic, type, message)
        if config.dynamic_tf:
            pose = sample.ego_to_world.numpy()
            tf = tf_message_like([transform_like(ODOM_FRAME, config.target_frame, pose, set_stamp)])
            out.append((set_stamp + delay(), "/tf", TF_MESSAGE, tf))
        rgb = sample.views.rgb.permute(0, 2, 3, 1).contiguous().numpy()
        # A depth camera reports what is out of its range as 0 (unmeasured), not as a far depth.
        depth = sample.depth_target.numpy()
        depth = np.where(depth <= synthetic.depth.max_depth, depth, 0.0).astype(np.float32)
        for v in range(len(names)):
            stamp = stamps[v]
            arrival = stamp + delay()
            info = messages.camera_info(v, stamp)
            out.append((arrival, config.camera_info_topics[v], CAMERA_INFO, info))
            if config.depth:
                if config.depth_format == "raw":
                    depth_msg = messages.depth(v, depth[v], stamp)
                else:
                    depth_msg = messages.compressed_depth(v, depth[v], stamp)
                out.append((arrival + 200_000, *depth_topic(config, v), depth_msg))
            if config.image_format == "raw":
                image = messages.image(v, rgb[v], stamp)
            else:
                image = messages.compressed_image(v, rgb[v], stamp, config.image_format, config.jpeg_quality)
            out.append((arrival + 100_000, *image_topic(config, v), image))
        if config.ground_truth:
            labels = sample.labels
            mask = labels.mask_camera.to(torch.float32).numpy()
            gt = occupancy_like(
                labels.semantics.numpy(),
                synthetic.grid,
                class_names,
                free_label,
                config.target_frame,
                set_stamp,
                confidence=mask,
            )
            out.append(
                (
                    set_stamp + round(max(config.transport_ms) * 1e6) + delay(),
                    config.ground_truth_topic,
                    SEMANTIC_OCCUPANCY,
                    gt,
                )
            )
        yield from sorted(out, key=lambda m: m[0])


def synthetic_config(config: SyntheticBagConfig):
    """The synthetic world's configuration of a bag: the ego drives ``speed / rate`` metres per frame."""
    from gausstr_core.data.synthetic import SyntheticConfig, WorldConfig

    spacing = drawn_speed(config) / config.rate_hz
    return SyntheticConfig(
        image_size=config.image_size,
        samples_per_scene=config.frames,
        world=WorldConfig(sample_spacing=(spacing, spacing)),
    )


def drawn_speed(config: SyntheticBagConfig) -> float:
    """The ego speed [m/s] of a bag, drawn from (seed, scene) within ``speed_mps``."""
    return float(np.random.default_rng([config.seed, config.scene, 11]).uniform(*config.speed_mps))


def write_synthetic_bag(path: str | Path, config: SyntheticBagConfig, progress: bool = True) -> Path:
    """Render ``config.frames`` frames of one synthetic world and write them as a rosbag2.

    Returns:
        The bag directory (written atomically: nothing is left at ``path`` on error).
    """
    from gausstr_ros.rig_messages import RigMessages

    with BagWriter(path, config.storage, config.compress) as bag:
        meta = asdict(config)
        meta["speed_mps_drawn"] = drawn_speed(config)
        meta["cameras"] = list(RigMessages(synthetic_config(config).rig(), like=True).names)
        bag.set_custom_data(METADATA_KEY, json.dumps(meta))
        for topic, msgtype, qos in bag_topics(config):
            bag.add_topic(topic, msgtype, qos)
        for log_time, topic, msgtype, msg in synthetic_bag_messages(config, progress):
            bag.write(topic, msgtype, msg, log_time)
    return Path(path)


# Flag spellings and forms that differ from what SyntheticBagConfig's fields give.
_FLAG_OPTIONS = {
    "image_size": {"metavar": ("H", "W")},
    "start_time_s": {"name": "--start-time"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gausstr-make-bag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    add_dataclass_flags(p, SyntheticBagConfig, options=_FLAG_OPTIONS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = dataclass_from_args(SyntheticBagConfig, args)
        path = write_synthetic_bag(args.out, config)
    except (ValueError, FileExistsError) as exc:
        print(f"gausstr-make-bag: error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(
        f"wrote {path} ({config.frames} frames at {config.rate_hz:g} Hz, {config.storage}, "
        f"{size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
