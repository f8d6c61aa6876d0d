"""Writing rosbag2 bags (mcap or sqlite3) with rosbags, atomically, and the few message builders the
bag tools need beyond ``gausstr_ros.rig_messages``.

A bag is written into a temporary sibling directory and renamed to its final path only when it is
complete (``close``), so an interrupted or failed write never leaves a half-written bag behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from gausstr_core.grid import VoxelGrid
from gausstr_ros.bag.typestore import SEMANTIC_OCCUPANCY, bag_typestore, to_rosbags
from gausstr_ros.rig_messages import make_header

STORAGES = ("mcap", "sqlite3")
# QoS a topic was offered with; `ros2 bag play` republishes with it (tf_static must be latched).
QOS_KINDS = ("sensor", "reliable", "static")


def offered_qos(kind: str, depth: int = 10):
    """rosbags Qos of a topic kind: "sensor" (best effort, volatile), "reliable" (reliable, volatile)
    or "static" (reliable, transient local: /tf_static)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    if kind not in QOS_KINDS:
        raise ValueError(f"QoS kind must be one of {QOS_KINDS}, got {kind!r}")
    reliability = QosReliability.BEST_EFFORT if kind == "sensor" else QosReliability.RELIABLE
    durability = QosDurability.TRANSIENT_LOCAL if kind == "static" else QosDurability.VOLATILE
    infinite = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=durability,
        deadline=infinite,
        lifespan=infinite,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=infinite,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """A rosbag2 being written; use as a context manager.

    Args:
        path: the bag directory to create (must not exist).
        storage: "mcap" or "sqlite3".
        compress: zstd-compress mcap chunks (ignored for sqlite3, which rosbag2 compresses per file).
        typestore: a rosbags Typestore (default ``bag_typestore()``).
    Raises:
        FileExistsError: ``path`` exists.
        ValueError: unknown storage.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = True, typestore=None):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already; choose another path or remove it")
        self.storage = storage
        self.compress = compress and storage == "mcap"
        self.typestore = typestore or bag_typestore()
        self._tmp_root: Path | None = None
        self._writer = None
        self._connections: dict[str, Any] = {}
        self._custom: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_root = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        # The inner directory carries the final name: rosbag2 names the storage file after it.
        self._writer = Writer(self._tmp_root / self.path.name, version=9, storage_plugin=plugin)
        if self.compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()

    def set_custom_data(self, key: str, value: str) -> None:
        """A string stored in the bag's metadata.yaml (custom_data)."""
        self._custom[key] = value

    def add_topic(self, topic: str, msgtype: str, qos: str = "reliable") -> None:
        """Declare a topic (done implicitly by ``write`` with "reliable" QoS)."""
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise ValueError(
                    f"topic {topic} was declared as {self._connections[topic].msgtype}, not {msgtype}"
                )
            return
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[offered_qos(qos)]
        )
        self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, msg: Any, log_time_ns: int) -> None:
        """Serialise and write one message.

        Args:
            msg: a rosbags message of ``msgtype``, or any object with its fields (converted).
            log_time_ns: the time the message was recorded [ns] (rosbag2's receive time).
        """
        if self._writer is None:
            raise RuntimeError("the bag is not open")
        self.add_topic(topic, msgtype)
        if not isinstance(msg, self.typestore.types[msgtype]):
            msg = to_rosbags(msg, msgtype, self.typestore)
        self.write_raw(topic, msgtype, self.typestore.serialize_cdr(msg, msgtype), log_time_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, log_time_ns: int) -> None:
        """Write one already serialised (CDR) message, e.g. as received from rclpy with ``raw=True``."""
        if self._writer is None:
            raise RuntimeError("the bag is not open")
        self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag (index, metadata.yaml) and move it to its final path."""
        if self._writer is None:
            raise RuntimeError("the bag is not open")
        for key, value in self._custom.items():
            self._writer.set_custom_data(key, value)
        try:
            self._writer.close()
            self._writer = None
            if self.path.exists():
                raise FileExistsError(f"{self.path} appeared while the bag was written; not replacing it")
            (self._tmp_root / self.path.name).rename(self.path)
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self._tmp_root, ignore_errors=True)
        self._tmp_root = None
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already broken: the directory is removed below anyway
                self._writer.abort()
            self._writer = None
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None


def storage_file(bag: str | Path) -> Path:
    """The single storage file (``.mcap`` / ``.db3``) of a bag directory written by ``BagWriter``."""
    bag = Path(bag)
    files = sorted([*bag.glob("*.mcap"), *bag.glob("*.db3")])
    if len(files) != 1:
        raise ValueError(f"{bag} must hold exactly one .mcap or .db3 file, found {[f.name for f in files]}")
    return files[0]


# ---------------------------------------------------------------------------------------------
# Message-like builders (fields of the ROS messages, converted by ``to_rosbags``)
# ---------------------------------------------------------------------------------------------


def transform_like(parent: str, child: str, matrix: np.ndarray, stamp_ns: int) -> SimpleNamespace:
    """geometry_msgs/TransformStamped-like object of a (4, 4) rigid transform child -> parent."""
    import torch

    from gausstr_core.geometry import matrix_to_quaternion

    m = np.asarray(matrix, dtype=np.float64)
    w, x, y, z = matrix_to_quaternion(torch.from_numpy(m[:3, :3].copy())).tolist()
    t = m[:3, 3]
    return SimpleNamespace(
        header=make_header(parent, stamp_ns, like=True),
        child_frame_id=child,
        transform=SimpleNamespace(
            translation=SimpleNamespace(x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=SimpleNamespace(x=x, y=y, z=z, w=w),
        ),
    )


def tf_message_like(transforms: Sequence[SimpleNamespace]) -> SimpleNamespace:
    """tf2_msgs/TFMessage-like object."""
    return SimpleNamespace(transforms=list(transforms))


def occupancy_like(
    labels: np.ndarray,
    grid: VoxelGrid,
    class_names: Sequence[str],
    free_label: int,
    frame_id: str,
    stamp_ns: int,
    confidence: np.ndarray | None = None,
) -> SimpleNamespace:
    """gausstr_ros/SemanticOccupancy-like object of a dense label grid (the layout of
    ``gausstr_ros.conversions.occupancy.occupancy_message``: C order over [x][y][z], origin at the
    minimum corner).

    Args:
        labels: (X, Y, Z) uint8 labels, ``free_label`` = free.
        confidence: optional (X, Y, Z) float32 in [0, 1].
    """
    if tuple(labels.shape) != grid.shape:
        raise ValueError(f"labels must have the grid's shape {grid.shape}, got {tuple(labels.shape)}")
    if free_label != len(class_names) or free_label > 255:
        raise ValueError(f"free_label must be len(class_names) = {len(class_names)} <= 255, got {free_label}")
    if confidence is not None and tuple(confidence.shape) != grid.shape:
        raise ValueError(f"confidence must have the grid's shape {grid.shape}, got {tuple(confidence.shape)}")
    lower = [float(v) for v in grid.lower]
    origin = SimpleNamespace(
        position=SimpleNamespace(x=lower[0], y=lower[1], z=lower[2]),
        orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0),
    )
    size_x, size_y, size_z = grid.shape
    return SimpleNamespace(
        header=make_header(frame_id, stamp_ns, like=True),
        origin=origin,
        resolution=float(grid.voxel_size),
        size_x=size_x,
        size_y=size_y,
        size_z=size_z,
        labels=np.ascontiguousarray(labels, dtype=np.uint8).reshape(-1),
        confidence=(
            np.zeros(0, np.float32)
            if confidence is None
            else np.ascontiguousarray(confidence, dtype=np.float32).reshape(-1)
        ),
        free_label=int(free_label),
        class_names=list(class_names),
    )


__all__ = [
    "SEMANTIC_OCCUPANCY",
    "STORAGES",
    "BagWriter",
    "occupancy_like",
    "offered_qos",
    "storage_file",
    "tf_message_like",
    "transform_like",
]
