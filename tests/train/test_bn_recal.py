"""recalibrate_bn re-estimates running statistics only, and undoes the shift a removed block leaves."""

from __future__ import annotations

import copy

import torch
from support.tiny_data import tiny_bundle, tiny_net
from torch import nn

from graphprune.train import evaluate, recalibrate_bn


class Shifted(nn.Module):
    """conv -> (+ a residual branch that adds a constant, when `block`) -> BN -> pool -> linear."""

    def __init__(self, block: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)
        self.shift = nn.Parameter(torch.linspace(-3, 3, 6).view(1, 6, 1, 1), requires_grad=False)
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.block:
            y = y + self.shift
        return self.fc(torch.relu(self.bn(y)).mean((2, 3)))


def test_only_running_statistics_change_and_modes_are_kept() -> None:
    data = tiny_bundle()
    net = tiny_net()
    net.train()
    net[1].momentum = 0.3
    before = copy.deepcopy(net.state_dict())
    recalibrate_bn(net, data, images=64, batch_size=8)  # the whole split, in 8 batches
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert net.training and net[1].training and net[1].momentum == 0.3
    # the exact mean over the sample: what BN computes on the whole sample in one batch
    x = torch.cat([x for x, _ in data.loader("train", 64, shuffle=False, augment=False)])
    assert torch.allclose(after["1.running_mean"], net[0](x).mean((0, 2, 3)), atol=1e-5)


def test_recalibration_restores_a_removed_constant_block_exactly() -> None:
    data = tiny_bundle(n_train=64, n_test=64)
    full = recalibrate_bn(Shifted(block=True).eval(), data, images=64)
    removed = copy.deepcopy(full)
    removed.block = False  # the block's removal shifts what the BN sees by a constant
    x = next(iter(data.loader("test", 64, shuffle=False)))[0]
    assert not torch.allclose(removed(x), full(x), atol=1e-3)
    recalibrate_bn(removed, data, images=64)
    assert torch.allclose(removed(x), full(x), atol=1e-4)
    assert evaluate(removed, data).top1 == evaluate(full, data).top1


def test_a_model_without_batchnorm_is_returned_untouched() -> None:
    net = tiny_net(bn=False)
    before = copy.deepcopy(net.state_dict())
    assert recalibrate_bn(net, tiny_bundle()) is net
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
