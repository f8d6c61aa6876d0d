"""Process-group set-up for ``torchrun`` (DDP): NCCL on GPUs, gloo on CPUs; a single process
without ``torchrun`` needs no process group at all.

Only rank 0 writes files (checkpoints, TensorBoard, pictures); every rank computes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gausstr_core.device import resolve_device

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes.
        local_rank: rank on this host (the CUDA device index).
        device: the device this process computes on.
        backend: "nccl", "gloo" or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1), else run as one process.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N" (with torchrun, "cuda" means cuda:LOCAL_RANK).
        timeout_minutes: collective timeout (a rank that died makes the others fail, not hang).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend
    )


def cleanup(ctx: DistributedContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_mean(ctx: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (returned; the input is not modified)."""
    if not ctx.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def all_reduce_sum(ctx: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (returned; the input is not modified)."""
    if not ctx.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_values(ctx: DistributedContext, values: tuple[float, ...]) -> tuple[float, ...]:
    """Rank 0's numbers on every rank, in one collective (e.g. its training clock and its stop
    signal, so that every rank decides alike at the same step)."""
    if not ctx.distributed:
        return tuple(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, src=0)
    return tuple(float(v) for v in t.tolist())
