"""Resolve a MODEL argument (``torchvision:NAME``, ``timm:NAME``, ``graphprune:NAME``, ``file.py:factory``).

>>> rm = resolve_model("graphprune:cifar_resnet56", input_shape="1,3,32,32")
>>> rm.model(*rm.example_inputs).shape
torch.Size([1, 10])
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphprune.errors import GraphpruneError, ModelSpecError, WeightsError, did_you_mean, first_line

PREFIXES = ("torchvision", "timm", "graphprune")
DEFAULT_SHAPE = (1, 3, 224, 224)
EXAMPLE_SEED = 0
"""Seed for the example input and for the random init of models built without weights."""

_SPEC_HELP = "expected torchvision:NAME, timm:NAME, graphprune:NAME or path/to/file.py:factory"


@dataclass(frozen=True)
class ResolvedModel:
    """A model built from a spec, in eval mode, with an example input that fits it."""

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    example_inputs: tuple[torch.Tensor, ...]


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"1,3,32,32"`` (also ``1x3x32x32``, ``(1, 3, 32, 32)`` or a sequence of ints).

    Raises ModelSpecError naming the text unless every dimension is a positive integer.
    """
    malformed = ModelSpecError(f"malformed input shape {text!r}: expected positive integers like 1,3,32,32")
    if isinstance(text, str):
        body = text.strip().strip("()[]")
        parts = [p for p in re.split(r"[,x×\s]+", body) if p]
        if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise malformed
        dims = tuple(int(p) for p in parts)
    else:
        items = list(text)
        if not items or not all(isinstance(d, int) and not isinstance(d, bool) for d in items):
            raise malformed
        dims = tuple(items)
    if any(d <= 0 for d in dims):
        raise ModelSpecError(f"malformed input shape {text!r}: every dimension must be positive")
    return dims


def example_inputs_for(shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """A standard-normal tensor of `shape`, the same on every call (seeded)."""
    gen = torch.Generator().manual_seed(EXAMPLE_SEED)
    return (torch.randn(shape, generator=gen),)


def resolve_model(
    spec: str,
    *,
    weights: str | None = None,
    input_shape: str | Sequence[int] | None = None,
) -> ResolvedModel:
    """Build the model `spec` names, load `weights`, and check one forward pass on the example.

    Random initialisation is seeded, so the same spec always yields the same weights.
    Raises ModelSpecError (spec, shape, factory problems) or WeightsError (weights file).
    """
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    kind, target, attr = split_spec(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EXAMPLE_SEED)
        if kind == "torchvision":
            model, default_shape = _build_torchvision(target)
            name = f"torchvision:{target}"
        elif kind == "timm":  # timm loads the weights itself (its safetensors or .pth checkpoints)
            model, default_shape = _build_timm(target, shape, weights)
            name, weights = f"timm:{target}", None
        elif kind == "graphprune":
            model, default_shape = _build_builtin(target)
            name = f"graphprune:{target}"
        else:
            model, default_shape = _build_from_file(Path(target), attr), None
            name = f"{target}:{attr}"
    if weights is not None:
        model = _load_weights(model, weights)
    model.eval()
    final_shape = shape or default_shape or DEFAULT_SHAPE
    example = example_inputs_for(final_shape)
    _check_forward(name, model, final_shape, example, defaulted=shape is None)
    return ResolvedModel(name=name, model=model, input_shape=final_shape, example_inputs=example)


def split_spec(spec: str) -> tuple[str, str, str]:
    """Split a spec into (kind, target, attr): ("torchvision", "resnet50", "") or ("file", path, factory)."""
    text = spec.strip()
    if ".py:" in text:
        path, _, factory = text.rpartition(":")
        if not factory.isidentifier():
            raise ModelSpecError(f"bad model spec {spec!r}: {factory!r} is not a factory function name")
        return "file", path, factory
    prefix, sep, name = text.partition(":")
    if not sep:
        if text.endswith(".py"):
            raise ModelSpecError(f"bad model spec {spec!r}: name the factory, e.g. {text}:build_model")
        raise ModelSpecError(f"bad model spec {spec!r}: {_SPEC_HELP}")
    if prefix not in PREFIXES:
        hint = did_you_mean(prefix, PREFIXES)
        raise ModelSpecError(f"unknown model prefix {prefix!r} in {spec!r}{hint}; {_SPEC_HELP}")
    if not name:
        raise ModelSpecError(f"bad model spec {spec!r}: missing model name after {prefix}:")
    return prefix, name, ""


def _build_torchvision(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    from graphprune.torchvision_compat import import_torchvision

    tv = import_torchvision()
    available = sorted(tv.models.list_models())
    if name not in available:
        raise ModelSpecError(f"unknown torchvision model {name!r}{did_you_mean(name, available)}")
    model = _call_builder(f"torchvision:{name}", lambda: tv.models.get_model(name, weights=None))
    if name == "inception_v3":
        shape: tuple[int, ...] = (1, 3, 299, 299)
    elif name in tv.models.list_models(module=tv.models.video):
        shape = (1, 3, 16, 112, 112)
    else:
        shape = DEFAULT_SHAPE
    return model, shape


def _build_timm(
    name: str, shape: tuple[int, ...] | None, weights: str | None
) -> tuple[nn.Module, tuple[int, ...]]:
    """timm's `create_model` (random init, or the local checkpoint `weights`); the input shape comes from
    the model's pretrained config. For another input size, a model that takes `img_size` (those that fix
    their input size: LeViT, EfficientFormer) is created for it."""
    from graphprune.timm_compat import import_timm

    timm = import_timm()
    if not timm.is_model(name):
        raise ModelSpecError(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models())}")
    if weights is not None and not Path(weights).is_file():
        raise WeightsError(
            f"weights file {weights} {'is a directory' if Path(weights).is_dir() else 'not found'}"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    size = tuple(shape[-2:]) if shape is not None and len(shape) == 4 else None
    if cfg is not None and size == tuple(cfg.input_size[-2:]):
        size = None

    def create() -> nn.Module:
        if size is not None:  # models whose layers depend on the input size take it (LeViT, EfficientFormer)
            try:
                return timm.create_model(name, pretrained=False, img_size=size)
            except TypeError:  # no `img_size` argument: the model adapts to any input size
                pass
        return timm.create_model(name, pretrained=False)

    try:
        model = _call_builder(f"timm:{name}", create)
        if weights is not None:
            timm.models.load_checkpoint(model, weights, strict=True)
    except ModelSpecError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"cannot load {weights} into timm:{name}: {first_line(exc, with_type=True)}"
        ) from exc
    pretrained_cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    return model, (1, *tuple(pretrained_cfg.get("input_size") or DEFAULT_SHAPE[1:]))


def _build_builtin(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    from graphprune import models

    available = sorted(models.list_models())
    if name not in available:
        raise ModelSpecError(f"unknown graphprune model {name!r}{did_you_mean(name, available)}")
    model = _call_builder(f"graphprune:{name}", lambda: models.get_model(name))
    return model, tuple(models.default_input_shape(name))


def _build_from_file(path: Path, factory: str) -> nn.Module:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise ModelSpecError(f"model file {path} {what}")
    module = _import_file(path)
    fn = getattr(module, factory, None)
    if fn is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ModelSpecError(f"{path} has no factory {factory!r}{did_you_mean(factory, names)}")
    if not callable(fn):
        raise ModelSpecError(f"{path}:{factory} is a {type(fn).__name__}, not a callable factory")
    return _call_builder(f"{path}:{factory}", fn)


def _import_file(path: Path) -> object:
    """Import `path` as a fresh module; its directory is on sys.path while it runs."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", resolved.stem)
    mod_name = f"_graphprune_user_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, resolved)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise ModelSpecError(f"importing {path} failed: {first_line(exc, with_type=True)}") from exc
    finally:
        sys.path.remove(str(resolved.parent))
    return module


def _call_builder(name: str, build: Callable[[], object]) -> nn.Module:
    try:
        model = build()
    except GraphpruneError:
        raise
    except Exception as exc:
        raise ModelSpecError(f"factory {name} raised {first_line(exc, with_type=True)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"factory {name} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _load_weights(model: nn.Module, weights: str) -> nn.Module:
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file {path} {'is a directory' if path.is_dir() else 'not found'}")
    from graphprune.weights import load_weights

    return load_weights(model, str(path), strict=True)


def _check_forward(
    name: str,
    model: nn.Module,
    shape: tuple[int, ...],
    example: tuple[torch.Tensor, ...],
    *,
    defaulted: bool,
) -> None:
    try:
        with torch.no_grad():
            model(*example)
    except Exception as exc:
        dims = ",".join(map(str, shape))
        which = "default input shape" if defaulted else "input shape"
        hint = " (pass --input-shape)" if defaulted else ""
        raise ModelSpecError(
            f"{which} {dims} does not fit {name}{hint}: {first_line(exc, with_type=True)}"
        ) from exc
