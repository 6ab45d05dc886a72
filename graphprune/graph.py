"""`trace`: the analysis entry point. A PrunableGraph bundles the fx graph and everything derived from it."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from graphprune.analysis.blocks import Block, find_blocks
from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.groups import ChannelGroup, derive_groups
from graphprune.analysis.rules import build_dependency_graph
from graphprune.costs import LayerCost, count_params, layer_costs, record_values_and_macs
from graphprune.errors import EvalOnlyWarning, PlanError, did_you_mean
from graphprune.plan import PruningPlan
from graphprune.trace import arch_hash, as_input_tuple, eval_only_parts, symbolic_trace


@dataclass
class PrunableGraph:
    """A traced model with its channel groups, removable blocks and costs. Read-only analysis.

    `gm`'s parameters and buffers share the traced model's memory (no copy of the weights is made): read
    it, do not train it or write into it. `apply` returns a module with tensors of its own.
    """

    gm: fx.GraphModule
    example_inputs: tuple[torch.Tensor, ...]
    depgraph: DependencyGraph
    groups: list[ChannelGroup]
    blocks: list[Block]
    layer_costs: list[LayerCost]
    flops: int
    params: int
    arch_hash: str
    eval_only: tuple[str, ...] = ()  # what tracing in eval mode left out (see `trace.eval_only_parts`)
    _group_index: dict[str, ChannelGroup] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._group_index = {g.id: g for g in self.groups}

    @property
    def input_shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.example_inputs]

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    @property
    def prune_layernorm(self) -> bool:
        """Whether it was traced with `prune_layernorm` (a re-trace of the same model must say it too)."""
        return self.depgraph.prune_layernorm

    def not_lossless_groups(self, plan: PruningPlan) -> list[str]:
        """The groups `plan` removes channels from whose pruning is not lossless (`ChannelGroup.lossless`)."""
        return [gid for gid, idx in plan.channels.items() if idx and not self.group(gid).lossless]

    def group(self, group_id: str) -> ChannelGroup:
        """The group with this id; PlanError with close matches if there is none."""
        try:
            return self._group_index[group_id]
        except KeyError:
            hint = did_you_mean(group_id, self._group_index)
            raise PlanError(f"unknown channel group '{group_id}'{hint}") from None

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        hint = did_you_mean(name, [b.name for b in self.blocks])
        raise PlanError(f"unknown block '{name}'{hint}")

    def groups_of(self, module: str) -> list[ChannelGroup]:
        """Groups holding the output channels of `module` (a conv, linear, norm or parameter)."""
        keys = {f"{module}:out", f"{module}:norm", f"{module}:param"}
        return [g for g in self.groups if any(m.site.key in keys for m in g.members)]

    def group_of(self, module: str) -> ChannelGroup:
        """The one group holding the output channels of `module`; its indices are that output's channels."""
        found = self.groups_of(module)
        if len(found) == 1:
            return found[0]
        if not found:
            raise PlanError(f"no channel group holds the output of '{module}'")
        ids = ", ".join(g.id for g in found)
        raise PlanError(f"the output of '{module}' spans {len(found)} groups ({ids}); use groups_of()")


def not_lossless_note(groups: Sequence[str]) -> str | None:
    """What a report says about the groups of `PrunableGraph.not_lossless_groups` (None: lossless)."""
    if not groups:
        return None
    return (
        f"not lossless: the LayerNorms over the channels of {', '.join(groups)} now normalise over the kept "
        "channels only (--prune-layernorm), so the pruned model differs from the original; fine-tune it"
    )


def trace(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    leaf_modules: Iterable[str | type] = (),
    prune_layernorm: bool = False,
) -> PrunableGraph:
    """Trace `model` with torch.fx and analyse it. The model itself is never modified.

    `prune_layernorm` opts in to pruning through LayerNorms over the channels (pinned otherwise): the
    pruned model normalises over the kept channels, so those groups are not lossless (`group.lossless`).
    """
    inputs = as_input_tuple(example_inputs)
    gm = symbolic_trace(model, leaf_modules, inputs)
    eval_only = eval_only_parts(model, gm) if not isinstance(model, fx.GraphModule) else ()
    if eval_only:
        warnings.warn(
            "traced in eval mode, the pruned model leaves out: " + "; ".join(eval_only),
            EvalOnlyWarning,
            stacklevel=2,
        )
    record_values_and_macs(gm, inputs)
    dg = build_dependency_graph(gm, prune_layernorm=prune_layernorm)
    groups = derive_groups(dg)
    costs = layer_costs(gm)
    blocks = find_blocks(gm, costs)
    return PrunableGraph(
        gm=gm,
        example_inputs=tuple(t.detach().clone() for t in inputs),
        depgraph=dg,
        groups=groups,
        blocks=blocks,
        layer_costs=costs,
        flops=sum(c.flops for c in costs),
        params=count_params(gm),
        arch_hash=arch_hash(gm),
        eval_only=eval_only,
    )
