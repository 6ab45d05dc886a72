"""Functional norms with per-channel operands: F.batch_norm, F.instance_norm, F.group_norm.

timm's `BatchNormAct2d`, `GroupNormAct` and `GroupNorm` subclass the torch norm modules but call the
function in their forward, so the traced graph holds `F.batch_norm(x, bn.running_mean, bn.running_var,
bn.weight, bn.bias, ...)` with the module's tensors as get_attr operands. The statistics are per channel on
dim 1 (per norm group for group_norm), so channel c stays channel c. Each operand read from a parameter or
buffer is a PARAM site along dim 0, sliced with the channels (the traced graph keeps the tensors, not the
norm module); a per-channel operand computed in the graph pins the channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import add_site, arg, new_tensor, out_spec, unknown
from graphprune.analysis.sites import Site, SiteKind


def _operands(node: fx.Node, names: tuple[tuple[int, str], ...]) -> list[tuple[str, Any]]:
    """(name, argument) of each per-channel operand given (positional index, keyword) pairs, None left out."""
    out = []
    for i, name in names:
        a = arg(node, i, name)
        if a is not None:
            out.append((name, a))
    return out


def _per_channel(
    dg: DependencyGraph, node: fx.Node, what: str, operands: list[tuple[str, Any]]
) -> TensorInfo | None:
    """Channel c of the output is channel c of the input (dim 1); the operands are sliced with it."""
    xi = dg.info(node.args[0])
    if xi is None or xi.cdims != (1,) or len(out_spec(node).shape) != len(xi.shape):
        unknown(dg, node, f"{what} input has no channels on dim 1")
        return None
    out = new_tensor(dg, node, (1,))
    dg.identity(xi.key, out.key, node.name)
    for name, a in operands:
        spec = dg.spec(a)
        shape = tuple(getattr(spec, "shape", ()))
        info = dg.info(a)
        if isinstance(a, fx.Node) and a.op == "get_attr" and info is not None and info.const:
            if shape == (out.size,):
                target = str(a.target)
                add_site(dg, node, Site(f"{target}:param", SiteKind.PARAM, out.key, node.name, target, 0))
                dg.param_readers.setdefault(target, set()).add(node.name)
                continue
        dg.pin(out.key, f"{what} {name} is computed per channel, not read from a parameter or buffer")
    return out


def batch_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    """F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)."""
    names = ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))
    _per_channel(dg, node, "batch_norm", _operands(node, names))


def instance_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    """F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)."""
    names = ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))
    _per_channel(dg, node, "instance_norm", _operands(node, names))


def group_norm_fn(dg: DependencyGraph, node: fx.Node) -> None:
    """F.group_norm(x, num_groups, weight, bias, eps): statistics per norm group, so whole norm groups go
    together, and the literal `num_groups` is a GROUP_COUNT site lowered by the groups removed."""
    groups = dg.value(arg(node, 1, "num_groups"))
    literal = arg(node, 1, "num_groups")
    if not isinstance(literal, int) or not isinstance(groups, int):
        unknown(dg, node, "group_norm with a num_groups not known at trace time")
        return
    out = _per_channel(dg, node, "group_norm", _operands(node, ((2, "weight"), (3, "bias"))))
    if out is None or not out.size:
        return
    dg.tie(out.key, np.arange(out.size).reshape(groups, -1))
    per_group = out.size // groups
    add_site(
        dg,
        node,
        Site(
            f"{node.name}:group_count", SiteKind.GROUP_COUNT, out.key, node.name, info=(groups, per_group, 1)
        ),
    )
