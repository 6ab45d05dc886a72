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


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures())
def test_dead_code_elimination_keeps_the_output_on_composed_architectures(arch: Arch) -> None:
    """Nothing a composed model computes is dead: its output is unchanged (in-place ops included)."""
    xs = arch.example()
    pg = gp.trace(arch.build(), xs)
    gm = EliminateDeadCode()(pg.gm).graph_module
    with torch.no_grad():
        torch.testing.assert_close(gm(*xs), pg.gm(*xs))


class InPlace(nn.Module):
    """`h.add_(skip(x))`'s result is unused, but it changes h; `torch.add(a, b, out=h)` too."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.skip = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h.add_(self.skip(x))
        torch.relu_(h)
        return h * 2


def test_in_place_ops_with_unused_results_are_kept() -> None:
    x = torch.randn(1, 3, 8, 8)
    pg = gp.trace(InPlace(), x)
    gm = EliminateDeadCode()(pg.gm).graph_module
    assert hasattr(gm, "skip")
    with torch.no_grad():
        torch.testing.assert_close(gm(x), pg.gm(x))


def test_an_out_kwarg_is_a_side_effect() -> None:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    buf = graph.call_function(torch.zeros_like, (x,))
    graph.call_function(torch.add, (x, x), {"out": buf})
    graph.output(buf)
    gm = torch.fx.GraphModule(nn.Module(), graph)
    gm = EliminateDeadCode()(gm).graph_module
    torch.testing.assert_close(gm(torch.ones(2)), torch.full((2,), 2.0))


def test_an_in_place_op_on_a_dead_tensor_goes_with_it() -> None:
    class DeadInPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.dead = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.relu_(self.dead(x))
            return self.a(x)

    gm = EliminateDeadCode()(gp.trace(DeadInPlace(), torch.randn(1, 3, 4, 4)).gm).graph_module
    assert not hasattr(gm, "dead")


def test_plans_apply_to_a_model_with_an_unused_in_place_result() -> None:
    x = torch.randn(2, 3, 8, 8)
    pg = gp.trace(InPlace(), x)
    for g in pg.prunable_groups:
        slim = gp.apply(pg, gp.PruningPlan().remove_channels(g.id, [1]))
        assert hasattr(slim, "skip")
