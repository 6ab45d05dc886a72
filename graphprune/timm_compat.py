"""timm (PyTorch Image Models), an optional extra: its import, and the timm layers traced as leaves.

Two kinds of timm layer are kept whole by the tracer, because their forward cannot be traced or traces to
an op graphprune has no rule for, while the module itself has a known channel rule:

- `Conv2dSame` pads by an amount computed from the input's shape (`math.ceil` on a traced size), then
  calls F.conv2d; as a leaf it is a Conv2d to the conv rule, and its rewrite is the Conv2d's.
- `Linear` calls F.linear on its own weight; as a leaf it is an nn.Linear.
- `StdConv2d`, `ScaledStdConv2d` (and their `Same` forms) standardise the weight over each output
  channel's input channels before the conv: removing an input channel changes every kept weight, so
  their channels are pinned, with that reason (`registry.module_rule`).

Where tracing fails inside a module timm itself registers as not traceable by torch.fx (attention blocks:
MobileVitBlock, LocalWindowAttention...), the tracer keeps that module type whole, with timm's
not-traceable functions wrapped (`notrace_module_around`, `notrace_functions`); such a leaf has no
channel rule, so its channels are pinned, named by its type.

timm is looked up only when the user's program has imported it: graphprune never imports it for a model
that does not come from timm.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from graphprune.errors import ModelSpecError

INSTALL_HINT = "timm is not installed: pip install graphprune[timm]"


def import_timm() -> ModuleType:
    """Import timm (after the torchvision shim it needs here), or raise a one-line ModelSpecError."""
    from graphprune.torchvision_compat import import_torchvision

    try:
        import_torchvision()
    except ImportError:  # timm imports torchvision only where it is installed
        pass
    try:
        import timm
    except ImportError:
        raise ModelSpecError(INSTALL_HINT) from None
    return timm


def loaded_timm() -> ModuleType | None:
    """timm's module if the program imported it, else None (graphprune never imports it by itself)."""
    return sys.modules.get("timm")


def _layers() -> ModuleType | None:
    timm = loaded_timm()
    return getattr(timm, "layers", None) if timm is not None else None


def std_conv_types() -> tuple[type, ...]:
    """timm's weight-standardised convolutions (pinned: the standardisation mixes the input channels)."""
    layers = _layers()
    names = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
    return tuple(t for n in names if isinstance(t := getattr(layers, n, None), type))


def leaf_types() -> tuple[type, ...]:
    """The timm layers the tracer keeps whole (see the module docstring); () without timm."""
    layers = _layers()
    names = ("Conv2dSame", "Linear")
    return tuple(t for n in names if isinstance(t := getattr(layers, n, None), type)) + std_conv_types()


def _fx_registry() -> ModuleType | None:
    timm = loaded_timm()
    layers = getattr(timm, "layers", None) if timm is not None else None
    return getattr(layers, "_fx", None)


def notrace_functions() -> tuple[Callable[..., Any], ...]:
    """The functions timm registers as not traceable by torch.fx (recorded as calls, not traced)."""
    registry = _fx_registry()
    return tuple(registry.get_notrace_functions()) if registry is not None else ()


def notrace_module_around(root: nn.Module, path: str) -> type | None:
    """The type of the innermost module at or above `path` that timm registers as not traceable by
    torch.fx, or None (no timm, or no such module)."""
    registry = _fx_registry()
    if registry is None or not path:
        return None
    notrace = set(registry.get_notrace_modules())
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        t = type(root.get_submodule(".".join(parts[:k])))
        if t in notrace:
            return t
    return None
