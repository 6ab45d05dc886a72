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
            add, shortcut = nodes.get(b.add), nodes.get(b.shortcut)
            if add is None or shortcut is None:
                continue  # already gone with an enclosing block
            add.replace_all_uses_with(shortcut)
            gm.graph.erase_node(add)
            nodes.pop(b.add)
        gm.recompile()
        return PassResult(gm, bool(self.blocks))
