"""Which rule handles which op: tables for modules, functions and methods, and the metadata-only ops."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import (
    ModuleRule,
    Rule,
    unknown,
)
from graphprune.analysis.rules.contractions import einsum, matmul
from graphprune.analysis.rules.elementwise import elementwise, identity
from graphprune.analysis.rules.functional_conv import functional_conv
from graphprune.analysis.rules.layout import getitem, layout
from graphprune.analysis.rules.modules import (
    conv,
    layer_norm,
    linear,
    module_identity,
    module_layout,
    module_pad,
    module_softmax,
    norm,
)
from graphprune.analysis.rules.norms import batch_norm_fn, group_norm_fn, instance_norm_fn
from graphprune.analysis.rules.offsets import cat, pad, split, stack
from graphprune.analysis.rules.reductions import (
    dim_sensitive,
    layer_norm_fn,
    normalize,
    p_norm,
    reduction,
    summation,
    vector_norm,
    windowed,
)

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


def _spatial_dims(name: str) -> int | None:
    """Trailing dims a pooling or resampling op works on: `max_pool2d` -> 2, `interpolate` -> None."""
    return int(name[-2]) if name[-1] == "d" and name[-2].isdigit() else None


# pooling and resampling (listed with the unary ops above): channelwise only if the layout says so
_WINDOWED_MODULES: tuple[type[nn.Module], ...] = tuple(
    m for m in _ACTIVATIONS if m.__module__ in ("torch.nn.modules.pooling", "torch.nn.modules.upsampling")
)
_WINDOWED_FUNCTIONS: tuple[Any, ...] = (
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
)


def module_windowed(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    windowed(_spatial_dims(type(m).__name__))(dg, node)


MODULE_RULES: list[tuple[tuple[type, ...], ModuleRule]] = [
    ((nn.modules.conv._ConvNd,), conv),
    ((nn.Linear,), linear),
    ((nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.PReLU), norm),
    ((nn.LayerNorm,), layer_norm),
    (_WINDOWED_MODULES, module_windowed),  # before _ACTIVATIONS: the first match wins
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
_REDUCTIONS: tuple[Any, ...] = (torch.mean, torch.amax, torch.amin, torch.std, torch.var)

FUNCTION_RULES: dict[Any, Rule] = {
    **{f: identity for f in _UNARY_FUNCTIONS},
    **{f: elementwise for f in _BINARY_FUNCTIONS},
    **{f: layout for f in _LAYOUT_FUNCTIONS},
    **{f: reduction for f in _REDUCTIONS},
    torch.sum: summation,
    torch.linalg.vector_norm: vector_norm,
    torch.norm: p_norm,
    F.normalize: normalize,
    torch.matmul: matmul,
    torch.bmm: matmul,
    operator.matmul: matmul,
    torch.einsum: einsum,
    **{f: windowed(_spatial_dims(getattr(f, "__name__", ""))) for f in _WINDOWED_FUNCTIONS},  # over unary
    operator.getitem: getitem,
    torch.cat: cat,
    torch.concat: cat,
    torch.concatenate: cat,
    torch.stack: stack,
    torch.split: split,
    torch.chunk: split,
    F.pad: pad,
    F.softmax: dim_sensitive(1, "softmax"),
    F.log_softmax: dim_sensitive(1, "log_softmax"),
    torch.softmax: dim_sensitive(1, "softmax"),
    F.layer_norm: layer_norm_fn,
    F.batch_norm: batch_norm_fn,
    F.instance_norm: instance_norm_fn,
    F.group_norm: group_norm_fn,
    F.conv1d: functional_conv,
    F.conv2d: functional_conv,
    F.conv3d: functional_conv,
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
    **{m: reduction for m in ("mean", "amax", "amin", "std", "var")},
    "sum": summation,
    "norm": p_norm,
    "matmul": matmul,
    "bmm": matmul,
    "split": split,
    "chunk": split,
    # a method's args[0] is the tensor itself: dim is args[1], as for the functions
    "softmax": dim_sensitive(1, "softmax"),
    "log_softmax": dim_sensitive(1, "log_softmax"),
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


def std_conv(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    """A weight-standardised conv (timm's StdConv2d, ScaledStdConv2d) normalises each output channel's
    weight over its input channels: removing an input channel changes every kept weight. Pinned."""
    unknown(
        dg,
        node,
        f"{type(m).__name__} '{node.target}' standardises its weight over the input channels "
        "(removing one changes every kept weight)",
    )


def _timm_modules() -> list[tuple[tuple[type, ...], ModuleRule]]:
    """timm's rules, checked before torch's (a StdConv2d is an nn.Conv2d); none unless timm is loaded."""
    from graphprune.timm_compat import std_conv_types

    types = std_conv_types()
    return [(types, std_conv)] if types else []


def module_rule(m: nn.Module) -> ModuleRule | None:
    if _EXTRA_IDENTITY_MODULES and isinstance(m, tuple(_EXTRA_IDENTITY_MODULES)):
        return module_identity
    for types, rule in _timm_modules() + MODULE_RULES + _tv_modules():
        if isinstance(m, types):
            return rule
    return None
