"""Exact MACs of a plan without rewriting: every conv / linear cost scales with its kept in/out channels,
a contraction over channels (`q^T k`, a REDUCE site) with its kept contracted channels.

This is the FLOPs side of the Efficiency Module: the criteria use it to meet a FLOPs budget, and the
gates can use it as a differentiable-free oracle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from graphprune.analysis.sites import SiteKind
from graphprune.graph import PrunableGraph


@dataclass(frozen=True)
class _CostedLayer:
    node: str
    flops: int
    out_site: str
    in_site: str
    out_channels: int
    in_channels: int
    in_scales: bool  # False for depthwise convs: removing inputs removes whole groups (counted via outputs)


class FlopsModel:
    """Predicts a plan's MACs from kept channel counts; `flops({}) == pg.flops`."""

    def __init__(self, pg: PrunableGraph) -> None:
        self.total = pg.flops
        modules = dict(pg.gm.named_modules())
        self.layers: list[_CostedLayer] = []
        self.fixed = 0  # MACs no channel removal changes (attention products, matmul), per node below
        self.fixed_by_node: dict[str, int] = {}
        contracted = {s.node: s for s in reversed(pg.depgraph.sites) if s.kind == SiteKind.REDUCE}
        for c in pg.layer_costs:
            m = modules.get(c.name)
            if isinstance(m, nn.modules.conv._ConvNd):
                depthwise = m.groups > 1 and m.in_channels // m.groups == 1
                layer = _CostedLayer(
                    c.node,
                    c.flops,
                    f"{c.name}:out",
                    f"{c.name}:in",
                    m.out_channels,
                    m.in_channels,
                    not depthwise,
                )
            elif isinstance(m, nn.Linear):
                layer = _CostedLayer(
                    c.node, c.flops, f"{c.name}:out", f"{c.name}:in", m.out_features, m.in_features, True
                )
            elif c.node in contracted:  # its operands lose the contracted channels together
                site = contracted[c.node]
                size = pg.depgraph.tensors[site.tensor].size
                layer = _CostedLayer(c.node, c.flops, "", site.key, 1, size, True)
            else:
                self.fixed += c.flops
                self.fixed_by_node[c.node] = c.flops
                continue
            self.layers.append(layer)
        # group id -> site key -> per-index position counts; the (group, site) pairs where all are 1
        self.counts: dict[str, dict[str, np.ndarray]] = {
            g.id: {m.site.key: np.fromiter(map(len, m.positions), dtype=np.int64) for m in g.members}
            for g in pg.groups
        }
        self._one_each = {
            (g, s) for g, sites in self.counts.items() for s, c in sites.items() if (c == 1).all()
        }
        self.block_nodes = {b.name: set(b.nodes) for b in pg.blocks}

    def removed_per_site(self, channels: Mapping[str, Iterable[int]]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for gid, idx in channels.items():
            at = np.fromiter(idx, dtype=np.int64)
            for site, counts in self.counts[gid].items():
                out[site] += len(at) if (gid, site) in self._one_each else int(counts[at].sum())
        return out

    def flops(self, channels: Mapping[str, Iterable[int]], blocks: Iterable[str] = ()) -> int:
        """MACs per sample after removing `channels` (group id -> indices) and `blocks`."""
        removed = self.removed_per_site(channels)
        dead = set().union(*(self.block_nodes[b] for b in blocks)) if blocks else set()
        total = float(self.fixed - sum(self.fixed_by_node.get(n, 0) for n in dead))
        for layer in self.layers:
            if layer.node in dead:
                continue
            keep = 1.0 - removed.get(layer.out_site, 0) / layer.out_channels
            if layer.in_scales:
                keep *= 1.0 - removed.get(layer.in_site, 0) / layer.in_channels
            total += layer.flops * keep
        return int(round(total))
