"""gausstr_ros.node.child_process: the slot layout, shared-memory slots and file descriptors over the
socket, which both helper processes rely on (no ROS needed)."""

from __future__ import annotations

import os
import socket
from multiprocessing.connection import Connection

import numpy as np
import pytest

from gausstr_ros.node.child_process import (
    ChildLink,
    HelperProcessError,
    SharedSlot,
    map_received,
    receive_fds,
    send_message,
    slot_layout,
    slot_views,
)


def test_a_slot_holds_every_array_aligned_and_reads_back(seed):
    rng = np.random.default_rng(seed)
    arrays = {
        "labels": rng.integers(0, 18, (7, 5, 3)).astype(np.uint8),
        "confidence": rng.random((7, 5, 3), dtype=np.float32),
        "means": rng.normal(size=(11, 3)),
        "fortran": np.asfortranarray(rng.random((4, 6), dtype=np.float32)),
        "empty": np.zeros((0, 3), np.float32),
    }
    layout, size = slot_layout(arrays)
    assert all(offset % 64 == 0 for *_, offset in layout), layout
    assert size >= sum(a.nbytes for a in arrays.values())
    slot = SharedSlot(0, "test")
    try:
        assert slot.ensure(size) and not slot.ensure(size)  # a new memfd only when it must grow
        views = slot_views(slot.buf, layout)
        for name, a in arrays.items():
            np.copyto(views[name], a)
        for name, a in arrays.items():
            back = slot_views(slot.buf, layout)[name]
            assert back.dtype == a.dtype and back.shape == a.shape
            np.testing.assert_array_equal(back, a, err_msg=f"{name}, seed {seed}")
        del views, back
        assert slot.ensure(2 * slot.size)  # grows: a new memfd
    finally:
        slot.release()
    assert slot.fd == -1 and slot.buf is None


def test_memory_handed_over_a_socket_is_the_same_memory():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = Connection(ours.detach()), Connection(theirs.detach())
    slot = SharedSlot(3, "test")
    try:
        slot.ensure(4096)
        send_message(a, ("slot", 3, slot.size), [slot.fd])
        assert b.recv() == ("slot", 3, slot.size)
        (fd,) = receive_fds(b, 1)
        mapped = map_received(fd, slot.size)
        np.frombuffer(slot.buf, np.uint8, 4)[:] = [1, 2, 3, 4]
        assert bytes(mapped[:4]) == b"\x01\x02\x03\x04"  # one memory, two mappings
        mapped.close()
        send_message(a, ("no fds",))
        assert b.recv() == ("no fds",)
    finally:
        slot.release()
        a.close()
        b.close()


def test_a_child_that_cannot_start_is_a_clear_error(tmp_path, monkeypatch):
    """A module that exits at once: the link says so with the exit code, and leaves no process."""
    module = tmp_path / "exits_at_once.py"
    module.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with pytest.raises(HelperProcessError, match="the test child exited with code 3 while starting"):
        ChildLink("exits_at_once", "the test child", spec=None, start_timeout_s=20)
