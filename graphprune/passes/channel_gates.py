"""InsertChannelGates / RemoveChannelGates: multiply every channel of some groups by a gate value.

A gate is any module `gate(*producer_weights) -> (group.size,)` tensor: it is called once per forward on
the weights of the group's producers (conv / linear outputs, in member order), and its value multiplies
the group's channels where they leave each producer (after the producer's norm when the norm is its only
user, so that a gate of 0 makes the channel exactly 0 like a removal would). Channels of one group share
one gate vector, however many producers (residual adds, concat members) create them. At gate 1 the graph
computes exactly what it computed before; `RemoveChannelGates` restores the original graph and modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.groups import PRODUCER_KINDS, ChannelGroup, Member
from graphprune.analysis.sites import SiteKind
from graphprune.errors import PlanError
from graphprune.passes.base import GraphPass
from graphprune.trace import META_KEY, TensorSpec

GATES = "gp_gates"  # the submodule holding every gate and scale
_TAG = "gp_gate"  # node.meta key marking the nodes the insertion added


class ChannelScale(nn.Module):
    """`x * gate[index]` broadcast along the channel dim; `index` -1 marks channels outside the group."""

    index: torch.Tensor

    def __init__(self, index: torch.Tensor, cdim: int, ndim: int) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.shape = [1] * ndim
        self.shape[cdim] = int(index.numel())

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = torch.cat([gate, gate.new_ones(1)])[self.index]  # -1 picks the appended 1
        return x * g.view(self.shape).to(x.dtype)


class GateSlot(nn.Module):
    """One group's gate and the scales that apply it at each point where the group's channels appear."""

    def __init__(self, group_id: str, gate: nn.Module) -> None:
        super().__init__()
        self.group_id = group_id
        self.gate = gate
        self.scales = nn.ModuleList()


@dataclass(frozen=True)
class GatePoint:
    """Where a gate multiplies: after fx node `node`, at the tensor positions of each group index."""

    node: str
    positions: tuple[tuple[int, ...], ...]
    cdim: int
    ndim: int
    channels: int


def producers(group: ChannelGroup) -> list[Member]:
    """The group's conv / linear output sites, whose weights a gate reads."""
    return [m for m in group.members if m.kind in PRODUCER_KINDS]


def gate_points(gm: fx.GraphModule, group: ChannelGroup) -> list[GatePoint]:
    """After each producer (after its norm when that is its only user) and after every other norm."""
    nodes = {n.name: n for n in gm.graph.nodes}
    norms = {m.site.node: m for m in group.members if m.kind == SiteKind.NORM}
    chosen: dict[str, Member] = {}
    for m in producers(group):
        node = nodes[m.site.node]
        users = list(node.users)
        if len(users) == 1 and users[0].name in norms:
            chosen[users[0].name] = norms[users[0].name]
        else:
            chosen[node.name] = m
    for name, m in norms.items():
        chosen.setdefault(name, m)
    points = []
    for name, m in chosen.items():
        spec = nodes[name].meta.get(META_KEY)
        if not isinstance(spec, TensorSpec):
            raise PlanError(f"cannot gate group '{group.id}': no recorded value at node '{name}'")
        ndim = len(spec.shape)
        cdim = ndim - 1 if m.kind == SiteKind.LINEAR_OUT else 1
        points.append(GatePoint(name, m.positions, cdim, ndim, spec.shape[cdim]))
    return points


def _weight_target(gm: fx.GraphModule, m: Member) -> str:
    mod = gm.get_submodule(m.site.target)
    if not isinstance(getattr(mod, "weight", None), torch.Tensor):
        raise PlanError(f"producer '{m.site.target}' has no weight to gate from")
    return f"{m.site.target}.weight"


class InsertChannelGates(GraphPass):
    """Gate the channels of `groups[gid]` by `gates[gid]` (a module of the producer weights)."""

    def __init__(self, groups: Sequence[ChannelGroup], gates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        by_id = {g.id: g for g in groups}
        missing = [gid for gid in gates if gid not in by_id]
        if missing:
            raise PlanError(f"no channel group '{missing[0]}' to gate")
        self.groups = [by_id[gid] for gid in gates]
        self.gates = dict(gates)

    def requires(self, graph_module: fx.GraphModule) -> None:
        if hasattr(graph_module, GATES):
            raise PlanError("the model already has channel gates; remove them first")

    def call(self, gm: fx.GraphModule) -> PassResult:
        holder = nn.Module()
        gm.add_submodule(GATES, holder)
        graph = gm.graph
        nodes = {n.name: n for n in graph.nodes}
        anchor = [n for n in graph.nodes if n.op == "placeholder"][-1]
        for i, group in enumerate(self.groups):
            slot = GateSlot(group.id, self.gates[group.id])
            holder.add_module(f"g{i}", slot)
            weights = []
            for m in producers(group):
                with graph.inserting_after(anchor):
                    anchor = graph.get_attr(_weight_target(gm, m))
                anchor.meta[_TAG] = group.id
                weights.append(anchor)
            with graph.inserting_after(anchor):
                gate = graph.call_module(f"{GATES}.g{i}.gate", tuple(weights))
            gate.meta[_TAG] = group.id
            anchor = gate
            for j, point in enumerate(gate_points(gm, group)):
                index = torch.full((point.channels,), -1, dtype=torch.long)
                for k, pos in enumerate(point.positions):
                    index[list(pos)] = k
                slot.scales.append(ChannelScale(index, point.cdim, point.ndim))
                x = nodes[point.node]
                with graph.inserting_after(x):
                    scaled = graph.call_module(f"{GATES}.g{i}.scales.{j}", (x, gate))
                scaled.meta[_TAG] = group.id
                x.replace_all_uses_with(scaled, delete_user_cb=lambda user, s=scaled: user is not s)
        return PassResult(gm, bool(self.groups))


class RemoveChannelGates(GraphPass):
    """The inverse of InsertChannelGates: drop every gate node and the gate modules."""

    def call(self, gm: fx.GraphModule) -> PassResult:
        graph = gm.graph
        tagged = [n for n in graph.nodes if _TAG in n.meta]
        for n in reversed(tagged):
            if n.op == "call_module" and ".scales." in str(n.target):
                n.replace_all_uses_with(n.args[0])  # type: ignore[arg-type]
        for n in reversed(tagged):
            if not n.users:
                graph.erase_node(n)
        if hasattr(gm, GATES):
            delattr(gm, GATES)
        return PassResult(gm, bool(tagged))


def gate_slots(gm: nn.Module) -> dict[str, GateSlot]:
    """The gates of a gated model, by group id."""
    holder = getattr(gm, GATES, None)
    if holder is None:
        return {}
    return {slot.group_id: slot for slot in holder.children() if isinstance(slot, GateSlot)}
