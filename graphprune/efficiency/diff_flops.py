"""MACs as a differentiable torch function of per-channel keep values and per-block keep values.

A thin layer over `FlopsModel`'s per-layer terms, so that it follows FlopsModel exactly: with binary keep
values it equals `FlopsModel.flops` of the plan that removes the zeros. Gates and budget losses use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from graphprune.efficiency.flops import FlopsModel
from graphprune.errors import PlanError
from graphprune.graph import PrunableGraph


class DifferentiableFlops(nn.Module):
    """`forward(keep, blocks)` -> MACs per sample (float64 scalar tensor).

    `keep[gid]` is either a vector of `group.size` keep values in [0, 1] (1 = kept, 0 = removed) or a
    0-d kept *count*; a count spreads evenly over the group's indices (exact when every index covers the
    same number of positions at every site, the usual case). `blocks[name]` is a 0-d keep value of a
    block. Groups and blocks not given are kept whole. Each conv / linear contributes
    `flops * kept_out/out * kept_in/in * prod(keep of the blocks holding it)`.
    """

    gate_idx: torch.Tensor
    site_idx: torch.Tensor
    counts: torch.Tensor
    layer_flops: torch.Tensor
    out_site: torch.Tensor
    in_site: torch.Tensor
    out_channels: torch.Tensor
    in_channels: torch.Tensor
    in_scales: torch.Tensor
    block_member: torch.Tensor

    def __init__(self, pg: PrunableGraph, groups: Sequence[str] | None = None) -> None:
        super().__init__()
        fm = FlopsModel(pg)
        self.total = fm.total
        self.fixed = float(fm.fixed)
        ids = [g.id for g in pg.prunable_groups] if groups is None else list(groups)
        self.sizes = {gid: pg.group(gid).size for gid in ids}
        self.offsets: dict[str, int] = {}
        n = 0
        for gid in ids:
            self.offsets[gid] = n
            n += self.sizes[gid]
        self.n_gates = n
        site_keys = sorted({s for lay in fm.layers for s in (lay.out_site, lay.in_site)})
        site_of = {k: i for i, k in enumerate(site_keys)}
        gate_idx: list[int] = []
        site_idx: list[int] = []
        counts: list[float] = []
        for gid in ids:
            for site, per_index in fm.counts[gid].items():
                if site not in site_of:
                    continue
                for k, c in enumerate(per_index):
                    if c:
                        gate_idx.append(self.offsets[gid] + k)
                        site_idx.append(site_of[site])
                        counts.append(float(c))
        self.n_sites = len(site_keys)
        self.register_buffer("gate_idx", torch.tensor(gate_idx, dtype=torch.long), persistent=False)
        self.register_buffer("site_idx", torch.tensor(site_idx, dtype=torch.long), persistent=False)
        self.register_buffer("counts", torch.tensor(counts, dtype=torch.float64), persistent=False)
        layers = fm.layers
        self.register_buffer(
            "layer_flops",
            torch.tensor([float(x.flops) for x in layers], dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer(
            "out_site", torch.tensor([site_of[x.out_site] for x in layers]), persistent=False
        )
        self.register_buffer("in_site", torch.tensor([site_of[x.in_site] for x in layers]), persistent=False)
        self.register_buffer(
            "out_channels",
            torch.tensor([float(x.out_channels) for x in layers], dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer(
            "in_channels",
            torch.tensor([float(x.in_channels) for x in layers], dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer("in_scales", torch.tensor([x.in_scales for x in layers]), persistent=False)
        self.block_names = list(fm.block_nodes)
        member = torch.zeros(len(layers), len(self.block_names), dtype=torch.float64)
        for i, lay in enumerate(layers):
            for j, b in enumerate(self.block_names):
                member[i, j] = float(lay.node in fm.block_nodes[b])
        self.register_buffer("block_member", member, persistent=False)
        self.layer_nodes = [lay.node for lay in layers]

    def gate_vector(self, keep: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """All keep values concatenated in group order (ones for groups not given)."""
        parts: list[torch.Tensor] = []
        keep = keep or {}
        unknown = [gid for gid in keep if gid not in self.sizes]
        if unknown:
            raise PlanError(f"DifferentiableFlops: unknown or unprunable channel group '{unknown[0]}'")
        for gid, size in self.sizes.items():
            v = keep.get(gid)
            if v is None:
                parts.append(torch.ones(size, dtype=torch.float64, device=self.counts.device))
                continue
            v = v.to(torch.float64)
            if v.dim() == 0:
                v = (v / size).expand(size)
            elif v.shape != (size,):
                raise PlanError(
                    f"keep values of group '{gid}' have shape {tuple(v.shape)}, expected ({size},)"
                )
            parts.append(v)
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=self.counts.device)

    def layer_terms(
        self,
        keep: Mapping[str, torch.Tensor] | None = None,
        blocks: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per conv / linear layer (FlopsModel order): kept MACs, kept share of its output channels, and
        whether it is alive (the product of the keep values of the blocks holding it)."""
        keep_out, keep_in, alive = self.layer_keeps(keep, blocks)
        return self.layer_flops * keep_out * keep_in * alive, keep_out * alive, alive

    def layer_keeps(
        self,
        keep: Mapping[str, torch.Tensor] | None = None,
        blocks: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per conv / linear layer: kept share of its output channels, of the input channels it scales
        with (1 where it does not, as a depthwise conv), and whether it is alive."""
        g = self.gate_vector(keep)
        removed = torch.zeros(self.n_sites, dtype=torch.float64, device=g.device)
        removed = removed.index_add(0, self.site_idx, self.counts * (1.0 - g[self.gate_idx]))
        keep_out = 1.0 - removed[self.out_site] / self.out_channels
        keep_in = torch.where(self.in_scales, 1.0 - removed[self.in_site] / self.in_channels, 1.0)
        alive = torch.ones_like(keep_out)
        if blocks:
            unknown = [b for b in blocks if b not in self.block_names]
            if unknown:
                raise PlanError(f"DifferentiableFlops: unknown block '{unknown[0]}'")
            bk = torch.stack(
                [blocks[b].to(torch.float64) if b in blocks else g.new_ones(()) for b in self.block_names]
            )
            # product over the blocks holding each layer (factor 1 for the blocks not holding it)
            alive = (1.0 - self.block_member * (1.0 - bk)[None, :]).prod(dim=1)
        return keep_out, keep_in, alive

    def forward(
        self,
        keep: Mapping[str, torch.Tensor] | None = None,
        blocks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        macs, _, _ = self.layer_terms(keep, blocks)
        return self.fixed + macs.sum()
