"""Costs: multiply-accumulates (MACs, counted once per sample) and parameters, per layer and in total.

What counts as work is torch's own flop counter (`torch.utils.flop_counter`), halved to MACs: every
matrix product and convolution the node runs at the aten level, whatever wrote it: conv and linear
modules, `F.conv2d`, `F.linear`, `matmul` / `bmm` / `einsum`, `nn.MultiheadAttention` and
`scaled_dot_product_attention` (the two products of the attention), and functions fx keeps whole
(Swin's `shifted_window_attention`). Bias adds are not counted.

Norms, activations, pooling, softmax and elementwise ops count 0: they are memory-bound and a few
percent of the products above. This is the definition torchvision's published `_ops` use (GFLOPS
in `weights.meta`, MACs in fact); tests/test_costs.py checks every classifier against them.

MACs are counted while `trace` records values: one run, no second forward. The fused inference
kernels of `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` are switched off for that run so
their products are seen (same maths), and the CPU flash-attention kernel gets the attention formula.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop_count, shape_wrapper

from graphprune.trace import as_input_tuple, record_values, symbolic_trace

MACS_KEY = "gp_macs"


def _cpu_attention_flops(query: object, key: object, value: object, *_: object, **__: object) -> int:
    """FLOPs of the CPU flash-attention kernel: the two products of attention, as for the GPU kernels."""
    return int(sdpa_flop_count(query, key, value))


# torch's formulas, plus aten kernels it does not know with the formula of the op they implement.
_FORMULAS = {
    **flop_registry,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: shape_wrapper(_cpu_attention_flops),
}


class _FlopCounter(TorchDispatchMode):
    """FLOPs of every aten op with a formula in torch.utils.flop_counter's registry.

    `FlopCounterMode` minus what a count does not need: module tracking, and decomposing every other op
    in Python first (slow, and no op it decomposes in a forward has a formula).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = _FORMULAS.get(func._overloadpacket)
        if formula is None:
            return out
        on_shapes = getattr(formula, "__wrapped__", None)  # shape_wrapper's formula, fed shapes directly
        if on_shapes is None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        else:  # what shape_wrapper does, without a pytree walk (most of the cost of counting)
            shapes = {k: _shapes(v) for k, v in kwargs.items()}
            self.total += int(on_shapes(*map(_shapes, args), **shapes, out_shape=_shapes(out)))
        return out


def _shapes(value: Any) -> Any:
    """`value` with every tensor in it (at any depth of tuples and lists) replaced by its shape."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if type(value) in (tuple, list):
        return type(value)(map(_shapes, value))
    return value


@dataclass(frozen=True)
class LayerCost:
    """Cost of one fx node: `name` is the module path (or node name for functions)."""

    name: str
    node: str
    kind: str
    flops: int
    params: int


def record_values_and_macs(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> object:
    """`trace.record_values` (shapes only: on the meta device where it can), also storing each node's
    MACs per sample in node.meta[MACS_KEY]."""
    batch = int(inputs[0].shape[0]) if inputs[0].dim() else 1
    counter = _FlopCounter()
    seen = 0

    def store(node: fx.Node) -> None:
        nonlocal seen
        total = counter.total
        if (
            node.op == "placeholder"
        ):  # a run starts (again, where the meta run gave up): nothing before counts
            seen = total
        node.meta[MACS_KEY] = (total - seen) // (2 * max(batch, 1))
        seen = total

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return record_values(gm, inputs, after_node=store, shapes_only=True, mode=counter)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[str(node.target)]).__name__
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def node_cost(node: fx.Node, modules: dict[str, nn.Module]) -> LayerCost | None:
    """MACs per sample and own parameters of one recorded node, or None if it costs nothing."""
    flops = int(node.meta.get(MACS_KEY, 0))
    params = 0
    if node.op == "call_module":
        params = sum(p.numel() for p in modules[str(node.target)].parameters(recurse=False))
    if not flops and not params:
        return None
    name = str(node.target) if node.op == "call_module" else node.name
    return LayerCost(name, node.name, _kind(node, modules), flops, int(params))


def layer_costs(gm: fx.GraphModule) -> list[LayerCost]:
    """Per-node costs of a graph recorded with `record_values_and_macs`."""
    modules = dict(gm.named_modules())
    costs = [node_cost(n, modules) for n in gm.graph.nodes]
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

    `leaf_modules` are kept opaque while tracing, as in `graphprune.trace`. Works on the meta device too
    (a model built under `torch.device("meta")`, meta inputs).
    """
    inputs = as_input_tuple(example_inputs)
    gm = symbolic_trace(model, leaf_modules, inputs)
    record_values_and_macs(gm, inputs)
    return sum(c.flops for c in layer_costs(gm))
