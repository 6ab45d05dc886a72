from __future__ import annotations

import pytest
import torch
from support.archs import random_toynet
from support.lossless import random_plan
from torch import nn

import graphprune as gp
from graphprune.models import get_model
from graphprune.passes.channel_gates import (
    GATES,
    InsertChannelGates,
    RemoveChannelGates,
    gate_points,
    gate_slots,
)


class FixedGate(nn.Module):
    """A gate that ignores the weights and returns a fixed vector."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, *weights: torch.Tensor) -> torch.Tensor:
        return self.value


def gated(pg: gp.PrunableGraph, values: dict[str, torch.Tensor]) -> torch.fx.GraphModule:
    gates = {gid: FixedGate(v) for gid, v in values.items()}
    return InsertChannelGates(pg.prunable_groups, gates)(pg.gm).graph_module


@pytest.mark.parametrize("arch", range(5))
def test_gates_at_one_are_lossless_and_removal_restores_the_graph(arch: int) -> None:
    x = torch.randn(2, 3, 16, 16)
    pg = gp.trace(random_toynet(arch, 5), x[:1])
    ones = {g.id: torch.ones(g.size) for g in pg.prunable_groups}
    gm = gated(pg, ones).eval()
    with torch.no_grad():
        expected = pg.gm.eval()(x)
        assert torch.equal(gm(x), expected)
        back = RemoveChannelGates()(gm).graph_module
        assert torch.equal(back(x), expected)
    assert not hasattr(back, GATES)
    assert list(back.state_dict()) == list(pg.gm.state_dict())
    assert [n.op for n in back.graph.nodes] == [n.op for n in pg.gm.graph.nodes]
    assert hasattr(gm, GATES) and not hasattr(pg.gm, GATES)  # the input was not changed


@pytest.mark.parametrize("arch", ["cifar_resnet20", 1, 2, 5])
def test_gates_at_zero_compute_what_the_pruned_model_computes(arch: str | int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = get_model(arch) if isinstance(arch, str) else random_toynet(arch, 5)
    pg = gp.trace(model.eval(), x[:1])
    plan = random_plan(pg, 3, 0.3)
    values = {}
    for g in pg.prunable_groups:
        v = torch.ones(g.size)
        v[list(plan.channels.get(g.id, ()))] = 0.0
        values[g.id] = v
    gm = gated(pg, values).eval()
    slim = gp.apply(pg, plan).eval()
    with torch.no_grad():
        torch.testing.assert_close(gm(x), slim(x), rtol=1e-4, atol=1e-5)


def test_a_residual_group_shares_one_gate_across_its_producers() -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))
    residual = pg.group_of("layer1.0.bn2")
    points = gate_points(pg.gm, residual)
    assert len(points) >= 4  # the stem and every block's second BN of stage 1 write these channels
    gm = gated(pg, {residual.id: torch.ones(residual.size)})
    slots = gate_slots(gm)
    assert list(slots) == [residual.id] and len(slots[residual.id].scales) == len(points)
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).endswith(".gate")]
    assert len(calls) == 1 and len(calls[0].users) == len(points)


def test_inserting_twice_is_refused() -> None:
    pg = gp.trace(random_toynet(1, 3), torch.randn(1, 3, 16, 16))
    gm = gated(pg, {pg.prunable_groups[0].id: torch.ones(pg.prunable_groups[0].size)})
    with pytest.raises(gp.PlanError, match="already has channel gates"):
        InsertChannelGates(pg.prunable_groups, {})(gm)
