"""Who holds the interpreter lock, and how much CPU each thread of a process uses, over a window.

Two measurements for ``benchmarks/node_latency.py --mode ros`` (the node's executor, its two worker
threads and rclpy share one interpreter lock; docs/benchmarks.md, "Real time on one GPU"):

* ``ThreadCpu``: CPU time of every native thread of this process between ``start()`` and ``stop()``,
  from ``/proc/self/task/<tid>/stat`` (Linux; clock ticks, usually 10 ms), named by the Python
  thread that runs on it or by the kernel's thread name (DDS threads, torch's pools).
* ``LockProfile``: py-spy (https://github.com/benfred/py-spy, a sampling profiler that reads the
  interpreter's memory from another process) attached to this process with ``--gil``: only the
  thread holding the lock is sampled, so samples / (rate x seconds) is the fraction of the window the
  lock was held, and the stacks say by what. Needs py-spy on PATH (or ``$PY_SPY``) and permission to
  trace this process (root, or ptrace allowed); otherwise ``start`` returns the reason and nothing is
  measured.

Read a result with ``summarize_lock_profile`` (pure; tested in ``test/test_gil_profile.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# What a stack is doing, by the first rule that matches one of its frames: (label, function, file);
# a py-spy frame reads "function (path/file.py:line)". Rules are tried in order, so publishing inside
# the second worker thread counts as publishing, not as "stage 2: other".
ACTIVITIES: tuple[tuple[str, str, str], ...] = (
    ("stage 2: build and publish outputs", "publish", "outputs.py"),
    ("stage 2: hand the outputs to the output process", "publish", "output_process.py"),
    ("input process: sets received, then stage 1's slot", "_read", "input_process.py"),
    ("output process: acknowledgements", "_read_replies", "output_process.py"),
    ("stage 2: wait, host copies, late depth render", "result", "pipeline.py"),
    ("stage 2: other", "_run_second", "worker.py"),
    ("stage 1: TF, conversion, queue the prediction", "_run_first", "worker.py"),
    ("executor: image callbacks and sync", "_on_message", "transport.py"),
    ("executor: take and deserialize messages", "_take_subscription", "executors.py"),
    ("executor: other rclpy (wait set, dispatch)", "", "executors.py"),
)


def _frame_matches(frame: str, function: str, file: str) -> bool:
    name, _, where = frame.partition(" (")
    return (not function or name == function) and (not file or f"{file}:" in where)


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_used(user_ticks: int, system_ticks: int, seconds: float) -> dict:
    """cpu_s (user + system), sys_s (of it in the kernel: page faults, copies into shared memory,
    futexes) and share (of one core over ``seconds``) from clock ticks used in a window."""
    tick = _clock_ticks()
    used = (user_ticks + system_ticks) / tick
    return {"cpu_s": used, "sys_s": system_ticks / tick, "share": used / max(seconds, 1e-9)}


def _read_stat(path: Path) -> tuple[str, int, int]:
    """(name, user ticks, system ticks) of a /proc stat file (a process's or a thread's)."""
    stat = path.read_text()
    # "tid (comm) state ...": comm may hold spaces and parentheses; fields after the last ')'
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return name, int(fields[11]), int(fields[12])  # utime, stime (fields 14, 15)


def _read_threads() -> dict[int, tuple[str, int, int]]:
    """tid -> (kernel thread name, user ticks, system ticks) of every thread of this process."""
    out = {}
    task = Path("/proc/self/task")
    for d in task.iterdir() if task.is_dir() else ():
        try:
            out[int(d.name)] = _read_stat(d / "stat")
        except OSError:  # the thread ended meanwhile
            continue
    return out


class ProcessCpu:
    """CPU time of other processes (the node's helper processes) over a window.

    Args:
        pids: label -> process id.
    """

    def __init__(self, pids: dict[str, int]):
        self.pids = dict(pids)
        self._before: dict[str, tuple[int, int]] = {}

    def _read(self) -> dict[str, tuple[int, int]]:
        out = {}
        for label, pid in self.pids.items():
            try:
                _, user, system = _read_stat(Path(f"/proc/{pid}/stat"))
            except OSError:  # it ended
                continue
            out[label] = (user, system)
        return out

    def start(self) -> None:
        self._before = self._read()

    def stop(self, seconds: float) -> list[dict]:
        """name, pid, cpu_s, sys_s, share (of one core over ``seconds``) per process still running."""
        rows = []
        for label, (user, system) in self._read().items():
            user0, system0 = self._before.get(label, (0, 0))
            rows.append(
                {"name": label, "pid": self.pids[label], **_cpu_used(user - user0, system - system0, seconds)}
            )
        return rows


class ThreadCpu:
    """CPU time per thread of this process over a window (``start`` ... ``stop``)."""

    def __init__(self):
        self._before: dict[int, tuple[str, int, int]] = {}

    def start(self) -> None:
        self._before = _read_threads()

    def stop(self, seconds: float) -> list[dict]:
        """Threads that used CPU in the window, busiest first: name, tid, cpu_s, sys_s (of it in the
        kernel: page faults, copies into shared memory, futexes), share (of one core over
        ``seconds``). Python threads by their ``threading`` name, others by the kernel's."""
        after = _read_threads()
        python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        rows = []
        for tid, (name, user, system) in after.items():
            _, user0, system0 = self._before.get(tid, (name, 0, 0))
            row = _cpu_used(user - user0, system - system0, seconds)
            if row["cpu_s"] > 0:
                rows.append({"name": python_names.get(tid, name), "tid": tid, **row})
        return sorted(rows, key=lambda r: -r["cpu_s"])


def find_py_spy() -> str | None:
    """The py-spy executable: ``$PY_SPY``, PATH, or next to this interpreter."""
    explicit = os.environ.get("PY_SPY")
    if explicit:
        return explicit if Path(explicit).exists() else None
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


@dataclass
class LockProfile:
    """py-spy sampling the interpreter-lock holder of this process for ``seconds``."""

    path: Path
    seconds: float
    rate: int = 250
    process: subprocess.Popen | None = None
    error: str | None = None

    def start(self) -> str | None:
        """Attach py-spy; returns None, or why it cannot measure."""
        exe = find_py_spy()
        if exe is None:
            self.error = "py-spy not found (pip install py-spy, or set PY_SPY)"
            return self.error
        cmd = [exe, "record", "--pid", str(os.getpid()), "--gil", "--threads", "--nonblocking"]
        cmd += ["--format", "raw", "--rate", str(self.rate), "--duration", f"{self.seconds:g}"]
        cmd += ["-o", str(self.path)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return None

    def finish(self, timeout: float = 30.0) -> dict:
        """Wait for py-spy and summarize (``summarize_lock_profile``), or {"error": ...}."""
        if self.process is None:
            return {"error": self.error or "not started"}
        try:
            log, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return {"error": f"py-spy did not finish within {timeout:.0f} s"}
        if self.process.returncode != 0 or not self.path.exists():
            return {"error": f"py-spy failed (rc {self.process.returncode}): {log.strip()[-300:]}"}
        return summarize_lock_profile(self.path.read_text(), self.rate, self.seconds)


def _split(line: str) -> tuple[str, list[str], int] | None:
    """A py-spy raw line "thread (tid): name;frame;...;frame count" -> (thread name, frames, count)."""
    line = line.strip()
    if not line:
        return None
    stack, _, count = line.rpartition(" ")
    if not count.isdigit():
        return None
    frames = stack.split(";")
    thread = frames[0]
    name = thread.split(": ", 1)[1] if ": " in thread else thread
    return name, frames[1:], int(count)


def activity(frames: list[str]) -> str:
    """The ``ACTIVITIES`` label of a stack (root first), or "other"."""
    for label, function, file in ACTIVITIES:
        if any(_frame_matches(f, function, file) for f in frames):
            return label
    return "other"


def summarize_lock_profile(raw: str, rate: float, seconds: float, top: int = 12) -> dict:
    """py-spy ``--gil --threads --format raw`` output -> the lock's use over the window.

    Returns:
        held: fraction of the window the lock was held (samples / (rate x seconds); py-spy may take
            fewer samples than asked when it falls behind, so this is a lower bound);
        samples; by_thread / by_activity: {name: fraction of the window}; top_frames: the innermost
            frames holding the lock longest, [(frame, fraction of the window)].
    """
    by_thread: Counter[str] = Counter()
    by_activity: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        parsed = _split(line)
        if parsed is None:
            continue
        name, frames, count = parsed
        total += count
        by_thread[name] += count
        by_activity[activity(frames)] += count
        leaves[frames[-1] if frames else "(no Python frame)"] += count
    expected = max(rate * seconds, 1.0)
    return {
        "held": total / expected,
        "samples": total,
        "rate": rate,
        "seconds": seconds,
        "by_thread": {k: v / expected for k, v in by_thread.most_common()},
        "by_activity": {k: v / expected for k, v in by_activity.most_common()},
        "top_frames": [(k, v / expected) for k, v in leaves.most_common(top)],
    }
