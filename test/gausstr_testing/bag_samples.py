"""Small bags for the bag tool tests: cheap hand-made camera frames (no synthetic-world rendering) and a
random-weight tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausstr_core.data.synthetic.rig import nuscenes_rig
from gausstr_ros.bag.typestore import CAMERA_INFO, IMAGE, TF_MESSAGE
from gausstr_ros.bag.writer import BagWriter, tf_message_like, transform_like
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.rig_messages import RigMessages, optical_frame

S = 1_000_000_000
T0 = 1_700_000_000 * S


def frame_messages(
    frames: int = 3,
    height: int = 56,
    width: int = 100,
    cameras: int = 6,
    period_ns: int = S // 10,
    image_topics: list[str] | None = None,
    info_topics: list[str] | None = None,
    with_tf: bool = True,
):
    """(log time, topic, type, message-like) of ``frames`` frame sets of smooth random images."""
    rig = nuscenes_rig(height, width)
    msgs = RigMessages(rig, like=True)
    defaults = NodeConfig.defaults()
    image_topics = image_topics or defaults.image_topics[:cameras]
    info_topics = info_topics or defaults.camera_info_topics[:cameras]
    out = []
    if with_tf:
        static = tf_message_like(
            [
                transform_like("base_link", optical_frame(n), msgs.cam_to_target(v), T0)
                for v, n in enumerate(rig.names)
            ]
        )
        out.append((T0 - S // 20, "/tf_static", TF_MESSAGE, static))
    rng = np.random.default_rng(0)
    for k in range(frames):
        base = T0 + k * period_ns
        for v in range(cameras):
            stamp = base + v * 8_333_000
            rgb = (rng.uniform(0, 255, (height, width, 3))).astype(np.uint8)
            out.append((stamp + 5_000_000, info_topics[v], CAMERA_INFO, msgs.camera_info(v, stamp)))
            out.append((stamp + 5_100_000, image_topics[v], IMAGE, msgs.image(v, rgb, stamp)))
    return sorted(out, key=lambda m: m[0])


def write_bag(path: Path, messages, storage: str = "mcap", declare: list[tuple[str, str]] = ()) -> Path:
    """Write (log time, topic, type, message) tuples; ``declare`` adds topics without messages."""
    with BagWriter(path, storage) as bag:
        for topic, msgtype in declare:
            bag.add_topic(topic, msgtype)
        for log_time, topic, msgtype, msg in messages:
            bag.write(topic, msgtype, msg, log_time)
    return path


def random_tiny_checkpoint(path: Path, vocabulary: list[str] | None = None) -> Path:
    """A tiny-preset checkpoint with random weights (seeded), with the synthetic world's vocabulary."""
    import torch

    from gausstr_core.data.synthetic.vocabulary import synthetic_vocabulary
    from gausstr_core.io.checkpoint import save_model_checkpoint
    from gausstr_core.model.gausstr import GaussTR
    from gausstr_core.presets import preset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = preset("tiny")
        model = GaussTR(config.model)
    return save_model_checkpoint(
        path, model, config, {"preset": "tiny", "vocabulary": vocabulary or synthetic_vocabulary()}
    )
