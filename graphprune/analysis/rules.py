"""Channel rules: how each op maps, couples, ties or pins the channels of its tensors.

A rule reads the recorded shapes of a node and writes to the DependencyGraph: the node's output tensors,
coupling edges with index maps, ties, pins and rewrite sites. An op without a rule pins every channel it
touches, with the reason: graphprune never guesses that an unknown op is elementwise.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.sites import Site, SiteKind
from graphprune.trace import META_KEY, TensorSpec

Rule = Callable[[DependencyGraph, fx.Node], None]
ModuleRule = Callable[[DependencyGraph, fx.Node, nn.Module], None]


# --------------------------------------------------------------------------- helpers
def _flat(args: Any) -> Iterator[Any]:
    if isinstance(args, (list, tuple)):
        for a in args:
            yield from _flat(a)
    elif isinstance(args, dict):
        for a in args.values():
            yield from _flat(a)
    elif isinstance(args, slice):
        yield from _flat((args.start, args.stop, args.step))
    else:
        yield args


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in _flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _out_spec(node: fx.Node) -> TensorSpec:
    spec = node.meta[META_KEY]
    assert isinstance(spec, TensorSpec)
    return spec


def _new(dg: DependencyGraph, node: fx.Node, cdims: tuple[int, ...], key: str | None = None) -> TensorInfo:
    spec = _out_spec(node) if key is None else None
    shape = spec.shape if spec is not None else ()
    info = dg.add_tensor(key or node.name, shape, cdims)
    if key is None:
        dg.node_tensors[node.name] = info
    return info


def _norm_dim(d: int, nd: int) -> int:
    return d + nd if d < 0 else d


def unknown(dg: DependencyGraph, node: fx.Node, reason: str) -> None:
    """Pin every channel the node reads; give its outputs fresh, pinned channels."""
    for a in tensor_inputs(node):
        info = dg.info(a)
        if info is not None:
            dg.pin(info.key, reason)
    spec = node.meta.get(META_KEY)
    specs = spec if isinstance(spec, (tuple, list)) else [spec]
    outs: list[TensorInfo | None] = []
    for i, s in enumerate(specs):
        if isinstance(s, TensorSpec):
            key = node.name if not isinstance(spec, (tuple, list)) else f"{node.name}[{i}]"
            info = dg.add_tensor(key, s.shape, (1,) if len(s.shape) >= 2 else ())
            dg.pin(key, reason)
            outs.append(info)
        else:
            outs.append(None)
    if isinstance(spec, (tuple, list)):
        dg.node_tensors[node.name] = tuple(outs)
    else:
        dg.node_tensors[node.name] = outs[0]


def _op_name(node: fx.Node, dg: DependencyGraph) -> str:
    if node.op == "call_module":
        return f"{type(dg.modules[str(node.target)]).__name__} '{node.target}'"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def _add_site(dg: DependencyGraph, node: fx.Node, site: Site) -> None:
    """Add a site; a parameter seen again (a reused module) couples both uses' channels."""
    prev = dg.site_by_key.get(site.key)
    if prev is not None:
        if dg.tensors[prev.tensor].size != dg.tensors[site.tensor].size:
            dg.pin(site.tensor, f"{site.target} is reused with a different channel count")
            dg.pin(prev.tensor, f"{site.target} is reused with a different channel count")
        else:
            dg.identity(prev.tensor, site.tensor, f"reuse of {site.target}")
        return
    dg.add_site(node, site)


# --------------------------------------------------------------------------- basic rules
def identity(dg: DependencyGraph, node: fx.Node) -> None:
    """Channelwise op: output channel c is input channel c."""
    x = next((a for a in tensor_inputs(node) if dg.is_tensor(a)), None)
    xi = dg.info(x)
    spec = _out_spec(node)
    if xi is None or xi.size == 0:
        _new(dg, node, ())
        return
    if len(spec.shape) != len(xi.shape) or tuple(spec.shape[d] for d in xi.cdims) != xi.grid:
        unknown(dg, node, f"{_op_name(node, dg)} changes the channel shape")
        return
    out = _new(dg, node, xi.cdims)
    dg.identity(xi.key, out.key, node.name)


def elementwise(dg: DependencyGraph, node: fx.Node) -> None:
    """Broadcasting n-ary op: operands with the same channels are coupled position by position."""
    spec = _out_spec(node)
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
    out = _new(dg, node, out_cdims)
    where = _op_name(node, dg)
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
            _add_site(dg, node, site)
        else:
            dg.pin(out.key, f"operand {a.name} of {where} varies along channels but has no channel layout")


def _probe(
    dg: DependencyGraph, node: fx.Node, xi: TensorInfo, fn: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Layout op (view, permute, flatten, indexing...): run it on a tensor holding channel positions."""
    spec = _out_spec(node)
    if xi.size <= 1:
        if xi.size == 1:
            dg.pin(xi.key, f"single channel through {_op_name(node, dg)}")
        _new(dg, node, ())
        return
    view = [1] * len(xi.shape)
    for d, g in zip(xi.cdims, xi.grid, strict=False):
        view[d] = g
    probe = torch.arange(xi.size).reshape(view).expand(xi.shape).contiguous()
    try:
        out = fn(probe)
    except Exception:  # noqa: BLE001 - an op the probe cannot run has no known layout
        unknown(dg, node, f"cannot follow channels through {_op_name(node, dg)}")
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != spec.shape:
        unknown(dg, node, f"cannot follow channels through {_op_name(node, dg)}")
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
        unknown(dg, node, f"{_op_name(node, dg)} mixes channels with other dims")
        return
    info = _new(dg, node, cdims)
    dg.couple(xi.key, info.key, grid.reshape(-1).numpy(), node.name)


def _shape_args(node: fx.Node) -> list[Any]:
    rest = list(node.args[1:])
    if "shape" in node.kwargs:
        rest = [node.kwargs["shape"]]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0])
    return rest


def _tie_literal_dims(dg: DependencyGraph, node: fx.Node, literal: list[bool]) -> None:
    """A view that fixes some channel dims to constant sizes: channels go together across those dims."""
    info = dg.info(node)
    if info is None or not info.size:
        return
    dyn = [i for i, d in enumerate(info.cdims) if not literal[d]]
    if len(dyn) == len(info.cdims):
        return
    if len(dyn) != 1:
        dg.pin(info.key, f"{_op_name(node, dg)} fixes the channel count to a constant")
        return
    rows = np.moveaxis(np.arange(info.size).reshape(info.grid), dyn[0], 0).reshape(info.grid[dyn[0]], -1)
    dg.tie(info.key, rows)


def layout(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    if xi is None:
        _new(dg, node, ())
        return
    args = dg.value(node.args[1:])
    kwargs = dg.value(dict(node.kwargs))
    if node.op == "call_method":
        method = str(node.target)
        if method == "expand_as":
            shape = _out_spec(node).shape
            _probe(dg, node, xi, lambda p: p.expand(shape))
        else:
            _probe(dg, node, xi, lambda p: getattr(p, method)(*args, **kwargs))
    else:
        fn = node.target
        assert callable(fn)
        _probe(dg, node, xi, lambda p: fn(p, *args, **kwargs))
    if dg.info(node) is None:
        return
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name in ("view", "reshape"):
        sizes = _shape_args(node)
        _tie_literal_dims(dg, node, [isinstance(s, int) and s != -1 for s in sizes])
    elif name == "expand":
        sizes = _shape_args(node)
        _tie_literal_dims(dg, node, [False] * len(sizes))
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
            _new(dg, node, ())
            return
        out = _new(dg, node, elem.cdims)
        dg.identity(elem.key, out.key, node.name)
        return
    if not isinstance(spec, TensorSpec):
        dg.node_tensors[node.name] = None
        return
    xi = dg.info(src)
    if xi is None:
        _new(dg, node, ())
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
    _probe(dg, node, xi, lambda p: p[value])
    if slice_site is not None and dg.info(node) is not None:
        k, start, stop = slice_site
        site = Site(f"{node.name}:slice", SiteKind.SLICE, xi.key, node.name, info=(k, start, stop))
        _add_site(dg, node, site)


def cat(dg: DependencyGraph, node: fx.Node) -> None:
    parts = list(_arg(node, 0, "tensors"))
    spec = _out_spec(node)
    dim = _norm_dim(int(dg.value(_arg(node, 1, "dim", 0))), len(spec.shape))
    infos = [dg.info(p) for p in parts]
    with_layout = [i for i in infos if i is not None and i.size]
    if not with_layout:
        _new(dg, node, ())
        return
    cdims = with_layout[0].cdims
    if any(i.cdims != cdims for i in with_layout):
        unknown(dg, node, "cat of tensors with different channel dims")
        return
    if dim not in cdims:
        out = _new(dg, node, cdims)
        for p, i in zip(parts, infos, strict=False):
            if i is not None and i.size and i.grid == out.grid:
                dg.identity(i.key, out.key, node.name)
            else:
                dg.pin(out.key, f"cat operand {getattr(p, 'name', p)} has no matching channel layout")
        return
    if cdims != (dim,):
        unknown(dg, node, "cat along one of several channel dims")
        return
    out = _new(dg, node, cdims)
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


def split(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    specs = node.meta[META_KEY]
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if xi is None or not xi.size:
        outs = tuple(dg.add_tensor(f"{node.name}[{i}]", s.shape, ()) for i, s in enumerate(specs))
        dg.node_tensors[node.name] = outs
        return
    dim = _norm_dim(int(dg.value(_arg(node, 2, "dim", 0))), len(xi.shape))
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
    _add_site(dg, node, Site(f"{node.name}:split", SiteKind.SPLIT, xi.key, node.name, info=sizes))


def reduction(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    spec = _out_spec(node)
    dims = dg.value(_arg(node, 1, "dim", None))
    keepdim = bool(dg.value(_arg(node, 2, "keepdim", False)))
    if xi is None or not xi.size:
        _new(dg, node, ())
        return
    nd = len(xi.shape)
    if dims is None:
        dims_t: tuple[int, ...] = tuple(range(nd))
    else:
        dims_t = tuple(_norm_dim(int(d), nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
    if set(dims_t) & set(xi.cdims):
        dg.pin(xi.key, f"{_op_name(node, dg)} reduces over the channel dim")
        _new(dg, node, ())
        return
    cdims = xi.cdims if keepdim else tuple(d - sum(1 for r in dims_t if r < d) for d in xi.cdims)
    if tuple(spec.shape[d] for d in cdims) != xi.grid:
        unknown(dg, node, f"{_op_name(node, dg)} changes the channel shape")
        return
    out = _new(dg, node, cdims)
    dg.identity(xi.key, out.key, node.name)


def _dim_sensitive(dim_arg: int, name: str) -> Rule:
    """Softmax-like ops: channelwise unless they normalise over the channel dim."""

    def rule(dg: DependencyGraph, node: fx.Node) -> None:
        xi = dg.info(node.args[0])
        d = dg.value(_arg(node, dim_arg, "dim", None))
        identity(dg, node)
        if xi is not None and xi.size and (d is None or _norm_dim(int(d), len(xi.shape)) in xi.cdims):
            dg.pin(xi.key, f"{name} normalises over the channel dim")

    return rule


def layer_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    xi = dg.info(node.args[0])
    shape = dg.value(_arg(node, 1, "normalized_shape"))
    identity(dg, node)
    n = len(shape) if isinstance(shape, (list, tuple)) else 1
    if xi is not None and xi.size and any(d >= len(xi.shape) - n for d in xi.cdims):
        dg.pin(
            xi.key, "layer_norm normalises over the channel dim; removing a channel changes its statistics"
        )


def pad(dg: DependencyGraph, node: fx.Node) -> None:
    x = node.args[0]
    xi = dg.info(x)
    raw = _arg(node, 1, "pad")
    amounts = dg.value(raw)
    mode = dg.value(_arg(node, 2, "mode", "constant"))
    if xi is None or not xi.size:
        _new(dg, node, ())
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
    out = _new(dg, node, xi.cdims)
    index_map = np.concatenate([np.full(front, -1), np.arange(xi.size), np.full(back, -1)])
    dg.couple(xi.key, out.key, index_map, node.name)
    zeros = tuple(range(front)) + tuple(range(front + xi.size, out.size))
    site = Site(
        f"{node.name}:pad", SiteKind.PAD, out.key, node.name, positions=zeros, info=(2 * i, front, back)
    )
    _add_site(dg, node, site)


# --------------------------------------------------------------------------- module rules
def conv(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, (nn.modules.conv._ConvNd))
    xi = dg.info(node.args[0])
    out = _new(dg, node, (1,))
    name = str(node.target)
    transposed = bool(m.transposed)
    groups, cin, cout = m.groups, m.in_channels, m.out_channels
    if transposed and groups != 1:
        unknown(dg, node, f"grouped ConvTranspose '{name}' has no channel rule")
        return
    _add_site(dg, node, Site(f"{name}:out", SiteKind.CONV_OUT, out.key, node.name, name))
    if xi is None or not xi.size:
        return
    if xi.cdims != (1,) or xi.size != cin:
        dg.pin(xi.key, f"input of '{name}' has its channels on another dim")
        return
    _add_site(dg, node, Site(f"{name}:in", SiteKind.CONV_IN, xi.key, node.name, name))
    if groups > 1:
        cin_g, cout_g = cin // groups, cout // groups
        if cin_g == 1:  # depthwise: output channel j reads input channel j // cout_g only
            dg.couple(xi.key, out.key, np.arange(cout) // cout_g, node.name)
        else:  # grouped: the same local channel is removed from every group, so `groups` stays valid
            dg.tie(xi.key, np.arange(cin).reshape(groups, cin_g).T)
            dg.tie(out.key, np.arange(cout).reshape(groups, cout_g).T)


def linear(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, nn.Linear)
    xi = dg.info(node.args[0])
    spec = _out_spec(node)
    out = _new(dg, node, (len(spec.shape) - 1,))
    name = str(node.target)
    _add_site(dg, node, Site(f"{name}:out", SiteKind.LINEAR_OUT, out.key, node.name, name))
    if xi is None or not xi.size:
        return
    if xi.cdims != (len(xi.shape) - 1,) or xi.size != m.in_features:
        dg.pin(xi.key, f"input of Linear '{name}' has its channels off the last dim")
        return
    _add_site(dg, node, Site(f"{name}:in", SiteKind.LINEAR_IN, xi.key, node.name, name))


def norm(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    """BatchNorm / InstanceNorm / GroupNorm / PReLU: per-channel state on dim 1."""
    xi = dg.info(node.args[0])
    name = str(node.target)
    if xi is None or xi.cdims != (1,):
        unknown(dg, node, f"{type(m).__name__} '{name}' input has no channels on dim 1")
        return
    identity(dg, node)
    out = dg.info(node)
    if out is None:
        return
    if isinstance(m, nn.GroupNorm):  # statistics are per norm group: remove whole norm groups only
        dg.tie(out.key, np.arange(out.size).reshape(m.num_groups, -1))
    if isinstance(m, nn.PReLU) and m.num_parameters == 1:
        return
    _add_site(dg, node, Site(f"{name}:norm", SiteKind.NORM, out.key, node.name, name))


def layer_norm(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, nn.LayerNorm)
    xi = dg.info(node.args[0])
    identity(dg, node)
    n = len(m.normalized_shape)
    if xi is not None and xi.size and any(d >= len(xi.shape) - n for d in xi.cdims):
        dg.pin(
            xi.key,
            f"LayerNorm '{node.target}' normalises over the channel dim; removing a channel changes "
            "its statistics",
        )


def module_identity(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    identity(dg, node)


def module_layout(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    if xi is None:
        _new(dg, node, ())
        return
    _probe(dg, node, xi, m)
    if isinstance(m, nn.Unflatten) and dg.info(node) is not None:
        literal = [False] * len(_out_spec(node).shape)
        for k in range(len(m.unflattened_size)):
            literal[m.dim + k if m.dim >= 0 else len(literal) + m.dim - len(m.unflattened_size) + 1 + k] = (
                True
            )
        _tie_literal_dims(dg, node, literal)


def module_softmax(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    identity(dg, node)
    d = getattr(m, "dim", None)
    if xi is not None and xi.size and (d is None or _norm_dim(int(d), len(xi.shape)) in xi.cdims):
        dg.pin(xi.key, f"{type(m).__name__} '{node.target}' normalises over the channel dim")


def module_pad(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    padding = tuple(getattr(m, "padding", ()))
    nd = len(xi.shape) if xi is not None else 0
    touches = xi is not None and any(
        nd - 1 - i in xi.cdims
        for i in range(len(padding) // 2)
        if (padding[2 * i], padding[2 * i + 1]) != (0, 0)
    )
    if touches:
        unknown(dg, node, f"{type(m).__name__} '{node.target}' pads the channel dim")
    else:
        identity(dg, node)


# --------------------------------------------------------------------------- registries
_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.LogSigmoid,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)

MODULE_RULES: list[tuple[tuple[type, ...], ModuleRule]] = [
    ((nn.modules.conv._ConvNd,), conv),
    ((nn.Linear,), linear),
    ((nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.PReLU), norm),
    ((nn.LayerNorm,), layer_norm),
    (_ACTIVATIONS, module_identity),
    ((nn.Flatten, nn.Unflatten), module_layout),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmin), module_softmax),
    (
        (
            nn.modules.padding._ConstantPadNd,
            nn.modules.padding._ReflectionPadNd,
            nn.modules.padding._ReplicationPadNd,
        ),
        module_pad,
    ),
]

_UNARY_FUNCTIONS: tuple[Any, ...] = (
    F.relu,
    F.relu_,
    F.relu6,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.softplus,
    F.sigmoid,
    F.tanh,
    torch.sigmoid,
    torch.tanh,
    torch.relu,
    torch.relu_,
    torch.abs,
    torch.exp,
    torch.neg,
    torch.sqrt,
    torch.square,
    torch.clamp,
    torch.clip,
    torch.clamp_min,
    operator.neg,
    operator.pos,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.interpolate,
    F.upsample,
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
    torch.nn.functional.hardshrink,
)
_BINARY_FUNCTIONS: tuple[Any, ...] = (
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.true_divide,
    torch.multiply,
    torch.subtract,
)
_LAYOUT_FUNCTIONS: tuple[Any, ...] = (
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.movedim,
    torch.swapaxes,
    torch.unflatten,
)
_REDUCTIONS: tuple[Any, ...] = (torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var)

FUNCTION_RULES: dict[Any, Rule] = {
    **{f: identity for f in _UNARY_FUNCTIONS},
    **{f: elementwise for f in _BINARY_FUNCTIONS},
    **{f: layout for f in _LAYOUT_FUNCTIONS},
    **{f: reduction for f in _REDUCTIONS},
    operator.getitem: getitem,
    torch.cat: cat,
    torch.concat: cat,
    torch.concatenate: cat,
    torch.split: split,
    torch.chunk: split,
    F.pad: pad,
    F.softmax: _dim_sensitive(1, "softmax"),
    F.log_softmax: _dim_sensitive(1, "log_softmax"),
    torch.softmax: _dim_sensitive(1, "softmax"),
    F.layer_norm: layer_norm_fn,
}

METHOD_RULES: dict[str, Rule] = {
    **{
        m: identity
        for m in (
            "relu",
            "relu_",
            "sigmoid",
            "sigmoid_",
            "tanh",
            "tanh_",
            "contiguous",
            "clone",
            "detach",
            "float",
            "half",
            "double",
            "to",
            "type",
            "type_as",
            "cpu",
            "clamp",
            "clamp_",
            "clamp_min",
            "clamp_min_",
            "abs",
            "neg",
            "exp",
            "sqrt",
            "square",
            "pow",
            "hardtanh",
            "hardtanh_",
            "zero_",
        )
    },
    **{
        m: elementwise
        for m in (
            "add",
            "add_",
            "sub",
            "sub_",
            "mul",
            "mul_",
            "div",
            "div_",
            "__add__",
            "__mul__",
            "__sub__",
            "maximum",
            "minimum",
            "masked_fill",
        )
    },
    **{
        m: layout
        for m in (
            "view",
            "reshape",
            "flatten",
            "permute",
            "transpose",
            "squeeze",
            "unsqueeze",
            "movedim",
            "expand",
            "expand_as",
            "unflatten",
            "swapaxes",
            "t",
        )
    },
    **{m: reduction for m in ("mean", "sum", "amax", "amin", "std", "var")},
    "split": split,
    "chunk": split,
    "softmax": _dim_sensitive(0, "softmax"),
    "log_softmax": _dim_sensitive(0, "log_softmax"),
}

# Ops that only read metadata (shape, dtype): they never constrain channels.
META_FUNCTIONS: frozenset[Any] = frozenset({builtins.getattr, builtins.len, operator.getitem, torch._assert})
META_METHODS: frozenset[str] = frozenset({"size", "dim", "numel", "ndimension", "nelement", "get_device"})

_EXTRA_IDENTITY_MODULES: list[type] = []


def register_channelwise_module(cls: type[nn.Module]) -> None:
    """Declare that a (leaf) module type maps channel c to channel c and has no per-channel parameters."""
    _EXTRA_IDENTITY_MODULES.append(cls)


def _tv_modules() -> list[tuple[tuple[type, ...], ModuleRule]]:
    try:
        from graphprune.torchvision_compat import import_torchvision

        ops = import_torchvision().ops
    except Exception:  # noqa: BLE001 - torchvision is optional
        return []
    return [((ops.StochasticDepth,), module_identity), ((ops.FrozenBatchNorm2d,), norm)]


def module_rule(m: nn.Module) -> ModuleRule | None:
    if _EXTRA_IDENTITY_MODULES and isinstance(m, tuple(_EXTRA_IDENTITY_MODULES)):
        return module_identity
    for types, rule in MODULE_RULES + _tv_modules():
        if isinstance(m, types):
            return rule
    return None


# --------------------------------------------------------------------------- driver
def _placeholder(dg: DependencyGraph, node: fx.Node) -> None:
    spec = node.meta.get(META_KEY)
    if isinstance(spec, TensorSpec):
        info = _new(dg, node, (1,) if len(spec.shape) >= 2 else ())
        dg.pin(info.key, "model input")
    else:
        dg.node_tensors[node.name] = None


def _get_attr(dg: DependencyGraph, node: fx.Node) -> None:
    spec = node.meta.get(META_KEY)
    if isinstance(spec, TensorSpec):
        info = dg.add_tensor(node.name, spec.shape, (), const=True)
        dg.node_tensors[node.name] = info
    else:
        dg.node_tensors[node.name] = None


def _output(dg: DependencyGraph, node: fx.Node) -> None:
    for a in tensor_inputs(node):
        info = dg.info(a)
        if info is not None:
            dg.pin(info.key, "model output")


def _node_rule(dg: DependencyGraph, node: fx.Node) -> Rule | None:
    if node.op == "call_module":
        m = dg.modules[str(node.target)]
        mrule = module_rule(m)
        return None if mrule is None else (lambda d, n: mrule(d, n, m))
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target)
    if node.op == "call_method":
        return METHOD_RULES.get(str(node.target))
    return None


def build_dependency_graph(gm: fx.GraphModule) -> DependencyGraph:
    """Apply the channel rules to every node of a graph whose values were recorded on example inputs."""
    dg = DependencyGraph(gm)
    for node in gm.graph.nodes:
        dg.add_op(node)
        if node.op == "placeholder":
            _placeholder(dg, node)
        elif node.op == "get_attr":
            _get_attr(dg, node)
        elif node.op == "output":
            _output(dg, node)
        else:
            spec = node.meta.get(META_KEY)
            tensorish = isinstance(spec, TensorSpec) or (
                isinstance(spec, (tuple, list)) and any(isinstance(s, TensorSpec) for s in spec)
            )
            rule = _node_rule(dg, node)
            if rule is not None and (tensorish or rule is getitem):
                rule(dg, node)
            elif tensorish:
                unknown(dg, node, f"no channel rule for {_op_name(node, dg)}")
            else:
                dg.node_tensors[node.name] = None
                meta = (
                    node.target in META_FUNCTIONS
                    if node.op == "call_function"
                    else (node.op == "call_method" and node.target in META_METHODS)
                )
                if not meta:
                    for a in tensor_inputs(node):
                        info = dg.info(a)
                        if info is not None:
                            dg.pin(info.key, f"{_op_name(node, dg)} reads channel values")
        outs = dg.node_tensors.get(node.name)
        out_keys = [o.key for o in (outs if isinstance(outs, tuple) else [outs]) if o is not None]
        in_keys = [i.key for i in (dg.info(a) for a in tensor_inputs(node)) if i is not None]
        dg.link(node, in_keys, out_keys)
    return dg


def prod(xs: tuple[int, ...]) -> int:
    return math.prod(xs)
