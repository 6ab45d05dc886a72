"""The channel dependency graph: tensors and ops as networkx nodes, channel index maps on the edges.

Every tensor with a channel layout has `size` channel positions (its channel dims flattened row-major).
A coupling edge `src -> dst` carries `index_map`: for each position of `dst`, the position of `src` it
is the same channel as, or -1. Ties (positions of one tensor that must go together) and pins (positions
that must stay, with the reason) are tensor attributes; rewrite sites are op attributes. Pairs of tensors
whose kept channel counts must stay equal are listed in `same_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch.fx as fx

from graphprune.analysis.sites import Site
from graphprune.trace import META_KEY, TensorSpec


@dataclass(frozen=True)
class TensorInfo:
    """A tensor in the dependency graph and where its channels are."""

    key: str
    shape: tuple[int, ...]
    cdims: tuple[int, ...]
    const: bool = False

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.shape[d] for d in self.cdims)

    @property
    def size(self) -> int:
        return math.prod(self.grid) if self.cdims else 0


def op_key(node: fx.Node) -> str:
    return f"op:{node.name}"


class DependencyGraph:
    """Builder and container for the networkx channel dependency graph of one fx graph."""

    def __init__(self, gm: fx.GraphModule, *, prune_layernorm: bool = False) -> None:
        self.gm = gm
        self.prune_layernorm = prune_layernorm  # LayerNorm over channels: prunable (not lossless) or pinned
        self.g = nx.MultiDiGraph()
        self.modules = dict(gm.named_modules())
        self.tensors: dict[str, TensorInfo] = {}
        self.node_tensors: dict[str, Any] = {}  # fx node name -> TensorInfo | tuple of them | None
        self.sites: list[Site] = []
        self.site_by_key: dict[str, Site] = {}
        self.module_calls: dict[str, fx.Node] = {}  # first call of each parametric module
        self.param_readers: dict[str, set[str]] = {}  # PARAM site target -> fx nodes that slice-read it
        self.same_counts: list[tuple[str, str, str]] = []  # (src, dst, op): see `same_count`

    # ----- building
    def add_tensor(
        self, key: str, shape: tuple[int, ...], cdims: tuple[int, ...], *, const: bool = False
    ) -> TensorInfo:
        info = TensorInfo(key, tuple(shape), tuple(cdims), const)
        self.tensors[key] = info
        self.g.add_node(
            key,
            kind="tensor",
            shape=info.shape,
            cdims=info.cdims,
            size=info.size,
            const=const,
            ties=[],
            pins=[],
        )
        return info

    def add_op(self, node: fx.Node) -> None:
        self.g.add_node(op_key(node), kind="op", op=node.op, target=_target_name(node), sites=[])

    def link(self, node: fx.Node, inputs: Iterable[str], outputs: Iterable[str]) -> None:
        for t in inputs:
            self.g.add_edge(t, op_key(node), role="input")
        for t in outputs:
            self.g.add_edge(op_key(node), t, role="output")

    def couple(self, src: str, dst: str, index_map: np.ndarray, op: str) -> None:
        """Record that position j of `dst` is position index_map[j] of `src` (-1: none)."""
        index_map = np.asarray(index_map, dtype=np.int64)
        assert index_map.shape == (self.tensors[dst].size,), (src, dst, index_map.shape)
        self.g.add_edge(src, dst, role="channels", op=op, index_map=index_map)

    def identity(self, src: str, dst: str, op: str) -> None:
        self.couple(src, dst, np.arange(self.tensors[dst].size), op)

    def same_count(self, src: str, dst: str, op: str) -> None:
        """Record that `dst` (same size as `src`) must keep as many channels as `src`: a count read from
        `src` shapes `dst`. `derive_groups` keeps it, for free where both hold the same atoms equally
        often (a channel shuffle), else by coupling them position by position."""
        assert self.tensors[src].size == self.tensors[dst].size > 0, (src, dst)
        self.same_counts.append((src, dst, op))

    def tie(self, key: str, rows: np.ndarray) -> None:
        """Each row of `rows` is a set of positions of `key` that can only be removed together."""
        self.g.nodes[key]["ties"].append(np.asarray(rows, dtype=np.int64))

    def pin(self, key: str, reason: str, positions: Iterable[int] | None = None) -> None:
        info = self.tensors[key]
        if info.size == 0:
            return
        pos = np.arange(info.size) if positions is None else np.asarray(list(positions), dtype=np.int64)
        if pos.size:
            self.g.nodes[key]["pins"].append((pos, reason))

    def add_site(self, node: fx.Node, site: Site) -> None:
        self.sites.append(site)
        self.site_by_key[site.key] = site
        self.g.nodes[op_key(node)]["sites"].append(site)

    # ----- queries used by rules
    def spec(self, arg: Any) -> Any:
        return arg.meta.get(META_KEY) if isinstance(arg, fx.Node) else arg

    def value(self, arg: Any) -> Any:
        """Concrete value of an argument (node values as recorded on the example inputs)."""
        if isinstance(arg, fx.Node):
            return arg.meta.get(META_KEY)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        if isinstance(arg, slice):
            return slice(self.value(arg.start), self.value(arg.stop), self.value(arg.step))
        if isinstance(arg, dict):
            return {k: self.value(v) for k, v in arg.items()}
        return arg

    def info(self, arg: Any) -> TensorInfo | None:
        if isinstance(arg, fx.Node):
            t = self.node_tensors.get(arg.name)
            return t if isinstance(t, TensorInfo) else None
        return None

    def is_tensor(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and isinstance(arg.meta.get(META_KEY), TensorSpec)


def _target_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)
