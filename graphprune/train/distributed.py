"""Data-parallel training under torchrun: a few `if` lines, not a second code path.

`torchrun --nproc_per_node N ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()` then joins the
process group (gloo on CPU, nccl on GPU). Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


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


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a lone process (read from the environment, so valid before `setup`)."""
    return int(os.environ.get("RANK", "0")) == 0


def local_device(requested: str, info: DistInfo | None = None) -> torch.device:
    """`auto` -> this process's GPU if there is one, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0")) if info is None else info.local_rank
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device(requested)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` over all processes (in place), a no-op without a process group. A CPU tensor goes through
    this process's GPU under nccl (which reduces GPU tensors only)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and t.device.type == "cpu":
            on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def to_sync_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm of `model` by a SyncBatchNorm sharing its parameters and buffers (in place,
    so an optimiser built before keeps working); returns how many. `to_plain_batchnorm` undoes it."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            synced = nn.SyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            _PLAIN_CLASS[id(synced)] = type(child)
            setattr(model, name, _moved_norm(child, synced))
            count += 1
        else:
            count += to_sync_batchnorm(child)
    return count


def to_plain_batchnorm(model: nn.Module) -> None:
    """Turn the SyncBatchNorms `to_sync_batchnorm` made back into the BatchNorm classes they were."""
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm) and id(child) in _PLAIN_CLASS:
            cls = _PLAIN_CLASS.pop(id(child))
            plain = cls(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            setattr(model, name, _moved_norm(child, plain))
        else:
            to_plain_batchnorm(child)


_PLAIN_CLASS: dict[int, type[nn.Module]] = {}  # id of a SyncBatchNorm made here -> the class it replaced


def _moved_norm(old: nn.Module, new: nn.Module) -> nn.Module:
    """`new` holding `old`'s very parameters and buffers, in `old`'s mode."""
    for key, param in old.named_parameters(recurse=False):
        setattr(new, key, param)
    for key, buffer in old.named_buffers(recurse=False):
        setattr(new, key, buffer)
    return new.train(old.training)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
