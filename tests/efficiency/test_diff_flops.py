from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.archs import random_toynet
from support.lossless import random_plan

import graphprune as gp
from graphprune.efficiency import DifferentiableFlops, FlopsModel
from graphprune.models import get_model

X = torch.randn(1, 3, 16, 16)


def binary_keep(pg: gp.PrunableGraph, plan: gp.PruningPlan) -> tuple[dict, dict]:
    keep = {}
    for g in pg.prunable_groups:
        v = torch.ones(g.size, dtype=torch.float64)
        v[list(plan.channels.get(g.id, ()))] = 0.0
        keep[g.id] = v
    blocks = {b: torch.tensor(0.0) for b in plan.blocks}
    return keep, blocks


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.integers(0, 10_000), seed=st.integers(0, 10_000))
def test_binary_keep_values_give_the_flops_of_the_rewritten_model(arch: int, seed: int) -> None:
    pg = gp.trace(random_toynet(arch, 5), X)
    plan = random_plan(pg, seed, 0.4, blocks=0.3)
    keep, blocks = binary_keep(pg, plan)
    predicted = DifferentiableFlops(pg)(keep, blocks)
    assert round(float(predicted)) == gp.count_flops(gp.apply(pg, plan, verify=False), X)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet20_b", "cifar_mobilenetv2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_builtin_models_match_count_flops_of_the_applied_plan(name: str, seed: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    pg = gp.trace(get_model(name).eval(), x)
    plan = random_plan(pg, seed, 0.3, blocks=0.4)
    keep, blocks = binary_keep(pg, plan)
    predicted = DifferentiableFlops(pg)(keep, blocks)
    assert round(float(predicted)) == gp.count_flops(gp.apply(pg, plan, verify=False), x)
    assert round(float(predicted)) == FlopsModel(pg).flops(plan.channels, plan.blocks)


def test_gradients_reach_every_keep_value_and_block() -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))
    model = DifferentiableFlops(pg)
    keep = {
        g.id: torch.full((g.size,), 0.7, dtype=torch.float64, requires_grad=True) for g in pg.prunable_groups
    }
    blocks = {b.name: torch.tensor(0.5, requires_grad=True) for b in pg.blocks}
    model(keep, blocks).backward()
    assert all(float(v.grad.abs().min()) > 0 for v in keep.values())
    assert all(float(b.grad) > 0 for b in blocks.values())


def test_kept_counts_equal_per_index_keep_values() -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))
    model = DifferentiableFlops(pg)
    counts = {g.id: torch.tensor(float(g.size // 2)) for g in pg.prunable_groups}
    vectors = {g.id: (torch.arange(g.size) < g.size // 2).double() for g in pg.prunable_groups}
    assert float(model(counts)) == pytest.approx(float(model(vectors)), rel=1e-12)
    assert round(float(model())) == pg.flops


def test_unknown_group_is_named() -> None:
    pg = gp.trace(random_toynet(3, 5), X)
    with pytest.raises(gp.PlanError, match="nope"):
        DifferentiableFlops(pg)({"nope": torch.ones(2)})
