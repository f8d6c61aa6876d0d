"""Live replay: a bag played into ROS topics through rclpy, the real occupancy node running as its own
process, and its outputs recorded and scored.

* Before playing, the bag's frame sets are assembled with the node's input rules (``frames``): these
  are the sets the node is offered.
* The node is started like a user starts it (``python -m gausstr_ros.node.occupancy_node --ros-args
  --params-file ...``) with one params file holding every parameter of the evaluation's resolved
  configuration, so live and offline modes run with identical settings.
* Messages are republished unchanged (their CDR bytes) at their log times scaled by ``rate``
  (1 = real time). ``rate`` 0 is lockstep: a frame set's answer (or its rejection) is awaited before the
  next set's first message, so nothing is dropped and the latency has no queueing in it.
* Outputs (occupancy, Gaussians, rendered depth, status) are written as they arrive into the report's
  ``outputs/`` bag; end-to-end latency is the time from publishing the last message of a set to
  receiving its occupancy. Drop rate = 1 - answered sets / offered sets.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gausstr_ros.bag.common import (
    TF_TOPICS,
    check_inputs,
    frame_views,
    open_ground_truth,
    setup_summary,
)
from gausstr_ros.bag.frames import FrameAssembler
from gausstr_ros.bag.options import BagEvalOptions, ResolvedSetup, params_yaml
from gausstr_ros.bag.reader import BagError, BagSource
from gausstr_ros.bag.report import ReportDir, picture_indices
from gausstr_ros.bag.results import FrameGaussians, ResultCollector
from gausstr_ros.bag.typestore import GAUSSIAN_ARRAY, IMAGE, INFERENCE_STATUS, SEMANTIC_OCCUPANCY
from gausstr_ros.node.params import NodeConfig
from gausstr_ros.node.sync import stamp_to_ns

OUTPUTS = {"occupancy": SEMANTIC_OCCUPANCY, "gaussians": GAUSSIAN_ARRAY, "status": INFERENCE_STATUS}


class LiveError(RuntimeError):
    """The live node could not be started or stopped answering; the message carries its log."""


@dataclass
class OfferedSet:
    """A frame set the node is offered: its stamp and the (topic, stamp) of each of its messages."""

    index: int
    stamp_ns: int
    members: list[tuple[str, int]]


def offered_sets(source: BagSource, config: NodeConfig, max_frames: int = 0) -> list[OfferedSet]:
    """The frame sets the bag's messages make under the node's input rules (no inference)."""
    assembler = FrameAssembler(config)
    out: list[OfferedSet] = []
    v = len(config.camera_names)
    for topic, log_time, msg in source.messages(assembler.input_topics):
        for frame in assembler.add(topic, msg, log_time / 1e9):
            members = [
                (config.image_topics[i], stamp_to_ns(m.header.stamp)) for i, m in enumerate(frame.images)
            ]
            if frame.depths is not None:
                members += [
                    (config.depth_topics[i], stamp_to_ns(m.header.stamp))
                    for i, m in enumerate(frame.depths[:v])
                ]
            out.append(OfferedSet(len(out), frame.stamp_ns, members))
            if max_frames and len(out) >= max_frames:
                return out
    return out


def header_stamp_ns(raw: bytes) -> int | None:
    """The header stamp of a serialised message whose first field is a std_msgs/Header (CDR)."""
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        return None
    fmt = "<iI" if raw[1] == 1 else ">iI"
    sec, nanosec = struct.unpack_from(fmt, raw, 4)
    return sec * 1_000_000_000 + nanosec


def namespaced(topic: str, namespace: str) -> str:
    """An absolute topic moved under ``namespace`` (TF topics stay global, as tf2 listens there)."""
    if not namespace or topic in TF_TOPICS:
        return topic
    return f"{namespace}{topic if topic.startswith('/') else '/' + topic}"


def live_config(config: NodeConfig, namespace: str) -> NodeConfig:
    """The node's configuration for the replay: the same parameters, input topics under the namespace,
    and a faster status topic (the player reads the node's counters from it)."""
    out = dataclasses.replace(config)
    out.image_topics = [namespaced(t, namespace) for t in config.image_topics]
    out.camera_info_topics = [namespaced(t, namespace) for t in config.camera_info_topics]
    out.depth_topics = [namespaced(t, namespace) for t in config.depth_topics]
    out.status_period_s = min(config.status_period_s, 0.2)
    return out


def ros_available() -> str | None:
    """None when rclpy and the package's messages import, else why not."""
    try:
        import rclpy  # noqa: F401

        import gausstr_ros.msg  # noqa: F401
    except ImportError as exc:
        return (
            f"live mode needs ROS 2 (rclpy) and this package's generated messages: {exc}; run "
            f"scripts/setup.sh, or source a ROS 2 install with gausstr_ros built"
        )
    return None


class Player:
    """The replaying rclpy node: publishers for the bag's topics, raw subscriptions to the node's outputs
    (written into the outputs bag as they arrive), and the node's latest status.

    Args:
        context: an initialised rclpy context.
        topics: {bag topic: (replayed topic, ROS type name "pkg/msg/Type")}.
        namespace: the node's namespace (its outputs live there).
        camera_names: for the rendered depth topics.
        recorder: a BagWriter for the outputs.
    """

    def __init__(
        self, context, topics: dict[str, tuple[str, str]], namespace: str, camera_names: list[str], recorder
    ):
        import importlib

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

        from gausstr_ros.bag.typestore import bag_typestore

        self.node = rclpy.create_node(f"gausstr_bag_player_{uuid.uuid4().hex[:8]}", context=context)
        self.recorder = recorder
        self._store = bag_typestore()
        self._closed = False
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
        )
        self.publishers = {}
        for bag_topic, (topic, msgtype) in topics.items():
            package, _, name = msgtype.split("/")
            cls = getattr(importlib.import_module(f"{package}.msg"), name)
            qos = latched if bag_topic == "/tf_static" else reliable
            self.publishers[bag_topic] = self.node.create_publisher(cls, topic, qos)
        from sensor_msgs.msg import Image

        from gausstr_ros.msg import GaussianArray, InferenceStatus, SemanticOccupancy

        prefix = namespace.rstrip("/")
        self.arrivals: dict[str, dict[int, float]] = defaultdict(dict)
        self.status = None
        self.status_count = 0
        self.output_topics = {
            f"{prefix}/occupancy": (SemanticOccupancy, SEMANTIC_OCCUPANCY),
            f"{prefix}/gaussians": (GaussianArray, GAUSSIAN_ARRAY),
            f"{prefix}/status": (InferenceStatus, INFERENCE_STATUS),
        }
        for cam in camera_names:
            self.output_topics[f"{prefix}/rendered_depth/{cam}"] = (Image, IMAGE)
        out_qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        for topic, (cls, msgtype) in self.output_topics.items():
            self.node.create_subscription(cls, topic, self._recorder(topic, msgtype), out_qos, raw=True)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _recorder(self, topic: str, msgtype: str):
        is_status = msgtype == INFERENCE_STATUS

        def record(raw: bytes) -> None:
            now = time.monotonic()
            stamp = header_stamp_ns(raw)
            with self._lock:
                if self.recorder is not None:
                    self.recorder.write_raw(topic, msgtype, raw, time.time_ns())
                if is_status:
                    self.status = self._store.deserialize_cdr(raw, INFERENCE_STATUS)
                    self.status_count += 1
                elif stamp is not None:
                    self.arrivals[topic].setdefault(stamp, now)

        return record

    def answered(self) -> int:
        """Frame sets the node has finished (published, dropped or rejected), from its status."""
        s = self.status
        return 0 if s is None else int(s.frames_processed + s.frames_dropped + s.frames_rejected)

    def occupancy_stamps(self, namespace: str) -> dict[int, float]:
        with self._lock:
            return dict(self.arrivals.get(f"{namespace.rstrip('/')}/occupancy", {}))

    def connected(self, input_topics: list[str], occupancy_topic: str) -> bool:
        inputs_ok = all(self.publishers[t].get_subscription_count() > 0 for t in input_topics)
        return inputs_ok and self.node.count_publishers(occupancy_topic) > 0

    def close(self) -> None:
        """Stop receiving (idempotent); the recorder is not written to afterwards."""
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(timeout_sec=5)
        self._spinner.join(timeout=10)
        with self._lock:
            self.recorder = None
        self.node.destroy_node()


def start_node(params_file: Path, namespace: str, log_path: Path, threads: int | None) -> subprocess.Popen:
    """The occupancy node as its own process (what users run), output into ``log_path``."""
    cmd = [
        sys.executable,
        "-m",
        "gausstr_ros.node.occupancy_node",
        "--ros-args",
        "--params-file",
        str(params_file),
    ]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    """SIGINT (a clean rclpy shutdown), then SIGKILL after ``timeout_s``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    return proc.returncode


def _node_exited(proc: subprocess.Popen, log_path: Path, when: str) -> LiveError:
    """The error for a node process that ended ``when`` (e.g. "during the replay"), with its log."""
    return LiveError(
        f"the occupancy node exited with code {proc.returncode} {when}; its log ({log_path.name}):"
        f"\n{_log_tail(log_path)}"
    )


def _wait_for_node(
    done: Callable[[], bool],
    proc: subprocess.Popen,
    log_path: Path,
    timeout_s: float,
    when: str,
    timed_out: str,
    poll_s: float,
) -> None:
    """Poll ``done`` until it holds; LiveError with the node's log if the node process ends first
    (``_node_exited(..., when)``) or ``timeout_s`` passes (``timed_out``, then the log)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if proc.poll() is not None:
            raise _node_exited(proc, log_path, when)
        if time.monotonic() > deadline:
            raise LiveError(f"{timed_out}; its log:\n{_log_tail(log_path)}")
        time.sleep(poll_s)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def evaluate_live(setup: ResolvedSetup, options: BagEvalOptions, report: ReportDir) -> dict[str, Any]:
    """Play the bag into the real node and collect its outputs into the report.

    Raises:
        RuntimeError: no ROS, or the node did not start / died (its log is in the message).
        BagError: as offline.
    """
    reason = ros_available()
    if reason:
        raise RuntimeError(reason)
    import rclpy

    from gausstr_ros.bag.writer import BagWriter

    config = setup.config
    namespace = options.namespace
    started = time.perf_counter()
    warnings: list[str] = []
    with ExitStack() as stack:
        source = stack.enter_context(BagSource(setup.bag))
        tf_topics = check_inputs(source, config)
        offered = offered_sets(source, config, options.max_frames)
        if not offered:
            raise BagError(
                f"bag {source.path} produced no synchronized frame set from {config.image_topics}: "
                f"check that all cameras publish with stamps within sync_slop_s = "
                f"{config.sync_slop_s} s of each other"
            )
        ground_truth = open_ground_truth(source, options, stack)

        node_config = live_config(config, namespace)
        params_file = report.file("node_params.yaml")
        params_file.write_text(params_yaml(node_config))
        inputs = list(config.image_topics) + list(config.camera_info_topics)
        if config.use_depth:
            inputs += list(config.depth_topics)
        replay = {t: (namespaced(t, namespace), source.topics[t].msgtype) for t in [*inputs, *tf_topics]}

        context = rclpy.Context()
        rclpy.init(context=context)
        stack.callback(rclpy.try_shutdown, context=context)
        recorder = BagWriter(report.path / "outputs", "mcap")
        recorder.open()
        stack.callback(recorder.abort)  # nothing to do once closed
        player = Player(context, replay, namespace, list(config.camera_names), recorder)
        stack.callback(player.close)
        log_path = report.file("node.log")
        proc = start_node(params_file, namespace, log_path, options.threads)
        stack.callback(stop_node, proc)
        occupancy_topic = f"{namespace}/occupancy"
        _wait_for_node(
            lambda: player.connected(inputs, occupancy_topic),
            proc,
            log_path,
            options.node_timeout_s,
            "before it was ready",
            f"the occupancy node did not connect within {options.node_timeout_s:.0f} s",
            poll_s=0.05,
        )
        startup_s = time.perf_counter() - started

        _prime_camera_info(source, player, config)
        published, play_s = _play(source, player, offered, options, proc, log_path, namespace)
        _wait_until_answered(player, offered, namespace, options, proc)
        _drain_outputs(player, namespace, list(config.camera_names))
        node_status = player.status
        rc = stop_node(proc)
        if rc not in (0, None):
            warnings.append(f"the node exited with code {rc} (see node.log)")
        player.close()
        recorder.close()
        summary = _collect(
            setup, options, report, source, offered, published, player, ground_truth, namespace, warnings
        )
    summary.update(
        {
            "rate": options.rate if options.rate > 0 else "lockstep",
            "namespace": namespace or "/",
            "node_startup_s": round(startup_s, 2),
            "playback_s": round(play_s, 2),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }
    )
    if node_status is not None:
        summary["node_status"] = {
            "frames_processed": int(node_status.frames_processed),
            "frames_dropped": int(node_status.frames_dropped),
            "frames_rejected": int(node_status.frames_rejected),
            "latency_p50_ms": float(node_status.latency_p50_ms),
            "latency_p99_ms": float(node_status.latency_p99_ms),
            "device": node_status.device,
            "last_error": node_status.last_error,
        }
    from gausstr_ros.bag.report import write_json

    write_json(report.file("summary.json"), summary)
    return summary


def _prime_camera_info(source: BagSource, player: Player, config: NodeConfig, settle_s: float = 0.5) -> None:
    """Publish each camera's first CameraInfo before the replay. A camera driver publishes CameraInfo all
    the time, so a running node has it before the first image; without this, the first frame set of a
    replay races its CameraInfo (separate subscriptions) and is rejected."""
    first: dict[str, bytes] = {}
    for topic, _, _, raw in source.raw_messages(config.camera_info_topics):
        first.setdefault(topic, raw)
        if len(first) == len(config.camera_info_topics):
            break
    # Repeated over the settle time, as a driver keeps publishing it: the node's best-effort CameraInfo
    # readers may match the player's writers a little after the player sees them matched, and a message
    # sent before that is lost.
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        for topic, raw in first.items():
            player.publishers[topic].publish(raw)
        time.sleep(0.05)


def _drain_outputs(player: Player, namespace: str, camera_names: list[str], timeout_s: float = 5.0) -> None:
    """Wait for the Gaussians and rendered depth that follow each received occupancy (the node publishes
    them right after it) before the node is stopped."""
    prefix = namespace.rstrip("/")
    topics = [f"{prefix}/gaussians", *(f"{prefix}/rendered_depth/{c}" for c in camera_names)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stamps = set(player.occupancy_stamps(namespace))
        with player._lock:
            if all(stamps <= set(player.arrivals.get(t, {})) for t in topics):
                return
        time.sleep(0.02)


def _play(
    source: BagSource,
    player: Player,
    offered: list[OfferedSet],
    options: BagEvalOptions,
    proc: subprocess.Popen,
    log_path: Path,
    namespace: str,
):
    """Publish the bag's messages; returns {(topic, stamp): monotonic publish time} and the play time."""
    from tqdm import tqdm

    published: dict[tuple[str, int], float] = {}
    remaining = {i: {m for m in s.members} for i, s in enumerate(offered)}
    member_of: dict[tuple[str, int], list[int]] = defaultdict(list)
    for s in offered:
        for m in s.members:
            member_of[m].append(s.index)
    complete: list[int] = []  # offered sets fully published, in order
    last_needed = max((m for s in offered for m in s.members), key=lambda m: m[1])
    first_log = None
    t0 = time.monotonic()
    bar = tqdm(
        total=len(offered), desc="live replay", unit="set", disable=not options.progress, dynamic_ncols=True
    )
    waited_for = 0
    for topic, _msgtype, log_time, raw in source.raw_messages(player.publishers):
        if proc.poll() is not None:
            bar.close()
            raise _node_exited(proc, log_path, "during the replay")
        if options.rate > 0:
            if first_log is None:
                first_log = log_time
            delay = t0 + (log_time - first_log) / 1e9 / options.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        else:
            # Lockstep: every set published so far is answered before anything else is sent.
            while waited_for < len(complete):
                _await_answer(
                    player, offered[complete[waited_for]], waited_for + 1, namespace, options, proc, log_path
                )
                waited_for += 1
        player.publishers[topic].publish(raw)
        stamp = header_stamp_ns(raw) if topic not in TF_TOPICS else None
        if stamp is not None:
            published[(topic, stamp)] = time.monotonic()
            for i in member_of.get((topic, stamp), ()):
                remaining[i].discard((topic, stamp))
                if not remaining[i]:
                    complete.append(i)
                    bar.update(1)
        if options.max_frames and (topic, stamp) == last_needed:
            break
    bar.close()
    if options.rate <= 0:
        while waited_for < len(complete):
            _await_answer(
                player, offered[complete[waited_for]], waited_for + 1, namespace, options, proc, log_path
            )
            waited_for += 1
    return published, time.monotonic() - t0


def _await_answer(
    player: Player,
    frame: OfferedSet,
    count: int,
    namespace: str,
    options: BagEvalOptions,
    proc: subprocess.Popen,
    log_path: Path,
) -> None:
    """Lockstep: wait until the node published this set's occupancy or counted ``count`` sets done."""
    _wait_for_node(
        lambda: frame.stamp_ns in player.occupancy_stamps(namespace) or player.answered() >= count,
        proc,
        log_path,
        options.node_timeout_s,
        "during the replay",
        f"the node did not answer frame set {frame.index} ({frame.stamp_ns / 1e9:.3f} s) within "
        f"{options.node_timeout_s:.0f} s",
        poll_s=0.005,
    )


def _wait_until_answered(
    player: Player, offered: list[OfferedSet], namespace: str, options: BagEvalOptions, proc: subprocess.Popen
) -> None:
    """After the replay: until the node accounted for every offered set (published, dropped or rejected),
    or nothing changed for a while (a set lost in transport is never accounted for)."""
    deadline = time.monotonic() + options.node_timeout_s
    last_change, last_seen = time.monotonic(), None
    while time.monotonic() < deadline and proc.poll() is None:
        received = len(player.occupancy_stamps(namespace))
        seen = (received, player.answered())
        processed = player.status.frames_processed if player.status is not None else 0
        if player.answered() >= len(offered) and received >= processed:
            return
        if seen != last_seen:
            last_change, last_seen = time.monotonic(), seen
        elif time.monotonic() - last_change > max(5.0, 2.0 * _max_latency_s(player, namespace)):
            return
        time.sleep(0.02)


def _max_latency_s(player: Player, namespace: str) -> float:
    s = player.status
    return 0.0 if s is None else float(s.latency_p99_ms) / 1e3


def _collect(
    setup: ResolvedSetup,
    options: BagEvalOptions,
    report: ReportDir,
    source: BagSource,
    offered: list[OfferedSet],
    published: dict,
    player: Player,
    ground_truth,
    namespace: str,
    warnings: list[str],
) -> dict[str, Any]:
    """Read the recorded outputs back and score, draw and tabulate them."""
    from gausstr_core.grid import VoxelGrid
    from gausstr_core.text.vocabulary import Vocabulary
    from gausstr_ros.bag.groundtruth import occupancy_from_message

    config = setup.config
    prefix = namespace.rstrip("/")
    occupancy_arrivals = player.occupancy_stamps(namespace)
    outputs = BagSource(report.path / "outputs")
    class_names = list(Vocabulary.parse(list(config.categories)).names)
    grid = VoxelGrid(tuple(config.grid_range), config.voxel_size)
    collector = ResultCollector(report, class_names, grid, config.camera_names, ground_truth)
    received = [s for s in offered if s.stamp_ns in occupancy_arrivals]
    pictures = {received[i].index for i in picture_indices(len(received), options.pictures)}
    latencies = []
    wanted = {s.stamp_ns for s in received}
    gaussians: dict[int, Any] = {}
    depth: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    labels: dict[int, np.ndarray] = {}
    picture_stamps = {offered[i].stamp_ns for i in pictures}
    depth_topics = {f"{prefix}/rendered_depth/{c}": c for c in config.camera_names}
    for topic, _, msg in outputs.messages([f"{prefix}/occupancy", f"{prefix}/gaussians", *depth_topics]):
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp not in wanted:
            continue
        if topic.endswith("/occupancy"):
            labels[stamp] = occupancy_from_message(msg, topic).semantics
        elif topic.endswith("/gaussians") and stamp in picture_stamps:
            n = len(msg.opacities)
            rot = np.asarray(msg.rotations, np.float32).reshape(n, 4)
            gaussians[stamp] = FrameGaussians(
                np.asarray(msg.means, np.float32).reshape(n, 3),
                np.asarray(msg.scales, np.float32).reshape(n, 3),
                np.concatenate([rot[:, 3:], rot[:, :3]], axis=1),
                np.asarray(msg.opacities, np.float32),
                np.asarray(msg.labels, np.uint8),
            )
        elif topic in depth_topics and stamp in picture_stamps:
            from gausstr_ros.conversions.images import image_to_array

            depth[stamp][depth_topics[topic]] = np.array(image_to_array(msg), dtype=np.float32)
    outputs.close()
    for s in offered:
        arrival = occupancy_arrivals.get(s.stamp_ns)
        sent = [published.get(m) for m in s.members]
        if arrival is None or s.stamp_ns not in labels:
            collector.add_frame(
                s.index,
                s.stamp_ns,
                "dropped",
                "no occupancy output for this set",
                extra={"e2e_latency_ms": None},
            )
            continue
        latency = (
            1e3 * (arrival - max(t for t in sent if t is not None))
            if any(t is not None for t in sent)
            else None
        )
        if latency is not None:
            latencies.append(latency)
        views = rendered = None
        if s.index in pictures:
            views = _input_views(source, config, s)
            if depth.get(s.stamp_ns):
                rendered = [depth[s.stamp_ns].get(c) for c in config.camera_names]
                rendered = rendered if all(r is not None for r in rendered) else None
        collector.add_frame(
            s.index,
            s.stamp_ns,
            "ok",
            labels=labels[s.stamp_ns],
            gaussians=gaussians.get(s.stamp_ns),
            rendered_depth=rendered,
            views=views,
            picture=s.index in pictures,
            extra={"e2e_latency_ms": None if latency is None else round(latency, 2)},
        )
    summary = setup_summary(setup, "live")
    n_received = len(received)
    summary["frames"] = {
        "offered": len(offered),
        "received": n_received,
        "dropped_or_rejected": len(offered) - n_received,
        "drop_rate": round(1.0 - n_received / len(offered), 4),
    }
    summary["warnings"] = warnings
    return collector.finish(
        summary,
        {"end-to-end (last input published -> occupancy received)": latencies},
        f"live end-to-end latency (rate {options.rate if options.rate > 0 else 'lockstep'})",
        ground_truth.description if ground_truth is not None else None,
    )


def _input_views(source: BagSource, config: NodeConfig, frame: OfferedSet):
    """The images (and depth) of an offered set, read back from the bag around its stamp."""
    slop = round(config.sync_slop_s * 1e9)
    start = frame.stamp_ns - 2 * slop - 1_000_000_000
    topics = list(config.image_topics) + list(config.depth_topics)
    best: dict[str, Any] = {}
    for topic, _, msg in source.messages(
        [t for t in topics if t in source.topics],
        start_ns=max(start, 0),
        stop_ns=frame.stamp_ns + 2 * slop + 1_000_000_000,
    ):
        stamp = stamp_to_ns(msg.header.stamp)
        if abs(stamp - frame.stamp_ns) <= slop and (
            topic not in best
            or abs(stamp - frame.stamp_ns) < abs(stamp_to_ns(best[topic].header.stamp) - frame.stamp_ns)
        ):
            best[topic] = msg
    images = [best.get(t) for t in config.image_topics]
    if any(m is None for m in images):
        return None
    depths = [best.get(t) for t in config.depth_topics]
    return frame_views(images, depths if any(d is not None for d in depths) else None)
