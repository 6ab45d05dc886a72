from __future__ import annotations

import torch
from torch import nn

from graphprune.modcopy import deepcopy_module
from graphprune.models import get_model


class WithState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.mask = torch.ones(4)  # a plain tensor attribute (no truth value)
        self.table: dict[str, int] = {}
        self.conv.register_forward_hook(lambda m, i, o: o * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.mask.view(1, -1, 1, 1)


def test_a_copy_owns_its_tensors_and_tables_and_computes_the_same() -> None:
    model, x = WithState().eval(), torch.randn(1, 3, 4, 4)
    dup = deepcopy_module(model)
    torch.testing.assert_close(dup(x), model(x))  # the forward hook came along
    assert dup.conv.weight is not model.conv.weight and torch.equal(dup.conv.weight, model.conv.weight)
    assert dup.mask is not model.mask and dup.table is not model.table
    assert dup.conv._forward_pre_hooks is not model.conv._forward_pre_hooks
    dup.conv._forward_pre_hooks[0] = print
    assert not model.conv._forward_pre_hooks


def test_shared_tensors_are_kept() -> None:
    model = get_model("cifar_resnet20")
    shared = list(model.parameters())
    dup = deepcopy_module(model, shared)
    assert all(a is b for a, b in zip(dup.parameters(), shared, strict=True))
    assert all(a is not b for a, b in zip(dup.buffers(), model.buffers(), strict=True))
