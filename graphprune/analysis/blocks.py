"""Blocks: residual branches `y = s(x) + f(x)` whose branch f can be removed whole, leaving `y = s(x)`."""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass

import networkx as nx
import torch
import torch.fx as fx

from graphprune.costs import LayerCost
from graphprune.trace import META_KEY, TensorSpec

_ADDS = (operator.add, operator.iadd, torch.add)


@dataclass(frozen=True)
class Block:
    """A removable residual branch, named by the module that performs the add (e.g. `layer2.3`)."""

    name: str
    flops: int
    params: int
    add: str  # fx node of the residual add
    branch: str  # fx node producing f(x)
    shortcut: str  # fx node producing s(x)
    nodes: tuple[str, ...]  # fx nodes of the branch, removed with it


def _is_residual_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        pass
    elif node.op == "call_method" and node.target in ("add", "add_"):
        pass
    else:
        return False
    if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
        return False
    specs = [a.meta.get(META_KEY) if isinstance(a, fx.Node) else None for a in node.args]
    out = node.meta.get(META_KEY)
    return all(isinstance(s, TensorSpec) and s == out for s in specs)


def _module_path(node: fx.Node, branch: list[fx.Node]) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        return str(list(stack.keys())[-1])
    targets = [str(n.target).split(".") for n in branch if n.op == "call_module"]
    if not targets:
        return node.name
    prefix: list[str] = []
    for parts in zip(*targets, strict=False):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix) or node.name


def find_blocks(gm: fx.GraphModule, costs: list[LayerCost]) -> list[Block]:
    """Every residual add whose one operand is computed only for that add (its branch)."""
    g = nx.DiGraph()
    for n in gm.graph.nodes:
        g.add_node(n)
        for a in n.all_input_nodes:
            g.add_edge(a, n)
    cost_of = {c.node: c for c in costs}
    params_of: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            t = gm.get_parameter(str(n.target)) if _is_param(gm, str(n.target)) else None
            params_of[n.name] = t.numel() if t is not None else 0

    found: list[Block] = []
    names: dict[str, int] = defaultdict(int)
    for node in gm.graph.nodes:
        if not _is_residual_add(node):
            continue
        a, b = node.args
        candidates = []
        for f, s in ((a, b), (b, a)):
            branch = (nx.ancestors(g, f) | {f}) - (nx.ancestors(g, s) | {s})
            if not branch or any(n.op == "placeholder" for n in branch):
                continue
            if any(u not in branch and u is not node for n in branch for u in n.users):
                continue
            ordered = [n for n in gm.graph.nodes if n in branch]
            flops = sum(cost_of[n.name].flops for n in ordered if n.name in cost_of)
            params = sum(cost_of[n.name].params for n in ordered if n.name in cost_of)
            params += sum(params_of.get(n.name, 0) for n in ordered)
            candidates.append((flops, params, f, s, ordered))
        if not candidates:
            continue
        flops, params, f, s, ordered = max(candidates, key=lambda c: (c[0], c[1]))
        path = _module_path(node, ordered)
        k = names[path]
        names[path] += 1
        name = path if k == 0 else f"{path}#{k}"
        found.append(Block(name, flops, params, node.name, f.name, s.name, tuple(n.name for n in ordered)))
    return found


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False
