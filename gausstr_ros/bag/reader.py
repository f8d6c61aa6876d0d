"""Reading rosbag2 bags with rosbags (no ROS needed), with clear errors for bags that cannot be used.

``BagSource`` opens a bag directory (``metadata.yaml`` + storage files) or a single ``.mcap`` /
``.db3`` file, lists its topics, checks that the topics an evaluation needs exist with the right
message types, and yields deserialised messages in log-time order. Every failure is a ``BagError``
(a ValueError) saying what is wrong and what was expected: a path that is not a bag, a truncated or
corrupt file, an empty bag, a missing topic (naming the topics that exist), a topic of another type,
a type whose definition is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gausstr_ros.bag.typestore import bag_typestore, register_definitions

REPAIR_HINT = (
    "if the recording was interrupted, `ros2 bag reindex <bag>` (sqlite3) or `mcap recover` "
    "(mcap) may repair it"
)


class BagError(ValueError):
    """A bag that cannot be read or evaluated; the message says what is wrong."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its message type, message count and offered QoS (rosbags Qos list)."""

    name: str
    msgtype: str
    count: int
    qos: tuple = ()


def _describe(topics: dict[str, TopicInfo]) -> str:
    if not topics:
        return "none"
    return ", ".join(
        f"{t.name} ({t.msgtype}, {t.count})" for t in sorted(topics.values(), key=lambda t: t.name)
    )


def resolve_bag_path(path: str | Path) -> Path:
    """The path rosbags should open: a bag directory with metadata.yaml, or a .mcap / .db3 file.

    A directory without metadata.yaml (a recorder killed before writing it) that holds exactly one
    storage file is read through that file.

    Raises:
        BagError: nothing there, or not a bag.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(f"bag {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix not in (".mcap", ".db3"):
            raise BagError(
                f"{p} is not a rosbag2: expected a bag directory (with metadata.yaml) or a .mcap or .db3 file"
            )
        return p
    if (p / "metadata.yaml").is_file():
        return p
    files = sorted([*p.glob("*.mcap"), *p.glob("*.db3")])
    if len(files) == 1:
        return files[0]
    if not files:
        raise BagError(f"{p} is not a rosbag2: it has no metadata.yaml and no .mcap or .db3 file")
    raise BagError(
        f"{p} has no metadata.yaml and several storage files ({[f.name for f in files]}); {REPAIR_HINT}"
    )


class BagSource:
    """An open bag (use as a context manager, or call ``close``).

    Args:
        path: bag directory or storage file.
    Raises:
        BagError: not a bag, unreadable (truncated, corrupt), or empty.
    """

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import Reader

        self.path = resolve_bag_path(path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises ReaderError, OSError, sqlite/apsw and YAML errors
            raise BagError(
                f"cannot read bag {str(self.path)!r}: it is truncated or corrupt "
                f"({type(exc).__name__}: {exc}); {REPAIR_HINT}"
            ) from exc
        try:
            self.topics: dict[str, TopicInfo] = {}
            counts: dict[str, int] = {}
            for conn in self._reader.connections:
                counts[conn.topic] = counts.get(conn.topic, 0) + int(conn.msgcount)
            for conn in self._reader.connections:
                qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
                self.topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, counts[conn.topic], qos)
            self.typestore = bag_typestore()
            self.unknown_types = register_definitions(self.typestore, self._reader.connections)
            if not self.topics or sum(t.count for t in self.topics.values()) == 0:
                raise BagError(
                    f"bag {str(self.path)!r} is empty: it has no messages (topics: {_describe(self.topics)})"
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None and reader.is_open:
            reader.close()

    # -- topics ------------------------------------------------------------------------------------

    @property
    def start_time_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def duration_ns(self) -> int:
        return int(self._reader.duration)

    def describe_topics(self) -> str:
        return _describe(self.topics)

    def require(self, topics: Sequence[str], msgtype: str, role: str) -> None:
        """Check that every topic exists, has messages of ``msgtype`` and a known definition.

        Args:
            role: what the topics are for, for the message ("camera image topics (image_topics)").
        Raises:
            BagError: naming the missing topics and the topics the bag has.
        """
        missing = [t for t in topics if t not in self.topics]
        if missing:
            same_type = [t.name for t in self.topics.values() if t.msgtype == msgtype]
            hint = (
                f"; its {msgtype} topics are {sorted(same_type)}"
                if same_type
                else f"; it has no {msgtype} topic at all"
            )
            raise BagError(
                f"{role}: {len(missing)} of {len(topics)} topic(s) are not in bag {self.path}: "
                f"{missing}{hint}. Topics in the bag: {self.describe_topics()}. Choose the topics "
                f"with flags or a params file (see gausstr-bag-eval --help)"
            )
        for t in topics:
            info = self.topics[t]
            if info.msgtype != msgtype:
                raise BagError(f"{role}: topic {t} holds {info.msgtype} messages, expected {msgtype}")
            if info.msgtype in self.unknown_types:
                raise BagError(
                    f"{role}: topic {t} has the unknown message type {info.msgtype}: "
                    f"{self.unknown_types[info.msgtype]}"
                )
            if info.count == 0:
                raise BagError(f"{role}: topic {t} has no messages in bag {self.path}")

    # -- messages ----------------------------------------------------------------------------------

    def _read(
        self, topics: Iterable[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[tuple[int, Any, int, bytes]]:
        """(index from 1, connection, log time [ns], CDR bytes) of the given topics in log-time order.

        Raises:
            BagError: the data is truncated or corrupt (naming the last message read).
        """
        wanted = set(topics)
        connections = [c for c in self._reader.connections if c.topic in wanted]
        if not connections:
            return
        index = 0
        try:
            for conn, log_time, raw in self._reader.messages(connections, start=start_ns, stop=stop_ns):
                index += 1
                yield index, conn, int(log_time), raw
        except Exception as exc:
            raise BagError(
                f"cannot read bag {self.path} past message {index}: it is truncated or corrupt "
                f"({type(exc).__name__}: {exc}); {REPAIR_HINT}"
            ) from exc

    def messages(
        self, topics: Iterable[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[tuple[str, int, Any]]:
        """(topic, log time [ns], deserialised rosbags message) of the given topics in log-time order.

        Raises:
            BagError: the data is truncated or a message does not deserialise.
        """
        for index, conn, log_time, raw in self._read(topics, start_ns, stop_ns):
            try:
                msg = self.typestore.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:
                raise BagError(
                    f"bag {self.path}: message {index} on {conn.topic} ({conn.msgtype}, log time "
                    f"{log_time / 1e9:.3f} s) does not deserialise: the bag is corrupt "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            yield conn.topic, log_time, msg

    def raw_messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time [ns], CDR bytes) in log-time order (for republishing unchanged)."""
        for _, conn, log_time, raw in self._read(topics):
            yield conn.topic, conn.msgtype, log_time, bytes(raw)

    def count(self, topic: str) -> int:
        info = self.topics.get(topic)
        return info.count if info is not None else 0
