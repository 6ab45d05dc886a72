"""Datasets as decoded uint8 tensors, named by a `--data` spec: `cifar10:PATH`, `fashion-mnist:PATH`, ...

Images are decoded once into a uint8 (N, C, H, W) tensor (kept in memory, and optionally on disk
under a cache directory keyed by a content hash), so decoding never limits training. `load_data` is
the entry point; the formats are in `datasets`, the decoded dataset (`DataBundle`) in `bundle`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from graphprune.train import datasets
from graphprune.train.bundle import DataBundle, DataError, DataNote, ImageTensors, stratified_sample

__all__ = [
    "CACHE_ENV_VAR",
    "DataBundle",
    "DataError",
    "DataNote",
    "ImageTensors",
    "load_data",
    "stratified_sample",
]

CACHE_ENV_VAR = "GRAPHPRUNE_DATA_CACHE"


def load_data(
    spec: str,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_split: int | float | None = None,
    val_seed: int = 0,
    channels: int | None = None,
    stream: bool | None = None,
    memory_budget: float | None = None,
) -> DataBundle:
    """Decode the dataset `spec` names (`scheme:PATH`) into uint8 tensors.

    Schemes: `cifar10` (the JPEG zip, its extracted tree, or the python batches), `fashion-mnist`
    (IDX files, gzipped or not), `imagefolder` (`train/` plus `val/` or `test/`; `image_size` resizes).
    `limit` keeps the first images of each split (class-balanced where the format allows), for smoke runs.
    `cache_dir` (default: `$GRAPHPRUNE_DATA_CACHE`, if set) keeps the decoded tensors on disk.
    `val_split` (images, or a fraction below 1) holds out a class-stratified validation split of the
    training images, drawn with `val_seed` (see `DataBundle.with_val`). `channels` is the model's input
    channel count: image files are converted to it (default RGB; Fashion-MNIST stays greyscale).
    An `imagefolder` tree whose decoded images exceed `memory_budget` bytes (default 4 GiB) streams:
    its files are decoded per batch by DataLoader workers (`stream.py`); `stream` True/False forces it.
    """
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
    options: dict[str, Any] = (
        {"channels": channels} if channels is not None and scheme != "fashion-mnist" else {}
    )
    if scheme == "imagefolder":
        options["stream"] = stream
        if memory_budget is not None:
            options["memory_budget"] = memory_budget
    elif stream:
        raise DataError(f"{spec}: only imagefolder: data streams; the others are decoded into memory")
    bundle = datasets.SCHEMES[scheme](
        path, image_size=image_size, cache_dir=cache_dir, limit=limit, **options
    )
    if mean is not None or std is not None:
        bundle = replace(
            bundle,
            mean=tuple(mean) if mean is not None else bundle.mean,
            std=tuple(std) if std is not None else bundle.std,
        )
    return bundle if val_split is None else bundle.with_val(val_split, val_seed)
