"""torch.distributed glue: set-up from torchrun's environment, rank queries, reductions."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group is running."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this is rank 0, the process that writes files and reports."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def setup(device: torch.device) -> bool:
    """Joins the process group torchrun described (NCCL on CUDA, Gloo on CPU); False if alone."""
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return True


# What Gloo and NCCL say when a collective's peer process is gone (killed, crashed, stuck).
PEER_LOST = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "for recv operation",
    "for send operation",
    "collective operation timeout",
)


def peer_lost(e: BaseException) -> bool:
    """Whether a collective failed because another process of the group is gone."""
    if not is_distributed():
        return False
    return isinstance(e, dist.DistError) or any(s in str(e).lower() for s in PEER_LOST)


def cleanup() -> None:
    """Ends the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sums `t` over every process in place (a no-op in one process); returns it."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Waits for every process (a no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's `obj`, in rank order (a one-item list in one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
