"""What the node's helper processes (``output_process``, ``input_process``) share: a child started as
``python -m <module> <fd>`` on one end of a Unix socketpair, pickled messages both ways with file
descriptors beside them, and slots of shared memory (memfd) that hold one frame set's arrays.

Why processes: rclpy takes, converts and publishes messages under the interpreter lock, which the
node's executor and inference threads share (docs/node.md, "Threads"); a child has its own. Why a
socketpair: only the node and its child hold it, so what either unpickles comes from the other, never
from the network; memfds need no names, so nothing is left behind in /dev/shm when a process dies.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

_ALIGN = 64  # bytes: every array of a slot starts on a cache line


class HelperProcessError(RuntimeError):
    """A helper process could not start, or could not take or deliver a frame set."""


def slot_layout(arrays: dict[str, np.ndarray]) -> tuple[list[tuple[str, str, tuple[int, ...], int]], int]:
    """Where each array goes in a slot.

    Args:
        arrays: name -> array (any layout; copied as C-contiguous).
    Returns:
        ([(name, dtype string, shape, byte offset)], total bytes).
    """
    layout, offset = [], 0
    for name, a in arrays.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        layout.append((name, a.dtype.str, tuple(int(s) for s in a.shape), offset))
        offset += a.nbytes
    return layout, offset


def slot_views(buf, layout) -> dict[str, np.ndarray]:
    """Arrays over a slot's memory (no copy), as laid out by ``slot_layout``."""
    views = {}
    for name, dtype, shape, offset in layout:
        count = int(np.prod(shape, dtype=np.int64))
        views[name] = np.frombuffer(buf, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
    return views


class SharedSlot:
    """One region of shared memory (a memfd) that holds one frame set's arrays.

    Attributes:
        index: the slot's number (both processes name it so).
        busy: the other process holds it (the owner's bookkeeping).
        sent: the other process has this memfd.
    """

    def __init__(self, index: int, name: str = "gausstr_slot"):
        self.index = index
        self.name = name
        self.fd = -1
        self.buf: mmap.mmap | None = None
        self.size = 0
        self.busy = False
        self.sent = False

    def ensure(self, size: int) -> bool:
        """Make the slot hold ``size`` bytes; True when a new memfd was made (to hand over)."""
        if self.size >= size and self.buf is not None:
            return False
        self.release()
        size = max(mmap.PAGESIZE, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
        self.fd = os.memfd_create(f"{self.name}_{self.index}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.buf = mmap.mmap(self.fd, size)
        self.size, self.sent = size, False
        return True

    def release(self) -> None:
        if self.buf is not None:
            with contextlib.suppress(BufferError):  # a view still alive: unmapped with it
                self.buf.close()
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.buf, self.size, self.sent = -1, None, 0, False


def map_received(fd: int, size: int) -> mmap.mmap:
    """Map a memfd received from the other process (the descriptor is closed; the mapping stays)."""
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def close_mapping(buf: mmap.mmap | None) -> None:
    if buf is not None:
        with contextlib.suppress(BufferError):  # a view still alive: unmapped with it
            buf.close()


def send_message(conn: Connection, message, fds: Sequence[int] = ()) -> None:
    """One pickled message, then (ancillary to one byte) the file descriptors it announces."""
    conn.send(message)
    if fds:
        with socket.socket(fileno=os.dup(conn.fileno())) as s:
            socket.send_fds(s, [b"F"], list(fds))


def receive_fds(conn: Connection, count: int) -> list[int]:
    """The file descriptors announced by the message just received."""
    with socket.socket(fileno=os.dup(conn.fileno())) as s:
        _, fds, _, _ = socket.recv_fds(s, 1, count)
    if len(fds) != count:
        raise HelperProcessError(f"expected {count} file descriptor(s), got {len(fds)}")
    return fds


class ChildLink:
    """A child process running ``python -m module <fd>`` and the socket to it.

    The child receives ``("spec", spec)`` (with ``fds`` beside it) first and answers ``("ready", pid)``
    or ``("failed", reason)``.

    Args:
        module: the child's module (its ``__main__`` reads the descriptor from argv).
        what: the child's name in errors ("the output process").
        spec: the first message's payload.
        fds: descriptors handed over with it.
        start_timeout_s: how long the child may take to answer.
    Raises:
        HelperProcessError: the child exited, failed or did not answer in time.
    """

    def __init__(self, module: str, what: str, spec, fds: Sequence[int] = (), start_timeout_s: float = 60.0):
        self.what = what
        self._send_lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        self.conn: Connection | None = Connection(ours.detach())
        try:
            self.send(("spec", spec), fds)
            deadline = time.monotonic() + start_timeout_s
            while not self.conn.poll(0.1):
                if self.proc.poll() is not None:
                    raise HelperProcessError(f"{what} exited with code {self.proc.returncode} while starting")
                if time.monotonic() > deadline:
                    raise HelperProcessError(f"{what} did not start in {start_timeout_s:g} s")
            reply = self.conn.recv()
            if reply[0] != "ready":
                raise HelperProcessError(f"{what} failed to start: {reply[1]}")
        except (OSError, EOFError) as exc:  # the child closed its end: it ended
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            if code is None:
                raise HelperProcessError(f"{what} closed its connection while starting: {exc}") from exc
            raise HelperProcessError(f"{what} exited with code {code} while starting") from exc
        except BaseException:
            self.kill()
            raise

    @property
    def alive(self) -> bool:
        return self.conn is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message, fds: Sequence[int] = ()) -> None:
        """Thread-safe ``send_message``; HelperProcessError once the link is closed."""
        with self._send_lock:
            conn = self.conn
            if conn is None:
                raise HelperProcessError(f"{self.what} is down")
            send_message(conn, message, fds)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to finish (``("stop",)``), wait for it, then kill what is left."""
        if self.alive:
            with contextlib.suppress(OSError, HelperProcessError, subprocess.TimeoutExpired):
                self.send(("stop",))
                self.proc.wait(timeout=timeout)
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with self._send_lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


def child_node(node_name: str, namespace: str, domain_id: int):
    """(context, node) of a helper child: its own rclpy context on the node's domain, a node of
    its own name in the node's namespace, no command-line arguments or parameter services (the node
    resolved every topic name for it)."""
    import signal

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # The node decides when its children end (it sends "stop", or its end of the socket closes when
    # it exits): a Ctrl+C in a terminal reaches the whole process group, and a child ending first
    # would be reported as a crash while the node shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(
        node_name,
        namespace=namespace,
        context=context,
        use_global_arguments=False,
        start_parameter_services=False,
    )
    return context, node


def child_connection(argv: Sequence[str]) -> Connection:
    """The child's end of the socket (its descriptor is the first argument)."""
    return Connection(int(argv[1]))
