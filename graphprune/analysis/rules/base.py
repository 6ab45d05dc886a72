"""Shared pieces of the channel rules: argument access, new tensors, pins for unknown ops, sites."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch.fx as fx
from torch import nn

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.sites import Site
from graphprune.trace import META_KEY, TensorSpec

Rule = Callable[[DependencyGraph, fx.Node], None]
ModuleRule = Callable[[DependencyGraph, fx.Node, nn.Module], None]


def flat(args: Any) -> Iterator[Any]:
    if isinstance(args, (list, tuple)):
        for a in args:
            yield from flat(a)
    elif isinstance(args, dict):
        for a in args.values():
            yield from flat(a)
    elif isinstance(args, slice):
        yield from flat((args.start, args.stop, args.step))
    else:
        yield args


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in flat((node.args, node.kwargs)) if isinstance(a, fx.Node)]


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def out_spec(node: fx.Node) -> TensorSpec:
    spec = node.meta[META_KEY]
    assert isinstance(spec, TensorSpec)
    return spec


def new_tensor(
    dg: DependencyGraph, node: fx.Node, cdims: tuple[int, ...], key: str | None = None
) -> TensorInfo:
    spec = out_spec(node) if key is None else None
    shape = spec.shape if spec is not None else ()
    info = dg.add_tensor(key or node.name, shape, cdims)
    if key is None:
        dg.node_tensors[node.name] = info
    return info


def norm_dim(d: int, nd: int) -> int:
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


def op_name(node: fx.Node, dg: DependencyGraph) -> str:
    if node.op == "call_module":
        return f"{type(dg.modules[str(node.target)]).__name__} '{node.target}'"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def add_site(dg: DependencyGraph, node: fx.Node, site: Site) -> None:
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
