"""Costs: multiply-accumulates (MACs, counted once per sample) and parameters, per layer and in total.

Counted: convolutions (incl. transposed and grouped), Linear, and matmul / bmm. Not counted: norms,
activations, pooling, elementwise ops (they are memory-bound and small next to the MACs above).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from graphprune.trace import META_KEY, TensorSpec, as_input_tuple, record_values, symbolic_trace


@dataclass(frozen=True)
class LayerCost:
    """Cost of one fx node: `name` is the module path (or node name for functions)."""

    name: str
    node: str
    kind: str
    flops: int
    params: int


def _shape(arg: object) -> tuple[int, ...] | None:
    spec = arg.meta.get(META_KEY) if isinstance(arg, fx.Node) else None
    return spec.shape if isinstance(spec, TensorSpec) else None


def node_cost(gm: fx.GraphModule, node: fx.Node, modules: dict[str, nn.Module]) -> LayerCost | None:
    """MACs per sample and own parameters of one node, or None if it costs nothing."""
    out = _shape(node)
    if node.op == "call_module":
        m = modules[str(node.target)]
        params = sum(p.numel() for p in m.parameters(recurse=False))
        flops = 0
        if out is not None and isinstance(m, nn.modules.conv._ConvNd):
            k = math.prod(m.kernel_size)
            if m.transposed:
                inp = _shape(node.args[0]) or out
                flops = math.prod(inp[1:]) * (m.out_channels // m.groups) * k
            else:
                flops = math.prod(out[1:]) * (m.in_channels // m.groups) * k
        elif out is not None and isinstance(m, nn.Linear):
            flops = math.prod(out[1:]) * m.in_features
        if not flops and not params:
            return None
        return LayerCost(str(node.target), node.name, type(m).__name__, int(flops), int(params))
    if node.op in ("call_function", "call_method") and node.target in (
        torch.matmul,
        torch.bmm,
        operator.matmul,
        "matmul",
        "bmm",
    ):
        a = _shape(node.args[0])
        if out is None or a is None:
            return None
        return LayerCost(node.name, node.name, "matmul", int(math.prod(out[1:]) * a[-1]), 0)
    return None


def layer_costs(gm: fx.GraphModule) -> list[LayerCost]:
    """Per-node costs of a graph whose values were recorded (see trace.record_values)."""
    modules = dict(gm.named_modules())
    costs = [node_cost(gm, n, modules) for n in gm.graph.nodes]
    return [c for c in costs if c is not None]


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    leaf_modules: Iterable[str | type] = (),
) -> int:
    """MACs per sample of `model` on inputs shaped like `example_inputs`; the model is not modified.

    `leaf_modules` are kept opaque while tracing, as in `graphprune.trace`.
    """
    gm = symbolic_trace(model, leaf_modules)
    record_values(gm, as_input_tuple(example_inputs))
    return sum(c.flops for c in layer_costs(gm))
