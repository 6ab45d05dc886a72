from __future__ import annotations

import operator

import torch
from hypothesis import HealthCheck, given, settings
from support.strategies import Arch, architectures
from torch import nn

import graphprune as gp
from graphprune.passes import FoldScale


class Gated(nn.Module):
    """Per-channel gate after a conv, a per-block scalar after a BN, and a gate after a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, bias=True)
        self.gate = nn.Parameter(torch.rand(1, 6, 1, 1))
        self.conv2 = nn.Conv2d(6, 6, 3, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)
        self.fc_gate = nn.Parameter(torch.rand(4))
        self.shared = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x) * self.gate)
        x = self.bn(self.conv2(x)) * 0.5
        y = self.shared(x)
        x = x + y * self.gate + y  # `shared` has two users: must not be folded
        return self.fc(x.mean((2, 3))) * self.fc_gate


def test_scales_fold_into_producers_and_outputs_match() -> None:
    model = Gated().eval()
    model.bn.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 3, 12, 12)
    pg = gp.trace(model, x)
    res = FoldScale()(pg.gm)
    gm = res.graph_module
    muls = [n for n in gm.graph.nodes if n.target in (operator.mul, torch.mul)]
    assert res.modified and len(muls) == 1  # only the multiply on `shared` (two users) is left
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)


def test_nothing_to_fold_is_unmodified() -> None:
    pg = gp.trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), torch.randn(1, 3, 8, 8))
    assert not FoldScale()(pg.gm).modified


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures())
def test_folding_keeps_the_output_on_composed_architectures(arch: Arch) -> None:
    xs = arch.example()
    pg = gp.trace(arch.build(), xs)
    gm = FoldScale()(pg.gm).graph_module
    with torch.no_grad():
        torch.testing.assert_close(gm(*xs), pg.gm(*xs), rtol=1e-5, atol=1e-5)
