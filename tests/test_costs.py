from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune as gp
from graphprune.models import get_model


def macs_by_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """Independent count: conv / linear MACs from forward hooks on the real modules."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        per_sample = out[0].numel()
        if isinstance(m, nn.Conv2d):
            total += per_sample * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += per_sample * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize(
    "name", ["cifar_resnet20", "cifar_resnet56", "cifar_mobilenetv2", "cifar_resnet20_b"]
)
def test_flops_match_an_independent_count(name: str) -> None:
    model, x = get_model(name), torch.randn(1, 3, 32, 32)
    assert gp.count_flops(model, x) == macs_by_hooks(model, x)


def test_resnet56_has_the_published_cost() -> None:
    pg = gp.trace(get_model("cifar_resnet56"), torch.randn(1, 3, 32, 32))
    assert round(pg.flops / 1e6, 1) == 125.5 and round(pg.params / 1e6, 2) == 0.85
    assert sum(c.flops for c in pg.layer_costs) == pg.flops


def test_flops_are_per_sample() -> None:
    model = get_model("cifar_resnet20")
    assert gp.count_flops(model, torch.randn(1, 3, 32, 32)) == gp.count_flops(
        model, torch.randn(4, 3, 32, 32)
    )
