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
    with pytest.raises(PlanError, match="FLOPs target is out of reach"):
        removal_for_budget(resnet20, ranking, BlockBudget(target_flops=0.01))
    with pytest.raises(PlanError, match="exactly one budget"):
        BlockBudget()
    with pytest.raises(PlanError, match="ratio"):
        BlockBudget(target_flops=1.5)


def test_progressive_steps_spread_the_removal() -> None:
    assert [blocks_this_step(0, 7, 3), blocks_this_step(3, 7, 2), blocks_this_step(5, 7, 1)] == [3, 2, 2]
    assert blocks_this_step(7, 7, 2) == 0


class BlockLatency:
    """A stand-in latency predictor: 2 ms fixed plus 1 ms per block left in."""

    def __init__(self, pg: gp.PrunableGraph) -> None:
        self.n = len(pg.blocks)

    def predict_counts(self, kept: dict[str, int], blocks: list[str] | tuple[str, ...] = ()) -> float:
        return 2.0 + self.n - len(blocks)


def test_latency_budget_uses_the_predictor(resnet20: gp.PrunableGraph) -> None:
    ranking = [b.name for b in resnet20.blocks]
    oracle = BlockLatency(resnet20)
    r = removal_for_budget(resnet20, ranking, BlockBudget(target_latency_ratio=0.7, latency=oracle))
    assert len(r.blocks) == 4 and r.predicted_latency_ms == 7.0  # 11 ms * 0.7 = 7.7: 3 blocks leave 8
    assert removal_for_budget(
        resnet20, ranking, BlockBudget(target_latency_ms=9.0, latency=oracle)
    ).blocks == (tuple(ranking[:2]))
    assert keep_target(resnet20, BlockBudget(target_latency_ms=9.0, latency=oracle)) < 1.0
    with pytest.raises(PlanError, match="latency predictor"):
        BlockBudget(target_latency_ms=9.0)
    with pytest.raises(PlanError, match="predicted latency target is out of reach"):
        removal_for_budget(resnet20, ranking, BlockBudget(target_latency_ms=1.0, latency=oracle))


def test_method_budget_takes_a_given_latency_predictor(resnet20: gp.PrunableGraph) -> None:
    from graphprune.methods import Budget, MethodContext
    from graphprune.methods.abp import block_budget

    oracle = BlockLatency(resnet20)
    ctx = MethodContext(
        model=resnet20.gm, example_inputs=resnet20.example_inputs, pg=resnet20,
        budget=Budget(target_latency_ratio=0.5), options={"latency_predictor": oracle},
    )  # fmt: skip
    assert block_budget(ctx).latency is oracle
