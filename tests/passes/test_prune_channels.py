"""PruneChannels property: removing channels that are exactly zero at every consumer changes nothing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.lossless import check_lossless, check_plan_lossless, random_plan
from support.strategies import Arch, architectures, plans

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.models import get_model
from graphprune.passes import PruneChannels
from graphprune.rewrite import channel_removals


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures(), data=st.data())
def test_lossless_on_composed_architectures(arch: Arch, data: st.DataObject) -> None:
    """Channel removal only: the pruned model equals the producer-zeroed one (shrinks to a minimal Arch)."""
    pg = gp.trace(arch.build(), arch.example())
    check_plan_lossless(pg, data.draw(plans(pg, blocks=False), label="plan"))


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet20_b", "cifar_mobilenetv2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_lossless_on_builtin_models(name: str, seed: int) -> None:
    check_lossless(get_model(name).eval(), torch.randn(2, 3, 32, 32), seed)


def test_pass_returns_a_new_module_and_leaves_its_input_alone() -> None:
    pg = gp.trace(get_model("cifar_resnet20"), torch.randn(1, 3, 32, 32))
    before = {k: v.clone() for k, v in pg.gm.state_dict().items()}
    res = PruneChannels(channel_removals(pg, random_plan(pg, 0)))(pg.gm)
    assert res.modified and res.graph_module is not pg.gm
    after = pg.gm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert res.graph_module.conv1.out_channels < pg.gm.conv1.out_channels


def test_pad_amounts_are_rewritten() -> None:
    pg = gp.trace(get_model("cifar_resnet20"), torch.randn(1, 3, 32, 32))
    zeros = next(g for g in pg.groups if any(m.kind.value == "pad" for m in g.members) and g.size == 16)
    plan = gp.PruningPlan().remove_channels(zeros.id, [0, 1, 2, 15])  # 3 in front, 1 at the back
    slim = gp.apply(pg, plan)
    pads = [n.args[1] for n in slim.graph.nodes if n.op == "call_function" and "pad" in str(n.target)]
    assert (0, 0, 0, 0, 5, 7) in pads


@pytest.mark.parametrize(("kind", "k"), [("channel_sum", 0), ("channel_sum", 1), ("contraction", 1)])
def test_sums_and_contractions_over_channels_prune_losslessly(kind: str, k: int) -> None:
    """The stream summed over (energy gate, F.normalize) and q^T k's coupled q/k channels all prune."""
    arch = Arch(stem=6, blocks=((kind, k), ("res", 0)))
    pg = gp.trace(arch.build(), arch.example())
    module = "blocks.0.q" if kind == "contraction" else "blocks.0.conv"
    assert pg.group_of(module).prunable and pg.group_of("stem.0").prunable
    for seed in range(3):
        plan = random_plan(pg, seed, ratio=0.4)
        assert plan.channels.get(pg.group_of(module).id)
        check_plan_lossless(pg, plan)
        slim = gp.apply(pg, plan)
        assert FlopsModel(pg).flops(plan.channels) == gp.count_flops(slim, arch.example())
