"""Each registered channel rule proves itself: its index maps and sites are probed on random values.

`CASES` maps every registered op (module type, function, method name, metadata op) to small models that use
it; `support.rule_probe` perturbs each free input channel and checks where it lands. A rule that lies fails
its own case. `test_every_registered_rule_has_a_case` fails when a rule is registered without one.
"""

from __future__ import annotations

import builtins
import functools
import operator
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support.rule_probe import Lie, probe_rules
from torch import nn

from graphprune.analysis.rules import registry
from graphprune.errors import ModelSpecError
from graphprune.timm_compat import import_timm
from graphprune.torchvision_compat import import_torchvision

torch.fx.wrap("len")  # record len() as a graph node, as in models that call it

C = 6
X1 = torch.randn(3, C)
X3 = torch.randn(2, C, 7)
X4 = torch.randn(2, C, 5, 5)
X5 = torch.randn(2, C, 3, 4, 4)
Y3 = torch.randn(2, C, 4)  # a second operand with the same channels as X3


class Fn(nn.Module):
    """A model that is one function of its inputs (the op under test), with optional parameters."""

    def __init__(self, f: Callable[..., Any], **params: torch.Tensor) -> None:
        super().__init__()
        self.f = f
        for k, v in params.items():
            self.register_parameter(k, nn.Parameter(v)) if v.is_floating_point() else self.register_buffer(
                k, v
            )

    def forward(self, x: torch.Tensor) -> Any:
        return self.f(self, x)


class Fn2(Fn):
    """The same with two inputs."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:  # type: ignore[override]
        return self.f(self, x, y)


Case = tuple[nn.Module, tuple[torch.Tensor, ...]]


def fn(f: Callable[..., Any], *xs: torch.Tensor, **params: torch.Tensor) -> Case:
    return (Fn2 if len(xs) == 2 else Fn)(f, **params), xs or (X4,)


def mod(m: nn.Module, *xs: torch.Tensor) -> Case:
    return nn.Sequential(m), xs or (X4,)  # wrapped: the module under test is a leaf of the traced graph


def nhwc(f: Callable[[torch.Tensor], torch.Tensor]) -> Case:
    """The op on a channels-last view, permuted back."""
    return fn(lambda s, x: f(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


P = torch.rand(C, 1, 1) + 0.5  # a per-channel operand
MASK = torch.rand(1, 1, 5, 5) > 0.5  # a mask with no channels
POOL = {1: X3, 2: X4, 3: X5}

CASES: dict[Any, list[Case]] = {}


def add(key: Any, *cases: Case) -> None:
    CASES.setdefault(key, []).extend(cases)


# ---- modules
add(
    nn.modules.conv._ConvNd,
    mod(nn.Conv1d(C, 4, 3), X3),
    mod(nn.Conv2d(C, 4, 3, padding=1)),
    mod(nn.Conv2d(C, C * 2, 3, groups=C)),
    mod(nn.Conv2d(C, 4, 1, groups=2)),
    mod(nn.Conv3d(C, 4, 1), X5),
    mod(nn.ConvTranspose2d(C, 4, 2, stride=2)),
    mod(nn.ConvTranspose1d(C, 4, 3), X3),
)
add(nn.Linear, mod(nn.Linear(C, 4), X1), mod(nn.Linear(5, 4)))
add(
    nn.modules.batchnorm._BatchNorm,
    mod(nn.BatchNorm2d(C)),
    mod(nn.BatchNorm1d(C), X3),
    mod(nn.BatchNorm1d(C), X1),
    mod(nn.BatchNorm2d(C, affine=False)),
    mod(nn.BatchNorm2d(C, affine=False, track_running_stats=False)),
)
add(
    nn.modules.instancenorm._InstanceNorm,
    mod(nn.InstanceNorm2d(C)),
    mod(nn.InstanceNorm2d(C, affine=True)),
    mod(nn.InstanceNorm1d(C, affine=True, track_running_stats=True), X3),
)
add(nn.GroupNorm, mod(nn.GroupNorm(3, C)), mod(nn.GroupNorm(3, C, affine=False)))
add(nn.PReLU, mod(nn.PReLU(C)), mod(nn.PReLU()))
add(nn.LayerNorm, mod(nn.LayerNorm(5)), mod(nn.LayerNorm(C), X1), mod(nn.LayerNorm([C, 5, 5])))
for m in registry._ACTIVATIONS:
    if m in (nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d):
        add(m, mod(m(3, 1), X3))
    elif m in (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d):
        add(m, mod(m(3, 1)))
    elif m in (nn.MaxPool3d, nn.AvgPool3d):
        add(m, mod(m(3, 1), X5))
    elif m in (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d):
        add(m, mod(m(2), X3))
    elif m in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        add(m, mod(m(2)))
    elif m in (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d):
        add(m, mod(m(2), X5))
    elif m is nn.Dropout1d:
        add(m, mod(m(), X3))
    elif m is nn.Dropout3d:
        add(m, mod(m(), X5))
    elif m is nn.Threshold:
        add(m, mod(m(0.1, 20.0)))
    elif m in (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d):
        add(m, mod(m(scale_factor=2)))
    else:
        add(m, mod(m()), mod(m(), X1))
add(nn.Flatten, mod(nn.Flatten()), mod(nn.Flatten(2)))
add(nn.Unflatten, mod(nn.Unflatten(2, (5, 1))), mod(nn.Unflatten(1, (2, 3)), X1))
add(nn.Softmax, mod(nn.Softmax(1)), mod(nn.Softmax(-1)))
add(nn.LogSoftmax, mod(nn.LogSoftmax(1)), mod(nn.LogSoftmax(2)))
add(nn.Softmin, mod(nn.Softmin(1)), mod(nn.Softmin(3)))
add(
    nn.modules.padding._ConstantPadNd,
    mod(nn.ConstantPad2d(1, 0.5)),
    mod(nn.ConstantPad3d((0, 0, 0, 0, 1, 2), 0.0)),
)
add(nn.modules.padding._ReflectionPadNd, mod(nn.ReflectionPad2d(1)))
add(nn.modules.padding._ReplicationPadNd, mod(nn.ReplicationPad2d(1)), mod(nn.ReplicationPad1d(1), X3))
_tv = import_torchvision().ops
add(_tv.StochasticDepth, mod(_tv.StochasticDepth(0.2, "row")))
add(_tv.FrozenBatchNorm2d, mod(_tv.FrozenBatchNorm2d(C)))

# ---- functions
_SPECIAL_UNARY: dict[Any, list[Case]] = {
    F.dropout: [fn(lambda s, x: F.dropout(x, 0.5, training=False))],
    F.dropout1d: [fn(lambda s, x: F.dropout1d(x, 0.5, training=False), X3)],
    F.dropout2d: [fn(lambda s, x: F.dropout2d(x, 0.5, training=False))],
    F.dropout3d: [fn(lambda s, x: F.dropout3d(x, 0.5, training=False), X5)],
    F.alpha_dropout: [fn(lambda s, x: F.alpha_dropout(x, 0.5, training=False))],
    F.interpolate: [fn(lambda s, x: F.interpolate(x, scale_factor=2))],
    F.upsample: [fn(lambda s, x: F.upsample(x, scale_factor=2))],
    torch.full_like: [fn(lambda s, x: torch.full_like(x, 2.0))],
    torch.empty_like: [fn(lambda s, x: torch.empty_like(x).zero_())],  # its values are undefined
    torch.clamp: [
        fn(lambda s, x: torch.clamp(x, min=0.0)),
        fn(lambda s, x: torch.clamp(x, min=s.p), p=P),
    ],
    torch.clip: [fn(lambda s, x: torch.clip(x, -0.5, 0.5))],
    torch.clamp_min: [fn(lambda s, x: torch.clamp_min(x, 0.1))],
    F.hardtanh: [fn(lambda s, x: F.hardtanh(x))],
    F.max_pool2d: [fn(lambda s, x: F.max_pool2d(x, 3, 1, 1)), nhwc(lambda x: F.max_pool2d(x, 3, 1, 1))],
    F.avg_pool1d: [
        fn(lambda s, x: F.avg_pool1d(x, 3, 1, 1), X3),
        fn(lambda s, x: F.avg_pool1d(x, 3, 1, 1), X1),
    ],
}
for f in registry._UNARY_FUNCTIONS:
    if f in _SPECIAL_UNARY:
        add(f, *_SPECIAL_UNARY[f])
        continue
    name = getattr(f, "__name__", "")
    if "pool" in name:
        nd = int(name[-2])
        size = 2 if "adaptive" in name else 3
        add(f, fn(lambda s, x, f=f, size=size: f(x, size), POOL[nd]))
    else:
        add(f, fn(lambda s, x, f=f: f(x)), fn(lambda s, x, f=f: f(x), X1))
for f in registry._BINARY_FUNCTIONS:
    if f is torch.where:
        add(
            f,
            fn(lambda s, x, y: torch.where(s.m, x, y), X4, torch.randn(2, C, 5, 5), m=MASK),
            fn(lambda s, x: torch.where(s.m, x, s.p), p=P, m=MASK),
        )
        continue
    a = torch.randn(2, C, 5, 5).abs() + 0.5
    add(
        f,
        fn(lambda s, x, y, f=f: f(x, y), X4, a),
        fn(lambda s, x, f=f: f(x, s.p), p=P),
        fn(lambda s, x, y, f=f: f(x, y), X4, torch.rand(2, 1, 5, 5) + 0.5),
    )
    if f not in (torch.maximum, torch.minimum):  # these take tensors only
        add(f, fn(lambda s, x, f=f: f(x, 2.0)))
for f in registry._LAYOUT_FUNCTIONS:
    layout: dict[Any, Callable[..., Any]] = {
        torch.flatten: lambda s, x: torch.flatten(x, 1),
        torch.reshape: lambda s, x: torch.reshape(x, (2, -1, 25)),
        torch.permute: lambda s, x: torch.permute(x, (0, 2, 3, 1)),
        torch.transpose: lambda s, x: torch.transpose(x, 1, 3),
        torch.squeeze: lambda s, x: torch.squeeze(x.unsqueeze(2), 2),
        torch.unsqueeze: lambda s, x: torch.unsqueeze(x, 1),
        torch.movedim: lambda s, x: torch.movedim(x, 1, -1),
        torch.swapaxes: lambda s, x: torch.swapaxes(x, 1, 2),
        torch.unflatten: lambda s, x: torch.unflatten(x, 2, (5, 1)),
    }
    add(f, fn(layout[f]))
add(torch.reshape, fn(lambda s, x: torch.reshape(x, (2, 2, 3, 25))))
for f in registry._REDUCTIONS:  # over the channels these pin: a zero channel changes a mean or a max
    add(f, fn(lambda s, x, f=f: f(x, (2, 3))), fn(lambda s, x, f=f: f(x, 1, keepdim=True)))
# sums over the channels: a zeroed channel adds nothing, so removing it is exact (REDUCE sites)
add(
    torch.sum,
    fn(lambda s, x: torch.sum(x, (2, 3))),
    fn(lambda s, x: torch.sum(x * x, 1, keepdim=True)),
    fn(lambda s, x: torch.sum(x.abs(), dim=(1, 3))),
    fn(lambda s, x: torch.sum(x)),
)
add(
    torch.linalg.vector_norm,
    fn(lambda s, x: torch.linalg.vector_norm(x, dim=(2, 3))),
    fn(lambda s, x: torch.linalg.vector_norm(x, dim=1)),
    fn(lambda s, x: torch.linalg.vector_norm(x, 3, dim=1, keepdim=True)),
    fn(lambda s, x: torch.linalg.vector_norm(x, float("inf"), 1)),
    fn(lambda s, x: torch.linalg.vector_norm(x, 0, 1)),
    fn(lambda s, x: torch.linalg.vector_norm(x, -1, 1)),  # pins: |0|^-1 is not nothing
)
add(
    torch.norm,
    fn(lambda s, x: torch.norm(x, dim=1)),
    fn(lambda s, x: torch.norm(x, 1, dim=(1, 2))),
    fn(lambda s, x: torch.norm(x, "nuc", dim=(1, 2))),  # pins: a nuclear norm is not a sum over entries
)
add(
    F.normalize,
    fn(lambda s, x: F.normalize(x)),
    fn(lambda s, x: F.normalize(x, p=1.0, dim=-1)),  # over another dim: channelwise
    fn(lambda s, x: F.normalize(x.permute(0, 2, 3, 1), dim=-1)),
    fn(lambda s, x: F.normalize(x, p=-1.0, dim=1)),  # pins
)
add("sum", fn(lambda s, x: (x * x).sum(1)), fn(lambda s, x: x.pow(2).sum(dim=1, keepdim=True)))
add("norm", fn(lambda s, x: x.norm(dim=1)), fn(lambda s, x: x.norm(p=1, dim=1, keepdim=True)))
add(operator.getitem, fn(lambda s, x: x[:, 1:4]), fn(lambda s, x: x[..., 1:]), fn(lambda s, x: x[:, 2]))
add(operator.getitem, fn(lambda s, x: torch.chunk(x, 2, 1)[1]))
for f in (torch.cat, torch.concat, torch.concatenate):
    add(
        f,
        fn(lambda s, x, y, f=f: f([x, y, x], 1), X4, torch.randn(2, 3, 5, 5)),
        fn(lambda s, x, y, f=f: f([x, y], 2), X4, torch.randn(2, C, 2, 5)),
    )
add(
    torch.split,
    fn(lambda s, x: torch.split(x, [2, 4], 1)),
    fn(lambda s, x: torch.split(x, 4, 1)),
    fn(lambda s, x: torch.split(x, 2, 2)),
)
add(torch.chunk, fn(lambda s, x: torch.chunk(x, 4, 1)), fn(lambda s, x: torch.chunk(x, 2, 1)))
add(
    F.pad,
    fn(lambda s, x: F.pad(x, (0, 0, 0, 0, 1, 2))),
    fn(lambda s, x: F.pad(x, (1, 1))),
    fn(lambda s, x: F.pad(x, (0, 0, 0, 0, 1, 0), value=1.0)),
)
for f in (F.softmax, F.log_softmax, torch.softmax):
    add(f, fn(lambda s, x, f=f: f(x, 1)), fn(lambda s, x, f=f: f(x, -1)))
# contractions over the channels of both operands (q^T k) couple them; any other layout pins
for f in (torch.matmul, torch.bmm, operator.matmul):
    add(
        f,
        fn(lambda s, x, y, f=f: f(x.transpose(1, 2), y), X3, Y3),
        fn(lambda s, x, f=f: f(x.transpose(1, 2), x), X3),  # a Gram matrix
        fn(lambda s, x, y, f=f: f(x, y.transpose(1, 2)), X3, torch.randn(2, 4, 7)),  # pins: contracts over 7
    )
add(operator.matmul, fn(lambda s, x: x.flatten(2).transpose(1, 2) @ x.flatten(2)))
add(
    torch.einsum,
    fn(lambda s, x, y: torch.einsum("bci,bcj->bij", x, y), X3, Y3),
    fn(lambda s, x, y: torch.einsum("bci,bcj->bij", [x, y]), X3, Y3),
    fn(lambda s, x: torch.einsum("bchw,bcij->bhwij", x, x)),
    fn(lambda s, x, y: torch.einsum("bci,bdi->bcd", x, y), X3, torch.randn(2, 4, 7)),  # pins: over i
    fn(lambda s, x: torch.einsum("bci->bc", x), X3),  # pins: the channels stay
)
add(F.layer_norm, fn(lambda s, x: F.layer_norm(x, (5,))), fn(lambda s, x: F.layer_norm(x, (C,)), X1))
add(
    torch.stack,
    fn(lambda s, x, y: torch.stack([x, y], 1).sum(1), X4, torch.randn(2, C, 5, 5)),
    fn(lambda s, x, y: torch.stack((x, y), -1), X3, torch.randn(2, C, 7)),
    fn(lambda s, x: torch.stack([x, x.relu()], 0).softmax(0)),
    fn(lambda s, x, y: torch.stack([x, y.transpose(1, 2)]), X3, torch.randn(2, 7, C)),  # pins: mixed layouts
)
# over one of two channel dims (a (radix, C) grid, ResNeSt's split attention): fiber by fiber
add("sum", fn(lambda s, x: x.view(2, 2, 3, 5, 5).sum(1)))
add("mean", fn(lambda s, x: x.view(2, 2, 3, 5, 5).mean(1)))
add("amax", fn(lambda s, x: x.view(2, 2, 3, 5, 5).amax(2, keepdim=True)))
add("softmax", fn(lambda s, x: x.view(2, 2, 3, 5, 5).softmax(1)))
add(F.softmax, fn(lambda s, x: F.softmax(x.view(2, 2, 3, 5, 5), 2)))
DW = torch.randn(C, 1, 3, 3)  # a depthwise filter per channel (timm's BlurPool2d)
add(
    F.conv2d,
    fn(lambda s, x: F.conv2d(x, s.w, groups=C), w=DW),
    fn(lambda s, x: F.conv2d(x, s.w, s.b, 1, 1, 1, C), w=DW, b=torch.randn(C)),
    fn(lambda s, x: F.conv2d(x, s.w), w=torch.randn(4, C, 1, 1)),  # pins: mixes channels, no module
    fn(lambda s, x: F.conv2d(x, s.w * 2, groups=C), w=DW),  # pins: a computed weight
)
add(F.conv1d, fn(lambda s, x: F.conv1d(x, s.w, groups=C), X3, w=torch.randn(C, 1, 3)))
add(F.conv3d, fn(lambda s, x: F.conv3d(x, s.w, groups=C), X5, w=torch.randn(C, 1, 1, 2, 2)))
W, B = torch.rand(C) + 0.5, torch.randn(C)  # per-channel affine operands of the functional norms
MEAN, VAR = torch.randn(C), torch.rand(C) + 0.5
add(
    F.batch_norm,
    fn(lambda s, x: F.batch_norm(x, s.m, s.v, s.w, s.b), m=MEAN, v=VAR, w=W, b=B),
    fn(lambda s, x: F.batch_norm(x, s.m, s.v), X3, m=MEAN, v=VAR),
    fn(lambda s, x: F.batch_norm(x, None, None, s.w, training=True), X1, w=W),
    fn(lambda s, x: F.batch_norm(x, s.m, s.v, s.w * 2), m=MEAN, v=VAR, w=W),  # pins: a computed weight
)
add(
    F.instance_norm,
    fn(lambda s, x: F.instance_norm(x, weight=s.w, bias=s.b), w=W, b=B),
    fn(lambda s, x: F.instance_norm(x), X3),
)
add(
    F.group_norm,
    fn(lambda s, x: F.group_norm(x, 3, s.w, s.b), w=W, b=B),
    fn(lambda s, x: F.group_norm(x, 2), X3),
    fn(lambda s, x: F.group_norm(x, 1, s.w, s.b), w=W, b=B),
)

# ---- timm's layers (with timm installed): leaves with a torch module's rule, or pinned std convs
try:
    _timm = import_timm().layers
except ModelSpecError:
    _timm = None
if _timm is not None:
    add(
        nn.modules.conv._ConvNd,
        mod(_timm.Conv2dSame(C, 4, 3, stride=2)),
        mod(_timm.Conv2dSame(C, C, 3, groups=C)),
    )
    add(nn.Linear, mod(_timm.Linear(C, 4), X1))
    for t in (_timm.StdConv2d, _timm.StdConv2dSame, _timm.ScaledStdConv2d, _timm.ScaledStdConv2dSame):
        add(t, mod(t(C, 4, 3)))

# ---- methods
_METHOD_ARGS: dict[str, tuple[Any, ...]] = {
    "to": (torch.float32,),
    "type": (torch.float32,),
    "clamp": (-0.5, 0.5),
    "clamp_": (-0.5, 0.5),
    "clamp_min": (0.1,),
    "clamp_min_": (0.1,),
    "pow": (2,),
    "view": (2, -1, 25),
    "reshape": (2, -1, 5, 5),
    "flatten": (1,),
    "permute": (0, 2, 3, 1),
    "transpose": (1, 2),
    "squeeze": (0,),
    "unsqueeze": (1,),
    "movedim": (1, 3),
    "expand": (-1, -1, 5, -1),
    "unflatten": (2, (5, 1)),
    "swapaxes": (1, 3),
    "mean": ((2, 3),),
    "sum": ((2, 3),),
    "amax": ((2, 3),),
    "amin": ((2, 3),),
    "std": ((2, 3),),
    "var": ((2, 3),),
    "split": (2, 1),
    "chunk": (3, 1),
    "softmax": (-1,),
    "log_softmax": (-1,),
}
for m in registry.METHOD_RULES:
    if m in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__mul__", "__sub__"):
        add(
            m,
            fn(lambda s, x, y, m=m: getattr(x, m)(y), X4, torch.rand(2, C, 5, 5) + 0.5),
            fn(lambda s, x, m=m: getattr(x, m)(s.p), p=P),
        )
    elif m in ("matmul", "bmm"):
        add(m, fn(lambda s, x, y, m=m: getattr(x.transpose(1, 2), m)(y), X3, Y3))
    elif m in ("maximum", "minimum"):
        add(m, fn(lambda s, x, y, m=m: getattr(x, m)(y), X4, torch.randn(2, C, 5, 5)))
    elif m == "masked_fill":
        add(m, fn(lambda s, x: x.masked_fill(s.m, 0.0), m=MASK))
    elif m == "type_as":
        add(m, fn(lambda s, x: x.type_as(x)))
    elif m == "expand_as":
        add(m, fn(lambda s, x: x[:, :, :1].expand_as(x)))
    elif m == "t":
        add(m, fn(lambda s, x: x.t(), X1))
    else:
        args = _METHOD_ARGS.get(m, ())
        base = (lambda x: x[:, :, :1]) if m == "expand" else (lambda x: x)
        add(m, fn(lambda s, x, m=m, args=args, base=base: getattr(base(x), m)(*args)))
add("pow", fn(lambda s, x: x.pow(s.p), p=P))
add("view", fn(lambda s, x: x.view(2, 2, 3, 25)))

# ---- metadata-only ops


def _asserted(s: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch._assert(x.dim() == 4, "4d")
    return x


add(builtins.getattr, fn(lambda s, x: x * x.shape[2]), fn(lambda s, x: x * x.shape[1]))
add(builtins.len, fn(lambda s, x: x * len(x)))
add(torch._assert, fn(_asserted))
add("size", fn(lambda s, x: x.view(x.size(0), -1)), fn(lambda s, x: x * x.size(1)))
add("dim", fn(lambda s, x: x * x.dim()))
add("ndimension", fn(lambda s, x: x * x.ndimension()))
add("numel", fn(lambda s, x: x / x.numel()))
add("nelement", fn(lambda s, x: x / x.nelement()))
add("get_device", fn(lambda s, x: x + x.get_device()))

# Cases that expose a known lie of a rule, by test id. The analysis branch fixes these (issue 6 section 2);
# strict xfail: a fixed rule turns its entry red, so remove it then.
KNOWN_LIES: dict[str, str] = {}
# Ops whose every use reads the channel count: their rule pins, so no case has a claim to check.
ALWAYS_PINNED = frozenset({"Tensor.numel", "Tensor.nelement"}) | frozenset(
    f"timm.layers.std_conv.{n}"
    for n in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
)


def _registered() -> list[Any]:
    keys: list[Any] = []
    for types, _ in registry._timm_modules() + registry.MODULE_RULES + registry._tv_modules():
        keys.extend(types)
    keys.extend(registry.FUNCTION_RULES)
    keys.extend(registry.METHOD_RULES)
    keys.extend(registry.META_FUNCTIONS)
    keys.extend(registry.META_METHODS)
    return keys


def _name(key: Any) -> str:
    if isinstance(key, str):
        return f"Tensor.{key}"
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    return f"{getattr(key, '__module__', None) or 'torch'}.{getattr(key, '__name__', key)}"


def _params() -> list[Any]:
    out = []
    for key, cases in CASES.items():
        for i in range(len(cases)):
            cid = f"{_name(key)}-{i}"
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_LIES[cid])] if cid in KNOWN_LIES else []
            out.append(pytest.param(key, i, id=cid, marks=marks))
    return out


def test_every_registered_rule_has_a_case() -> None:
    missing = [_name(k) for k in _registered() if k not in CASES]
    assert not missing, f"registered rules without a proof case in CASES: {missing}"


def test_every_registered_method_is_a_tensor_method() -> None:
    """A method name torch.Tensor does not have (`hardtanh`) is a dead entry: no graph can call it."""
    dead = [m for m in [*registry.METHOD_RULES, *registry.META_METHODS] if not hasattr(torch.Tensor, m)]
    assert not dead, f"registered methods that torch.Tensor does not have: {dead}"


@functools.cache
def _probe(key: Any, i: int) -> tuple[list[Lie], int]:
    model, inputs = CASES[key][i]
    return probe_rules(model, *inputs)


@pytest.mark.parametrize(("key", "i"), _params())
def test_rule_claims_hold_on_values(key: Any, i: int) -> None:
    lies, _ = _probe(key, i)
    assert not lies, "\n".join(map(str, lies[:5]))


def test_each_rule_is_probed_somewhere() -> None:
    """Every registered op has at least one case where the probe checks a claim (not all pinned)."""
    unchecked = []
    for key, cases in CASES.items():
        results = []
        for i in range(len(cases)):
            try:
                results.append(_probe(key, i))
            except Exception:  # noqa: BLE001 - a crashing rule is reported by its own case
                results.append(([Lie("", "crashed")], 0))
        if not any(n for lies, n in results if not lies):
            unchecked.append(_name(key))
    known = {k.rsplit("-", 1)[0] for k in KNOWN_LIES} | ALWAYS_PINNED
    missing = sorted(set(unchecked) - known)
    assert not missing, f"no case checks a claim of: {missing}"


def test_the_probe_catches_a_lying_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that calls softmax over channels channelwise, and one that shifts channels, are caught."""
    from graphprune.analysis.rules.elementwise import identity

    monkeypatch.setitem(registry.FUNCTION_RULES, F.softmax, identity)
    lies, _ = probe_rules(Fn(lambda s, x: F.softmax(x, 1)), X4)
    assert lies and "softmax" in lies[0].node

    def shifted(dg: Any, node: Any) -> None:
        identity(dg, node)
        out = dg.info(node)
        edge = next(iter(dg.g.in_edges(out.key, data=True)))[2]
        edge["index_map"] = (edge["index_map"] + 1) % out.size

    monkeypatch.setitem(registry.FUNCTION_RULES, torch.relu, shifted)
    lies, _ = probe_rules(Fn(lambda s, x: torch.relu(x)), X4)
    assert lies


@pytest.mark.parametrize(
    "f",
    [
        lambda s, x: torch.mean(x, 1),  # a zero channel still counts in the mean
        lambda s, x: torch.amax(x, 1),  # ... and raises a max of negatives to 0
        lambda s, x: torch.logsumexp(x, 1),  # ... and adds exp(0) = 1
    ],
)
def test_the_probe_catches_a_reduction_claimed_to_be_a_sum(monkeypatch: pytest.MonkeyPatch, f: Any) -> None:
    from graphprune.analysis.rules.reductions import summation

    for op in (torch.mean, torch.amax, torch.logsumexp):
        monkeypatch.setitem(registry.FUNCTION_RULES, op, summation)
    lies, _ = probe_rules(Fn(f), -X4.abs() - 0.1)  # all negative: a zero channel raises every max
    assert lies and "not zeroing" in lies[0].what, lies
    monkeypatch.undo()
    lies, checked = probe_rules(Fn(lambda s, x: torch.sum(x * x, 1)), X4)
    assert not lies and checked >= C  # the true sum: each channel checked


def test_the_probe_catches_a_contraction_coupling_the_wrong_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """q^T k coupling channel c of q with channel c + 1 of k: removing both is not zeroing one."""
    from graphprune.analysis.rules.contractions import matmul

    def shifted(dg: Any, node: Any) -> None:
        matmul(dg, node)
        q, k = (dg.info(a) for a in node.args[:2])
        edge = next(d for _, t, d in dg.g.out_edges(q.key, data=True) if t == k.key)
        edge["index_map"] = (edge["index_map"] + 1) % k.size

    case = Fn2(lambda s, x, y: torch.matmul(x.transpose(1, 2), y))
    assert probe_rules(case, X3, Y3)[0] == []
    monkeypatch.setitem(registry.FUNCTION_RULES, torch.matmul, shifted)
    lies, _ = probe_rules(case, X3, Y3)
    assert lies and "not zeroing" in lies[0].what


def test_the_probe_catches_a_normalisation_a_zero_channel_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """F.normalize with p = -1: |0|^-1 is infinite, so a zeroed channel is not a removed one."""
    from graphprune.analysis.rules import reductions

    case = Fn(lambda s, x: F.normalize(x, p=-1.0, dim=1))
    monkeypatch.setattr(reductions, "_sums_powers", lambda p: True)
    lies, _ = probe_rules(case, X4)
    assert lies and "not zeroing" in lies[0].what
