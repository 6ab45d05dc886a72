from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from support.archs import Residual, ToyNet
from support.tiny_data import tiny_bundle

import graphprune as gp
from graphprune.methods import Budget, MethodContext, get_method
from graphprune.methods.abp import schedule
from graphprune.train import TrainConfig


def _context(tmp: Path | None, budget: Budget, epochs: list[int], resume: bool = False) -> MethodContext:
    torch.manual_seed(0)
    model = ToyNet(8, [Residual(8) for _ in range(5)], 8, classes=4).eval()
    x = torch.randn(1, 3, 8, 8)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, verbose=False, threads=1, device="cpu")
    return MethodContext(
        model=model, example_inputs=(x,), pg=gp.trace(model, x), budget=budget, data=tiny_bundle(n_train=32),
        train_cfg=cfg, run_dir=tmp, resume=resume, options={"epochs": epochs, "calib_batches": 2},
    )  # fmt: skip


def test_abp_removes_voted_blocks_to_budget_and_returns_a_plan_for_the_original(tmp_path: Path) -> None:
    ctx = _context(tmp_path, Budget(target_flops=0.7), [1, 2, 3])
    before = copy.deepcopy(ctx.model.state_dict())
    res = get_method("abp")(ctx)
    assert all(torch.equal(v, ctx.model.state_dict()[k]) for k, v in before.items())  # user model intact
    slim = gp.apply(gp.trace(res.model, ctx.example_inputs), res.plan)  # plan fits the returned model
    measured = gp.count_flops(slim, ctx.example_inputs)
    assert measured <= 0.7 * ctx.pg.flops and measured == res.report["predicted_flops"]
    assert res.plan.blocks and res.plan.blocks == res.report["removed_blocks"]
    steps = json.loads((tmp_path / "abp.json").read_text())["pruning_steps"]
    assert len([s for s in steps if s["pruned_now"]]) >= 2  # progressive: pruned over more than one vote
    assert all(p.is_file() for p in res.plots)
    stages = tmp_path / "stages"
    assert (stages / schedule.STAGE_GATES / "done.json").is_file()
    assert (stages / schedule.STAGE_PRUNE / "step0" / "done.json").is_file()
    votes = json.loads((stages / schedule.STAGE_PRUNE / "votes.json").read_text())
    assert votes[0]["step"] == 0 and set(votes[0]["removal_kl"]) == {b.name for b in ctx.pg.blocks}


def test_resume_inside_stage_two_continues_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = get_method("abp")(_context(tmp_path / "whole", Budget(num_blocks=3), [1, 3]))

    real_step = schedule.prune_step
    calls = {"n": 0}

    def killed_at_the_third_vote(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # stage 2's third pruning step, after two parts trained
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(schedule, "prune_step", killed_at_the_third_vote)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        get_method("abp")(_context(run, Budget(num_blocks=3), [1, 3]))
    assert (run / "stages" / schedule.STAGE_PRUNE / "step1" / "done.json").is_file()
    assert not (run / "stages" / schedule.STAGE_PRUNE / "step2").exists()
    monkeypatch.setattr(schedule, "prune_step", real_step)
    resumed = get_method("abp")(_context(run, Budget(num_blocks=3), [1, 3], resume=True))
    assert resumed.plan.blocks == whole.plan.blocks and len(resumed.plan.blocks) == 3
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
