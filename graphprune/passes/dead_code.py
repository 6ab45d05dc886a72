"""EliminateDeadCode: drop nodes whose values nobody uses, then the modules and parameters left unused."""

from __future__ import annotations

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.passes.base import GraphPass


class EliminateDeadCode(GraphPass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        before = len(gm.graph.nodes)
        # fx keeps in-place calls as impure; here every op is a pure function of its inputs (inference graph)
        changed = True
        while changed:
            changed = False
            for node in reversed(list(gm.graph.nodes)):
                if node.op not in ("placeholder", "output") and not node.users:
                    gm.graph.erase_node(node)
                    changed = True
        used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
        called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
        tensors = list(gm.named_parameters(remove_duplicate=False)) + list(
            gm.named_buffers(remove_duplicate=False)
        )
        for name, _ in tensors:
            owner_path, _, attr = name.rpartition(".")
            owned_by_call = any(owner_path == c or owner_path.startswith(c + ".") for c in called)
            if not owned_by_call and name not in used:
                owner = gm.get_submodule(owner_path) if owner_path else gm
                if hasattr(owner, attr):
                    delattr(owner, attr)
        gm.delete_all_unused_submodules()
        gm.recompile()
        return PassResult(gm, len(gm.graph.nodes) != before)
