"""Processes and devices: torchrun's environment to torch.distributed, one device per process.

`python tools/run_net.py ...` is one process; `torchrun --nproc_per_node N tools/run_net.py ...`
(or torchrun's multi-node variables) starts N processes that find each other through
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Each process drives one CUDA device
(`cuda:LOCAL_RANK`, NCCL) or, without CUDA, the CPU (gloo).
"""

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from revvideo.data import distributed_rank_and_world_size

__all__ = [
    "all_gather_objects",
    "all_reduce",
    "another_process_stopped",
    "barrier",
    "distributed_rank_and_world_size",
    "init_distributed",
    "is_main_process",
    "shutdown_distributed",
]


def init_distributed() -> torch.device:
    """Joins the process group torchrun describes (if any) and returns this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, device_id=device if device.type == "cuda" else None, init_method="env://"
        )
    return device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return distributed_rank_and_world_size()[0] == 0


def all_reduce(values: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """`values` reduced over all processes, in place (unchanged in a single process)."""
    if distributed_rank_and_world_size()[1] > 1:
        dist.all_reduce(values, op=op)
    return values


def all_gather_objects(value: Any) -> list[Any]:
    """[value of rank 0, value of rank 1, ...] on every process (picklable values)."""
    world_size = distributed_rank_and_world_size()[1]
    if world_size == 1:
        return [value]
    gathered: Sequence[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return list(gathered)


def barrier() -> None:
    if distributed_rank_and_world_size()[1] > 1:
        dist.barrier()


# How gloo and NCCL report, in the processes left, that another process of the group is gone.
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "remote process exited",
)


def another_process_stopped(err: BaseException) -> bool:
    """Whether `err` is a collective failing because another process of the group ended."""
    return any(text in str(err) for text in _PEER_GONE)
