from __future__ import annotations

import torch
from torch import nn

from graphprune.modcopy import clone_shared, deepcopy_module
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


def test_clone_shared_copies_the_shared_tensors_once_and_keeps_ties() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[1].weight = model[0].weight  # tied
    dup = deepcopy_module(model, list(model.parameters()) + list(model.buffers()))
    dup[1].bias = nn.Parameter(torch.zeros(3))  # replaced, as a pass would: already its own
    clone_shared(dup, list(model.parameters()) + list(model.buffers()))
    ours = {id(t) for t in list(model.parameters()) + list(model.buffers())}
    assert not any(id(t) in ours for t in list(dup.parameters()) + list(dup.buffers()))
    assert dup[1].weight is dup[0].weight and isinstance(dup[0].weight, nn.Parameter)
    assert torch.equal(dup[0].weight, model[0].weight)
    assert torch.equal(dup[2].running_var, model[2].running_var)
    assert not dup[2].num_batches_tracked.requires_grad
