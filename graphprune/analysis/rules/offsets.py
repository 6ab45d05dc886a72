"""Ops that move channels to offsets: cat, stack, split / chunk, and F.pad on the channel dim."""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import (
    add_site,
    arg,
    new_tensor,
    norm_dim,
    out_spec,
    unknown,
)
from graphprune.analysis.rules.elementwise import identity
from graphprune.analysis.sites import Site, SiteKind
from graphprune.trace import META_KEY


def _operands(
    dg: DependencyGraph, node: fx.Node
) -> tuple[list[fx.Node], list[TensorInfo | None], list[TensorInfo], int]:
    """cat's and stack's operands, their channel layouts (all, and those that have channels) and the
    normalised dim; an output without channels is made here when no operand has any."""
    parts = list(arg(node, 0, "tensors"))
    dim = norm_dim(int(dg.value(arg(node, 1, "dim", 0))), len(out_spec(node).shape))
    infos = [dg.info(p) for p in parts]
    with_layout = [i for i in infos if i is not None and i.size]
    if not with_layout:
        new_tensor(dg, node, ())
    return parts, infos, with_layout, dim


def cat(dg: DependencyGraph, node: fx.Node) -> None:
    parts, infos, with_layout, dim = _operands(dg, node)
    if not with_layout:
        return
    cdims = with_layout[0].cdims
    if any(i.cdims != cdims for i in with_layout):
        unknown(dg, node, "cat of tensors with different channel dims")
        return
    if dim not in cdims:
        out = new_tensor(dg, node, cdims)
        for p, i in zip(parts, infos, strict=False):
            if i is not None and i.size and i.grid == out.grid:
                dg.identity(i.key, out.key, node.name)
            else:
                dg.pin(out.key, f"cat operand {getattr(p, 'name', p)} has no matching channel layout")
        return
    if cdims != (dim,):
        unknown(dg, node, "cat along one of several channel dims")
        return
    out = new_tensor(dg, node, cdims)
    offset = 0
    for p, i in zip(parts, infos, strict=False):
        n = p.meta[META_KEY].shape[dim]
        if i is not None and i.size == n:
            index_map = np.full(out.size, -1)
            index_map[offset : offset + n] = np.arange(n)
            dg.couple(i.key, out.key, index_map, node.name)
        else:
            dg.pin(out.key, f"cat operand {p.name} has no channel layout", range(offset, offset + n))
        offset += n


def stack(dg: DependencyGraph, node: fx.Node) -> None:
    """torch.stack(tensors, dim): a new dim before `dim`; every operand's channel c is the output's
    channel c (at the operand's index along the new dim), so all operands share their channels.
    (SelectiveKernel stacks its paths, then sums or softmaxes over them.)"""
    parts, _, with_layout, dim = _operands(dg, node)
    if not with_layout:
        return
    cdims = with_layout[0].cdims
    if len(with_layout) != len(parts) or any(
        i.cdims != cdims or i.grid != with_layout[0].grid for i in with_layout
    ):
        unknown(dg, node, "stack of tensors with different channel layouts")
        return
    out = new_tensor(dg, node, tuple(c + 1 if c >= dim else c for c in cdims))
    for i in with_layout:
        dg.identity(i.key, out.key, node.name)


def split(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    specs = node.meta[META_KEY]
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if xi is None or not xi.size:
        outs = tuple(dg.add_tensor(f"{node.name}[{i}]", s.shape, ()) for i, s in enumerate(specs))
        dg.node_tensors[node.name] = outs
        return
    dim = norm_dim(int(dg.value(arg(node, 2, "dim", 0))), len(xi.shape))
    if dim not in xi.cdims:
        outs = tuple(dg.add_tensor(f"{node.name}[{i}]", s.shape, xi.cdims) for i, s in enumerate(specs))
        for o in outs:
            if o.grid == xi.grid:
                dg.identity(xi.key, o.key, node.name)
            else:
                dg.pin(o.key, f"{name} changed the channel shape")
        dg.node_tensors[node.name] = outs
        return
    if xi.cdims != (dim,):
        unknown(dg, node, f"{name} along one of several channel dims")
        return
    sizes = tuple(int(s.shape[dim]) for s in specs)
    outs_l: list[TensorInfo] = []
    offset = 0
    for i, (s, n) in enumerate(zip(specs, sizes, strict=False)):
        o = dg.add_tensor(f"{node.name}[{i}]", s.shape, (dim,))
        dg.couple(xi.key, o.key, np.arange(offset, offset + n), node.name)
        outs_l.append(o)
        offset += n
    dg.node_tensors[node.name] = tuple(outs_l)
    add_site(dg, node, Site(f"{node.name}:split", SiteKind.SPLIT, xi.key, node.name, info=sizes))


def pad(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    raw = arg(node, 1, "pad")
    amounts = dg.value(raw)
    mode = dg.value(arg(node, 2, "mode", "constant"))
    if xi is None or not xi.size:
        new_tensor(dg, node, ())
        return
    nd = len(xi.shape)
    touched = [
        (i, nd - 1 - i) for i in range(len(amounts) // 2) if (amounts[2 * i], amounts[2 * i + 1]) != (0, 0)
    ]
    touched_c = [(i, d) for i, d in touched if d in xi.cdims]
    if not touched_c:
        identity(dg, node)
        return
    i, d = touched_c[0]
    front, back = amounts[2 * i], amounts[2 * i + 1]
    literal = isinstance(raw, (list, tuple)) and all(isinstance(raw[k], int) for k in (2 * i, 2 * i + 1))
    if len(touched_c) > 1 or xi.cdims != (d,) or mode != "constant" or front < 0 or back < 0 or not literal:
        unknown(dg, node, "F.pad on the channel dim must be constant, non-negative and literal")
        return
    out = new_tensor(dg, node, xi.cdims)
    index_map = np.concatenate([np.full(front, -1), np.arange(xi.size), np.full(back, -1)])
    dg.couple(xi.key, out.key, index_map, node.name)
    zeros = tuple(range(front)) + tuple(range(front + xi.size, out.size))
    site = Site(
        f"{node.name}:pad", SiteKind.PAD, out.key, node.name, positions=zeros, info=(2 * i, front, back)
    )
    add_site(dg, node, site)
