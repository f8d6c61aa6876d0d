"""Bags that cannot be evaluated give a clear error and leave no report behind: truncated or corrupt
files, missing topics, unknown or wrong message types, camera counts that do not match, empty bags,
no TF; and bad parameters are refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gausstr_ros.bag.evaluate import evaluate_bag, main
from gausstr_ros.bag.options import BagEvalOptions
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.typestore import CAMERA_INFO, IMAGE
from gausstr_ros.bag.writer import storage_file
from gausstr_ros.node.params import NodeConfig
from gausstr_testing.bag_samples import frame_messages, write_bag


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory) -> Path:
    return write_bag(tmp_path_factory.mktemp("good") / "bag", frame_messages(frames=2))


def evaluate_fails(tmp_path: Path, bag, tiny_checkpoint: Path, match: str, error=BagError, **options) -> str:
    """Evaluate ``bag``; assert ``error`` matching ``match`` and that nothing was left in tmp_path/out."""
    out = tmp_path / "report"
    before = set(out.parent.iterdir())
    with pytest.raises(error, match=match) as info:
        evaluate_bag(BagEvalOptions(bag=bag, out=out, checkpoint=tiny_checkpoint, progress=False, **options))
    assert not out.exists()
    assert set(out.parent.iterdir()) == before, "a partial report was left behind"
    return str(info.value)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag(storage, tmp_path, tiny_checkpoint):
    bag = write_bag(tmp_path / "bag", frame_messages(frames=2), storage=storage)
    data = storage_file(bag)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    text = evaluate_fails(tmp_path, bag, tiny_checkpoint, "truncated or corrupt")
    assert "reindex" in text or "recover" in text


def test_corrupt_files(tmp_path, tiny_checkpoint, seed):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(np.random.default_rng(seed).bytes(4096))
    evaluate_fails(tmp_path, garbage, tiny_checkpoint, "truncated or corrupt")
    not_a_bag = tmp_path / "notes.txt"
    not_a_bag.write_text("hello")
    evaluate_fails(tmp_path, not_a_bag, tiny_checkpoint, "not a rosbag2")
    evaluate_fails(tmp_path, tmp_path / "missing", tiny_checkpoint, "does not exist")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    evaluate_fails(tmp_path, empty_dir, tiny_checkpoint, "no metadata.yaml and no .mcap")


def test_a_message_that_does_not_deserialise(tmp_path, tiny_checkpoint):
    """A bag whose index is fine but one message is garbage: the error names the message."""
    bag = tmp_path / "bag"
    from gausstr_ros.bag.writer import BagWriter

    messages = frame_messages(frames=2)
    bad = [i for i, m in enumerate(messages) if m[2] == IMAGE][3]
    with BagWriter(bag) as w:
        for i, (log_time, topic, msgtype, msg) in enumerate(messages):
            if i == bad:  # a header, then a frame_id string 4 GB long
                w.write_raw(
                    topic, msgtype, b"\x00\x01\x00\x00" + bytes(8) + b"\xff\xff\xff\xff" + bytes(8), log_time
                )
            else:
                w.write(topic, msgtype, msg, log_time)
    text = evaluate_fails(tmp_path, bag, tiny_checkpoint, "does not deserialise")
    assert "/cam_" in text


def test_missing_topics_name_what_the_bag_has(tmp_path, tiny_checkpoint, good_bag):
    text = evaluate_fails(
        tmp_path,
        good_bag,
        tiny_checkpoint,
        "not in bag",
        image_topics=[f"/cameras/{c.lower()}/image_raw" for c in NodeConfig.defaults().camera_names],
    )
    assert "/cam_front/image_rect" in text  # the Image topics the bag does have
    text = evaluate_fails(tmp_path, good_bag, tiny_checkpoint, "not in bag", ground_truth_topic="/gt")
    assert "/tf_static" in text


def test_wrong_and_unknown_message_types(tmp_path, tiny_checkpoint):
    defaults = NodeConfig.defaults()
    messages = frame_messages(frames=1)
    swapped = [
        (
            t,
            defaults.image_topics[0]
            if topic == defaults.camera_info_topics[0]
            else (defaults.camera_info_topics[0] if topic == defaults.image_topics[0] else topic),
            mt,
            m,
        )
        for t, topic, mt, m in messages
    ]
    bag = write_bag(tmp_path / "swapped", swapped)
    evaluate_fails(tmp_path, bag, tiny_checkpoint, f"{defaults.image_topics[0]} holds {CAMERA_INFO} messages")

    # A type the bag defines with a definition that does not parse, and one with no definition at all.
    bag = write_bag(tmp_path / "custom", messages)
    with BagSource(bag) as good:
        connections = list(good._reader.connections)
    from rosbags.interfaces import (
        Connection,
        ConnectionExtRosbag2,
        MessageDefinition,
        MessageDefinitionFormat,
    )

    from gausstr_ros.bag.typestore import bag_typestore, register_definitions

    store = bag_typestore()
    broken = Connection(
        99,
        defaults.image_topics[0],
        "acme_msgs/msg/Frame",
        MessageDefinition(MessageDefinitionFormat.MSG, "this is not a ] message definition"),
        "",
        1,
        ConnectionExtRosbag2("cdr", []),
        None,
    )
    nothing = Connection(
        98,
        "/x",
        "acme_msgs/msg/Other",
        MessageDefinition(MessageDefinitionFormat.NONE, ""),
        "",
        1,
        ConnectionExtRosbag2("cdr", []),
        None,
    )
    unknown = register_definitions(store, [*connections, broken, nothing])
    assert set(unknown) == {"acme_msgs/msg/Frame", "acme_msgs/msg/Other"}
    assert (
        "is incomplete" in unknown["acme_msgs/msg/Frame"]
        and "no definition" in unknown["acme_msgs/msg/Other"]
    )
    bad = broken._replace(
        msgtype="acme_msgs/msg/Bad", msgdef=MessageDefinition(MessageDefinitionFormat.MSG, "int32[[[ x")
    )
    assert "does not parse" in register_definitions(bag_typestore(), [bad])["acme_msgs/msg/Bad"]

    # End to end: an image topic of that unknown type.
    from gausstr_ros.bag.writer import BagWriter

    bag = tmp_path / "unknown_type"
    with BagWriter(bag) as w:
        for log_time, topic, msgtype, msg in messages:
            if topic == defaults.image_topics[0]:
                continue
            w.write(topic, msgtype, msg, log_time)
        w._writer.add_connection(
            defaults.image_topics[0],
            "acme_msgs/msg/Frame",
            msgdef="this is not ] valid",
            rihs01="RIHS01_" + "0" * 64,
        )
        conn = w._writer.connections[-1]
        w._writer.write(conn, messages[-1][0] + 1, b"\x00\x01\x00\x00abcd")
    text = evaluate_fails(tmp_path, bag, tiny_checkpoint, "holds acme_msgs/msg/Frame messages")
    assert "expected sensor_msgs/msg/Image" in text


def test_camera_counts_that_do_not_match(tmp_path, tiny_checkpoint, good_bag):
    defaults = NodeConfig.defaults()
    # The configuration contradicts itself: 5 camera names for 6 image topics.
    evaluate_fails(
        tmp_path,
        good_bag,
        tiny_checkpoint,
        "one topic per camera",
        error=ValueError,
        camera_names=defaults.camera_names[:5],
    )
    # The bag has 5 cameras, the configuration 6.
    five = write_bag(tmp_path / "five", frame_messages(frames=1, cameras=5))
    text = evaluate_fails(tmp_path, five, tiny_checkpoint, "has 6 cameras")
    assert "5 Image topics" in text


def test_empty_bags(tmp_path, tiny_checkpoint):
    declared = [(t, IMAGE) for t in NodeConfig.defaults().image_topics]
    bag = write_bag(tmp_path / "empty", [], declare=declared)
    evaluate_fails(tmp_path, bag, tiny_checkpoint, "is empty")
    # Topics with messages, but none on the cameras.
    only_tf = [m for m in frame_messages(frames=1) if m[1] == "/tf_static"]
    bag = write_bag(tmp_path / "only_tf", only_tf)
    evaluate_fails(tmp_path, bag, tiny_checkpoint, "not in bag")


def test_no_tf(tmp_path, tiny_checkpoint):
    bag = write_bag(tmp_path / "no_tf", frame_messages(frames=1, with_tf=False))
    evaluate_fails(tmp_path, bag, tiny_checkpoint, "neither /tf_static nor /tf")


def test_no_synchronized_set(tmp_path, tiny_checkpoint):
    """Cameras 0.3 s apart never make a set within sync_slop_s."""
    messages = frame_messages(frames=1)
    late = [
        (t + 300_000_000, topic, mt, m)
        for t, topic, mt, m in messages
        if topic == "/cam_back_right/image_rect"
    ]
    for _, _, _, m in late:
        m.header.stamp.nanosec += 300_000_000
    bag = write_bag(
        tmp_path / "unsynced", [m for m in messages if m[1] != "/cam_back_right/image_rect"] + late
    )
    evaluate_fails(tmp_path, bag, tiny_checkpoint, "no synchronized frame set", error=BagError)


def test_bad_options_are_refused_before_any_work(tmp_path, tiny_checkpoint, good_bag):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    sync_slope_s: 0.1\n")
    evaluate_fails(
        tmp_path,
        good_bag,
        tiny_checkpoint,
        "unknown parameter 'sync_slope_s'",
        error=ValueError,
        params=params,
    )
    params.write_text("/**:\n  ros__parameters:\n    sync_slop_s: 5.0\n")
    evaluate_fails(
        tmp_path,
        good_bag,
        tiny_checkpoint,
        r"sync_slop_s must be in \[0.001, 1.0\]",
        error=ValueError,
        params=params,
    )
    evaluate_fails(
        tmp_path, good_bag, tmp_path / "nope.safetensors", "does not exist", error=FileNotFoundError
    )
    occupied = tmp_path / "report"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate_bag(BagEvalOptions(bag=good_bag, out=occupied, checkpoint=tiny_checkpoint, progress=False))
    assert (occupied / "keep.txt").read_text() == "mine"


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys, tiny_checkpoint, seed):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + np.random.default_rng(seed).bytes(100))
    assert (
        main(
            [
                str(garbage),
                "--out",
                str(tmp_path / "r"),
                "--checkpoint",
                str(tiny_checkpoint),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("gausstr-bag-eval: error:") and "truncated or corrupt" in err
    assert not (tmp_path / "r").exists()
