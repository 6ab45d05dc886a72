"""A tiny learnable image dataset and model for training-layer tests (seconds, no files)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graphprune.train import Augment, DataBundle, ImageTensors


def tiny_bundle(
    n_train: int = 64, n_test: int = 32, classes: int = 4, size: int = 8, seed: int = 0
) -> DataBundle:
    """uint8 images whose class shifts the brightness of one channel: learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> ImageTensors:
        labels = torch.arange(n) % classes
        images = torch.randint(0, 128, (n, 3, size, size), generator=gen)
        images[:, 0] += (labels * (127 // max(1, classes - 1)))[:, None, None]
        return ImageTensors(images.to(torch.uint8), labels)

    return DataBundle(
        name="tiny",
        train=split(n_train),
        test=split(n_test),
        num_classes=classes,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        augment=Augment(pad=1, flip=True),
    )


def tiny_net(classes: int = 4, bn: bool = True, seed: int = 0) -> nn.Module:
    """conv-(bn)-relu-pool-linear, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(8))
        layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)]
        return nn.Sequential(*layers)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """`array` as an IDX file (Fashion-MNIST's format), gzipped to `path.gz` when `gz`."""
    raw = (
        struct.pack(">HBB", 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_fashion_mnist(root: Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0) -> Path:
    """A Fashion-MNIST directory of random 28x28 images, labels cycling through the 10 classes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        write_idx(root / f"{stem}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{stem}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), gz)
    return root
