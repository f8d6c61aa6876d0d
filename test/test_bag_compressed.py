"""Compressed camera topics in the bag tools: gausstr-make-bag writes CompressedImage (JPEG/PNG) and
compressedDepth topics as image_transport names them, and gausstr-bag-eval reads them: PNG gives the raw
bag's predictions exactly, JPEG within its loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gausstr_ros.bag.evaluate import PREDICTION_TOPIC, evaluate_bag
from gausstr_ros.bag.make_bag import SyntheticBagConfig, write_synthetic_bag
from gausstr_ros.bag.options import BagEvalOptions
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.typestore import COMPRESSED_IMAGE, IMAGE
from gausstr_ros.bag.writer import BagWriter
from gausstr_ros.conversions.compressed import encode_compressed, encode_compressed_depth
from gausstr_ros.conversions.images import depth_image_to_metres, image_to_rgb
from gausstr_ros.node.sync import stamp_to_ns
from gausstr_testing.bag_samples import random_tiny_checkpoint

pytest.importorskip("cv2", reason="OpenCV decodes CompressedImage")
BAG = SyntheticBagConfig(frames=2, image_size=(56, 100), seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bag") / "raw", BAG, progress=False)


def compress_bag(raw: Path, out: Path, fmt: str, depth: bool) -> Path:
    """The raw bag with every camera image as ``<topic>/compressed`` (fmt) and, with ``depth``, every
    depth image as ``<topic>/compressedDepth``, like image_transport republishers would record it."""
    image_topics, depth_topics = set(BAG.image_topics), set(BAG.depth_topics) if depth else set()
    with BagSource(raw) as source, BagWriter(out) as bag:
        for topic, log_time, msg in source.messages(source.topics):
            msgtype = source.topics[topic].msgtype
            if topic in image_topics:
                fmt_string, data = encode_compressed(np.ascontiguousarray(image_to_rgb(msg)), fmt)
            elif topic in depth_topics:
                fmt_string, data = encode_compressed_depth(np.array(depth_image_to_metres(msg)))
            else:
                bag.write(topic, msgtype, msg, log_time)
                continue
            suffix = "/compressed" if topic in image_topics else "/compressedDepth"
            compressed = bag.typestore.types[COMPRESSED_IMAGE](
                header=msg.header, format=fmt_string, data=np.frombuffer(data, np.uint8)
            )
            bag.write(topic + suffix, COMPRESSED_IMAGE, compressed, log_time)
    return out


def predictions(report: Path) -> dict[int, np.ndarray]:
    with BagSource(report / "predictions") as source:
        return {
            stamp_to_ns(m.header.stamp): np.array(m.labels) for _, _, m in source.messages([PREDICTION_TOPIC])
        }


def evaluate(bag: Path, out: Path, checkpoint: Path, compressed: bool, depth: bool = False) -> dict:
    options = BagEvalOptions(
        bag=bag,
        out=out,
        checkpoint=checkpoint,
        device="cpu",
        record=True,
        progress=False,
        pictures=1,
        use_depth=True,
        image_transport="compressed" if compressed else None,
        depth_transport="compressedDepth" if depth else None,
    )
    return evaluate_bag(options)


def test_make_bag_writes_compressed_topics_like_image_transport(tmp_path, raw_bag):
    config = SyntheticBagConfig(
        frames=2, image_size=(56, 100), seed=3, image_format="jpeg", depth_format="png", ground_truth=False
    )
    bag = write_synthetic_bag(tmp_path / "jpeg", config, progress=False)
    with BagSource(bag) as packed, BagSource(raw_bag) as raw:
        assert packed.topics["/cam_front/image_rect/compressed"].msgtype == COMPRESSED_IMAGE
        assert packed.topics["/cam_front/depth/compressedDepth"].msgtype == COMPRESSED_IMAGE
        assert "/cam_front/image_rect" not in packed.topics
        assert raw.topics["/cam_front/image_rect"].msgtype == IMAGE
        jpeg = [m for _, _, m in packed.messages(["/cam_front/image_rect/compressed"])]
        rgb = [m for _, _, m in raw.messages(["/cam_front/image_rect"])]
        depth_png = [m for _, _, m in packed.messages(["/cam_front/depth/compressedDepth"])]
        depth_raw = [m for _, _, m in raw.messages(["/cam_front/depth"])]
    assert jpeg[0].format == "rgb8; jpeg compressed bgr8"
    for a, b in zip(jpeg, rgb):
        err = np.abs(image_to_rgb(a).astype(int) - image_to_rgb(b).astype(int))
        assert err.mean() < 6, err.mean()
    for a, b in zip(depth_png, depth_raw):
        got, want = depth_image_to_metres(a), np.array(depth_image_to_metres(b))
        # millimetres; 0 (unmeasured) stays 0, and beyond 65.535 m a 16UC1 image says "unmeasured"
        want[want > 65.535] = 0.0
        np.testing.assert_allclose(got, want, atol=6e-4)


def test_bag_eval_reads_compressed_topics(tmp_path, raw_bag, checkpoint):
    raw = evaluate(raw_bag, tmp_path / "raw", checkpoint, compressed=False)
    reference = predictions(tmp_path / "raw")
    png_bag = compress_bag(raw_bag, tmp_path / "png_bag", "png", depth=False)
    png = evaluate(png_bag, tmp_path / "png", checkpoint, compressed=True)
    assert png["frames"]["predicted"] == raw["frames"]["predicted"] == BAG.frames
    got = predictions(tmp_path / "png")
    assert got.keys() == reference.keys()
    for stamp, labels in reference.items():
        np.testing.assert_array_equal(got[stamp], labels)

    # JPEG images and compressedDepth (millimetres; beyond 65.5 m unmeasured = far, where the raw bag's
    # float depth says up to 80 m): every frame predicted, labels within JPEG's loss. This model has
    # random weights, which makes its labels far more sensitive to pixel noise than a trained one's
    # (measured here: 95.3% and 95.0% of voxels agree; JPEG alone gives the same); the trained model's
    # scores on JPEG are in docs/bags.md.
    jpeg_bag = compress_bag(raw_bag, tmp_path / "jpeg_bag", "jpeg", depth=True)
    jpeg = evaluate(jpeg_bag, tmp_path / "jpeg", checkpoint, compressed=True, depth=True)
    agree = [np.mean(labels == reference[stamp]) for stamp, labels in predictions(tmp_path / "jpeg").items()]
    assert jpeg["frames"]["predicted"] == BAG.frames and min(agree) > 0.9, agree

    with pytest.raises(BagError, match="--image-transport compressed"):
        evaluate(png_bag, tmp_path / "no_flag", checkpoint, compressed=False)
