"""The node's camera inputs in a child process (node parameter ``input_process``).

Why: rclpy takes every image under the interpreter lock, and its executor rebuilds the wait set in
Python for each wait; with 12-18 messages per frame set at 30 Hz that was 39-44 % of the node's
time under the lock on the slower GPU hosts, the largest share, which the inference threads waited
for (docs/benchmarks.md, "lock profile"). A child process has its own interpreter.

How: the child runs the same ``CameraInputs`` (subscriptions and their QoS, stamp rules, CameraInfo
cache, synchronizer, set accounting) on its own executor. For each complete set it copies the image
bytes into one of a few slots of shared memory and sends the messages without their bytes (pickled,
a few kB) over the socket; the node wraps each message with a view of its bytes
(``MessageWithData``) and hands the ``FrameSet`` to its worker as before. ``FrameSet.done()`` hands
the slot back (after publishing, on an error, or when a newer set replaced it while waiting). When
no slot is free the child drops the set and the node counts it as dropped while busy. Rejections,
time resets and lost-image reports come over the socket to the node's statistics; the child's
state (CameraInfo still missing, silent topics, images lost) every 0.2 s. If the child dies, the
node's watchdog starts a new one (at most one start per ``restart_period_s``) and says so in the
status.

Run as ``python -m gausstr_ros.node.input_process <socket fd>`` by ``InputProcess`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

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
    send_message,
    slot_layout,
    slot_views,
)
from gausstr_ros.node.inputs import FrameSet
from gausstr_ros.node.params import NodeConfig

STATE_PERIOD_S = 0.2  # how often the child reports its state
# Sets the node can hold at once: one waiting in the latest-only slot, one per worker stage, one
# between them; plus one the child fills and one spare, since hand-backs cross the socket.
DEFAULT_SLOTS = 6


class InputProcessError(HelperProcessError):
    """The input process could not start."""


class MessageWithData:
    """A camera message whose ``data`` is a view of shared memory; every other field is the
    message's own (what the conversions read: header, height, width, encoding, step, format...).

    Args:
        msg: the message as received, without its bytes.
        data: (n,) uint8 view of its bytes.
    """

    __slots__ = ("_msg", "data")

    def __init__(self, msg: Any, data: np.ndarray):
        self._msg = msg
        self.data = data

    def __getattr__(self, name: str):
        return getattr(self._msg, name)


@dataclass(frozen=True)
class InputSpec:
    """What the child needs (pickled to it first): its node's name and namespace, the ROS domain,
    the node's configuration with every input topic resolved by the node (remappings included),
    and the number of slots."""

    node_name: str
    namespace: str
    domain_id: int
    config: NodeConfig
    slots: int


class InputProcess:
    """``CameraInputs``' interface, with the subscriptions and the synchronizer in a child process.

    Args:
        node: the occupancy node (topic names are resolved with it).
        config: the node's configuration (live changes: ``update_config``).
        on_frame_set: called with each complete set (in this object's reader thread); the callee
            calls ``frame.done()`` when finished with it.
        on_reject: (kind, reason) for messages and sets refused in the child.
        on_time_reset: (reason) when the input stamps jumped back.
        on_lost: (topic, count) when the middleware reported lost images.
        on_dropped: (count) for sets dropped because every slot was held.
        log: (text) -> None for the child's life (started, died).
        slots: shared-memory slots (each holds one set's image bytes).
        start_timeout_s, restart_period_s: as ``OutputProcess``.
    Raises:
        InputProcessError: the child did not start.
    """

    def __init__(
        self,
        node,
        config: NodeConfig,
        on_frame_set: Callable[[FrameSet], None],
        on_reject: Callable[[str, str], None],
        on_time_reset: Callable[[str], None],
        on_lost: Callable[[str, int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
        slots: int = DEFAULT_SLOTS,
        start_timeout_s: float = 60.0,
        restart_period_s: float = 5.0,
    ):
        self.config = config
        self.topics = list(config.image_topics) + (list(config.depth_topics) if config.use_depth else [])
        self._node_name, self._namespace = f"{node.get_name()}_inputs", node.get_namespace()
        self._domain_id, self._slots = int(node.context.get_domain_id()), int(slots)
        # the input topics resolved by the node (namespace and remappings): the child's node has
        # neither the node's name nor its command line
        self._resolved_topics = {
            name: [node.resolve_topic_name(t) for t in getattr(config, name)]
            for name in ("image_topics", "depth_topics", "camera_info_topics")
        }
        self.spec = self._spec()
        self.synchronizer_name = f"{config.synchronizer} synchronizer in the input process"
        self._on_frame_set, self._on_reject, self._on_time_reset = on_frame_set, on_reject, on_time_reset
        self._on_lost, self._on_dropped = on_lost, on_dropped
        self._log = log or (lambda text: print(text, file=sys.stderr))
        self._start_timeout_s = start_timeout_s
        self.restart_period_s = restart_period_s  # public: may be changed while running
        self._lock = threading.Lock()
        self._link: ChildLink | None = None
        self._state: dict[str, Any] = {}
        self._lost_before = 0  # images lost reported by earlier children
        self.sets_emitted = 0  # sets the child completed (handed over or dropped for want of a slot)
        self.starts = 0
        self._closed = False
        self._last_start = -float("inf")
        self._restarting: threading.Thread | None = None
        self._start_error: str | None = None
        self._start()

    # -- the child's life --------------------------------------------------------------------

    def _spec(self) -> InputSpec:
        """The child's spec from the node's configuration as it is now (live changes included)."""
        return InputSpec(
            node_name=self._node_name,
            namespace=self._namespace,
            domain_id=self._domain_id,
            config=dataclasses.replace(self.config, **self._resolved_topics),
            slots=self._slots,
        )

    def _start(self) -> None:
        self.spec = self._spec()
        try:
            try:
                link = ChildLink(
                    "gausstr_ros.node.input_process",
                    "the input process",
                    self.spec,
                    (),
                    self._start_timeout_s,
                )
            except HelperProcessError as exc:
                raise InputProcessError(str(exc)) from exc
        finally:
            self._last_start = time.monotonic()
        if self._closed:  # the node closed while this child started (a restart's thread)
            link.stop()
            return
        with self._lock:
            self._link = link
            self._state = {}
        self.starts += 1
        threading.Thread(target=self._read, args=(link,), name="gausstr_inputs_reader", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self._link is not None and self._link.alive

    @property
    def pid(self) -> int | None:
        return None if self._link is None else self._link.pid

    def check(self) -> str | None:
        """Start a new child if the last one died and ``restart_period_s`` has passed (the node's
        watchdog calls this); returns why the inputs are down, or None. The start runs in a thread
        of its own: a child takes seconds to start, and the watchdog runs on the node's executor,
        which must go on serving TF and parameters meanwhile."""
        if self.alive or self._closed:
            return None
        if self._restarting is not None and self._restarting.is_alive():
            return "the input process is down; a new one is starting"
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            return error
        wait = self._last_start + self.restart_period_s - time.monotonic()
        if wait > 0:
            return f"the input process is down; a new one starts in {wait:.1f} s"
        self._log("starting a new input process")
        self._restarting = threading.Thread(target=self._restart, name="gausstr_inputs_restart", daemon=True)
        self._restarting.start()
        return "the input process is down; a new one is starting"

    def _restart(self) -> None:
        try:
            self._start()
        except InputProcessError as exc:
            self._start_error = str(exc)
            self._log(str(exc))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child; sets the node still holds keep their memory until they are done."""
        self._closed = True
        if self._restarting is not None:
            self._restarting.join(timeout=self._start_timeout_s)
        if self._link is not None:
            self._link.stop(timeout)

    def update_config(self, updates: dict[str, Any]) -> None:
        """Live parameter changes the child reads (e.g. ``max_rate_hz``, ``time_jump_reset_s``)."""
        if self._link is not None and self._link.alive:
            try:
                self._link.send(("config", dict(updates)))
            except HelperProcessError as exc:
                self._log(f"parameter change not sent to the input process: {exc}")

    # -- from the child -----------------------------------------------------------------------

    def _read(self, link: ChildLink) -> None:
        conn = link.conn
        maps: dict[int, mmap.mmap] = {}
        while True:
            try:
                message = conn.recv()
                kind = message[0]
                if kind == "set":
                    self._deliver(link, maps, message)
                elif kind == "slot":
                    _, index, size = message
                    (fd,) = receive_fds(conn, 1)
                    close_mapping(maps.pop(index, None))  # sets still holding views keep it mapped
                    maps[index] = map_received(fd, size)
                elif kind == "reject":
                    self._on_reject(message[1], message[2])
                elif kind == "time_reset":
                    self._on_time_reset(message[1])
                elif kind == "lost":
                    if self._on_lost is not None:
                        self._on_lost(message[1], message[2])
                elif kind == "dropped":
                    self.sets_emitted += message[1]
                    if self._on_dropped is not None:
                        self._on_dropped(message[1])
                elif kind == "state":
                    with self._lock:
                        self._state = message[1]
            except (EOFError, OSError):
                break
            except Exception as exc:  # a callback's bug must not end the reader
                self._log(f"input process message not handled: {type(exc).__name__}: {exc}")
        for buf in maps.values():
            close_mapping(buf)
        if self._closed:
            return
        code = link.proc.wait()
        link.kill()
        with self._lock:
            self._lost_before += int(self._state.get("images_lost", 0))
            self._state = {}
        self._log(f"the input process exited with code {code}; no frame sets until a new one starts")

    def _deliver(self, link: ChildLink, maps: dict[int, mmap.mmap], message) -> None:
        _, index, seq, stamp_ns, arrival, images, depths, infos = message
        buf = maps[index]

        def wrap(entries):
            return [MessageWithData(m, np.frombuffer(buf, np.uint8, n, offset)) for m, offset, n in entries]

        def release() -> None:
            if link.alive:  # a dead child's slots went with it (a new child has other slots)
                with contextlib.suppress(HelperProcessError):  # it died just now
                    link.send(("free", index, seq))

        self.sets_emitted += 1
        frame = FrameSet(
            stamp_ns, arrival, wrap(images), None if depths is None else wrap(depths), infos, release=release
        )
        self._on_frame_set(frame)

    # -- CameraInputs' queries ------------------------------------------------------------------

    def missing_camera_info(self) -> list[str]:
        with self._lock:
            state = self._state
        if "missing_camera_info" not in state:
            return list(self.config.camera_info_topics)  # not heard from the child yet
        topics = dict(zip(self.spec.config.camera_info_topics, self.config.camera_info_topics))
        return [topics.get(t, t) for t in state["missing_camera_info"]]

    def silent_topics(self, timeout_s: float) -> list[tuple[str, float | None]]:
        """As ``CameraInputs.silent_topics``, computed by the child with the node's ``sync_timeout_s``
        (``timeout_s`` is that value) and reported every 0.2 s; every topic while the child is down."""
        if not self.alive:
            return [(t, None) for t in self.topics]
        with self._lock:
            silent = list(self._state.get("silent", []))
        names = dict(
            zip(
                self.spec.config.image_topics + self.spec.config.depth_topics,
                self.config.image_topics + self.config.depth_topics,
            )
        )
        return [(names.get(t, t), age) for t, age in silent]

    @property
    def images_lost(self) -> int:
        with self._lock:
            return self._lost_before + int(self._state.get("images_lost", 0))

    @property
    def sets_rate_limited(self) -> int:
        with self._lock:
            return int(self._state.get("sets_rate_limited", 0))


# -- the child -------------------------------------------------------------------------------


def child_main(conn: Connection) -> int:
    """The child: subscribe and synchronize, hand complete sets to the node until it stops."""
    import rclpy

    from gausstr_ros.conversions.buffers import message_bytes
    from gausstr_ros.node.executor import make_executor, spin
    from gausstr_ros.node.inputs import CameraInputs

    kind, spec = conn.recv()
    if kind != "spec":
        return 2
    config: NodeConfig = spec.config
    send_lock = threading.Lock()

    def send(message, fds=()) -> None:
        with send_lock:
            send_message(conn, message, fds)

    slots = [SharedSlot(i, "gausstr_inputs") for i in range(spec.slots)]
    seqs = [0] * spec.slots  # the set each slot holds
    slots_lock = threading.Lock()
    counter = [0]

    def on_frame_set(frame: FrameSet) -> None:
        msgs = frame.images + (frame.depths or [])
        data = {str(k): message_bytes(m.data) for k, m in enumerate(msgs)}
        layout, size = slot_layout(data)
        with slots_lock:
            slot = next((s for s in slots if not s.busy), None)
            if slot is None:
                send(("dropped", 1))
                return
            slot.busy = True
            counter[0] += 1
            seqs[slot.index] = seq = counter[0]
        slot.ensure(size)  # a new memfd when it must grow: not yet sent
        views = slot_views(slot.buf, layout)
        entries = []
        for (name, _, _, offset), m in zip(layout, msgs):
            np.copyto(views[name], data[name])
            entries.append((m, offset, data[name].nbytes))
            m.data = b""  # the bytes travel through the slot
        del views, data
        if not slot.sent:
            send(("slot", slot.index, slot.size), [slot.fd])
            slot.sent = True
        v = len(frame.images)
        depths = entries[v:] if frame.depths is not None else None
        send(("set", slot.index, seq, frame.stamp_ns, frame.arrival, entries[:v], depths, frame.infos))

    try:
        context, node = child_node(spec.node_name, spec.namespace, spec.domain_id)
        inputs = CameraInputs(
            node,
            config,
            on_frame_set,
            on_reject=lambda k, reason: send(("reject", k, reason)),
            on_time_reset=lambda reason: send(("time_reset", reason)),
            on_lost=lambda topic, count: send(("lost", topic, count)),
        )
    except Exception as exc:
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1

    def send_state() -> None:
        send(
            (
                "state",
                {
                    "missing_camera_info": inputs.missing_camera_info(),
                    "silent": inputs.silent_topics(config.sync_timeout_s),
                    "images_lost": inputs.images_lost,
                    "sets_rate_limited": inputs.sets_rate_limited,
                },
            )
        )

    node.create_timer(STATE_PERIOD_S, send_state)
    executor = make_executor(context, config.executor_coalesce_ms / 1e3)
    executor.add_node(node)

    def read_node() -> None:
        try:
            while True:
                message = conn.recv()
                if message[0] == "free":
                    _, index, seq = message
                    with slots_lock:
                        if seqs[index] == seq:  # a second hand-back of an older set is ignored
                            slots[index].busy = False
                elif message[0] == "config":
                    for name, value in message[1].items():
                        setattr(config, name, value)
                elif message[0] == "stop":
                    break
        except (EOFError, OSError):
            pass  # the node went away
        executor.shutdown(timeout_sec=0)

    threading.Thread(target=read_node, name="gausstr_inputs_node", daemon=True).start()
    send(("ready", os.getpid()))
    try:
        spin(executor, node.get_logger())
    except Exception:  # shut down while spinning
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for slot in slots:
            slot.release()
    return 0


if __name__ == "__main__":
    # Only the node and this child hold the socket (a socketpair passed by descriptor): what is
    # unpickled here comes from the node itself, never from the network.
    sys.exit(child_main(child_connection(sys.argv)))
