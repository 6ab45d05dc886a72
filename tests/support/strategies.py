"""Hypothesis strategies that compose architectures from a vocabulary of block kinds and shrink them.

An `Arch` is plain data (stem width, a list of (kind, k) blocks, head, number of inputs and outputs);
`Arch.build()` makes the model. Hypothesis shrinks the block list, the kinds (towards the first, a plain
residual) and each block's small parameter `k`, so a failure is reported as a minimal model, e.g.
`Arch(stem=4, blocks=(('operand_clamp', 0),), head='pool', inputs=1, outputs=1)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

import graphprune as gp
from support import archs as A

# kind -> (c, k) -> (block, new width). `k` is a small int (0..3) each kind reads its own way.
BLOCKS: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {
    "res": lambda c, k: (A.Residual(c), c),
    "pad": lambda c, k: (A.PadResidual(c, c + 1 + k), c + 1 + k),
    "proj": lambda c, k: (A.ProjResidual(c, c + 1 + k), c + 1 + k),
    "cat": lambda c, k: (A.Concat(c, 1 + k, 2), c + 3 + k),
    "split": lambda c, k: (A.SplitMerge(c), c),
    "shuffle": lambda c, k: (A.ChannelShuffle(2 if c % 2 == 0 else 1), c),
    "dw": lambda c, k: (A.DepthwiseSeparable(c, c, 1 + k % 2), c),
    "grouped": lambda c, k: (A.Grouped(c, c, 2 if c % 2 == 0 else 1), c),
    "se": lambda c, k: (A.SqueezeExcite(c), c),
    "gn": lambda c, k: (A.GroupNormBlock(c, c, 2 if c % 2 == 0 else 1), c),
    "slice": lambda c, k: (A.SliceHead(c, 1, c - 1, c), c),
    "scale": lambda c, k: (A.LayerScale(c), c),
    "norm_bn_stats": lambda c, k: (A.PlainNorm(c, "bn_stats"), c),
    "norm_bn": lambda c, k: (A.PlainNorm(c, "bn"), c),
    "norm_in": lambda c, k: (A.PlainNorm(c, "in"), c),
    "inplace": lambda c, k: (A.InPlace(c), c),
    "transposed": lambda c, k: (A.Transposed(c, 2 + 2 * k), c),
    "chunk": lambda c, k: (A.UnevenChunk(c, 2 + k % 2, False), c),
    "split_uneven": lambda c, k: (A.UnevenChunk(c, 2, True), c),
    "operand_mul": lambda c, k: (A.TensorOperand(c, "mul"), c),
    "operand_buffer": lambda c, k: (A.TensorOperand(c, "buffer"), c),
    "operand_clamp": lambda c, k: (A.TensorOperand(c, "clamp"), c),
    "operand_pow": lambda c, k: (A.TensorOperand(c, "pow"), c),
    "nhwc_mlp": lambda c, k: (A.ChannelsLast(c, "mlp"), c),
    "nhwc_pool": lambda c, k: (A.ChannelsLast(c, "pool"), c),
    "shared": lambda c, k: (A.Shared(c), c),
    "multisum": lambda c, k: (A.MultiSum(c, 2 + k % 3, k >= 2), c),
    "nested": lambda c, k: (A.NestedSum(c), c),
    "channel_sum": lambda c, k: (A.ChannelSum(c, "norm" if k % 2 else "energy"), c),
    "contraction": lambda c, k: (A.Contraction(c, 2 + k), c),
}

# Block kinds that hit a known bug (issue 6 section 2, fixed on the analysis branch): left out of the
# property tests, each kept failing on purpose by tests/passes/test_known_bugs.py (strict xfail).
KNOWN_BUGS: dict[str, str] = {}  # all fixed by the analysis merge; add `kind: reason` for a new one


@dataclass(frozen=True)
class Arch:
    """A composed architecture as data: build it with `build()`."""

    stem: int
    blocks: tuple[tuple[str, int], ...]
    head: str = "pool"
    inputs: int = 1
    outputs: int = 1

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        c = self.stem
        mods: list[nn.Module] = []
        for kind, k in self.blocks:
            m, c = BLOCKS[kind](c, k)
            mods.append(m)
        cls = A.Net2 if self.inputs == 2 else A.Net
        model = cls(self.stem, mods, c, self.head, self.outputs).eval()
        with torch.no_grad():  # non-trivial norm statistics, so zeroed channels are not hidden by them
            for mod in model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 1.5)
        return model

    def example(self, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(batch, 3, 16, 16, generator=g) for _ in range(self.inputs))


def architectures(exclude: dict[str, str] | None = None, max_blocks: int = 5) -> st.SearchStrategy[Arch]:
    """Architectures composed of up to `max_blocks` blocks of the vocabulary, minus `exclude`."""
    skip = KNOWN_BUGS if exclude is None else exclude
    kinds = [k for k in BLOCKS if k not in skip]
    block = st.tuples(st.sampled_from(kinds), st.integers(0, 3))
    return st.builds(
        Arch,
        stem=st.sampled_from([4, 6, 5]),
        blocks=st.lists(block, min_size=1, max_size=max_blocks).map(tuple),
        head=st.sampled_from(["pool", "flatten"]),
        inputs=st.sampled_from([1, 2]),
        outputs=st.sampled_from([1, 2]),
    )


@st.composite
def plans(draw: st.DrawFn, pg: gp.PrunableGraph, blocks: bool = True) -> gp.PruningPlan:
    """A plan removing a drawn subset of each prunable group (never all of it) and some blocks."""
    plan = gp.PruningPlan.for_graph(pg)
    rng = random.Random(draw(st.integers(0, 2**16)))
    for g in pg.prunable_groups:
        if g.size > 1:
            k = draw(st.integers(0, g.size - 1))
            if k:
                plan.remove_channels(g.id, rng.sample(range(g.size), k))
    if blocks:
        for b in pg.blocks:
            if draw(st.booleans()):
                plan.remove_block(b.name)
    return plan
