"""Read the binary gates of a gated model off into a PruningPlan (closed gate = removed channel)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from graphprune.graph import PrunableGraph
from graphprune.methods.wgates.counts import min_kept, nearest_kept
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


def read_off(
    pg: PrunableGraph, scores: dict[str, np.ndarray], max_ratio: float = 0.9, round_to: int = 1
) -> PruningPlan:
    """Keep every group's highest-scoring channels: as many as its gates are open (score > 0), moved to
    the nearest multiple of `round_to` (or the whole group; a tie rounds up), and at least a
    (1 - max_ratio) share and one channel. With `round_to` 1 exactly the closed gates go, within the cap."""
    plan = PruningPlan.for_graph(pg)
    for gid, s in scores.items():
        size = len(s)
        keep = nearest_kept(size, int((s > 0).sum()), min_kept(size, max_ratio, round_to), round_to)
        lowest = np.argsort(s, kind="stable")[: size - keep]
        if len(lowest):
            plan.remove_channels(gid, sorted(int(i) for i in lowest))
    return plan
