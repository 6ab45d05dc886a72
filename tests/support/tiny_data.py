"""A tiny learnable image dataset and model for training-layer tests (seconds, no files)."""

from __future__ import annotations

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
