"""Small architectures, one per channel-coupling case, and a random architecture builder for hypothesis."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Residual(nn.Module):
    """y = relu(x + bn(conv(relu(bn(conv(x))))))"""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class PadResidual(nn.Module):
    """Option-A shortcut: zero channels padded on both sides of a strided identity."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            cbr(cin, cout, stride=2), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.p = (cout - cin) // 2
        self.q = cout - cin - self.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.p, self.q), "constant", 0)
        return F.relu(self.body(x) + sc)


class ProjResidual(nn.Module):
    """Option-B shortcut: 1x1 conv + BN projection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            cbr(cin, cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.proj(x))


class Concat(nn.Module):
    """Two branches concatenated on channels (Inception / DenseNet style), one of them the input."""

    def __init__(self, cin: int, c1: int, c2: int) -> None:
        super().__init__()
        self.a, self.b = cbr(cin, c1, 1), cbr(cin, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), x, self.b(x)], dim=1)


class SplitMerge(nn.Module):
    """chunk on channels, transform one half, concatenate back (ShuffleNet style)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.half = c // 2
        self.f = cbr(c - self.half, c - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([a, self.f(b)], dim=1)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        return x.view(n, -1, h, w)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, mult: int = 1) -> None:
        super().__init__()
        self.dw = cbr(cin, cin * mult, groups=cin)
        self.pw = cbr(cin * mult, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Grouped(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.f = cbr(cin, cout, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * s


class GroupNormBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.gn = nn.GroupNorm(groups, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.gn(self.conv(x)))


class SliceHead(nn.Module):
    """Keeps only channels [lo:hi) of its input for the next conv."""

    def __init__(self, c: int, lo: int, hi: int, cout: int) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi
        self.conv = cbr(hi - lo, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, self.lo : self.hi])


class LayerScale(nn.Module):
    """A residual with a learned per-channel scale parameter (ConvNeXt style)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.conv(x)


class ToyNet(nn.Module):
    """stem -> blocks -> head: 'pool' (global pool + linear) or 'flatten' (flatten C*H*W + linear)."""

    def __init__(
        self,
        stem: int,
        blocks: list[nn.Module],
        width: int,
        head: str = "pool",
        spatial: int = 4,
        classes: int = 5,
    ) -> None:
        super().__init__()
        self.stem = cbr(3, stem)
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.fc = nn.Linear(width if head == "pool" else width * spatial * spatial, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        if self.head == "pool":
            x = x.mean((2, 3))
        else:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)
        return self.fc(x)


def random_toynet(seed: int, n_blocks: int) -> ToyNet:
    """A random stack of the blocks above with consistent widths (all multiples of 4)."""
    rng = random.Random(seed)
    c = 4 * rng.randint(2, 4)
    stem = c
    blocks: list[nn.Module] = []
    for _ in range(n_blocks):
        kind = rng.choice(
            ["res", "pad", "proj", "cat", "split", "shuffle", "dw", "grouped", "se", "gn", "slice", "scale"]
        )
        if kind == "res":
            blocks.append(Residual(c))
        elif kind == "pad":
            new = c + 4 * rng.randint(1, 2)
            blocks.append(PadResidual(c, new))
            c = new
        elif kind == "proj":
            blocks.append(ProjResidual(c, c + 4))
            c += 4
        elif kind == "cat":
            blocks.append(Concat(c, 4, 8))
            c += 12
        elif kind == "split":
            blocks.append(SplitMerge(c))
        elif kind == "shuffle":
            blocks.append(ChannelShuffle(2))
        elif kind == "dw":
            mult = rng.choice([1, 2])
            blocks.append(DepthwiseSeparable(c, c, mult))
        elif kind == "grouped":
            blocks.append(Grouped(c, c, 2 if c % 8 else 4))
        elif kind == "se":
            blocks.append(SqueezeExcite(c))
        elif kind == "gn":
            blocks.append(GroupNormBlock(c, c, 2))
        elif kind == "slice":
            blocks.append(SliceHead(c, 1, c - 1, c))
        else:
            blocks.append(LayerScale(c))
    return ToyNet(stem, blocks, c, rng.choice(["pool", "flatten"]))
