"""Read-off with rounding, and the budget repair as a knapsack (score per unit of cost, whole units)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.methods.wgates.counts import min_kept, nearest_kept, step_down, step_up
from graphprune.methods.wgates.readoff import read_off
from graphprune.methods.wgates.repair import FlopsCost, repair
from graphprune.methods.wgates.site_flops import SiteFlops
from graphprune.models import get_model


@pytest.fixture(scope="module")
def resnet20() -> gp.PrunableGraph:
    torch.manual_seed(0)
    return gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))


def kept(pg: gp.PrunableGraph, plan: gp.PruningPlan) -> dict[str, int]:
    return {g.id: g.size - len(plan.channels.get(g.id, ())) for g in pg.prunable_groups}


def kept_score(plan: gp.PruningPlan, scores: dict[str, np.ndarray]) -> float:
    return sum(float(s.sum() - s[list(plan.channels.get(gid, ()))].sum()) for gid, s in scores.items())


def test_counts_are_multiples_of_round_to_or_the_whole_group() -> None:
    assert [nearest_kept(16, k, 2, 8) for k in (1, 4, 5, 11, 12, 16)] == [8, 8, 8, 8, 16, 16]
    assert [nearest_kept(20, k, 8, 8) for k in (17, 19)] == [16, 20]
    assert nearest_kept(6, 3, 1, 8) == 3  # a group of at most round_to channels is not rounded
    assert min_kept(64, 0.9, 8) == 8 and min_kept(16, 0.9, 1) == 2 and min_kept(16, 0.9, 8) == 8
    assert step_down(20, 20, 8, 8) == 16 and step_down(16, 8, 8, 8) is None and step_up(20, 16, 8) == 20


def test_read_off_keeps_the_top_scoring_channels_in_multiples_of_round_to(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    rng = np.random.default_rng(1)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    plan = read_off(pg, scores, 0.9, round_to=8)
    plan.validate(pg)
    for gid, k in kept(pg, plan).items():
        s = scores[gid]
        assert k % 8 == 0 and k >= 8
        assert abs(k - int((s > 0).sum())) <= 4  # the nearest multiple of the open count
        gone = list(plan.channels.get(gid, ()))
        assert not gone or s[gone].max() <= np.delete(s, gone).min()  # the lowest-scoring go
    assert read_off(pg, scores).channels == read_off(pg, scores, 0.9, 1).channels  # default: unrounded
    assert all(
        set(np.flatnonzero(scores[g] <= 0)) >= set(i) for g, i in read_off(pg, scores).channels.items()
    )


def test_knapsack_repair_skips_an_expensive_channel_and_restores_cheaper_ones(
    resnet20: gp.PrunableGraph,
) -> None:
    """The prefix repair stopped at the first removed channel that did not fit: here the best-scored one,
    of the residual stream (1.6M MACs a channel), so nothing came back. The knapsack skips it and restores
    the four in-block channels (74k MACs each) that fit."""
    pg = resnet20
    fm = FlopsModel(pg)
    scores = {g.id: np.ones(g.size) for g in pg.prunable_groups}
    scores["conv1"][0] = 0.9
    scores["layer3.1.conv1"][:4] = 0.5
    plan = gp.PruningPlan.for_graph(pg)
    plan.remove_channels("conv1", [0])
    plan.remove_channels("layer3.1.conv1", [0, 1, 2, 3])
    before = fm.flops(plan.channels)
    one_cheap = before - fm.flops({**plan.channels, "layer3.1.conv1": [0, 1, 2, 3, 4]})
    one_stream = fm.flops({"layer3.1.conv1": [0, 1, 2, 3]}) - before
    assert one_stream > 5 * one_cheap
    target = before + 4 * one_cheap + one_stream / 2  # room for the four cheap ones, not for the stream one

    def cost(p: gp.PruningPlan) -> float:  # opaque: the repair cannot read it, only call it
        return float(fm.flops(p.channels, p.blocks))

    for c in (cost, FlopsCost(fm)):
        fixed, done = repair(pg, plan, scores, c, target)
        assert {g: list(i) for g, i in fixed.channels.items() if i} == {"conv1": [0]}
        assert done["cost_before_repair"] == before < done["cost_after_repair"] <= target
        assert done["repair_moves"] == -4
        assert kept_score(fixed, scores) > kept_score(plan, scores)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_repair_in_units_of_round_to_meets_the_target(resnet20: gp.PrunableGraph, target: float) -> None:
    pg = resnet20
    rng = np.random.default_rng(0)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    budget = target * pg.flops
    plan, done = repair(
        pg, read_off(pg, scores, 0.9, 8), scores, FlopsCost(FlopsModel(pg)), budget, round_to=8
    )
    plan.validate(pg)
    assert all(k % 8 == 0 and k >= 8 for k in kept(pg, plan).values())
    measured = gp.count_flops(gp.apply(pg, plan, verify=False), pg.example_inputs)
    assert measured == done["cost_after_repair"] <= budget
    fm = FlopsModel(pg)
    for gid, k in kept(pg, plan).items():  # maximal: no unit left out would still fit
        up = step_up(len(scores[gid]), k, 8)
        if up is not None:
            more = list(np.argsort(scores[gid], kind="stable")[: len(scores[gid]) - up])
            assert fm.flops({**plan.channels, gid: more}) > budget, gid
    assert done["repair_cost_evaluations"] == 2  # an exact cost is its own estimate: before and after


def test_repair_with_an_opaque_cost_bisects_within_a_bounded_number_of_measurements(
    resnet20: gp.PrunableGraph,
) -> None:
    """A latency-like cost (not FLOPs, not readable): the knapsack runs on the FLOPs estimate and a
    bisection over its budget meets the measured target in at most `max_evals` measurements."""
    pg = resnet20
    fm = FlopsModel(pg)
    rng = np.random.default_rng(2)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    calls = []

    def ms(p: gp.PruningPlan) -> float:
        calls.append(1)
        return 0.5 + 1e-6 * fm.flops(p.channels, p.blocks) ** 0.9

    target = ms(gp.PruningPlan.for_graph(pg)) * 0.6
    calls.clear()
    plan, done = repair(pg, read_off(pg, scores, 0.9, 8), scores, ms, target, round_to=8, max_evals=10)
    assert len(calls) == done["repair_cost_evaluations"] <= 10
    assert done["cost_after_repair"] == ms(plan) <= target
    assert done["cost_after_repair"] > 0.97 * target
    assert all(k % 8 == 0 for k in kept(pg, plan).values())


def test_site_flops_equals_the_flops_model_move_by_move(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    fm = FlopsModel(pg)
    rng = np.random.default_rng(3)
    blocks = [pg.blocks[1].name]
    site = SiteFlops(fm, blocks)
    removed: dict[str, set[int]] = {}
    assert site.commit(removed) == fm.flops({}, blocks)
    for _ in range(40):
        g = pg.prunable_groups[int(rng.integers(len(pg.prunable_groups)))]
        idx = set(rng.choice(g.size, int(rng.integers(g.size)), replace=False).tolist())
        assert site.trial(g.id, idx) == fm.flops({**removed, g.id: idx}, blocks)
        if rng.random() < 0.5:
            removed[g.id] = idx
            assert site.move(g.id, idx) == fm.flops(removed, blocks)


def test_knapsack_repair_over_budget_gives_back_what_a_later_removal_made_room_for(
    resnet20: gp.PrunableGraph,
) -> None:
    """Over budget, the ten least-scored channels (in-block, 74k MACs each) are not enough, so a stream
    channel goes too; its 1.6M MACs make room for all ten again. The prefix repair removed all eleven."""
    pg = resnet20
    fm = FlopsModel(pg)
    scores = {g.id: np.ones(g.size) for g in pg.prunable_groups}
    scores["layer3.1.conv1"][:10] = 0.8
    scores["conv1"][0] = 0.85
    target = pg.flops - 1_200_000

    def cost(p: gp.PruningPlan) -> float:
        return float(fm.flops(p.channels, p.blocks))

    for c in (cost, FlopsCost(fm)):
        fixed, done = repair(pg, gp.PruningPlan.for_graph(pg), scores, c, target)
        assert {g: list(i) for g, i in fixed.channels.items() if i} == {"conv1": [0]}
        assert done["cost_after_repair"] <= target and done["repair_moves"] == 1


def test_knapsack_tries_closing_the_gap_without_the_overshooting_unit(resnet20: gp.PrunableGraph) -> None:
    """100k MACs over. By value per saved MAC a stream channel (0.95, 1.6M MACs) goes first and
    overshoots by 1.5M; two in-block channels (0.1 each, 74k MACs each) close the gap for less value.
    Without the second search the greedy would keep the stream channel's removal."""
    pg = resnet20
    fm = FlopsModel(pg)
    scores = {g.id: np.ones(g.size) for g in pg.prunable_groups}
    scores["conv1"][0] = 0.95
    scores["layer3.1.conv1"][:2] = 0.1
    scores["layer2.1.conv1"][0] = 0.0
    plan = gp.PruningPlan.for_graph(pg).remove_channels("layer2.1.conv1", [0])
    target = fm.flops(plan.channels) - 100_000
    fixed, done = repair(pg, plan, scores, FlopsCost(fm), target)
    assert {g: list(i) for g, i in fixed.channels.items() if i} == {
        "layer2.1.conv1": [0],
        "layer3.1.conv1": [0, 1],
    }
    assert target - 100_000 < done["cost_after_repair"] <= target


def test_repair_rounds_an_unrounded_plan(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    rng = np.random.default_rng(4)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    unrounded = read_off(pg, scores)
    assert any(k % 8 for k in kept(pg, unrounded).values())
    fm = FlopsModel(pg)
    budget = fm.flops(unrounded.channels)  # no room to restore: the counts must be rounded all the same
    plan, done = repair(pg, unrounded, scores, FlopsCost(fm), budget, round_to=8)
    assert all(k % 8 == 0 and k >= 8 for k in kept(pg, plan).values())
    assert done["cost_after_repair"] <= budget


def test_a_latency_estimate_brings_back_the_channels_a_block_pads_for_free(
    resnet20: gp.PrunableGraph,
) -> None:
    """Counts are computed padded to blocks of 16 (onnxruntime's NCHWc here): 24 kept channels cost as 32.
    Ordered by FLOPs, the repair keeps 24; ordered by an estimate that knows the padding, 32 at the same
    measured cost."""
    pg = resnet20
    sizes = {g.id: g.size for g in pg.prunable_groups}

    def padded(plan: gp.PruningPlan) -> float:  # the "measured" cost: each group's count padded to 16
        return float(sum(-(-(sizes[g] - len(plan.channels.get(g, ()))) // 16) * 16 for g in sizes))

    scores = {gid: np.linspace(1.0, 0.1, n) for gid, n in sizes.items()}
    start = read_off(pg, {gid: s - 0.5 for gid, s in scores.items()}, 0.9, round_to=8)  # about half kept
    target = padded(start)
    by_flops, _ = repair(pg, start, scores, padded, target, round_to=8)
    by_estimate, _ = repair(pg, start, scores, padded, target, round_to=8, estimate=padded)
    assert padded(by_flops) <= target and padded(by_estimate) <= target
    odd = [g for g, k in kept(pg, by_flops).items() if k % 16]  # counts padded: channels paid for, unused
    assert odd and all(k % 16 == 0 or k == sizes[g] for g, k in kept(pg, by_estimate).items())
    assert kept_score(by_estimate, scores) > kept_score(by_flops, scores)


def test_a_busy_spell_of_measurements_does_not_make_a_reachable_target_out_of_reach(
    resnet20: gp.PrunableGraph,
) -> None:
    """A measured cost once read every plan over the target (a busy spell); the deepest plan measured
    again fits, so the repair searches again instead of raising BudgetError."""
    pg = resnet20
    fm = FlopsModel(pg)
    calls = []

    def measured(plan: gp.PruningPlan) -> float:  # the first two measurements read far over
        calls.append(plan)
        return float(fm.flops(plan.channels, plan.blocks)) * (1e6 if len(calls) <= 2 else 1.0)

    scores = {g.id: np.linspace(1.0, 0.1, g.size) for g in pg.prunable_groups}
    target = 0.5 * pg.flops
    plan, done = repair(pg, read_off(pg, {k: v - 0.5 for k, v in scores.items()}), scores, measured, target)
    assert float(fm.flops(plan.channels, plan.blocks)) <= target
    assert float(fm.flops(plan.channels, plan.blocks)) > 0.4 * pg.flops  # searched, not the deepest plan
    assert done["repair_cost_evaluations"] == len(calls)  # the first search's measurements counted too


def test_a_repair_from_the_floor_allocates_the_budget_by_score_alone(resnet20: gp.PrunableGraph) -> None:
    """From the floor, the plan depends on the scores and the budget, not on where the read-off left it."""
    pg = resnet20
    fm = FlopsModel(pg)
    rng = np.random.default_rng(3)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    cost, target = FlopsCost(fm), 0.5 * pg.flops
    plans = [
        repair(pg, read_off(pg, {k: v + shift for k, v in scores.items()}, 0.9, 8), scores, cost, target,
               round_to=8, from_floor=True)[0]
        for shift in (-1.0, 0.0, 1.0)  # read-offs keeping few, half, most channels
    ]  # fmt: skip
    assert plans[0].channels == plans[1].channels == plans[2].channels
    assert cost(plans[0]) <= target
    local = [repair(pg, read_off(pg, {k: v + sh for k, v in scores.items()}, 0.9, 8), scores, cost, target,
                    round_to=8)[0] for sh in (-1.0, 1.0)]  # fmt: skip
    assert local[0].channels != local[1].channels  # from the read-off, where it started shows
