"""The streaming data path: image files decoded per batch by DataLoader workers, for folders too large
to decode once into memory (ImageNet-style trees).

Same interface as the in-memory path (`loader.BatchLoader`): `len`, `set_epoch`, `iter_from(start)`,
batches `(x, y)` normalised on the device. The standard presets of torchvision's classification
reference (`presets.py`) are done here with PIL, one seeded draw per (seed, epoch, image):

- train: random-resized-crop (scale 0.08-1, ratio 3/4-4/3, 10 tries, else a centre crop) and a
  horizontal flip at random;
- evaluation: resize the shorter side to `size / 0.875` (256 for 224), then a centre crop of `size`.

Shuffling and sharding are those of `BatchLoader` (a DistributedSampler without padding): the global
batch is drawn by a generator seeded by (seed, epoch), and each rank decodes only its contiguous share
of it, so N processes see the very images one process would, and a resumed run continues exactly.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from graphprune import shared
from graphprune.errors import GraphpruneError

EVAL_CROP_RATIO = 0.875  # resize to size / 0.875, centre-crop size: 256 -> 224, as torchvision's presets


@dataclass(frozen=True)
class ImageFiles:
    """One split of an image tree, listed but not decoded: file names under `root` (a directory or a
    zip) with their labels, decoded to `channels` x `size` x `size`."""

    root: Path
    names: tuple[str, ...]
    labels: Tensor
    size: int
    channels: int = 3

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: Tensor) -> ImageFiles:
        """The files at positions `index`, in that order."""
        picked = tuple(self.names[i] for i in index.tolist())
        return ImageFiles(self.root, picked, self.labels[index].contiguous(), self.size, self.channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


def _random_resized_crop(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) of torchvision's RandomResizedCrop box (scale 0.08-1, ratio 3/4-4/3)."""
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    ratio = width / height  # fallback: the largest centre crop within the ratio range
    if ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif ratio > 4 / 3:
        w, h = round(height * (4 / 3)), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Random-resized-crop to `size` x `size`, then a horizontal flip with probability 1/2."""
    left, top, w, h = _random_resized_crop(img.width, img.height, rng)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def eval_transform(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size / 0.875`, then a centre crop of `size` x `size`."""
    short = max(size, round(size / EVAL_CROP_RATIO))
    scale = short / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class _Decoder(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """Decodes one file per key `(position, epoch)`: uint8 (C, size, size) and its label. A zip is
    opened once per worker process."""

    def __init__(self, files: ImageFiles, train: bool, seed: int) -> None:
        self.files, self.train, self.seed = files, train, seed
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, name: str) -> bytes:
        root = self.files.root
        if root.is_dir():
            return (root / name).read_bytes()
        if self._zip is None or self._zip[0] != os.getpid():
            self._zip = (os.getpid(), zipfile.ZipFile(root))
        return self._zip[1].read(name)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:  # type: ignore[override]
        i, epoch = key
        name = self.files.names[i]
        where = f"{self.files.root}:{name}" if self.files.root.is_file() else str(self.files.root / name)
        mode = "L" if self.files.channels == 1 else "RGB"
        try:
            with Image.open(io.BytesIO(self._read(name))) as opened:
                img = opened.convert(mode)
            if self.train:
                rng = np.random.default_rng((self.seed, epoch, i))
                img = train_transform(img, self.files.size, rng)
            else:
                img = eval_transform(img, self.files.size)
            array = np.asarray(img)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise StreamError(f"unreadable image {where}: {shared.image_error(exc)}") from None
        array = array if array.ndim == 3 else array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1), int(self.files.labels[i])


class StreamError(GraphpruneError):
    """An image a worker could not decode (re-raised by the loader as one line)."""


class _Batches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """This rank's share of every global batch from `start` on: keys (position, epoch)."""

    def __init__(self, loader: StreamLoader, start: int) -> None:
        self.loader, self.start = loader, start

    def __len__(self) -> int:
        return max(0, len(self.loader) - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo = self.loader
        n = len(lo.files)
        if lo.shuffle:
            gen = torch.Generator().manual_seed(hash((lo.seed, lo.epoch, -1)) & 0x7FFF_FFFF_FFFF_FFFF)
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        for b in range(self.start, len(lo)):
            idx = order[b * lo.batch_size : (b + 1) * lo.batch_size]
            if lo.world_size > 1:
                share = -(-len(idx) // lo.world_size)
                idx = idx[lo.rank * share : (lo.rank + 1) * share]
            yield [(i, lo.epoch) for i in idx]


class StreamLoader:
    """Iterates `(x, y)` batches of an `ImageFiles` split decoded by `workers` DataLoader processes
    (0: in this process): x normalised float32 on `device`, y int64 labels. `batch_size` is global."""

    def __init__(
        self,
        files: ImageFiles,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        augment: bool = False,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise GraphpruneError(f"batch size must be >= 1, got {batch_size}")
        if batch_size % world_size:
            raise GraphpruneError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.files, self.batch_size = files, batch_size
        self.shuffle, self.seed, self.augment, self.drop_last = shuffle, seed, augment, drop_last
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.files)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches `start`, `start + 1`, ... of the current epoch."""
        batches = torch.utils.data.DataLoader(
            _Decoder(self.files, self.augment, self.seed),
            batch_sampler=_Batches(self, start),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if self.workers else None,
        )
        try:
            for images, labels in batches:
                x = images.to(self.device, non_blocking=True).float().div_(255.0)
                yield (x - self.mean) / self.std, labels.to(self.device, non_blocking=True)
        except StreamError as exc:  # from a worker, it comes back with the worker's traceback
            last = str(exc).strip().splitlines()[-1]
            raise StreamError(last.split("StreamError: ", 1)[-1]) from None


def list_files(root: Path, by_class: dict[str, list[str]], classes: Sequence[str], size: int,
               channels: int) -> ImageFiles:  # fmt: skip
    """An `ImageFiles` of `by_class` (class -> file names), labelled by position in `classes`."""
    names: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        names += by_class[cls]
        labels += [label] * len(by_class[cls])
    return ImageFiles(root, tuple(names), torch.tensor(labels, dtype=torch.int64), size, channels)
