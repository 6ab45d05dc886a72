"""EliminateDeadCode: drop nodes whose values nobody uses, then the modules and parameters left unused."""

from __future__ import annotations

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.passes.base import GraphPass


def has_side_effect(node: fx.Node) -> bool:
    """fx's impurity (placeholders, output, random ops, asserts...) plus a write into a tensor that is still
    read elsewhere: in-place methods and functions (`h.add_(y)`, `torch.relu_(h)`: names ending in `_`)
    write their first argument, `out=` its tensor."""
    if node.is_impure():
        return True
    written = node.kwargs.get("out")
    if written is None and node.op in ("call_method", "call_function") and node.args:
        name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            written = node.args[0]
    written_nodes = [a for a in (written if isinstance(written, (list, tuple)) else [written])]
    return any(isinstance(w, fx.Node) and set(w.users) - {node} for w in written_nodes)


class EliminateDeadCode(GraphPass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        before = len(gm.graph.nodes)
        changed = True
        while changed:
            changed = False
            for node in reversed(list(gm.graph.nodes)):
                if not node.users and not has_side_effect(node):
                    gm.graph.erase_node(node)
                    changed = True
        used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
        called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
        tensors = list(gm.named_parameters(remove_duplicate=False)) + list(
            gm.named_buffers(remove_duplicate=False)
        )
        for name, _ in tensors:
            owner_path, _, attr = name.rpartition(".")
            parts = owner_path.split(".")
            owned_by_call = any(".".join(parts[:k]) in called for k in range(1, len(parts) + 1))
            if not owned_by_call and name not in used:
                owner = gm.get_submodule(owner_path) if owner_path else gm
                if hasattr(owner, attr):
                    delattr(owner, attr)
        gm.delete_all_unused_submodules()
        return PassResult(gm, len(gm.graph.nodes) != before)
