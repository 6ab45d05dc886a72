"""Reductions and normalisations: channelwise unless they reduce or normalise over the channel dim."""

from __future__ import annotations

import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import (
    Rule,
    arg,
    new_tensor,
    norm_dim,
    op_name,
    out_spec,
    unknown,
)
from graphprune.analysis.rules.elementwise import identity


def reduction(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    spec = out_spec(node)
    dims = dg.value(arg(node, 1, "dim", None))
    keepdim = bool(dg.value(arg(node, 2, "keepdim", False)))
    if xi is None or not xi.size:
        new_tensor(dg, node, ())
        return
    nd = len(xi.shape)
    if dims is None:
        dims_t: tuple[int, ...] = tuple(range(nd))
    else:
        dims_t = tuple(norm_dim(int(d), nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
    if set(dims_t) & set(xi.cdims):
        dg.pin(xi.key, f"{op_name(node, dg)} reduces over the channel dim")
        new_tensor(dg, node, ())
        return
    cdims = xi.cdims if keepdim else tuple(d - sum(1 for r in dims_t if r < d) for d in xi.cdims)
    if tuple(spec.shape[d] for d in cdims) != xi.grid:
        unknown(dg, node, f"{op_name(node, dg)} changes the channel shape")
        return
    out = new_tensor(dg, node, cdims)
    dg.identity(xi.key, out.key, node.name)


def windowed(spatial: int | None) -> Rule:
    """Pooling and resampling: they mix values over the last `spatial` dims (None: every dim after dim 1).

    Channelwise only when no channel dim is among them: `max_pool2d` on a channels-last tensor or
    `avg_pool1d` over features pools across channels. The layout decides, not the op's name.
    """

    def rule(dg: DependencyGraph, node: fx.Node) -> None:
        xi = dg.info(node.args[0])
        if xi is not None and xi.size:
            nd = len(xi.shape)
            first = 2 if spatial is None else nd - spatial
            if any(d >= first for d in xi.cdims):
                unknown(dg, node, f"{op_name(node, dg)} pools across the channel dim")
                return
        identity(dg, node)

    return rule


def dim_sensitive(dim_arg: int, name: str) -> Rule:
    """Softmax-like ops: channelwise unless they normalise over the channel dim."""

    def rule(dg: DependencyGraph, node: fx.Node) -> None:
        xi = dg.info(node.args[0])
        d = dg.value(arg(node, dim_arg, "dim", None))
        identity(dg, node)
        if xi is None or not xi.size:
            return
        if not isinstance(d, int):
            dg.pin(xi.key, f"{name} over a dim not known at trace time ({d!r})")
        elif norm_dim(d, len(xi.shape)) in xi.cdims:
            dg.pin(xi.key, f"{name} normalises over the channel dim")

    return rule


def layer_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    xi = dg.info(node.args[0])
    shape = dg.value(arg(node, 1, "normalized_shape"))
    identity(dg, node)
    n = len(shape) if isinstance(shape, (list, tuple)) else 1
    if xi is not None and xi.size and any(d >= len(xi.shape) - n for d in xi.cdims):
        dg.pin(
            xi.key, "layer_norm normalises over the channel dim; removing a channel changes its statistics"
        )
