"""Reductions and normalisations: channelwise unless they reduce or normalise over the channel dim."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import (
    Rule,
    add_site,
    arg,
    new_tensor,
    norm_dim,
    op_name,
    out_spec,
    unknown,
)
from graphprune.analysis.rules.elementwise import identity
from graphprune.analysis.sites import Site, SiteKind


def reduce_site(dg: DependencyGraph, node: fx.Node, xi: TensorInfo) -> None:
    """`node` sums over the channels of `xi` (one channel dim): a removed channel, zeroed in the reference,
    adds nothing, and the op itself needs no rewrite (it sums over what is left)."""
    add_site(
        dg, node, Site(f"{node.name}:reduce:{xi.key}", SiteKind.REDUCE, xi.key, node.name, dim=xi.cdims[0])
    )


def _reduce(dg: DependencyGraph, node: fx.Node, dims: Any, keepdim: bool, zero_adds_nothing: bool) -> None:
    """A reduction over `dims` (None: all). Over the channels it pins, unless a zero channel adds nothing
    to its result (`zero_adds_nothing`: a sum of |x|^p with p >= 0, not a mean, max or count)."""
    x = node.args[0]
    xi = dg.info(x)
    spec = out_spec(node)
    if xi is None or not xi.size:
        new_tensor(dg, node, ())
        return
    nd = len(xi.shape)
    if dims is None:
        dims_t: tuple[int, ...] = tuple(range(nd))
    else:
        dims_t = tuple(norm_dim(int(d), nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
    if set(dims_t) & set(xi.cdims) and not set(xi.cdims) <= set(dims_t):
        _reduce_fibers(dg, node, xi, dims_t, keepdim)
        return
    if set(dims_t) & set(xi.cdims):
        if zero_adds_nothing and len(xi.cdims) == 1:
            reduce_site(dg, node, xi)
        else:
            dg.pin(xi.key, f"{op_name(node, dg)} reduces over the channel dim")
        new_tensor(dg, node, ())
        return
    cdims = xi.cdims if keepdim else tuple(d - sum(1 for r in dims_t if r < d) for d in xi.cdims)
    if tuple(spec.shape[d] for d in cdims) != xi.grid:
        unknown(dg, node, f"{op_name(node, dg)} changes the channel shape")
        return
    out = new_tensor(dg, node, cdims)
    dg.identity(xi.key, out.key, node.name)


def _fibers(xi: TensorInfo, dims: tuple[int, ...]) -> np.ndarray:
    """Channel positions of `xi` as rows: one row per position of its channel dims not in `dims`, holding
    the positions along its channel dims in `dims` (the fiber an op over `dims` reads together)."""
    along = [k for k, d in enumerate(xi.cdims) if d in dims]
    other = [k for k, d in enumerate(xi.cdims) if d not in dims]
    grid = np.arange(xi.size).reshape(xi.grid)
    n = int(np.prod([xi.grid[k] for k in along]))
    return grid.transpose(other + along).reshape(-1, n)


def _reduce_fibers(
    dg: DependencyGraph, node: fx.Node, xi: TensorInfo, dims: tuple[int, ...], keepdim: bool
) -> None:
    """A reduction over some of several channel dims (ResNeSt's split-attention `x.sum(1)` over the radix
    of a (radix, C) channel grid): output channel j reads its fiber, positions (r, j) for every r, and
    nothing else, so j goes with its whole fiber: one coupling per r, and any reduction stays exact."""
    spec = out_spec(node)
    kept = tuple(d for d in xi.cdims if d not in dims)
    cdims = kept if keepdim else tuple(d - sum(1 for r in dims if r < d) for d in kept)
    fibers = _fibers(xi, dims)
    if tuple(spec.shape[d] for d in cdims) != tuple(xi.shape[d] for d in kept):
        unknown(dg, node, f"{op_name(node, dg)} changes the channel shape")
        return
    out = new_tensor(dg, node, cdims)
    for r in range(fibers.shape[1]):
        dg.couple(xi.key, out.key, fibers[:, r], node.name)


def reduction(dg: DependencyGraph, node: fx.Node) -> None:
    """mean, amax, amin, std, var: channelwise over other dims; over the channels a zero channel counts
    (a mean divides by the count, a max of negatives is changed by a zero), so the channels pin."""
    dims = dg.value(arg(node, 1, "dim", None))
    _reduce(dg, node, dims, bool(dg.value(arg(node, 2, "keepdim", False))), zero_adds_nothing=False)


def summation(dg: DependencyGraph, node: fx.Node) -> None:
    """sum: over the channels, a zeroed channel adds 0, so removing it is exact (`(h * h).sum(1)`)."""
    dims = dg.value(arg(node, 1, "dim", None))
    _reduce(dg, node, dims, bool(dg.value(arg(node, 2, "keepdim", False))), zero_adds_nothing=True)


def _sums_powers(p: Any) -> bool:
    """Whether a p-norm is a function of sum |x|^p (or max |x|) with a zero entry adding nothing: p >= 0
    (p = inf: max |x| >= 0; p = 0: the count of non-zeros; "fro": p = 2). Not p < 0 or "nuc"."""
    return p == "fro" or (isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0)


def vector_norm(dg: DependencyGraph, node: fx.Node) -> None:
    """torch.linalg.vector_norm(x, ord=2, dim=None, keepdim=False)."""
    p = dg.value(arg(node, 1, "ord", 2))
    dims = dg.value(arg(node, 2, "dim", None))
    _reduce(dg, node, dims, bool(dg.value(arg(node, 3, "keepdim", False))), zero_adds_nothing=_sums_powers(p))


def p_norm(dg: DependencyGraph, node: fx.Node) -> None:
    """torch.norm(x, p="fro", dim=None, keepdim=False) and Tensor.norm: a vector norm over `dim`."""
    p = dg.value(arg(node, 1, "p", "fro"))
    dims = dg.value(arg(node, 2, "dim", None))
    _reduce(dg, node, dims, bool(dg.value(arg(node, 3, "keepdim", False))), zero_adds_nothing=_sums_powers(p))


def normalize(dg: DependencyGraph, node: fx.Node) -> None:
    """F.normalize(x, p=2, dim=1): x / ||x||_p over `dim`. Channelwise over other dims; over the channels
    the norm is a sum a zeroed channel adds nothing to, so channel c stays channel c and the input gets a
    REDUCE site (the reference zeroes the removed channels before normalising)."""
    xi = dg.info(node.args[0])
    p = dg.value(arg(node, 1, "p", 2.0))
    d = dg.value(arg(node, 2, "dim", 1))
    identity(dg, node)
    if xi is None or not xi.size or not isinstance(d, int) or norm_dim(d, len(xi.shape)) not in xi.cdims:
        return
    if _sums_powers(p) and len(xi.cdims) == 1 and dg.info(node) is not None:
        reduce_site(dg, node, xi)
    else:
        dg.pin(xi.key, f"normalize over the channel dim with p={p!r}")


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
        elif norm_dim(d, len(xi.shape)) in xi.cdims and len(xi.cdims) > 1 and dg.info(node) is not None:
            # over one of several channel dims (ResNeSt's radix softmax): each fiber is normalised alone,
            # so a fiber removed whole leaves the others as they were
            out = dg.info(node)
            assert out is not None
            dg.tie(out.key, _fibers(out, (norm_dim(d, len(xi.shape)),)))
        elif norm_dim(d, len(xi.shape)) in xi.cdims:
            dg.pin(xi.key, f"{name} normalises over the channel dim")

    return rule


def layer_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    """F.layer_norm (torchvision's LayerNorm2d calls it between permutes): its weight and bias operands are
    sliced like any per-channel operand; over the channels it pins, or with `prune_layernorm` it is a
    LAYER_NORM site whose literal `normalized_shape` is rewritten (not lossless)."""
    xi = dg.info(node.args[0])
    literal = arg(node, 1, "normalized_shape")
    shape = dg.value(literal)
    identity(dg, node)
    n = len(shape) if isinstance(shape, (list, tuple)) else 1
    out = dg.info(node)
    if xi is not None and xi.size and any(d >= len(xi.shape) - n for d in xi.cdims):
        literal_int = isinstance(literal, int) or (
            isinstance(literal, (list, tuple)) and all(isinstance(s, int) for s in literal)
        )
        supported = n == 1 and literal_int and xi.cdims == (len(xi.shape) - 1,) and out is not None
        if dg.prune_layernorm and supported and out is not None:
            add_site(dg, node, Site(f"{node.name}:layer_norm", SiteKind.LAYER_NORM, out.key, node.name))
            return
        dg.pin(
            xi.key,
            "layer_norm normalises over the channel dim; removing a channel changes its statistics"
            + (" (--prune-layernorm opts in, not lossless)" if supported else ""),
        )
