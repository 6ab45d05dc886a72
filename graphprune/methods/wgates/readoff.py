"""Read the binary gates of a gated model off into a PruningPlan (closed gate = removed channel)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from graphprune.graph import PrunableGraph
from graphprune.passes.channel_gates import gate_slots
from graphprune.plan import PruningPlan


def gate_scores(gm: nn.Module) -> dict[str, np.ndarray]:
    """Every gate's current score per group index (> 0: open), from the model's current weights."""
    out: dict[str, np.ndarray] = {}
    named = dict(gm.named_modules())
    with torch.no_grad():
        for gid, slot in gate_slots(gm).items():
            gate = slot.gate
            weights = [named[t].weight for t in getattr(gate, "weight_modules", ())]
            if not weights:
                continue
            out[gid] = gate.scores(*weights).double().cpu().numpy()  # type: ignore[operator]
    return out


def read_off(pg: PrunableGraph, scores: dict[str, np.ndarray], max_ratio: float = 0.9) -> PruningPlan:
    """Remove the channels whose gate is closed (score <= 0); a group keeps at least a (1 - max_ratio)
    share, and at least one channel: its highest-scoring closed channels reopen first."""
    plan = PruningPlan.for_graph(pg)
    for gid, s in scores.items():
        size = len(s)
        cap = min(size - 1, int(math.floor(size * max_ratio)))
        closed = [int(i) for i in np.argsort(s, kind="stable") if s[i] <= 0]
        if closed[:cap]:
            plan.remove_channels(gid, closed[:cap])
    return plan
