"""Options shared by the commands: MODEL with --weights/--input-shape/--leaf-module/--prune-layernorm, and
--out DIR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

LEAF_MODULES_KEY = "graphprune.leaf_modules"
PRUNE_LAYERNORM_KEY = "graphprune.prune_layernorm"

MODEL_HELP = """
MODEL is torchvision:NAME (e.g. torchvision:resnet50), timm:NAME (e.g. timm:efficientnet_b0, with
pip install graphprune[timm]), graphprune:NAME (built-in, e.g. graphprune:cifar_resnet56) or
path/to/file.py:factory (a function returning an nn.Module).
"""


def model_options(fn: F) -> F:
    """MODEL argument plus --weights, --input-shape, --leaf-module and --prune-layernorm, shared by every
    model command."""
    fn = click.option(
        "--prune-layernorm",
        is_flag=True,
        expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(PRUNE_LAYERNORM_KEY, bool(value)),
        help="Also prune channels a LayerNorm normalises over (ConvNeXt, ViT, Swin residual streams; "
        "pinned otherwise). Not lossless: the pruned LayerNorm normalises over the kept channels only.",
    )(fn)
    fn = click.option(
        "--leaf-module",
        "leaf_modules",
        multiple=True,
        metavar="PATH",
        expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(LEAF_MODULES_KEY, tuple(value)),
        help="Keep this submodule (e.g. layer2.1) as one opaque op, for code torch.fx cannot trace; its "
        "channels become unprunable. Repeatable.",
    )(fn)
    fn = click.option(
        "--input-shape",
        metavar="N,C,H,W",
        help="Example input shape (default: the model's own, e.g. 1,3,224,224 for torchvision).",
    )(fn)
    fn = click.option(
        "--weights",
        type=click.Path(path_type=Path),
        metavar="FILE",
        help="state_dict (or checkpoint) to load into MODEL before anything else.",
    )(fn)
    return click.argument("model", metavar="MODEL")(fn)


def out_dir_option(default: str | None) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path),
        required=default is None,
        default=default,
        metavar="DIR",
        help="Output directory for model.safetensors, plan.json, model.onnx, report.json"
        + (f" (default: {default})." if default else "."),
    )


def static_batch_option(fn: F) -> F:
    """--static-batch: export the ONNX file with the example's fixed batch size."""
    return click.option(
        "--static-batch",
        is_flag=True,
        help="Export ONNX with the example's fixed batch size (for models that specialise on it).",
    )(fn)


def leaf_modules() -> tuple[str, ...]:
    """The --leaf-module paths of the running command."""
    found: tuple[str, ...] = click.get_current_context().meta.get(LEAF_MODULES_KEY, ())
    return found


def prune_layernorm() -> bool:
    """Whether the running command was given --prune-layernorm."""
    return bool(click.get_current_context().meta.get(PRUNE_LAYERNORM_KEY, False))
