"""The benchmark arms: graphprune blocks/channels and the Torch-Pruning FLOPs search keep their contracts."""

from __future__ import annotations

import gp_arms
import pytest
import torch
import tp_arms
from torch import nn

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.models import get_model


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return get_model("cifar_resnet20").eval(), (torch.randn(1, 3, 32, 32),)


def test_block_plan_stops_at_the_first_block_that_meets_the_target(resnet20) -> None:
    model, x = resnet20
    pg = gp.trace(model, x)
    plan = gp_arms.block_plan(pg, 0.8)
    flops = FlopsModel(pg)
    assert flops.flops({}, plan.blocks) <= 0.8 * pg.flops
    assert flops.flops({}, plan.blocks[:-1]) > 0.8 * pg.flops
    assert not plan.channels


def test_block_channel_arm_meets_the_target_and_removes_blocks(resnet20) -> None:
    model, x = resnet20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slim = gp_arms.block_channel_arm(model, x, 0.5)
    assert gp.count_flops(slim, x) <= 0.5 * gp.count_flops(model, x)
    assert len(gp.trace(slim, x).blocks) < len(gp.trace(model, x).blocks)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_coupled_convs_are_the_residual_stream(resnet20) -> None:
    model, x = resnet20
    coupled = tp_arms.coupled_convs(model, x)
    assert "conv1" in coupled and "layer1.0.conv2" in coupled
    assert not any(name.endswith(".conv1") and name != "conv1" for name in coupled)


def test_tp_search_matches_flops_and_ignores_the_classifier(resnet20) -> None:
    model, x = resnet20
    ignored = tuple(tp_arms.coupled_convs(model, x))
    res = tp_arms.tp_prune_to_flops(model, x, 0.7, importance="l1", ignored=ignored)
    kept = gp.count_flops(res.model, x) / gp.count_flops(model, x)
    assert kept == pytest.approx(res.flops_ratio)
    assert res.reachable and kept <= 0.7 + 0.01 and res.matched == (kept >= 0.7 - 0.01)
    assert res.model.linear.out_features == 10 and res.model.linear.in_features == 64
    assert model.layer1[0].conv1.out_channels == 16  # the caller's model is untouched
