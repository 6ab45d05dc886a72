"""Batches from a uint8 tensor dataset: shuffling, tensor augmentation and normalisation, shardable.

Every random draw of a batch (its images, crops and flips) comes from a generator seeded by
(seed, epoch, batch index), so a run resumed at any step sees exactly the batches it would have
seen, and the ranks of a distributed run each take their slice of the very batch one process
would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphprune.errors import GraphpruneError


@dataclass(frozen=True)
class Augment:
    """Random crop of the image size after `pad` pixels of padding, and a random horizontal flip."""

    pad: int = 4
    flip: bool = True
    padding_mode: str = "reflect"


def augment_batch(images: Tensor, aug: Augment, gen: torch.Generator) -> Tensor:
    """Randomly crop (after padding) and flip a uint8 batch (B, C, H, W); one draw per image."""
    b, _, h, w = images.shape
    out = images
    if aug.pad > 0:
        mode = aug.padding_mode if aug.padding_mode != "zeros" else "constant"
        padded = F.pad(out.float() if mode == "reflect" else out, (aug.pad,) * 4, mode=mode)
        dy = torch.randint(0, 2 * aug.pad + 1, (b,), generator=gen).to(images.device)
        dx = torch.randint(0, 2 * aug.pad + 1, (b,), generator=gen).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        chan = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols].to(images.dtype)
    if aug.flip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(images.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], minus mean, over std (per channel)."""
    return (images.float().div_(255.0) - mean) / std


class BatchLoader:
    """Iterates `(x, y)` batches of one split: x normalised float32 on `device`, y int64 labels.

    `batch_size` is the global batch; with `world_size` > 1 this rank yields its contiguous share of
    every global batch (a DistributedSampler over the tensors, without the padding).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise GraphpruneError(f"batch size must be >= 1, got {batch_size}")
        if batch_size % world_size:
            raise GraphpruneError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.device = torch.device(device)
        # Small datasets live on the accelerator whole: no host-to-device copy per batch.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.augment = shuffle, seed, augment
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration draws."""
        self.epoch = epoch

    def _generator(self, *salt: int) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(hash((self.seed, *salt)) & 0x7FFF_FFFF_FFFF_FFFF)
        return gen

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches `start`, `start + 1`, ... of the current epoch."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self._generator(self.epoch, -1)).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.images[idx]
            if self.augment is not None:
                images = augment_batch(images, self.augment, self._generator(self.epoch, i))
            labels = self.labels[idx]
            if self.world_size > 1:
                share = -(-len(idx) // self.world_size)
                images = images[self.rank * share : (self.rank + 1) * share]
                labels = labels[self.rank * share : (self.rank + 1) * share]
            yield normalize(images, self.mean, self.std), labels
