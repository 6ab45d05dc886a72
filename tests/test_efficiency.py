from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.archs import random_toynet
from support.lossless import random_plan

import graphprune as gp
from graphprune.efficiency import FlopsModel

X = torch.randn(1, 3, 16, 16)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.integers(0, 10_000), seed=st.integers(0, 10_000))
def test_predicted_flops_equal_the_flops_of_the_rewritten_model(arch: int, seed: int) -> None:
    pg = gp.trace(random_toynet(arch, 5), X)
    plan = random_plan(pg, seed, 0.4, blocks=0.3)
    predicted = FlopsModel(pg).flops(plan.channels, plan.blocks)
    assert predicted == gp.count_flops(gp.apply(pg, plan, verify=False), X)


def test_empty_plan_predicts_the_original() -> None:
    pg = gp.trace(random_toynet(3, 5), X)
    assert FlopsModel(pg).flops({}) == pg.flops
