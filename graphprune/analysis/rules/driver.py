"""Apply the channel rules to every node of a recorded graph, building the DependencyGraph."""

from __future__ import annotations

import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import (
    Rule,
    new_tensor,
    op_name,
    tensor_inputs,
    unknown,
)
from graphprune.analysis.rules.counts import Taint, track_counts
from graphprune.analysis.rules.layout import getitem, layout
from graphprune.analysis.rules.registry import (
    FUNCTION_RULES,
    META_FUNCTIONS,
    META_METHODS,
    METHOD_RULES,
    module_rule,
)
from graphprune.analysis.sites import Site, SiteKind
from graphprune.trace import META_KEY, TensorSpec

# sites that slice the parameters of a called module
_OWNED_KINDS = (SiteKind.CONV_OUT, SiteKind.CONV_IN, SiteKind.LINEAR_OUT, SiteKind.LINEAR_IN, SiteKind.NORM)


def _placeholder(dg: DependencyGraph, node: fx.Node) -> None:
    spec = node.meta.get(META_KEY)
    if isinstance(spec, TensorSpec):
        info = new_tensor(dg, node, (1,) if len(spec.shape) >= 2 else ())
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


def _node_rule_is(node: fx.Node, rule: Rule) -> bool:
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target) is rule
    return node.op == "call_method" and METHOD_RULES.get(str(node.target)) is rule


def build_dependency_graph(gm: fx.GraphModule, *, prune_layernorm: bool = False) -> DependencyGraph:
    """Apply the channel rules to every node of a graph whose values were recorded on example inputs.

    With `prune_layernorm`, a LayerNorm module normalising over the channels is a LAYER_NORM site instead of
    a pin: pruning through it renormalises over the kept channels, which is not lossless."""
    dg = DependencyGraph(gm, prune_layernorm=prune_layernorm)
    taints: dict[str, Taint] = {}
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
                unknown(dg, node, f"no channel rule for {op_name(node, dg)}")
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
                            dg.pin(info.key, f"{op_name(node, dg)} reads channel values")
        outs = dg.node_tensors.get(node.name)
        out_keys = [o.key for o in (outs if isinstance(outs, tuple) else [outs]) if o is not None]
        in_keys = [i.key for i in (dg.info(a) for a in tensor_inputs(node)) if i is not None]
        dg.link(node, in_keys, out_keys)
        track_counts(dg, node, taints, _node_rule_is(node, layout))
    _pin_side_reads(dg, gm)
    return dg


def _pin_side_reads(dg: DependencyGraph, gm: fx.GraphModule) -> None:
    """A parameter the rewrite slices must have no other reader: `gamma.sum()` beside `h * gamma`, or
    `conv.weight.norm()` beside `conv(h)`, would see the sliced tensor. Such sites are pinned."""
    by_target: dict[str, list[Site]] = {}
    for site in dg.sites:
        if site.kind in _OWNED_KINDS or site.kind == SiteKind.PARAM:
            by_target.setdefault(site.target, []).append(site)
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        target = str(node.target)
        readers = dg.param_readers.get(target)
        owner = target.rpartition(".")[0]
        owned = [s for s in by_target.get(owner, []) if s.kind in _OWNED_KINDS]
        if readers is not None:  # read by ops that slice it: a PARAM site, or a functional norm's NORM site
            others = [u.name for u in node.users if u.name not in readers]
            sites = by_target.get(target, []) + owned
        else:
            others = [u.name for u in node.users]
            sites = owned
        for site in sites if others else []:
            dg.pin(site.tensor, f"{target} is also read by {', '.join(others)}, which would see it sliced")
