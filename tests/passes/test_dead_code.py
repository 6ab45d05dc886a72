from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from support.strategies import Arch, architectures
from torch import nn

import graphprune as gp
from graphprune.passes import EliminateDeadCode


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Conv2d(3, 4, 1)
        self.dead = nn.Conv2d(3, 4, 1)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _ = self.dead(x) * self.scale
        return self.used(x)


def test_dead_nodes_modules_and_parameters_are_dropped() -> None:
    x = torch.randn(1, 3, 8, 8)
    pg = gp.trace(Unused(), x)
    res = EliminateDeadCode()(pg.gm)
    gm = res.graph_module
    assert res.modified
    assert not hasattr(gm, "dead") and not hasattr(gm, "scale") and hasattr(gm, "used")
    torch.testing.assert_close(gm(x), pg.gm(x))


def test_clean_graph_is_unchanged() -> None:
    pg = gp.trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), torch.randn(1, 3, 8, 8))
    assert not EliminateDeadCode()(pg.gm).modified


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures())
def test_dead_code_elimination_keeps_the_output_on_composed_architectures(arch: Arch) -> None:
    """Nothing a composed model computes is dead: its output is unchanged (in-place ops included)."""
    xs = arch.example()
    pg = gp.trace(arch.build(), xs)
    gm = EliminateDeadCode()(pg.gm).graph_module
    with torch.no_grad():
        torch.testing.assert_close(gm(*xs), pg.gm(*xs))
