"""Channel counts read as values (`h.shape[1]`, `h.size(1)`, `h.numel()`, `len(h)`): where they may go.

Pruning changes such a count. It keeps the model's meaning only as the size argument of a layout op on a
tensor with the same channels (`h.view(b, h.size(1) // g, g, -1)`): there it is re-read at run time and
equals the new count. Anywhere else (arithmetic with tensors, an output, a comparison, another tensor's
view) it changes what the model computes, so the channels it counts are pinned.

A taint is the set of dependency-graph tensors whose channel count a value depends on; a shape tuple has
one taint per dim.
"""

from __future__ import annotations

import builtins
import math
import operator

import torch
import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import arg, flat, norm_dim, op_name

Taint = frozenset[str] | tuple[frozenset[str], ...]

NONE: frozenset[str] = frozenset()

# plain scalar arithmetic: the result counts what its operands count
_ARITHMETIC = frozenset(
    {
        operator.add,
        operator.sub,
        operator.mul,
        operator.floordiv,
        operator.truediv,
        operator.mod,
        operator.pow,
        operator.neg,
        builtins.int,
        builtins.float,
        math.sqrt,
        math.floor,
        math.ceil,
    }
)


def _union(t: Taint) -> frozenset[str]:
    return t if isinstance(t, frozenset) else frozenset().union(*t)


def _read_kind(node: fx.Node) -> str | None:
    """Which shape read `node` is ("shape", "len", "size" or "numel"), or None: by target only (cheap)."""
    if node.op == "call_function":
        if node.target is builtins.getattr and node.args[1:2] == ("shape",):
            return "shape"
        return "len" if node.target is builtins.len else "numel" if node.target is torch.numel else None
    if node.op == "call_method":
        return {"size": "size", "numel": "numel", "nelement": "numel"}.get(str(node.target))
    return None


def _read(dg: DependencyGraph, node: fx.Node) -> Taint | None:
    """The taint of a node that reads a tensor's shape, or None if it reads none."""
    kind = _read_kind(node)
    xi = dg.info(node.args[0]) if kind is not None and node.args else None
    if xi is None:
        return None
    nd, counted = len(xi.shape), frozenset({xi.key}) if xi.size else NONE
    per_dim = tuple(counted if d in xi.cdims else NONE for d in range(nd))
    if kind == "shape":
        return per_dim
    if kind == "len":
        return per_dim[0] if nd else NONE
    if kind == "size":
        d = arg(node, 1, "dim")
        return per_dim if d is None else per_dim[norm_dim(int(d), nd)]
    return counted


def track_counts(dg: DependencyGraph, node: fx.Node, taints: dict[str, Taint], is_layout: bool) -> None:
    """Record the taint of `node` (a shape read or arithmetic on counts) or check the counts it uses."""
    read = _read(dg, node)
    if read is not None:
        taints[node.name] = read
        return
    used = [a for a in flat((node.args, node.kwargs)) if isinstance(a, fx.Node) and a.name in taints]
    if not used:
        return
    src = node.args[0] if node.args else None
    if (
        node.op == "call_function"
        and node.target is operator.getitem
        and isinstance(src, fx.Node)
        and src in used
    ):
        t, idx = taints[src.name], dg.value(node.args[1])
        if isinstance(t, tuple) and isinstance(idx, int):
            taints[node.name] = t[idx]
        elif isinstance(t, tuple) and isinstance(idx, slice):
            taints[node.name] = t[idx]
        else:
            taints[node.name] = _union(t)
        return
    if node.op == "call_function" and node.target in _ARITHMETIC:
        taints[node.name] = frozenset().union(*(_union(taints[a.name]) for a in used))
        return
    sources = frozenset().union(*(_union(taints[a.name]) for a in used))
    if not sources:
        return
    x = node.args[0] if node.args else None
    xi = dg.info(x)
    if is_layout and xi is not None and x not in used:
        # a size argument of a view of `x`: valid after pruning when x has the counted channels
        for src in sources - {xi.key}:
            if dg.tensors[src].size == xi.size:
                dg.same_count(src, xi.key, node.name)
            else:
                reason = f"{op_name(node, dg)} shapes {xi.key} with the channel count of {src}"
                dg.pin(src, reason)
                dg.pin(xi.key, reason)
        return
    where = "the model output" if node.op == "output" else op_name(node, dg)
    for src in sorted(sources):
        dg.pin(src, f"the channel count of {src} is read as a value by {where}")
