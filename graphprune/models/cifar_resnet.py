"""CIFAR ResNets of He et al. (2016): 6n+2 layers, 3 stages of n BasicBlocks, widths 16/32/64.

Module names match akamaster/pytorch_resnet_cifar10 (after stripping `module.`), so the option-A nets
load the pretrained weights in ../shared/weights with strict=True.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Literal["A", "B"]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, then zero-pad `pad_before`/`pad_after` channels.

    No parameters. The pad amounts are plain ints, so they appear as literals in a torch.fx graph.
    """

    def __init__(self, stride: int, pad_before: int, pad_after: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = pad_before
        self.pad_after = pad_after

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, add shortcut, relu."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: Shortcut = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()  # identity; traces to nothing under torch.fx
        if stride != 1 or in_planes != planes:
            if option == "A":
                extra = planes - in_planes
                # For the CIFAR nets (planes = 2 * in_planes) this is planes // 4 on each side.
                self.shortcut = PadShortcut(stride, extra // 2, extra - extra // 2)
            elif option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            else:
                raise ValueError(f"shortcut option must be 'A' or 'B', got {option!r}")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


def _kaiming_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(module.weight)


class CifarResNet(nn.Module):
    """Stem conv3x3(in_channels->16)+BN+ReLU, layer1..3 of `depth // 6` blocks each, global avg pool,
    `linear`."""

    def __init__(
        self, depth: int, num_classes: int = 10, option: Shortcut = "A", in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if option not in ("A", "B"):
            raise ValueError(f"shortcut option must be 'A' or 'B', got {option!r}")
        n = (depth - 2) // 6
        self.depth = depth
        self.option = option
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_kaiming_init)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s, self.option))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.adaptive_avg_pool2d(out, 1)
        out = torch.flatten(out, 1)
        return self.linear(out)


def cifar_resnet(
    depth: int, num_classes: int = 10, option: Shortcut = "A", in_channels: int = 3
) -> CifarResNet:
    """Build a CIFAR ResNet of `depth` (20, 32, 44, 56, 110, ...) with shortcut `option` A or B; one
    input channel (`in_channels=1`) suits Fashion-MNIST's 28x28 grey images."""
    return CifarResNet(depth, num_classes=num_classes, option=option, in_channels=in_channels)
