"""Layout ops (view, reshape, flatten, permute, indexing): followed by running them on channel positions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import (
    add_site,
    new_tensor,
    op_name,
    out_spec,
    unknown,
)
from graphprune.analysis.sites import Site, SiteKind
from graphprune.trace import META_KEY, TensorSpec


def probe(
    dg: DependencyGraph, node: fx.Node, xi: TensorInfo, fn: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Layout op (view, permute, flatten, indexing...): run it on a tensor holding channel positions."""
    spec = out_spec(node)
    if xi.size <= 1:
        if xi.size == 1:
            dg.pin(xi.key, f"single channel through {op_name(node, dg)}")
        new_tensor(dg, node, ())
        return
    view = [1] * len(xi.shape)
    for d, g in zip(xi.cdims, xi.grid, strict=False):
        view[d] = g
    probe = torch.arange(xi.size).reshape(view).expand(xi.shape).contiguous()
    try:
        out = fn(probe)
    except Exception:  # noqa: BLE001 - an op the probe cannot run has no known layout
        unknown(dg, node, f"cannot follow channels through {op_name(node, dg)}")
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != spec.shape:
        unknown(dg, node, f"cannot follow channels through {op_name(node, dg)}")
        return
    cdims = tuple(
        d
        for d in range(out.ndim)
        if out.shape[d] > 1 and not torch.equal(out, out.narrow(d, 0, 1).expand_as(out))
    )
    grid_index = tuple(slice(None) if d in cdims else 0 for d in range(out.ndim))
    grid = out[grid_index]
    oview = [out.shape[d] if d in cdims else 1 for d in range(out.ndim)]
    if not cdims or not torch.equal(out, grid.reshape(oview).expand_as(out)):
        unknown(dg, node, f"{op_name(node, dg)} mixes channels with other dims")
        return
    info = new_tensor(dg, node, cdims)
    dg.couple(xi.key, info.key, grid.reshape(-1).numpy(), node.name)


def dim_permutation(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], nd: int) -> list[int] | None:
    """For `permute` and `transpose`, output dim k is input dim perm[k]; None for other ops or odd args."""
    if name == "permute":
        dims = kwargs.get("dims", args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args)
    elif name == "transpose" and len(args) + len(kwargs) == 2:
        d0, d1 = (*args, *(kwargs[k] for k in ("dim0", "dim1") if k in kwargs))
        if not isinstance(d0, int) or not isinstance(d1, int) or not -nd <= min(d0, d1) <= max(d0, d1) < nd:
            return None
        dims = list(range(nd))
        dims[d0 % nd], dims[d1 % nd] = dims[d1 % nd], dims[d0 % nd]
    else:
        return None
    if not all(isinstance(d, int) for d in dims) or len(dims) != nd:
        return None
    perm = [d % nd if -nd <= d < nd else -1 for d in dims]
    return perm if sorted(perm) == list(range(nd)) else None


def permuted(dg: DependencyGraph, node: fx.Node, xi: TensorInfo, perm: list[int]) -> None:
    """A dim permutation moves the channel dims whole: the output's channel grid is the input's with its
    dims in their new order (every channel dim of `xi` longer than 1, so each stays a channel dim)."""
    order = sorted(xi.cdims, key=perm.index)  # the input's channel dims, in output order
    cdims = tuple(perm.index(d) for d in order)
    grid = np.arange(xi.size).reshape(xi.grid).transpose([xi.cdims.index(d) for d in order])
    info = new_tensor(dg, node, cdims)
    dg.couple(xi.key, info.key, grid.reshape(-1), node.name)


def shape_args(node: fx.Node) -> list[Any]:
    rest = list(node.args[1:])
    if "shape" in node.kwargs:
        rest = [node.kwargs["shape"]]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return rest


def tie_literal_dims(dg: DependencyGraph, node: fx.Node, literal: list[bool]) -> None:
    """A view that fixes some channel dims to constant sizes: channels go together across those dims."""
    info = dg.info(node)
    if info is None or not info.size:
        return
    dyn = [i for i, d in enumerate(info.cdims) if not literal[d]]
    if len(dyn) == len(info.cdims):
        return
    if len(dyn) != 1:
        dg.pin(info.key, f"{op_name(node, dg)} fixes the channel count to a constant")
        return
    rows = np.moveaxis(np.arange(info.size).reshape(info.grid), dyn[0], 0).reshape(info.grid[dyn[0]], -1)
    dg.tie(info.key, rows)


def layout(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    if xi is None:
        new_tensor(dg, node, ())
        return
    args = dg.value(node.args[1:])
    kwargs = dg.value(dict(node.kwargs))
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    perm = dim_permutation(str(name), args, kwargs, len(xi.shape))
    if perm is not None and xi.size > 1 and all(g > 1 for g in xi.grid):
        permuted(dg, node, xi, perm)  # what the probe finds, without running the op on a full tensor
    elif node.op == "call_method":
        method = str(node.target)
        if method == "expand_as":
            shape = out_spec(node).shape
            probe(dg, node, xi, lambda p: p.expand(shape))
        else:
            probe(dg, node, xi, lambda p: getattr(p, method)(*args, **kwargs))
    else:
        fn = node.target
        assert callable(fn)
        probe(dg, node, xi, lambda p: fn(p, *args, **kwargs))
    if dg.info(node) is None:
        return
    if name in ("view", "reshape"):
        sizes = shape_args(node)
        literal = [isinstance(s, int) and s != -1 for s in sizes]
        out = dg.info(node)
        if (
            out is not None
            and len(out.cdims) == 1
            and literal[out.cdims[0]]
            and sizes[out.cdims[0]] == out.size
        ):
            # `h.view(b, 8, -1)` with 8 channels: the literal is the count, rewritten to the new count
            literal[out.cdims[0]] = False
            site = Site(f"{node.name}:view", SiteKind.VIEW, out.key, node.name, info=(out.cdims[0],))
            add_site(dg, node, site)
        tie_literal_dims(dg, node, literal)
    elif name == "expand":
        sizes = shape_args(node)
        tie_literal_dims(dg, node, [False] * len(sizes))
        out = dg.info(node)
        if out is not None and any(
            isinstance(sizes[d], int) and sizes[d] != -1 for d in out.cdims if d < len(sizes)
        ):
            dg.pin(out.key, "expand fixes the channel count to a constant")
    elif name == "squeeze" and len(node.args) == 1 and not node.kwargs:
        dg.pin(xi.key, "squeeze() without a dim could drop the channel dim once channels are pruned")


def getitem(dg: DependencyGraph, node: fx.Node) -> None:
    src, idx = node.args[0], node.args[1]
    spec = dg.spec(src)
    if isinstance(spec, (tuple, list)):
        parent = dg.node_tensors.get(src.name) if isinstance(src, fx.Node) else None
        i = dg.value(idx)
        elem = parent[i] if isinstance(parent, tuple) and isinstance(i, int) else None
        if not isinstance(node.meta.get(META_KEY), TensorSpec):
            dg.node_tensors[node.name] = None
            return
        if elem is None or not elem.size:
            new_tensor(dg, node, ())
            return
        out = new_tensor(dg, node, elem.cdims)
        dg.identity(elem.key, out.key, node.name)
        return
    if not isinstance(spec, TensorSpec):
        dg.node_tensors[node.name] = None
        return
    xi = dg.info(src)
    if xi is None:
        new_tensor(dg, node, ())
        return
    value = dg.value(idx)
    items = list(value) if isinstance(value, tuple) else [value]
    if any(isinstance(v, TensorSpec) or isinstance(v, (list, torch.Tensor)) for v in items):
        unknown(dg, node, "advanced (tensor) indexing")
        return
    n_consuming = sum(1 for v in items if v is not None and v is not Ellipsis)
    expanded: list[tuple[int, Any]] = []  # (index into items, element) per input dim
    for k, v in enumerate(items):
        if v is Ellipsis:
            expanded.extend((k, slice(None)) for _ in range(len(xi.shape) - n_consuming))
        elif v is not None:
            expanded.append((k, v))
    expanded.extend((-1, slice(None)) for _ in range(len(xi.shape) - len(expanded)))
    slice_site: tuple[int, int, int] | None = None
    for d in xi.cdims:
        k, v = expanded[d]
        if isinstance(v, int):
            unknown(dg, node, "indexing selects a single channel")
            return
        size = xi.shape[d]
        start, stop, step = v.indices(size)
        if (start, stop, step) == (0, size, 1):
            continue
        if step != 1 or len(xi.cdims) != 1 or k < 0:
            unknown(dg, node, "strided or multi-dim channel slice")
            return
        slice_site = (k, start, stop)
    probe(dg, node, xi, lambda p: p[value])
    if slice_site is not None and dg.info(node) is not None:
        k, start, stop = slice_site
        site = Site(f"{node.name}:slice", SiteKind.SLICE, xi.key, node.name, info=(k, start, stop))
        add_site(dg, node, site)
