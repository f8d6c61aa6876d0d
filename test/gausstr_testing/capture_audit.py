"""Checks on a machine without a GPU that code can be captured in a CUDA graph.

The code runs on fake CUDA tensors (``FakeTensorMode``: shapes, dtypes and devices, no data, no GPU)
under a dispatch mode that records every operation a CUDA graph capture would refuse or silently
freeze:

* host reads of device values (``.item()``, ``bool(t)``, ``.tolist()``): ``_local_scalar_dense``;
* copies between host and device (``torch.tensor(..., device=cuda)``, ``cpu_tensor.to(cuda)``,
  ``cuda_tensor.cpu()``): a synchronous copy that capture refuses;
* operations whose output size depends on the data (``nonzero``, boolean indexing, ``unique``...).

What it cannot see: code outside PyTorch's dispatcher (C++ extensions: stub them), and kernels that
misbehave inside a graph. The GPU tests capture for real.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

COPY_OPS = {"aten._to_copy.default", "aten.copy_.default", "aten.copy.default", "aten._copy_from.default"}


@dataclass
class AuditReport:
    problems: list[str] = field(default_factory=list)
    ops: int = 0

    def add(self, text: str) -> None:
        text = f"{text} at {_where()}"
        if text not in self.problems:
            self.problems.append(text)


def _where() -> str:
    """The innermost frame of this project's code (not torch, not this module) that got here."""
    for frame in reversed(traceback.extract_stack()):
        if "gausstr" in frame.filename and "capture_audit" not in frame.filename:
            return f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "?"


class CaptureAudit(TorchDispatchMode):
    """Records what would break a CUDA graph capture (see the module docstring)."""

    def __init__(self, report: AuditReport):
        super().__init__()
        self.report = report

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        self.report.ops += 1
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if name == "aten._local_scalar_dense.default":
            self.report.add(f"host read of a device value ({name}: .item(), bool(), .tolist())")
        try:
            out = func(*args, **kwargs)
        except DynamicOutputShapeException:
            self.report.add(f"data-dependent output shape: {name}")
            raise
        except DataDependentOutputException:
            self.report.add(f"host read of a device value: {name}")
            raise
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        in_devices = {t.device.type for t in inputs}
        out_devices = {t.device.type for t in outputs}
        if name in COPY_OPS and "cpu" in in_devices and "cuda" in out_devices:
            self.report.add(f"host-to-device copy: {name} (a new tensor from host data per call)")
        if name in COPY_OPS and "cuda" in in_devices and out_devices == {"cpu"}:
            self.report.add(f"device-to-host copy: {name}")
        return out


@contextlib.contextmanager
def fake_cuda():
    """A FakeTensorMode in which ``torch.empty(..., device="cuda")`` works without a GPU; real CPU
    tensors (parameters, buffers) may be moved in with ``.to("cuda")``."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        yield mode


def audit(fn, *args, **kwargs) -> AuditReport:
    """Run ``fn(*args, **kwargs)`` (already on fake CUDA tensors) under the audit; the report lists
    the problems (an operation the fake mode cannot run at all ends the run and is reported)."""
    report = AuditReport()
    try:
        with CaptureAudit(report):
            fn(*args, **kwargs)
    except (DynamicOutputShapeException, DataDependentOutputException):
        pass
    return report
