"""RemoveBlocks: replace `y = s(x) + f(x)` by `y = s(x)` and erase the shape checks on f; the dead branch is
left for EliminateDeadCode."""

from __future__ import annotations

from collections.abc import Sequence

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.blocks import Block
from graphprune.passes.base import GraphPass


class RemoveBlocks(GraphPass):
    """Order-independent: each removed add stands for its shortcut, followed through removed adds
    (`y3 = y2 + f3` with block 2 removed too stands for y1). Adds are replaced last-first in graph order."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        self.blocks = list(blocks)

    def call(self, gm: fx.GraphModule) -> PassResult:
        nodes = {n.name: n for n in gm.graph.nodes}
        shortcut_of = {b.add: b.shortcut for b in self.blocks}

        def resolve(name: str) -> str:
            seen = set()
            while name in shortcut_of and name not in seen:
                seen.add(name)
                name = shortcut_of[name]
            return name

        for add in reversed([n for n in gm.graph.nodes if n.name in shortcut_of]):
            add.replace_all_uses_with(nodes[resolve(add.name)])
            gm.graph.erase_node(add)
        checks = {c for b in self.blocks for c in b.checks}  # asserts on removed branches go with them
        for n in reversed([n for n in gm.graph.nodes if n.name in checks]):
            gm.graph.erase_node(n)
        return PassResult(gm, bool(self.blocks))
