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


def augment_draws(
    b: int, aug: Augment, gen: torch.Generator
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The random draws of `augment_batch` for a batch of `b` images: crop offsets (dy, dx) and flips."""
    dy = dx = flip = None
    if aug.pad > 0:
        dy = torch.randint(0, 2 * aug.pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * aug.pad + 1, (b,), generator=gen)
    if aug.flip:
        flip = torch.rand(b, generator=gen) < 0.5
    return dy, dx, flip


def augment_batch(
    images: Tensor,
    aug: Augment,
    gen: torch.Generator,
    draws: tuple[Tensor | None, Tensor | None, Tensor | None] | None = None,
) -> Tensor:
    """Randomly crop (after padding) and flip a uint8 batch (B, C, H, W); one draw per image (`draws`
    given: those, one row per image, e.g. this rank's rows of the global batch's draws)."""
    b, _, h, w = images.shape
    dy, dx, flip = draws if draws is not None else augment_draws(b, aug, gen)
    out = images
    if dy is not None and dx is not None:
        mode = aug.padding_mode if aug.padding_mode != "zeros" else "constant"
        padded = F.pad(out.float() if mode == "reflect" else out, (aug.pad,) * 4, mode=mode)
        dy, dx = dy.to(images.device), dx.to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        chan = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols].to(images.dtype)
    if flip is not None:
        out = torch.where(flip.to(images.device)[:, None, None, None], out.flip(3), out)
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
            draws = None
            if self.augment is not None:  # drawn for the global batch: every rank draws the same
                draws = augment_draws(len(idx), self.augment, self._generator(self.epoch, i))
            if self.world_size > 1:  # this rank's share only is gathered and augmented
                share = -(-len(idx) // self.world_size)
                mine = slice(self.rank * share, (self.rank + 1) * share)
                idx = idx[mine]
                if draws is not None:
                    draws = (draws[0][mine] if draws[0] is not None else None,
                             draws[1][mine] if draws[1] is not None else None,
                             draws[2][mine] if draws[2] is not None else None)  # fmt: skip
            images = self.images[idx]
            if self.augment is not None:
                images = augment_batch(images, self.augment, torch.Generator(), draws)
            yield normalize(images, self.mean, self.std), self.labels[idx]
