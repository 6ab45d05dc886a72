"""Masking passes: the reference a rewrite must match. They keep every shape and only zero things.

MaskChannels zeroes, in every consumer (conv / linear input), the weights that read removed channels, and
zeroes the removed channels an op sums over (a REDUCE site: `(h * h).sum(1)`, `q^T k`): exactly what
removing those channels means. MaskBlocks multiplies removed branches by zero.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.blocks import Block
from graphprune.analysis.sites import SiteKind, SiteRemoval
from graphprune.passes.base import GraphPass
from graphprune.passes.param_surgery import replace_tensor


class KeptLayerNorm(nn.Module):
    """A LayerNorm over the last dim computed over the `keep` channels only (the others pass through):
    the reference for a LayerNorm pruned with `prune_layernorm`."""

    def __init__(self, ln: nn.LayerNorm, keep: Sequence[int]) -> None:
        super().__init__()
        self.ln = ln
        self.keep = list(keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kept_layer_norm(
            x, tuple(self.keep), self.ln.normalized_shape, self.ln.weight, self.ln.bias, self.ln.eps
        )


def zero_channels(x: torch.Tensor, dim: int, removed: tuple[int, ...]) -> torch.Tensor:
    """`x` with positions `removed` of `dim` set to zero (the reference for a REDUCE site)."""
    return x.index_fill(dim, torch.tensor(removed, dtype=torch.long, device=x.device), 0)


def kept_layer_norm(
    x: torch.Tensor,
    keep: tuple[int, ...],
    normalized_shape: Sequence[int] | int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """F.layer_norm over the last dim computed over the `keep` channels only (the others pass through):
    the reference for an F.layer_norm pruned with `prune_layernorm`."""
    k = torch.as_tensor(keep, device=x.device)
    w = weight[k] if weight is not None else None
    b = bias[k] if bias is not None else None
    y = x.clone()
    y[..., k] = F.layer_norm(x[..., k], (len(keep),), w, b, eps)
    return y


class MaskChannels(GraphPass):
    def __init__(self, removals: Sequence[SiteRemoval]) -> None:
        super().__init__()
        kinds = (SiteKind.CONV_IN, SiteKind.LINEAR_IN, SiteKind.LAYER_NORM, SiteKind.REDUCE)
        self.removals = [r for r in removals if r.removed and r.site.kind in kinds]

    def call(self, gm: fx.GraphModule) -> PassResult:
        # masked copies replace the weights: the input's tensors may be shared (PassManager(share_tensors))
        nodes = {n.name: n for n in gm.graph.nodes}
        for r in self.removals:
            if r.site.kind == SiteKind.REDUCE:  # the op reads its operand with the removed channels zeroed
                op, operand = nodes[r.site.node], nodes[r.site.tensor]
                with gm.graph.inserting_before(op):
                    zeroed = gm.graph.call_function(zero_channels, (operand, r.site.dim, r.removed))
                op.replace_input_with(operand, zeroed)
                continue
            if r.site.kind == SiteKind.LAYER_NORM and not r.site.target:  # F.layer_norm
                op = nodes[r.site.node]
                shape = op.args[1] if len(op.args) > 1 else op.kwargs["normalized_shape"]
                n = shape if isinstance(shape, int) else shape[0]  # type: ignore[index]
                assert isinstance(n, int)
                keep = tuple(i for i in range(n) if i not in set(r.removed))
                op.target = kept_layer_norm
                op.args = (op.args[0], keep, *op.args[1:])
                continue
            m = gm.get_submodule(r.site.target)
            if r.site.kind == SiteKind.LAYER_NORM:
                assert isinstance(m, nn.LayerNorm)
                n = m.normalized_shape[0]
                owner, _, attr = r.site.target.rpartition(".")
                gone = set(r.removed)
                kept = KeptLayerNorm(m, [i for i in range(n) if i not in gone])
                setattr(gm.get_submodule(owner) if owner else gm, attr, kept)
                continue
            assert isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
            # one pass over the weights (a clone and an indexed write take two, a masked_fill ~4x as long)
            replace_tensor(m, "weight", m.weight.detach() * _kept_inputs(m, r.removed))
        return PassResult(gm, bool(self.removals))


def _kept_inputs(m: nn.Linear | nn.modules.conv._ConvNd, removed: tuple[int, ...]) -> torch.Tensor:
    """A 0/1 factor that broadcasts over `m.weight`: 0 at the weights reading input channels `removed`.

    (A non-finite weight there would stay non-finite in the reference: a false alarm, never a miss.)"""
    w = m.weight
    idx = torch.as_tensor(removed, dtype=torch.long, device=w.device)
    spatial = (1,) * (w.ndim - 2)
    if isinstance(m, nn.Linear):
        keep = torch.ones(1, w.shape[1], dtype=w.dtype, device=w.device)
        keep[0, idx] = 0
    elif m.transposed:  # weight (in, out/groups, k...)
        keep = torch.ones(w.shape[0], 1, *spatial, dtype=w.dtype, device=w.device)
        keep[idx] = 0
    else:  # input p is local channel p % cin_g of group p // cin_g, read by that group's outputs only
        cin_g, cout_g = m.in_channels // m.groups, m.out_channels // m.groups
        rows = cout_g if m.groups > 1 else 1  # one row broadcasts over the outputs of a single group
        keep = torch.ones(m.groups, rows, cin_g, dtype=w.dtype, device=w.device)
        keep[idx // cin_g, :, idx % cin_g] = 0
        keep = keep.reshape(-1, cin_g, *spatial)
    return keep


class MaskBlocks(GraphPass):
    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        self.blocks = list(blocks)

    def call(self, gm: fx.GraphModule) -> PassResult:
        nodes = {n.name: n for n in gm.graph.nodes}
        for b in self.blocks:
            add, branch = nodes[b.add], nodes[b.branch]
            with gm.graph.inserting_before(add):
                zero = gm.graph.call_function(operator.mul, (branch, 0.0))
            add.args = tuple(zero if a is branch else a for a in add.args)
        return PassResult(gm, bool(self.blocks))
