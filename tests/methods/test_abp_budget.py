from __future__ import annotations

import pytest
import torch

import graphprune as gp
from graphprune.errors import PlanError
from graphprune.methods.abp.budget import (
    BlockBudget,
    blocks_this_step,
    keep_target,
    removal_for_budget,
)
from graphprune.models import get_model


@pytest.fixture(scope="module")
def resnet20() -> gp.PrunableGraph:
    return gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))


def test_flops_budget_is_met_by_the_shortest_prefix_and_predicted_equals_measured(
    resnet20: gp.PrunableGraph,
) -> None:
    ranking = [b.name for b in reversed(resnet20.blocks)]
    r = removal_for_budget(resnet20, ranking, BlockBudget(target_flops=0.6))
    assert r.predicted_flops <= 0.6 * resnet20.flops
    k = len(r.blocks)
    assert k > 0 and r.blocks == tuple(ranking[:k])
    bigger = removal_for_budget(resnet20, ranking[: k - 1], BlockBudget(num_blocks=k - 1))
    assert bigger.predicted_flops > 0.6 * resnet20.flops  # one block fewer misses the target
    plan = gp.PruningPlan.for_graph(resnet20)
    for b in r.blocks:
        plan.remove_block(b)
    slim = gp.apply(resnet20, plan)
    assert gp.count_flops(slim, resnet20.example_inputs) == r.predicted_flops


def test_block_count_and_fraction_budgets(resnet20: gp.PrunableGraph) -> None:
    ranking = [b.name for b in resnet20.blocks]
    assert removal_for_budget(resnet20, ranking, BlockBudget(num_blocks=3)).blocks == tuple(ranking[:3])
    assert len(removal_for_budget(resnet20, ranking, BlockBudget(block_fraction=0.34)).blocks) == 3
    assert keep_target(resnet20, BlockBudget(num_blocks=3)) == pytest.approx(6 / 9)
    kt = keep_target(resnet20, BlockBudget(target_flops=0.5))
    block_flops = sum(b.flops for b in resnet20.blocks)
    assert (resnet20.flops - block_flops) + kt * block_flops == pytest.approx(0.5 * resnet20.flops)


def test_unreachable_or_malformed_budgets_are_one_line_errors(resnet20: gp.PrunableGraph) -> None:
    ranking = [b.name for b in resnet20.blocks]
    with pytest.raises(PlanError, match="out of reach"):
        removal_for_budget(resnet20, ranking, BlockBudget(target_flops=0.01))
    with pytest.raises(PlanError, match="exactly one budget"):
        BlockBudget()
    with pytest.raises(PlanError, match="ratio"):
        BlockBudget(target_flops=1.5)


def test_progressive_steps_spread_the_removal() -> None:
    assert [blocks_this_step(0, 7, 3), blocks_this_step(3, 7, 2), blocks_this_step(5, 7, 1)] == [3, 2, 2]
    assert blocks_this_step(7, 7, 2) == 0
