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
        return x.view(n, c, h, w)  # as torchvision's: the count read before the shuffle shapes its result


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


# ---- more block kinds for the hypothesis strategies (tests/support/strategies.py)


class PlainNorm(nn.Module):
    """conv -> a norm with no per-channel tensors (no affine, no running stats) -> relu."""

    def __init__(self, c: int, kind: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.norm = (
            nn.InstanceNorm2d(c)
            if kind == "in"
            else nn.BatchNorm2d(c, affine=False, track_running_stats=kind == "bn_stats")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class InPlace(nn.Module):
    """In-place ops: h.add_(skip(x)), relu_, mul_ on a conv output; the result of add_ is unused."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.skip = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h.add_(self.skip(x))
        h = F.relu_(h)
        return h.mul_(0.5)


class Transposed(nn.Module):
    """ConvTranspose2d up (stride 2), then a strided conv back down."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c, mid, 2, stride=2)
        self.bn = nn.BatchNorm2d(mid)
        self.down = nn.Conv2d(mid, c, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.bn(self.up(x))))


class UnevenChunk(nn.Module):
    """chunk / split into uneven parts on channels, each part transformed, concatenated back."""

    def __init__(self, c: int, parts: int, use_split: bool) -> None:
        super().__init__()
        self.parts, self.use_split = parts, use_split
        size = -(-c // parts)  # torch.chunk sizes: ceil(c / parts), the last one smaller
        sizes = [min(size, c - k * size) for k in range(parts) if c - k * size > 0]
        self.sizes = [1, c - 1] if use_split else sizes
        self.convs = nn.ModuleList(cbr(s, s, 1) for s in self.sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(x, self.sizes, 1) if self.use_split else torch.chunk(x, self.parts, 1)
        return torch.cat([f(pieces[i]) for i, f in enumerate(self.convs)], 1)


class TensorOperand(nn.Module):
    """A per-channel parameter or buffer as the tensor operand of an elementwise op."""

    def __init__(self, c: int, op: str) -> None:
        super().__init__()
        self.op = op
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.p = nn.Parameter(torch.rand(c, 1, 1) - 0.5)
        self.register_buffer("b", torch.rand(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.op == "clamp":
            return torch.clamp(h, min=self.p)
        if self.op == "pow":  # times h: a zeroed channel stays zero (0 ** 0 is 1)
            return h * h.abs().pow(self.p + 1)
        if self.op == "buffer":
            return h * self.b + self.b
        return h * self.p


class ChannelsLast(nn.Module):
    """permute to NHWC, channelwise work on the last dim (linear, scale, op), permute back."""

    def __init__(self, c: int, op: str) -> None:
        super().__init__()
        self.op = op
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c)
        self.fc1 = nn.Linear(c, 2 * c)
        self.fc2 = nn.Linear(2 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(x).permute(0, 2, 3, 1)
        if self.op == "pool":
            h = F.max_pool2d(h, 3, 1, 1)
        h = self.gamma * self.fc2(F.gelu(self.fc1(h)))
        return x + h.permute(0, 3, 1, 2)


class Shared(nn.Module):
    """The same conv module called twice."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.conv(x)))


class MultiSum(nn.Module):
    """A multi-way sum of branches (RepVGG style), optionally with the identity."""

    def __init__(self, c: int, ways: int, identity: bool) -> None:
        super().__init__()
        self.identity = identity
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, k, 1, k // 2, bias=False), nn.BatchNorm2d(c))
            for k in [3, 1, 3, 1][:ways]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        if self.identity:
            out = out + x
        return F.relu(out)


class NestedSum(nn.Module):
    """Sums nested inside sums: y = x + f(x); z = y + g(y) + x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c))
        self.g = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.f(x)
        return F.relu(y + self.g(F.relu(y)) + x)


class ChannelSum(nn.Module):
    """A sum over the channels: the stream L2-normalised (`norm`) or gated by its energy (`energy`)."""

    def __init__(self, c: int, how: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.how == "norm":
            return x + F.normalize(h, dim=1)
        return x + h * torch.sigmoid((h * h).sum(1, keepdim=True))


class Contraction(nn.Module):
    """q^T k over the channels of two 1x1 convs (coupled into one group) as a spatial gate."""

    def __init__(self, c: int, inner: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(c, inner, 1)
        self.k = nn.Conv2d(c, inner, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x).flatten(2), self.k(x).flatten(2)
        a = torch.softmax(torch.matmul(q.transpose(1, 2), k), -1)  # (n, hw, hw)
        return x * a.mean(-1).view(x.shape[0], 1, x.shape[2], x.shape[3])


class Net(nn.Module):
    """stem -> blocks -> head; with two outputs, an aux head on the last feature map."""

    def __init__(self, stem: int, blocks: list[nn.Module], width: int, head: str, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs
        self.stem = cbr(3, stem)
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.fc = nn.Linear(width if head == "pool" else width * 16, 5)
        self.aux = nn.Conv2d(width, 2, 1) if outputs == 2 else None

    def body(self, h: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.blocks(h)
        z = h.mean((2, 3)) if self.head == "pool" else torch.flatten(F.adaptive_avg_pool2d(h, 4), 1)
        if self.aux is None:
            return self.fc(z)
        return self.fc(z), self.aux(h).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.body(self.stem(x))


class Net2(Net):
    """Two image inputs, each with its own stem, summed."""

    def __init__(self, stem: int, blocks: list[nn.Module], width: int, head: str, outputs: int) -> None:
        super().__init__(stem, blocks, width, head, outputs)
        self.stem2 = cbr(3, stem)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.body(self.stem(x) + self.stem2(y))
