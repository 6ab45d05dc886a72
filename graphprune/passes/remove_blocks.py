"""RemoveBlocks: replace `y = s(x) + f(x)` by `y = s(x)`; the dead branch is left for EliminateDeadCode."""

from __future__ import annotations

from collections.abc import Sequence

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.blocks import Block
from graphprune.passes.base import GraphPass


class RemoveBlocks(GraphPass):
    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        self.blocks = list(blocks)

    def call(self, gm: fx.GraphModule) -> PassResult:
        nodes = {n.name: n for n in gm.graph.nodes}
        for b in self.blocks:
            add, branch = nodes[b.add], nodes[b.branch]
            # the shortcut is whatever the add reads besides the branch *now*: when blocks are chained
            # (y3 = y2 + f3, y4 = y3 + f4), removing block 3 has already rewired y3 to y2
            shortcut = next(a for a in add.args if a is not branch)
            add.replace_all_uses_with(shortcut)
            gm.graph.erase_node(add)
        gm.recompile()
        return PassResult(gm, bool(self.blocks))
