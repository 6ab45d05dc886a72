"""Blocks: residual branches `y = s(x) + f(x)` whose branch f can be removed whole, leaving `y = s(x)`."""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass

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
    checks: tuple[str, ...] = ()  # shape checks on the branch (`torch._assert(h.ndim == 4)`), erased with it


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
    """Every residual add whose one operand is computed only for that add (its branch).

    Node sets are bit masks over the graph order (bit i: the i-th node): each node's ancestors are
    computed once, so a branch, ancestors(f) - ancestors(s), costs a few big-int operations.
    """
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    upstream: list[int] = []  # the node and its ancestors
    for i, n in enumerate(nodes):
        mask = 1 << i
        for a in n.all_input_nodes:
            mask |= upstream[index[a]]
        upstream.append(mask)
    used_by = [sum(1 << index[u] for u in n.users) for n in nodes]
    live = upstream[index[next(n for n in reversed(nodes) if n.op == "output")]]
    # values that reach no output and only check metadata (`h.ndim`, `torch._assert`): a branch they read
    # can still go, with them
    checks = sum(1 << i for i, n in enumerate(nodes) if not live >> i & 1 and _is_check(n))
    inputs = sum(1 << i for i, n in enumerate(nodes) if n.op == "placeholder")
    cost_of = {c.node: c for c in costs}
    params_of: dict[str, int] = {}
    for n in nodes:
        if n.op == "get_attr":
            t = gm.get_parameter(str(n.target)) if _is_param(gm, str(n.target)) else None
            params_of[n.name] = t.numel() if t is not None else 0

    found: list[Block] = []
    names: dict[str, int] = defaultdict(int)
    for node in nodes:
        if not _is_residual_add(node):
            continue
        a, b = node.args
        candidates = []
        for f, s in ((a, b), (b, a)):
            branch = upstream[index[f]] & ~upstream[index[s]]
            if not branch or branch & inputs:
                continue
            members = _bits(branch)
            side = sum(1 << i for i in _bits(checks) if upstream[i] & branch)
            inside = branch | side | 1 << index[node]
            if any(used_by[i] & ~inside for i in members + _bits(side)):  # a branch node also used elsewhere
                continue
            ordered = [nodes[i] for i in members]
            flops = sum(cost_of[n.name].flops for n in ordered if n.name in cost_of)
            params = sum(cost_of[n.name].params for n in ordered if n.name in cost_of)
            params += sum(params_of.get(n.name, 0) for n in ordered)
            candidates.append((flops, params, f, s, ordered, tuple(nodes[i].name for i in _bits(side))))
        if not candidates:
            continue
        flops, params, f, s, ordered, side_names = max(candidates, key=lambda c: (c[0], c[1]))
        path = _module_path(node, ordered)
        k = names[path]
        names[path] += 1
        name = path if k == 0 else f"{path}#{k}"
        found.append(
            Block(name, flops, params, node.name, f.name, s.name, tuple(n.name for n in ordered), side_names)
        )
    return found


def _is_check(node: fx.Node) -> bool:
    """A metadata read or an assert: no tensor value, nothing written."""
    if node.op == "call_function" and node.target is torch._assert:
        return True
    return node.op in ("call_function", "call_method") and not isinstance(node.meta.get(META_KEY), TensorSpec)


def _bits(mask: int) -> list[int]:
    """The positions of the set bits of `mask`, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False
