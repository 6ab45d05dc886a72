"""`apply`: lower a PruningPlan to site removals and run the rewrite passes, verifying the result."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import chain

import torch.fx as fx

from graphprune.analysis.blocks import Block
from graphprune.analysis.sites import Site, SiteRemoval
from graphprune.costs import MACS_KEY
from graphprune.graph import PrunableGraph
from graphprune.passes import (
    EliminateDeadCode,
    MaskBlocks,
    MaskChannels,
    PassManager,
    PruneChannels,
    RemoveBlocks,
)
from graphprune.passes.verify import QUICK_PART_RTOL, Verify
from graphprune.plan import PruningPlan
from graphprune.trace import META_KEY


def channel_removals(pg: PrunableGraph, plan: PruningPlan) -> list[SiteRemoval]:
    """For every site touched by the plan, the tensor positions to remove there."""
    removed: dict[str, set[int]] = defaultdict(set)
    sites: dict[str, Site] = {}
    for gid, indices in plan.channels.items():
        group = pg.group(gid)
        for m in group.members:
            sites[m.site.key] = m.site
            removed[m.site.key].update(chain.from_iterable(map(m.positions.__getitem__, indices)))
    return [SiteRemoval(sites[k], tuple(sorted(v))) for k, v in removed.items()]


def masked_reference(pg: PrunableGraph, plan: PruningPlan) -> fx.GraphModule:
    """The original model with the plan's channels zeroed at every consumer and its blocks multiplied by 0.

    It shares the tensors of `pg.gm` it does not mask (no copy): read it, never write into it.
    """
    plan.validate(pg)
    return _masked(pg.gm, channel_removals(pg, plan), [pg.block(b) for b in plan.blocks])


def _masked(gm: fx.GraphModule, removals: Sequence[SiteRemoval], blocks: Sequence[Block]) -> fx.GraphModule:
    return PassManager([MaskChannels(removals), MaskBlocks(blocks)], share_tensors=True)(gm)


def apply(
    pg: PrunableGraph,
    plan: PruningPlan,
    *,
    verify: bool = True,
    rtol: float = 1e-5,
    quick_rtol: float | None = QUICK_PART_RTOL,
) -> fx.GraphModule:
    """A new, smaller module computing what the masked original computes. `pg.gm` is left untouched.
    Its nodes carry no recorded values (trace it to analyse it further).

    With `verify`, the result is run on the example inputs and on fresh ones of another batch size and
    compared with `masked_reference`, part by part (see `Verify`): it passes at once if every part matches
    to `quick_rtol` in the model's own dtype, else the float64 run decides, where an error above `rtol`
    raises VerificationError. `quick_rtol=None` always runs the float64 check.
    """
    plan.validate(pg)
    removals = channel_removals(pg, plan)
    blocks = [pg.block(b) for b in plan.blocks]
    passes = [PruneChannels(removals), RemoveBlocks(blocks), EliminateDeadCode()]
    slim = PassManager(passes)(pg.gm)  # its own tensors (those of pg.gm that survive are copied)
    for node in slim.graph.nodes:  # recorded on the original: its shapes and costs, not the result's
        node.meta.pop(META_KEY, None)
        node.meta.pop(MACS_KEY, None)
    if verify:
        Verify(pg.example_inputs, _masked(pg.gm, removals, blocks), rtol, quick_rtol=quick_rtol)(slim)
    slim.train(pg.gm.training)
    return slim
