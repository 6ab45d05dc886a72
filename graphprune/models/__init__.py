"""Built-in architectures (no downloads), by name: `get_model("cifar_resnet56")`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from graphprune.errors import ModelSpecError
from graphprune.models.cifar_mobilenetv2 import CifarMobileNetV2, cifar_mobilenetv2
from graphprune.models.cifar_resnet import BasicBlock, CifarResNet, PadShortcut, cifar_resnet

__all__ = [
    "BasicBlock",
    "CifarMobileNetV2",
    "CifarResNet",
    "PadShortcut",
    "default_input_shape",
    "get_model",
    "list_models",
]

_CIFAR_INPUT: tuple[int, ...] = (1, 3, 32, 32)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
for _depth in (20, 32, 44, 56, 110):
    _REGISTRY[f"cifar_resnet{_depth}"] = partial(cifar_resnet, _depth, option="A")
    _REGISTRY[f"cifar_resnet{_depth}_b"] = partial(cifar_resnet, _depth, option="B")
_REGISTRY["cifar_mobilenetv2"] = cifar_mobilenetv2

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: _CIFAR_INPUT for name in _REGISTRY}
# the CIFAR ResNet-20 on Fashion-MNIST's 28x28 grey images (the demo's fallback data)
_REGISTRY["fmnist_resnet20"] = partial(cifar_resnet, 20, option="A", in_channels=1)
_INPUT_SHAPES["fmnist_resnet20"] = (1, 1, 28, 28)


def list_models() -> list[str]:
    """Names accepted by `get_model`, sorted."""
    return sorted(_REGISTRY)


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ModelSpecError(f"unknown built-in model {name!r}; available: {', '.join(list_models())}")


def get_model(name: str, **kwargs: object) -> nn.Module:
    """A freshly initialised built-in model; kwargs (e.g. num_classes, width_mult) go to its builder."""
    _check(name)
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ModelSpecError(f"bad arguments for built-in model {name!r}: {exc}") from None


def default_input_shape(name: str) -> tuple[int, ...]:
    """Example input shape (batch 1) for a built-in model."""
    _check(name)
    return _INPUT_SHAPES[name]
