"""The node's output publishers in a child process (node parameter ``output_process``).

Why: building and publishing the outputs of one frame set (grid, cloud, Gaussians, markers, six
rendered depth images) costs 8-15 ms of Python, and rclpy's ``publish`` converts and serialises
under the interpreter lock. In the node's process that lock is shared with the executor (which
takes the camera images) and the inference threads; on the slower GPU hosts it was held 75-81 % of
the time, publishing a quarter of it (docs/benchmarks.md, "lock profile"). In a child process the
messages are built in another interpreter, beside the node rather than in its way.

How: each frame set's arrays are copied (numpy, without the lock held) into one of a few slots of
shared memory (a memfd per slot, handed to the child over a Unix socket once); the rest (stamp,
class names, grid, switches, frame ids) is pickled over the same socket, which only this node and
its child hold. The child publishes with the same ``OutputPublishers`` as the in-process node and
answers with the time the occupancy went out (CLOCK_MONOTONIC, one clock for both processes),
which frees the slot. It writes the subscription count of every publisher into a shared array, so
that the node still skips what nobody subscribes to (the depth render included).

The child publishes on the node's resolved topic names (remappings included) from a node named
``<node>_outputs`` in the node's namespace. If it dies, the sets it held are reported through
``on_error`` and the next set starts a new child (at most one start per ``restart_period_s``).

Run as ``python -m gausstr_ros.node.output_process <socket fd>`` by ``OutputProcess`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import numpy as np

from gausstr_ros.node.child_process import (
    ChildLink,
    HelperProcessError,
    SharedSlot,
    child_connection,
    child_node,
    close_mapping,
    map_received,
    receive_fds,
    slot_layout,
    slot_views,
)
from gausstr_ros.node.outputs import (
    TOPIC_CLOUD,
    TOPIC_GAUSSIANS,
    TOPIC_MARKERS,
    TOPIC_OCCUPANCY,
    PublishSwitches,
    StatusPublisher,
    depth_topic,
    output_names,
)

if TYPE_CHECKING:
    from gausstr_ros.node.stats import StatsSnapshot
    from gausstr_ros.pipeline import FrameResult

# FrameResult's arrays, in the order they are laid out in a slot (rendered_depth may be absent)
ARRAY_FIELDS = (
    "labels",
    "confidence",
    "means",
    "scales",
    "rotations",
    "opacities",
    "gaussian_labels",
    "gaussian_confidence",
    "rendered_depth",
)
OCCUPANCY_FIELDS = ("labels", "confidence")  # handed over first, published first


class OutputProcessError(HelperProcessError):
    """The output process could not take or publish a frame set."""


@dataclass(frozen=True)
class ChildSpec:
    """What the child needs to create the publishers (pickled to it first).

    Attributes:
        node_name, namespace: of the child's node.
        topics: output name (``TOPIC_*``, ``rendered_depth/<camera>``) -> resolved topic name.
        camera_names: V names, in the node's camera order.
        target_frame: frame_id of the grid, cloud, Gaussians and markers.
        depth: history depth of the output QoS.
        domain_id: the node's ROS domain.
    """

    node_name: str
    namespace: str
    topics: dict[str, str]
    camera_names: tuple[str, ...]
    target_frame: str
    depth: int
    domain_id: int


class OutputProcess:
    """``OutputPublishers``' interface, publishing from a child process.

    Args:
        node: the node whose outputs these are (topic names are resolved with it).
        camera_names: V names; rendered depth goes to rendered_depth/<name>.
        target_frame: frame_id of the grid, cloud, Gaussians and markers.
        depth: history depth of the output QoS (reliable, volatile).
        log: (text) -> None for errors (e.g. the node's logger's ``error``).
        slots: frame sets that can be on their way to the child at once.
        start_timeout_s: how long the child may take to create its publishers.
        restart_period_s: after a child died, a new one starts only this long after the last start
            ended (a child that dies at once must not be restarted for every frame set).
        slot_timeout_s: how long ``publish`` waits for a free slot before refusing the set.
    Raises:
        OutputProcessError: the child did not start.
    """

    def __init__(
        self,
        node,
        camera_names: Sequence[str],
        target_frame: str,
        depth: int = 5,
        log: Callable[[str], None] | None = None,
        slots: int = 2,
        start_timeout_s: float = 60.0,
        restart_period_s: float = 5.0,
        slot_timeout_s: float = 5.0,
    ):
        self.camera_names = list(camera_names)
        self.target_frame = target_frame
        names = output_names(self.camera_names)
        self.spec = ChildSpec(
            node_name=f"{node.get_name()}_outputs",
            namespace=node.get_namespace(),
            topics={n: node.resolve_topic_name(n) for n in names},
            camera_names=tuple(self.camera_names),
            target_frame=target_frame,
            depth=int(depth),
            domain_id=int(node.context.get_domain_id()),
        )
        self._log = log or (lambda text: print(text, file=sys.stderr))
        self._start_timeout_s = start_timeout_s
        self.restart_period_s = restart_period_s  # public: may be changed while running
        self._slot_timeout_s = slot_timeout_s
        self._status = StatusPublisher(node)
        self._slots = [SharedSlot(i, "gausstr_outputs") for i in range(slots)]
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[Callable | None, Callable | None]] = {}
        self._seq = 0
        self._link: ChildLink | None = None
        self._reader: threading.Thread | None = None
        self._counts: np.ndarray | None = None
        self._counts_fd = -1
        self._counts_buf: mmap.mmap | None = None
        self._closed = False
        self._last_start = -float("inf")
        self.starts = 0  # children started (1 + restarts)
        self._start()

    # -- the child's life --------------------------------------------------------------------

    def _start(self) -> None:
        try:
            self._start_child()
        finally:
            self._last_start = time.monotonic()  # the period counts from a start's end

    def _start_child(self) -> None:
        n = len(output_names(self.camera_names))
        self._counts_fd = os.memfd_create("gausstr_output_counts", os.MFD_CLOEXEC)
        os.ftruncate(self._counts_fd, mmap.PAGESIZE)
        self._counts_buf = mmap.mmap(self._counts_fd, mmap.PAGESIZE)
        self._counts = np.frombuffer(self._counts_buf, dtype=np.int32, count=n)
        try:
            self._link = ChildLink(
                "gausstr_ros.node.output_process",
                "the output process",
                self.spec,
                [self._counts_fd],
                self._start_timeout_s,
            )
        except HelperProcessError as exc:
            raise OutputProcessError(str(exc)) from exc
        self.starts += 1
        self._reader = threading.Thread(
            target=self._read_replies, args=(self._link,), name="gausstr_outputs_acks", daemon=True
        )
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._link is not None and self._link.alive

    @property
    def pid(self) -> int | None:
        return None if self._link is None else self._link.pid

    def _send(self, message, fds: Sequence[int] = ()) -> None:
        link = self._link
        if link is None:
            raise OutputProcessError("the output process is down")
        try:
            link.send(message, fds)
        except HelperProcessError as exc:
            raise OutputProcessError(str(exc)) from exc

    def _read_replies(self, link: ChildLink) -> None:
        conn = link.conn
        while True:
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                break
            if reply[0] != "done":
                continue
            _, seq, slot, t_occupancy, error = reply
            with self._cond:
                self._slots[slot].busy = False
                self._cond.notify_all()
                on_published, on_error = self._pending.pop(seq, (None, None))
            if t_occupancy is not None and on_published is not None:
                on_published(t_occupancy)
            if error is not None:
                self._report(on_error, OutputProcessError(error))
        if self._closed:
            return
        code = link.proc.wait()
        link.kill()  # closes our end
        with self._cond:
            lost, self._pending = list(self._pending.values()), {}
            for slot in self._slots:
                slot.busy = False
                slot.release()  # the next child gets new memory
            self._cond.notify_all()
        self._log(f"the output process exited with code {code}; {len(lost)} frame set(s) were not published")
        for _, on_error in lost:
            self._report(on_error, OutputProcessError(f"the output process exited with code {code}"))

    def _report(self, on_error, exc: Exception) -> None:
        if on_error is not None:
            on_error(exc)
        else:
            self._log(str(exc))

    def _ensure_running(self) -> None:
        if self.alive:
            return
        if self._closed:
            raise OutputProcessError("the output process is closed")
        wait = self._last_start + self.restart_period_s - time.monotonic()
        if wait > 0:
            raise OutputProcessError(f"the output process is down; a new one starts in {wait:.1f} s")
        if self._link is not None:
            self._link.kill()
        self._release_counts()
        self._log("starting a new output process")
        self._start()

    def _release_counts(self) -> None:
        self._counts = None
        if self._counts_buf is not None:
            with contextlib.suppress(BufferError):  # a reader's view: unmapped with it
                self._counts_buf.close()
            self._counts_buf = None
        if self._counts_fd >= 0:
            os.close(self._counts_fd)
            self._counts_fd = -1

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (it publishes what it holds first) and free the shared memory."""
        if self._closed:
            return
        self._closed = True
        if self._link is not None:
            self._link.stop(timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        with self._cond:
            for slot in self._slots:
                slot.release()
        self._release_counts()

    # -- OutputPublishers' interface ----------------------------------------------------------

    def subscription_counts(self) -> dict[str, int]:
        """Output name -> subscribers, as the child last saw them (0 while it is down)."""
        counts = self._counts
        names = output_names(self.camera_names)
        if counts is None or not self.alive:
            return dict.fromkeys(names, 0)
        return {name: int(c) for name, c in zip(names, counts)}

    def wants_rendered_depth(self, switches: PublishSwitches) -> bool:
        """Whether rendering depth is worth it: enabled and somebody subscribes to a camera's depth."""
        counts = self.subscription_counts()
        return switches.rendered_depth and any(counts[depth_topic(n)] > 0 for n in self.camera_names)

    def publish(
        self,
        result: FrameResult,
        camera_frames: Sequence[str],
        switches: PublishSwitches,
        on_occupancy_published: Callable[[float], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> list[str]:
        """Hand one frame set's outputs to the child; returns once its arrays are copied.

        Args:
            camera_frames: V optical frame ids (the rendered depth images' frame_id).
            on_occupancy_published: called (from a reader thread) with the time.monotonic() at which
                the child handed the occupancy to rclpy (or would have, when disabled).
            on_error: called (from a reader thread) when the child fails on this set or dies first.
        Returns:
            The outputs the child is asked for (those enabled and subscribed when it was handed over).
        Raises:
            OutputProcessError: no child (a new one is started at most every restart_period_s), or
                no free slot within slot_timeout_s.
        """
        self._ensure_running()
        arrays = {name: getattr(result, name) for name in ARRAY_FIELDS}
        if arrays["rendered_depth"] is None or not switches.rendered_depth:
            arrays.pop("rendered_depth")
        layout, size = slot_layout(arrays)
        with self._cond:
            deadline = time.monotonic() + self._slot_timeout_s
            while True:
                slot = next((s for s in self._slots if not s.busy), None)
                if slot is not None or not self.alive:
                    break
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise OutputProcessError(
                        f"the output process took no frame set for {self._slot_timeout_s:g} s"
                    )
            if slot is None:
                raise OutputProcessError("the output process exited while this frame set waited")
            slot.busy = True
            self._seq += 1
            seq = self._seq
        registered = False
        try:
            slot.ensure(size)  # a new memfd when it must grow: not yet sent
            views = slot_views(slot.buf, layout)
            meta = {
                "stamp_ns": int(result.stamp_ns),
                "class_names": list(result.class_names),
                "free_label": int(result.free_label),
                "grid": result.grid,
                "camera_frames": list(camera_frames),
                "switches": switches,
            }
            with self._cond:
                self._pending[seq] = (on_occupancy_published, on_error)
            registered = True
            if not slot.sent:
                self._send(("slot", slot.index, slot.size), fds=[slot.fd])
                slot.sent = True
        except BaseException:
            if not self._abandon(slot, seq) and registered:
                return []  # the child died meanwhile: the reader reported this set already
            raise
        # The occupancy first: the child publishes it (the latency that counts) while the other
        # arrays, the rendered depth above all, are still being copied.
        frame_sent = False
        try:
            for name in OCCUPANCY_FIELDS:
                np.copyto(views[name], arrays[name], casting="no")  # numpy lets go of the lock
            self._send(("frame", seq, slot.index, layout, meta))
            frame_sent = True
            for name in arrays:
                if name not in OCCUPANCY_FIELDS:
                    np.copyto(views[name], arrays[name], casting="no")
            del views
            self._send(("rest", seq, True))
        except BaseException:
            if frame_sent:  # the child holds the set: it skips the rest and hands the slot back
                with self._cond:
                    reported = seq not in self._pending
                with contextlib.suppress(OSError, OutputProcessError):
                    self._send(("rest", seq, False))
            else:
                reported = not self._abandon(slot, seq)
            if reported:
                return []  # the child died meanwhile: the reader reported this set already
            raise
        counts = self.subscription_counts()
        wanted = {
            TOPIC_OCCUPANCY: switches.occupancy,
            TOPIC_CLOUD: switches.pointcloud,
            TOPIC_GAUSSIANS: switches.gaussians,
            TOPIC_MARKERS: switches.markers,
        }
        names = [name for name, on in wanted.items() if on and counts[name] > 0]
        if "rendered_depth" in arrays:
            names += [depth_topic(n) for n in self.camera_names if counts[depth_topic(n)] > 0]
        return names

    def _abandon(self, slot: SharedSlot, seq: int) -> bool:
        """A set that never reached the child: its slot is free again. False when the reader
        thread had already reported it lost (the child died)."""
        with self._cond:
            slot.busy = False
            self._cond.notify_all()
            return self._pending.pop(seq, None) is not None

    def publish_status(self, snapshot: StatsSnapshot, stamp, device: str, num_classes: int) -> None:
        """Publish the status message, from the node itself: it goes on while the child is down."""
        self._status.publish(snapshot, stamp, device, num_classes)


# -- the child -------------------------------------------------------------------------------


def child_main(conn: Connection) -> int:
    """The child: create the publishers, then publish what the node hands over until it stops."""
    import rclpy

    from gausstr_ros.node.outputs import OutputPublishers
    from gausstr_ros.pipeline import FrameResult

    kind, spec = conn.recv()
    if kind != "spec":
        return 2
    (counts_fd,) = receive_fds(conn, 1)
    counts_buf = map_received(counts_fd, mmap.PAGESIZE)
    names = output_names(spec.camera_names)
    counts = np.frombuffer(counts_buf, dtype=np.int32, count=len(names))
    try:
        context, node = child_node(spec.node_name, spec.namespace, spec.domain_id)
        publishers = OutputPublishers(
            node, spec.camera_names, spec.target_frame, spec.depth, topic_names=spec.topics, status=False
        )
    except Exception as exc:  # the node logs why; the child ends
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1

    def update_counts() -> None:
        counts[:] = list(publishers.subscription_counts().values())  # in output_names' order

    update_counts()
    conn.send(("ready", os.getpid()))
    buffers: dict[int, mmap.mmap] = {}
    held: dict[int, dict] = {}  # sets whose occupancy went out, waiting for the rest of their arrays
    last_counts = time.monotonic()
    try:
        while True:
            if time.monotonic() - last_counts > 0.05:
                update_counts()
                last_counts = time.monotonic()
            if not conn.poll(0.05):
                continue
            message = conn.recv()
            kind = message[0]
            if kind == "stop":
                break
            if kind == "slot":
                _, index, size = message
                (slot_fd,) = receive_fds(conn, 1)
                close_mapping(buffers.pop(index, None))
                buffers[index] = map_received(slot_fd, size)
            elif kind == "frame":  # the occupancy's arrays are in the slot: publish it
                _, seq, index, layout, meta = message
                held[seq] = state = {"index": index, "meta": meta, "t": None, "error": None}
                try:
                    arrays = slot_views(buffers[index], layout)
                    state["result"] = FrameResult(
                        stamp_ns=meta["stamp_ns"],
                        rendered_depth=arrays.pop("rendered_depth", None),
                        class_names=meta["class_names"],
                        free_label=meta["free_label"],
                        grid=meta["grid"],
                        **arrays,
                    )
                    del arrays
                    only = dataclasses.replace(
                        meta["switches"],
                        pointcloud=False,
                        gaussians=False,
                        markers=False,
                        rendered_depth=False,
                    )
                    publishers.publish(
                        state["result"], meta["camera_frames"], only, lambda t, s=state: s.__setitem__("t", t)
                    )
                except Exception as exc:  # one bad set must not end the child
                    state["error"] = f"publishing failed: {type(exc).__name__}: {exc}"
            elif kind == "rest":  # every array is in the slot: the other outputs, then hand it back
                _, seq, complete = message
                state = held.pop(seq)
                result = state.pop("result", None)
                if complete and result is not None and state["error"] is None:
                    try:
                        rest = dataclasses.replace(state["meta"]["switches"], occupancy=False)
                        publishers.publish(result, state["meta"]["camera_frames"], rest)
                    except Exception as exc:
                        state["error"] = f"publishing failed: {type(exc).__name__}: {exc}"
                del result  # no view outlives the slot's hand-back
                conn.send(("done", seq, state["index"], state["t"], state["error"]))
    except (EOFError, OSError):
        pass  # the node went away
    finally:
        for buf in buffers.values():
            close_mapping(buf)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


if __name__ == "__main__":
    # Only the node and this child hold the socket (a socketpair passed by descriptor): what is
    # unpickled here comes from the node itself, never from the network.
    sys.exit(child_main(child_connection(sys.argv)))
