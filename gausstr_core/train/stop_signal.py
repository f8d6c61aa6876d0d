"""A graceful stop for training on SIGINT / SIGTERM: finish the step, save the training state, exit.

Time-boxed machines (a lent GPU for N minutes, a preemptible cloud VM, a cluster job's wall limit)
end a run with SIGTERM or SIGINT. Without a handler Python dies wherever it is and everything since
the last ``checkpoint_every`` is lost; with it the trainer notices after the current step, writes
``checkpoints/last.pt`` and stops, and ``gausstr-train --resume`` continues bit for bit. A second
signal while the first is pending interrupts at once (the usual "press Ctrl-C twice").
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A stop request as a number (for the broadcast that makes every DDP rank stop at the same step).
STOP_SIGNALS_BY_CODE: tuple[str | None, ...] = (None, *(s.name for s in STOP_SIGNALS))


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving its training state (resume with ``--resume``).

    Attributes:
        signal_name: "SIGINT" or "SIGTERM".
        step: the optimizer step the saved state holds.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        super().__init__(
            f"stopped by {signal_name} at step {step}; the training state is saved in {checkpoint}: "
            f"continue with the same command and --resume"
        )
        self.signal_name = signal_name
        self.step = step


class StopSignal:
    """Context manager that turns SIGINT / SIGTERM into a flag the training loop polls.

    Only the main thread can install signal handlers; elsewhere (a trainer run from a worker
    thread, e.g. in tests) it installs nothing and ``requested`` stays None.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # second signal: stop now, the default way
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(
            f"\n{self.requested} received: stopping after this step and saving the training state "
            f"(send it again to stop at once)",
            flush=True,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


__all__ = ["STOP_SIGNALS", "STOP_SIGNALS_BY_CODE", "StopSignal", "TrainingInterrupted"]
