"""W-Gates (arXiv 2007.02066): per-filter binary gates computed from the filter weights themselves.

For one channel group, every producer's weight is reshaped to C_out x (C_in*k*k) rows (one row per filter;
group index k averages the rows of its positions), scaled by the weight's RMS, and encoded by a linear
layer of its own; coupled producers (a residual chain, concat members) add their encodings, so the group
gets one gate vector fed from all of them. A shared head (ReLU, linear) gives one score per filter, and a
step binarises it; backward is a straight-through estimator, passed where |score| <= `ste_window`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from graphprune.analysis.groups import ChannelGroup
from graphprune.passes.channel_gates import producers
from graphprune.trace import META_KEY, TensorSpec


class BinaryStep(torch.autograd.Function):
    """Forward: 1 where score > 0, else 0. Backward: the incoming gradient where |score| <= window."""

    @staticmethod
    def forward(ctx: Any, score: torch.Tensor, window: float) -> torch.Tensor:
        ctx.save_for_backward(score)
        ctx.window = window
        return (score > 0).to(score.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (score,) = ctx.saved_tensors
        return grad * (score.abs() <= ctx.window).to(grad.dtype), None


def binary_step(score: torch.Tensor, window: float = 1.0) -> torch.Tensor:
    out: torch.Tensor = BinaryStep.apply(score, window)
    return out


class _Rows(nn.Module):
    """One producer's filters as rows, one per group index (rows of an index's positions averaged)."""

    index: torch.Tensor

    def __init__(self, positions: Sequence[Sequence[int]], transposed: bool) -> None:
        super().__init__()
        width = max(len(p) for p in positions)
        # pad short position lists by repeating their first position: the mean is then still that of the
        # index's own filters when every index has the same count (the usual case)
        rows = [list(p) + [p[0]] * (width - len(p)) for p in positions]
        self.register_buffer("index", torch.tensor(rows, dtype=torch.long))
        self.transposed = transposed

    def forward(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (size, C_in*k*k) scaled by the weight's RMS, and each row's norm relative to the mean norm."""
        w = weight.transpose(0, 1) if self.transposed else weight
        w = w.reshape(w.shape[0], -1)
        w = w / w.detach().pow(2).mean().sqrt().clamp_min(1e-12)
        rows = w[self.index].mean(dim=1)
        norms = rows.norm(dim=1)
        return rows, norms / norms.mean().clamp_min(1e-12)


class WeightGate(nn.Module):
    """The gate of one channel group: producer weights -> (group.size,) binary gates.

    The score is the encoding's (plus the filter-norm prior) minus the budget's `threshold` buffer.
    `hidden`: width of the per-filter encoding; `init_score`: initial score of a filter of average norm (> 0:
    all gates open, so training starts from the unpruned model); `prior_weight`: initial weight of the
    relative filter norm in the score; `detach_weights`: the gate reads the weights
    without sending gradients into them (the weights learn from the task loss only); `min_open`: the share
    of the group whose gates stay open whatever their scores (the best-scored ones).
    """

    def __init__(
        self,
        group: ChannelGroup,
        weights: Sequence[torch.Tensor],
        *,
        hidden: int = 16,
        init_score: float = 0.5,
        ste_window: float = 1.0,
        detach_weights: bool = True,
        prior_weight: float = 1.0,
        transposed: Sequence[bool] | None = None,
        min_open: float = 0.1,
    ) -> None:
        super().__init__()
        members = producers(group)
        flags = list(transposed) if transposed is not None else [False] * len(members)
        self.rows = nn.ModuleList(_Rows(m.positions, t) for m, t in zip(members, flags, strict=True))
        dims = [
            int(w.numel() // (w.shape[1] if t else w.shape[0])) for w, t in zip(weights, flags, strict=True)
        ]
        self.encoders = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            last = self.head[1]
            assert isinstance(last, nn.Linear)
            last.weight.mul_(0.1)
            last.bias.fill_(init_score)
        # the score starts from the filter's norm relative to the group's mean (gates start ordered like
        # the magnitude criterion); the FC layers learn the correction
        self.prior_weight = nn.Parameter(torch.tensor(float(prior_weight)))
        self.ste_window = ste_window
        self.detach_weights = detach_weights
        self.size = group.size
        # the best-scored share of the group stays open while training, as read-off keeps it: a group
        # whose gates all close cuts the network in two, and no task gradient can then reopen them
        self.min_open = max(1, math.ceil(min_open * group.size)) if min_open > 0 else 0
        self.weight_modules = [m.site.target for m in members]
        # the budget's threshold, subtracted from every score: raised while the gated net is over budget
        # and lowered while under (a buffer, so a resumed run continues with it)
        self.register_buffer("threshold", torch.zeros(()))
        self.last_score: torch.Tensor | None = None
        self.last_gate: torch.Tensor | None = None

    def scores(self, *weights: torch.Tensor) -> torch.Tensor:
        feats: torch.Tensor | None = None
        prior: torch.Tensor | None = None
        for rows, enc, w in zip(self.rows, self.encoders, weights, strict=True):
            r, rel = rows(w.detach() if self.detach_weights else w)
            f = enc(r)
            feats = f if feats is None else feats + f
            prior = rel if prior is None else prior + rel
        assert feats is not None and prior is not None
        n = len(weights)
        return self.head(feats / n).squeeze(-1) + self.prior_weight * (prior / n - 1.0) - self.threshold

    def forward(self, *weights: torch.Tensor) -> torch.Tensor:
        score = self.scores(*weights)
        gate = binary_step(score, self.ste_window)
        if self.min_open:
            floor = torch.zeros_like(gate).index_fill_(0, score.detach().topk(self.min_open).indices, 1.0)
            gate = torch.maximum(gate, floor)
        self.last_score, self.last_gate = score, gate
        return gate


def spans_resolutions(gm: fx.GraphModule, group: ChannelGroup) -> bool:
    """Whether the group's producers write feature maps of more than one spatial size: a residual
    stream carried across stages (as the zero-padded option-A shortcut does), whose channels every
    later stage reads."""
    nodes = {n.name: n for n in gm.graph.nodes}
    sizes = set()
    for m in producers(group):
        spec = nodes[m.site.node].meta.get(META_KEY) if m.site.node in nodes else None
        if isinstance(spec, TensorSpec):
            sizes.add(tuple(spec.shape[2:]))
    return len(sizes) > 1


def build_gates(
    gm: fx.GraphModule, groups: Sequence[ChannelGroup], *, span_floor: float = 0.0, **options: Any
) -> dict[str, WeightGate]:
    """A WeightGate for every group that has a conv / linear producer (others cannot be gated).

    A group that spans several resolutions keeps at least `span_floor` of its channels open."""
    gates: dict[str, WeightGate] = {}
    for g in groups:
        members = producers(g)
        if not members:
            continue
        mods = [gm.get_submodule(m.site.target) for m in members]
        weights = [m.weight for m in mods]
        flags = [bool(getattr(m, "transposed", False)) for m in mods]
        opts = dict(options)
        if span_floor > 0 and spans_resolutions(gm, g):
            opts["min_open"] = max(float(opts.get("min_open", 0.1)), span_floor)
        gates[g.id] = WeightGate(g, weights, transposed=flags, **opts)  # type: ignore[arg-type]
    return gates
