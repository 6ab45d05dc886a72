"""Channelwise ops: unary ops keep channels; broadcasting n-ary ops couple operands position by position."""

from __future__ import annotations

import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import (
    add_site,
    new_tensor,
    op_name,
    out_spec,
    tensor_inputs,
    unknown,
)
from graphprune.analysis.sites import Site, SiteKind
from graphprune.trace import META_KEY

# methods whose other tensor argument only gives a dtype, device or shape
_METADATA_OPERAND_METHODS = frozenset({"to", "type_as", "expand_as", "view_as", "reshape_as"})


def identity(dg: DependencyGraph, node: fx.Node) -> None:
    """Channelwise op: output channel c is input channel c.

    An op with further tensor operands (`clamp(h, min=t)`, `h.pow(t)`) is n-ary: its operands are coupled,
    sliced or pinned by `elementwise`, like the operands of an add.
    """
    operands = [a for a in tensor_inputs(node) if dg.is_tensor(a)]
    if len(operands) > 1 and not (node.op == "call_method" and node.target in _METADATA_OPERAND_METHODS):
        elementwise(dg, node)
        return
    x = operands[0] if operands else None
    xi = dg.info(x)
    spec = out_spec(node)
    if xi is None or xi.size == 0:
        new_tensor(dg, node, ())
        return
    if len(spec.shape) != len(xi.shape) or tuple(spec.shape[d] for d in xi.cdims) != xi.grid:
        unknown(dg, node, f"{op_name(node, dg)} changes the channel shape")
        return
    out = new_tensor(dg, node, xi.cdims)
    dg.identity(xi.key, out.key, node.name)


def elementwise(dg: DependencyGraph, node: fx.Node) -> None:
    """Broadcasting n-ary op: operands with the same channels are coupled position by position."""
    spec = out_spec(node)
    nd = len(spec.shape)
    operands = [a for a in tensor_inputs(node) if dg.is_tensor(a)]

    def mapped(a: fx.Node, info: TensorInfo) -> tuple[int, ...]:
        shift = nd - len(info.shape)
        return tuple(d + shift for d in info.cdims)

    out_cdims: tuple[int, ...] = ()
    for a in operands:
        info = dg.info(a)
        if info is not None and info.size:
            m = mapped(a, info)
            if tuple(spec.shape[d] for d in m) == info.grid and info.size > 1:
                out_cdims = m
                break
    if not out_cdims:
        for a in operands:
            info = dg.info(a)
            if info is not None and info.size:
                m = mapped(a, info)
                if tuple(spec.shape[d] for d in m) == info.grid:
                    out_cdims = m
                    break
    out = new_tensor(dg, node, out_cdims)
    where = op_name(node, dg)
    for a in operands:
        info = dg.info(a)
        a_shape = a.meta[META_KEY].shape
        shift = nd - len(a_shape)
        if info is not None and info.size:
            m = mapped(a, info)
            if m == out_cdims and info.grid == out.grid:
                dg.identity(info.key, out.key, node.name)
            elif all(a_shape[d - shift] == 1 for d in out_cdims if d - shift >= 0) and out.size:
                dg.pin(info.key, f"{a.name} is broadcast along the channels of {where}")
            else:
                dg.pin(info.key, f"operands of {where} disagree on the channel dim")
                dg.pin(out.key, f"operands of {where} disagree on the channel dim")
            continue
        sizes = [a_shape[d - shift] if d - shift >= 0 else 1 for d in out_cdims]
        if all(s == 1 for s in sizes):
            continue
        if info is not None and info.const and len(out_cdims) == 1 and a.op == "get_attr":
            site = Site(
                f"{a.target}:param", SiteKind.PARAM, out.key, a.name, str(a.target), out_cdims[0] - shift
            )
            add_site(dg, node, site)
            dg.param_readers.setdefault(str(a.target), set()).add(node.name)
        else:
            dg.pin(out.key, f"operand {a.name} of {where} varies along channels but has no channel layout")
