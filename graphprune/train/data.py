"""Datasets as decoded uint8 tensors, named by a `--data` spec: `cifar10:PATH`, `fashion-mnist:PATH`, ...

Images are decoded once into a uint8 (N, C, H, W) tensor (kept in memory, and optionally on disk
under a cache directory keyed by a content hash), so decoding never limits training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from graphprune.errors import GraphpruneError
from graphprune.train.loader import Augment, BatchLoader

CACHE_ENV_VAR = "GRAPHPRUNE_DATA_CACHE"


class DataError(GraphpruneError):
    """A `--data` spec or the dataset it names is unusable (missing split, bad image, ...)."""


@dataclass(frozen=True)
class ImageTensors:
    """One split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


@dataclass(frozen=True)
class DataBundle:
    """A decoded dataset: train and test splits plus how to normalise and augment them."""

    name: str
    train: ImageTensors
    test: ImageTensors
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = field(default_factory=Augment)
    classes: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.images.shape[1:]
        return (int(c), int(h), int(w))

    def split(self, name: str) -> ImageTensors:
        if name not in ("train", "test"):
            raise DataError(f"{self.name}: unknown split {name!r} (choose train or test)")
        return self.train if name == "train" else self.test

    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool | None = None,
        seed: int = 0,
        augment: bool | None = None,
        device: str | torch.device = "cpu",
        *,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> BatchLoader:
        """Normalised float batches `(x, y)` of `split`; the train split shuffles and augments by default."""
        data = self.split(split)
        is_train = split == "train"
        return BatchLoader(
            data.images,
            data.labels,
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=is_train if shuffle is None else shuffle,
            seed=seed,
            augment=self.augment if (is_train if augment is None else augment) else None,
            device=device,
            drop_last=is_train if drop_last is None else drop_last,
            rank=rank,
            world_size=world_size,
        )

    def check_num_classes(self, num_outputs: int, model_name: str = "the model") -> None:
        """Raise DataError unless the model has one output per class."""
        if num_outputs != self.num_classes:
            raise DataError(
                f"{self.name} has {self.num_classes} classes but {model_name} has {num_outputs} outputs"
            )


def load_data(
    spec: str,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataBundle:
    """Decode the dataset `spec` names (`scheme:PATH`) into uint8 tensors.

    Schemes: `cifar10` (the JPEG zip, its extracted tree, or the python batches), `fashion-mnist`
    (IDX files, gzipped or not), `imagefolder` (`train/` plus `val/` or `test/`; `image_size` resizes).
    `limit` keeps the first images of each split (class-balanced where the format allows), for smoke runs.
    `cache_dir` (default: `$GRAPHPRUNE_DATA_CACHE`, if set) keeps the decoded tensors on disk.
    """
    from graphprune.train import datasets

    scheme, sep, path = spec.partition(":")
    if not sep and scheme not in datasets.SCHEMES:
        raise DataError(
            f"bad data spec {spec!r}: expected SCHEME:PATH with SCHEME in {sorted(datasets.SCHEMES)}"
        )
    if scheme not in datasets.SCHEMES:
        raise DataError(
            f"unknown data scheme {scheme!r} in {spec!r} (choose from {sorted(datasets.SCHEMES)})"
        )
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV_VAR) or None
    bundle = datasets.SCHEMES[scheme](path, image_size=image_size, cache_dir=cache_dir, limit=limit)
    if mean is not None or std is not None:
        bundle = DataBundle(
            name=bundle.name,
            train=bundle.train,
            test=bundle.test,
            num_classes=bundle.num_classes,
            mean=tuple(mean) if mean is not None else bundle.mean,
            std=tuple(std) if std is not None else bundle.std,
            augment=bundle.augment,
            classes=bundle.classes,
        )
    return bundle
