"""Camera extrinsics from TF: tf2_ros when importable, else a listener on /tf and /tf_static.

``TransformBuffer`` is a small tf2-like buffer (no rclpy): a tree of frames, each with one parent, a
time-sorted history for dynamic transforms (/tf) and a single value for static ones (/tf_static).
Lookups compose the edges through the common ancestor at the requested time, interpolating each
dynamic edge between its two neighbouring samples (translation linearly, rotation by spherical
linear interpolation, scipy's ``Slerp``). Like tf2 it never extrapolates: a time before the oldest
or after the newest sample of an edge is an error. Time 0 means "the latest time every dynamic
edge on the path has" (tf2's latest common time).

``make_tf_lookup(node, ...)`` gives the node one interface over tf2_ros (ROS machines) and this
buffer fed by ``TfTopicListener`` (the ROS 2 wheels from PyPI, which lack tf2_ros).
"""

from __future__ import annotations

import bisect
import importlib.util
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from gausstr_ros.conversions.transforms import transform_to_matrix
from gausstr_ros.node.sync import stamp_to_ns


class TransformError(Exception):
    """A transform that cannot be looked up."""


class TransformNotFound(TransformError):
    """A frame is unknown, or the two frames are not connected."""


class TransformExtrapolation(TransformError):
    """The requested time is outside the transforms' history (stale or not yet received TF)."""


@dataclass
class _Edge:
    """child -> parent transforms of one frame: a time-sorted history, or one static value."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)  # (4, 4) child -> parent


def _fmt_ns(stamp_ns: int) -> str:
    return f"{stamp_ns / 1e9:.3f} s"


class TransformBuffer:
    """A thread-safe tf2-like transform tree.

    Args:
        cache_time_s: dynamic transforms older than the newest one of their edge by more than this
            are forgotten (tf2's default is 10 s).
    """

    def __init__(self, cache_time_s: float = 10.0):
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        self.cache_ns = round(cache_time_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._changed = threading.Condition()

    def set_transform(self, parent: str, child: str, stamp_ns: int, matrix: np.ndarray, static: bool) -> None:
        """Add the transform taking ``child`` points to ``parent`` at ``stamp_ns`` (or for all time)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child:
            raise ValueError(f"transform needs non-empty frame ids, got parent {parent!r}, child {child!r}")
        if parent == child:
            raise ValueError(f"transform from {child!r} to itself")
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(
                f"transform {parent} <- {child} must be a finite (4, 4) matrix, got shape {matrix.shape}"
            )
        with self._changed:
            edge = self._edges.get(child)
            if edge is None or edge.static != static or edge.parent != parent:
                # A new parent (re-parenting) or a switch between static and dynamic replaces the
                # history: mixing samples of two different edges would interpolate nonsense.
                edge = _Edge(parent, static)
                self._edges[child] = edge
            if static:
                edge.stamps, edge.matrices = [stamp_ns], [matrix]
            else:
                i = bisect.bisect_left(edge.stamps, stamp_ns)
                if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                    edge.matrices[i] = matrix
                else:
                    edge.stamps.insert(i, stamp_ns)
                    edge.matrices.insert(i, matrix)
                cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
                if cut:
                    del edge.stamps[:cut], edge.matrices[:cut]
            self._changed.notify_all()

    def set_transform_message(self, msg, static: bool) -> None:
        """Add a geometry_msgs/TransformStamped (any object with its fields)."""
        self.set_transform(
            msg.header.frame_id,
            msg.child_frame_id,
            stamp_to_ns(msg.header.stamp),
            transform_to_matrix(msg),
            static,
        )

    def clear(self) -> None:
        """Forget the dynamic transforms (static ones stay), e.g. after time jumped backwards."""
        with self._changed:
            self._edges = {k: e for k, e in self._edges.items() if e.static}

    def frames(self) -> list[str]:
        with self._changed:
            names = set(self._edges) | {e.parent for e in self._edges.values()}
        return sorted(names)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > 1000:
                raise TransformNotFound(f"TF tree has a loop through {frame!r}")
        return chain

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from source up to (not including) the common ancestor, and likewise from target."""
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for name, frame in (("source", source), ("target", target)):
            if frame not in known:
                raise TransformNotFound(
                    f"{name} frame {frame!r} does not exist in TF "
                    f"(known: {sorted(known) if known else 'none'})"
                )
        up_source, up_target = self._chain(source), self._chain(target)
        common = set(up_target)
        ancestor = next((f for f in up_source if f in common), None)
        if ancestor is None:
            raise TransformNotFound(
                f"frames {target!r} and {source!r} are not connected in TF "
                f"(roots {up_target[-1]!r} and {up_source[-1]!r})"
            )
        return up_source[: up_source.index(ancestor)], up_target[: up_target.index(ancestor)]

    def _edge_at(self, child: str, stamp_ns: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            return edge.matrices[0]
        stamps = edge.stamps
        if stamp_ns < stamps[0] or stamp_ns > stamps[-1]:
            direction = "past" if stamp_ns < stamps[0] else "future"
            raise TransformExtrapolation(
                f"lookup of {edge.parent} <- {child} at {_fmt_ns(stamp_ns)} would extrapolate into the "
                f"{direction}: data from {_fmt_ns(stamps[0])} to {_fmt_ns(stamps[-1])} "
                f"({abs(stamp_ns - (stamps[0] if direction == 'past' else stamps[-1])) / 1e6:.1f} ms away)"
            )
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            return edge.matrices[i]
        t0, t1 = stamps[i - 1], stamps[i]
        m0, m1 = edge.matrices[i - 1], edge.matrices[i]
        alpha = (stamp_ns - t0) / (t1 - t0)
        out = np.eye(4)
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([m0[:3, :3], m1[:3, :3]])))
        out[:3, :3] = slerp([alpha]).as_matrix()[0]
        out[:3, 3] = (1 - alpha) * m0[:3, 3] + alpha * m1[:3, 3]
        return out

    def _latest_common(self, frames: list[str]) -> int:
        dynamic = [self._edges[f].stamps[-1] for f in frames if not self._edges[f].static]
        return min(dynamic) if dynamic else 0

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """(4, 4) transform taking ``source``-frame points to the ``target`` frame at ``stamp_ns``.

        Args:
            stamp_ns: time [ns]; 0 = the latest common time of the path.
        Raises:
            TransformNotFound: unknown frame or frames not connected.
            TransformExtrapolation: the time is outside the history of a dynamic edge on the path.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        with self._changed:
            up_source, up_target = self._path(target, source)
            if stamp_ns == 0:
                stamp_ns = self._latest_common(up_source + up_target)
            source_to_ancestor = np.eye(4)
            for frame in up_source:
                source_to_ancestor = self._edge_at(frame, stamp_ns) @ source_to_ancestor
            target_to_ancestor = np.eye(4)
            for frame in up_target:
                target_to_ancestor = self._edge_at(frame, stamp_ns) @ target_to_ancestor
        return _invert_rigid(target_to_ancestor) @ source_to_ancestor

    def wait_for(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        """``lookup``, retried as transforms arrive until it succeeds or ``timeout_s`` passes.

        Raises:
            The last lookup error after the timeout.
        """
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._changed:
            while True:
                try:
                    return self.lookup(target, source, stamp_ns)
                except TransformError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._changed.wait(remaining)


def _invert_rigid(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


# ---------------------------------------------------------------------------------------------
# rclpy side
# ---------------------------------------------------------------------------------------------


def tf2_ros_available() -> bool:
    return importlib.util.find_spec("tf2_ros") is not None


class TfTopicListener:
    """Feeds a TransformBuffer from /tf and /tf_static (tf2_msgs/TFMessage), like tf2_ros's
    TransformListener: /tf_static is reliable + transient_local (late joiners get the static tree),
    /tf reliable + volatile, both depth 100."""

    def __init__(
        self,
        node,
        buffer: TransformBuffer,
        callback_group=None,
        tf_topic: str = "/tf",
        tf_static_topic: str = "/tf_static",
    ):
        from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.buffer = buffer
        self._logger = node.get_logger()
        dynamic_qos = QoSProfile(
            depth=100,
            history=QoSHistoryPolicy.KEEP_LAST,
            reliability=QoSReliabilityPolicy.RELIABLE,
            durability=QoSDurabilityPolicy.VOLATILE,
        )
        static_qos = QoSProfile(
            depth=100,
            history=QoSHistoryPolicy.KEEP_LAST,
            reliability=QoSReliabilityPolicy.RELIABLE,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._subs = [
            node.create_subscription(
                TFMessage,
                tf_topic,
                lambda m: self._on_message(m, False),
                dynamic_qos,
                callback_group=callback_group,
            ),
            node.create_subscription(
                TFMessage,
                tf_static_topic,
                lambda m: self._on_message(m, True),
                static_qos,
                callback_group=callback_group,
            ),
        ]

    def _on_message(self, msg, static: bool) -> None:
        for t in msg.transforms:
            try:
                self.buffer.set_transform_message(t, static)
            except ValueError as exc:  # ConversionError is a ValueError too
                self._logger.warning(
                    f"ignoring transform {t.header.frame_id} <- {t.child_frame_id}: {exc}",
                    throttle_duration_sec=5.0,
                )


class TfLookup:
    """``lookup(target, source, stamp_ns, timeout_s) -> (4, 4)`` over tf2_ros or the fallback buffer.

    Raises TransformNotFound / TransformExtrapolation in both cases (tf2's exceptions are mapped).
    """

    def __init__(self, node, callback_group=None, prefer_tf2: bool = True, cache_time_s: float = 10.0):
        self.backend = "tf2_ros" if prefer_tf2 and tf2_ros_available() else "fallback"
        if self.backend == "tf2_ros":
            import tf2_ros
            from rclpy.duration import Duration

            self._tf2 = tf2_ros
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s), node=node)
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
        else:
            self._buffer = TransformBuffer(cache_time_s)
            self._listener = TfTopicListener(node, self._buffer, callback_group)

    @property
    def buffer(self):
        return self._buffer

    def clear(self) -> None:
        self._buffer.clear()

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> np.ndarray:
        if self.backend == "fallback":
            return self._buffer.wait_for(target, source, stamp_ns, timeout_s)
        from rclpy.duration import Duration
        from rclpy.time import Time

        tf2 = self._tf2
        try:
            msg = self._buffer.lookup_transform(
                target, source, Time(nanoseconds=stamp_ns), timeout=Duration(seconds=timeout_s)
            )
        except tf2.ExtrapolationException as exc:
            raise TransformExtrapolation(str(exc)) from exc
        except (tf2.LookupException, tf2.ConnectivityException, tf2.InvalidArgumentException) as exc:
            raise TransformNotFound(str(exc)) from exc
        except tf2.TransformException as exc:
            raise TransformError(str(exc)) from exc
        return transform_to_matrix(msg)
