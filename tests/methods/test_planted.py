"""Toys where the right answer is known: planted redundant blocks (a residual branch scaled by 1e-3) and
planted dead filters (zero weights). At the budget that removes exactly them, the learned methods must
find exactly them."""

from __future__ import annotations

import torch
from support.archs import Residual, ToyNet
from support.tiny_data import tiny_bundle

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.methods import Budget, MethodContext, get_method
from graphprune.train import TrainConfig

REDUNDANT = ("blocks.1", "blocks.3")
DEAD = (1, 5)  # filters of blocks.0's first conv


def planted() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = ToyNet(8, [Residual(8) for _ in range(4)], 8, classes=4).eval()
    with torch.no_grad():
        for name in REDUNDANT:
            model.get_submodule(name).body[2].weight.mul_(1e-3)  # the branch's last BN: ~nothing added
        conv = model.blocks[0].body[0][0]
        conv.weight[list(DEAD)] = 0.0
    return model, (torch.randn(1, 3, 8, 8),)


def context(
    model: torch.nn.Module, x: tuple[torch.Tensor, ...], budget: Budget, **options: object
) -> MethodContext:
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-4, verbose=False, threads=1, device="cpu")
    data = tiny_bundle(n_train=64).with_val(16)
    return MethodContext(
        model=model, example_inputs=x, pg=gp.trace(model, x), budget=budget, data=data, train_cfg=cfg,
        teacher=model, options={"calib_batches": 1, **options},
    )  # fmt: skip


def dead_group(pg: gp.PrunableGraph) -> str:
    return pg.group_of("blocks.0.body.0.0").id


def test_abp_removes_exactly_the_planted_blocks() -> None:
    model, x = planted()
    res = get_method("abp")(context(model, x, Budget(num_blocks=2), epochs=[0, 1], stage_steps=[1, 2]))
    assert sorted(res.plan.blocks) == sorted(REDUNDANT)


def test_abp_with_normalised_gates_removes_exactly_the_planted_blocks() -> None:
    model, x = planted()
    ctx = context(model, x, Budget(num_blocks=2), epochs=[1, 1], stage_steps=[2, 2], gate_norm=True)
    res = get_method("abp")(ctx)
    assert sorted(res.plan.blocks) == sorted(REDUNDANT)


def test_wgates_removes_exactly_the_planted_filters() -> None:
    model, x = planted()
    pg = gp.trace(model, x)
    keep = FlopsModel(pg).flops({dead_group(pg): list(DEAD)}, []) / pg.flops
    res = get_method("wgates")(context(model, x, Budget(target_flops=keep), epochs=[1], stage_steps=[2]))
    assert res.plan.channels == {dead_group(pg): DEAD} and not res.plan.blocks


def test_abp_wgates_removes_both() -> None:
    model, x = planted()
    pg = gp.trace(model, x)
    keep = FlopsModel(pg).flops({dead_group(pg): list(DEAD)}, list(REDUNDANT)) / pg.flops
    blocks_keep = FlopsModel(pg).flops({}, list(REDUNDANT)) / pg.flops
    share = torch.log(torch.tensor(blocks_keep)) / torch.log(torch.tensor(keep))  # blocks take exactly theirs
    ctx = context(model, x, Budget(target_flops=keep), epochs=[0, 1, 1], stage_steps=[1, 2, 2],
                  block_share=float(share))  # fmt: skip
    res = get_method("abp+wgates")(ctx)
    assert sorted(res.plan.blocks) == sorted(REDUNDANT)
    assert res.plan.channels == {dead_group(pg): DEAD}
