"""ABP's guards on its own signal: the γ ending a gated branch is frozen while marks train (m·γ is a flat
direction), and `rank_by="vote+veto"` lets the vote rank but never put a costly block first."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from support.archs import Residual, ToyNet
from support.tiny_data import tiny_bundle

import graphprune as gp
from graphprune.methods.abp import schedule
from graphprune.methods.abp.budget import BlockBudget
from graphprune.passes.block_gates import InsertBlockGates, branch_scales
from graphprune.train import TrainConfig


def _pg() -> gp.PrunableGraph:
    torch.manual_seed(0)
    model = ToyNet(8, [Residual(8) for _ in range(4)], 8, classes=4).eval()
    return gp.trace(model, torch.randn(1, 3, 8, 8))


def test_branch_scales_are_the_bn_scales_that_end_each_gated_branch() -> None:
    pg = _pg()
    gated = InsertBlockGates(pg.blocks)(pg.gm).graph_module
    scales = branch_scales(gated)
    assert sorted(scales) == sorted(b.name for b in pg.blocks)
    for name, p in scales.items():
        assert p is gated.get_submodule(f"{name}.body.2").weight  # the branch's last BN


@pytest.mark.parametrize("freeze", [True, False])
def test_stages_one_and_two_train_marks_but_not_the_frozen_branch_scales(freeze: bool) -> None:
    pg = _pg()
    before = {k: v.clone() for k, v in pg.gm.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.1, verbose=False, threads=1, device="cpu")
    abp = schedule.AbpConfig(epochs=(1, 1), calib_batches=1, freeze_branch_scale=freeze)
    out = schedule.run_abp(pg, tiny_bundle(n_train=64), cfg, BlockBudget(num_blocks=1), abp)
    after = out.gated.state_dict()
    ends = [f"{b.name}.body.2.weight" for b in pg.blocks]
    assert all(torch.equal(after[k], before[k]) for k in ends) == freeze
    assert not torch.equal(after["blocks.0.body.0.0.weight"], before["blocks.0.body.0.0.weight"])
    assert all(p.requires_grad for p in out.gated.parameters())  # unfrozen for the fine-tune


def test_vetoed_blocks_are_those_far_above_the_median_cost() -> None:
    assert schedule.vetoed_blocks({"a": 1.0, "b": 1.2, "c": 3.5, "d": 0.1}, veto=3.0) == {"c"}
    assert schedule.vetoed_blocks({"a": 1.0, "b": 1.0}, veto=3.0) == set()
    assert schedule.vetoed_blocks({}, veto=3.0) == set()


def test_vote_with_veto_puts_a_costly_block_last_whatever_its_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = _pg()
    gated = InsertBlockGates(pg.blocks)(pg.gm).graph_module
    data = tiny_bundle(n_train=32)
    cfg = schedule.AbpConfig(calib_batches=1, rank_by="vote")
    voted = schedule.prune_step(gated, pg, data, BlockBudget(num_blocks=1), cfg, steps_left=1)
    first = voted["ranking"][0]
    for gate in schedule.gates_of(gated).values():
        gate.pruned.fill_(False)
    costs = {b.name: (100.0 if b.name == first else 1.0) for b in pg.blocks}
    monkeypatch.setattr(schedule, "removal_losses", lambda *a, **k: costs)
    step = schedule.prune_step(
        gated, pg, data, BlockBudget(num_blocks=1), replace(cfg, rank_by="vote+veto"), steps_left=1
    )
    assert step["vetoed"] == [first] and step["ranking"][-1] == first
    assert step["pruned_now"] != [first]
    assert [b for b in step["ranking"] if b != first] == [b for b in voted["ranking"] if b != first]
