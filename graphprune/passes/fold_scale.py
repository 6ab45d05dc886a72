"""FoldScale: fold `producer(x) * s` into the producer's weights when s is constant per channel or scalar.

Producers: Conv (not transposed), Linear and affine BatchNorm, called once, whose only user is the multiply.
This is how gates (a learned per-channel or per-block scale) disappear from a deployed model.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.passes.base import GraphPass
from graphprune.passes.param_surgery import replace_tensor
from graphprune.trace import META_KEY

_MULS = (operator.mul, operator.imul, torch.mul)


def _scale_vector(
    gm: fx.GraphModule, arg: object, channels: int, cdim: int, ndim: int
) -> torch.Tensor | None:
    """The scale as a (channels,) vector, or None if it is not constant along everything but channels."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return torch.full((channels,), float(arg))
    if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
        return None
    owner_path, _, name = str(arg.target).rpartition(".")
    t = getattr(gm.get_submodule(owner_path) if owner_path else gm, name)
    if not isinstance(t, torch.Tensor) or t.dim() > ndim:
        return None
    shape = [1] * (ndim - t.dim()) + list(t.shape)
    if any(s != 1 for d, s in enumerate(shape) if d != cdim) or shape[cdim] not in (1, channels):
        return None
    return t.detach().reshape(-1).expand(channels).clone()


class FoldScale(GraphPass):
    def call(self, gm: fx.GraphModule) -> PassResult:
        modules = dict(gm.named_modules())
        calls: dict[str, int] = {}
        for n in gm.graph.nodes:
            if n.op == "call_module":
                calls[str(n.target)] = calls.get(str(n.target), 0) + 1
        changed = False
        for node in list(gm.graph.nodes):
            is_mul = (node.op == "call_function" and node.target in _MULS) or (
                node.op == "call_method" and node.target == "mul"
            )
            if not is_mul or len(node.args) != 2 or node.kwargs:
                continue
            for prod, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
                if not (isinstance(prod, fx.Node) and prod.op == "call_module" and len(prod.users) == 1):
                    continue
                m = modules[str(prod.target)]
                if calls[str(prod.target)] != 1 or not _fold(gm, m, prod, other):
                    continue
                node.replace_all_uses_with(prod)
                gm.graph.erase_node(node)
                changed = True
                break
        return PassResult(gm, changed)


def _fold(gm: fx.GraphModule, m: nn.Module, prod: fx.Node, other: object) -> bool:
    shape = prod.meta.get(META_KEY)
    ndim = len(shape.shape) if shape is not None and hasattr(shape, "shape") else None
    if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
        s = _scale_vector(gm, other, m.out_channels, 1, ndim or (m.weight.dim()))
        if s is None:
            return False
        replace_tensor(m, "weight", m.weight.detach() * s.view(-1, *([1] * (m.weight.dim() - 1))))
    elif isinstance(m, nn.Linear):
        s = _scale_vector(gm, other, m.out_features, (ndim or 2) - 1, ndim or 2)
        if s is None:
            return False
        replace_tensor(m, "weight", m.weight.detach() * s[:, None])
    elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
        s = _scale_vector(gm, other, m.num_features, 1, ndim or 4)
        if s is None:
            return False
        replace_tensor(m, "weight", m.weight.detach() * s)
    else:
        return False
    bias = getattr(m, "bias", None)
    if isinstance(bias, torch.Tensor):
        replace_tensor(m, "bias", bias.detach() * s)
    return True
