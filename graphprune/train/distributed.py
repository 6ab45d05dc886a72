"""Data-parallel training under torchrun: a few `if` lines, not a second code path.

`torchrun --nproc_per_node N ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()` then joins the
process group (gloo on CPU, nccl on GPU). Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: rank, world size, local rank (GPU index on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Join the torchrun process group if there is one (once per process); else a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def local_device(requested: str, info: DistInfo | None = None) -> torch.device:
    """`auto` -> this process's GPU if there is one, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0")) if info is None else info.local_rank
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device(requested)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` over all processes (in place), a no-op without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
