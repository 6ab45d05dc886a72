"""Accuracy and loss of a model on a split: top-1, top-5 (percent) and mean cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphprune.train import distributed
from graphprune.train.bundle import DataBundle


@dataclass(frozen=True)
class EvalResult:
    """top1 / top5 in percent, loss the mean cross-entropy, n the number of images."""

    top1: float
    top5: float
    loss: float
    n: int


def batch_counts(logits: Tensor, labels: Tensor) -> Tensor:
    """[summed loss, top-1 hits, top-5 hits, count] of one batch, as one float64 tensor."""
    loss = F.cross_entropy(logits.float(), labels, reduction="sum")
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return torch.stack(
        [
            loss.double(),
            hits[:, 0].sum().double(),
            hits.any(dim=1).sum().double(),
            torch.tensor(len(labels)).double(),
        ]
    )


def result_of(counts: Tensor) -> EvalResult:
    loss, top1, top5, n = counts.tolist()
    n = max(n, 1)
    return EvalResult(top1=100.0 * top1 / n, top5=100.0 * top5 / n, loss=loss / n, n=int(n))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataBundle,
    split: str = "test",
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    max_batches: int | None = None,
    channels_last: bool = False,
    workers: int = 0,
) -> EvalResult:
    """Evaluate `model` (in eval mode; its mode is restored) on `split`; shards over a process group."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    info = distributed.DistInfo()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        info = distributed.DistInfo(
            rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size()
        )
    per_rank = -(-batch_size // info.world_size)
    loader = data.loader(
        split, per_rank * info.world_size, shuffle=False, augment=False, device=device, drop_last=False,
        rank=info.rank, world_size=info.world_size, workers=workers,
    )  # fmt: skip
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            if len(y) == 0:
                continue
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            counts += batch_counts(model(x), y)
    finally:
        model.train(was_training)
    return result_of(distributed.all_reduce_sum(counts).cpu())


def evaluate_onnx(
    path: str | Path,
    data: DataBundle,
    split: str = "test",
    *,
    batch_size: int = 256,
    threads: int | None = None,
) -> EvalResult:
    """Evaluate an ONNX file (dynamic batch, one input) with onnxruntime itself on `split`."""
    from graphprune.export import ort_session

    session = ort_session(path, threads=threads)
    name = session.get_inputs()[0].name
    counts = torch.zeros(4, dtype=torch.float64)
    for x, y in data.loader(split, batch_size, shuffle=False, augment=False, drop_last=False):
        logits = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        counts += batch_counts(logits, y)
    return result_of(counts)
