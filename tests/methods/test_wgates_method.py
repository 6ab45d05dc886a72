from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.methods import Budget, MethodContext, get_method
from graphprune.methods.wgates.readoff import read_off
from graphprune.methods.wgates.repair import BudgetError, repair
from graphprune.models import get_model
from graphprune.train import TrainConfig
from graphprune.train.data import DataBundle, ImageTensors


def tiny_data(n: int = 64, classes: int = 10) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    split = ImageTensors(images, labels)
    return DataBundle("tiny", split, split, classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def resnet20() -> gp.PrunableGraph:
    torch.manual_seed(0)
    return gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_repair_meets_the_target_from_above_and_below(resnet20: gp.PrunableGraph, target: float) -> None:
    pg = resnet20
    rng = np.random.default_rng(0)
    scores = {g.id: rng.standard_normal(g.size) for g in pg.prunable_groups}
    fm = FlopsModel(pg)

    def cost(plan: gp.PruningPlan) -> float:
        return float(fm.flops(plan.channels, plan.blocks))

    budget = target * pg.flops
    plan, done = repair(pg, read_off(pg, scores), scores, cost, budget)
    plan.validate(pg)
    measured = gp.count_flops(gp.apply(pg, plan, verify=False), pg.example_inputs)
    assert measured <= budget
    assert done["cost_after_repair"] == measured
    # it is close: channels came back (or went) until the next one in the ranking would cross the target
    assert done["repair_moves"] != 0
    assert measured > budget * 0.9


def test_repair_names_an_unreachable_target(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    scores = {g.id: np.ones(g.size) for g in pg.prunable_groups}
    fm = FlopsModel(pg)
    with pytest.raises(BudgetError, match="out of reach"):
        repair(pg, read_off(pg, scores), scores, lambda p: float(fm.flops(p.channels)), 0.001 * pg.flops)


def test_wgates_method_trains_gates_and_meets_the_flops_budget(
    resnet20: gp.PrunableGraph, tmp_path: Path
) -> None:
    pg = resnet20
    model = get_model("cifar_resnet20").eval()
    model.load_state_dict(pg.gm.state_dict(), strict=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = MethodContext(
        model=model,
        example_inputs=pg.example_inputs,
        pg=pg,
        budget=Budget(target_flops=0.5),
        data=tiny_data(),
        train_cfg=TrainConfig(
            epochs=1, max_steps=3, batch_size=16, verbose=False, eval_every_epoch=False, device="cpu"
        ),
        run_dir=tmp_path,
    )
    result = get_method("wgates")(ctx)
    result.plan.validate(pg)
    slim = gp.apply(gp.trace(result.model.eval(), pg.example_inputs), result.plan)
    assert gp.count_flops(slim, pg.example_inputs) <= 0.5 * pg.flops
    assert result.report["measured_cost"] <= 0.5 * pg.flops
    assert "over 3 steps" in result.report["gate_open_ratio"]
    assert all(p.exists() for p in result.plots)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model
    assert any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())  # trained


@pytest.mark.slow  # fits a latency model and measures every repair step (minutes on a loaded machine)
def test_wgates_meets_a_latency_budget_by_measurement(tmp_path: Path) -> None:
    from support.archs import random_toynet

    x = torch.randn(1, 3, 32, 32)
    model = random_toynet(1, 3).eval()
    pg = gp.trace(model, x)
    ctx = MethodContext(
        model=model,
        example_inputs=(x,),
        pg=pg,
        budget=Budget(target_latency_ratio=0.7),
        data=tiny_data(classes=5),
        train_cfg=TrainConfig(
            epochs=1, max_steps=2, batch_size=16, verbose=False, eval_every_epoch=False, device="cpu"
        ),
        run_dir=tmp_path,
        options={"latency_samples": 8, "latency_cache": str(tmp_path / "cache")},
    )
    result = get_method("wgates")(ctx)
    report = result.report
    assert "ms" in report["budget"]
    assert report["measured_cost"] <= report["budget_target"]
    assert list((tmp_path / "cache").glob("latency-*.jsonl"))
    result.plan.validate(pg)


@pytest.mark.parametrize("floor", [None, 0.5])
def test_abp_wgates_keeps_the_stream_across_stages_whole_unless_told(
    resnet20: gp.PrunableGraph, tmp_path: Path, floor: float | None
) -> None:
    from graphprune.methods.wgates.gates import spans_resolutions

    model = get_model("cifar_resnet20").eval()
    model.load_state_dict(resnet20.gm.state_dict(), strict=False)
    ctx = MethodContext(
        model=model, example_inputs=resnet20.example_inputs, pg=resnet20, budget=Budget(target_flops=0.3),
        data=tiny_data(), run_dir=tmp_path,
        train_cfg=TrainConfig(epochs=1, max_steps=2, batch_size=16, verbose=False, eval_every_epoch=False,
                              device="cpu"),
        options={"epochs": [1, 1, 1], "stage_steps": [1, 1, 2], "calib_batches": 1,
                 **({} if floor is None else {"span_floor": floor})},
    )  # fmt: skip
    plan = get_method("abp+wgates")(ctx).plan
    streams = [g.id for g in resnet20.prunable_groups if spans_resolutions(resnet20.gm, g)]
    assert streams == ["conv1", "layer2.0.conv2"]  # option A: the streams from stage 1 and from stage 2
    cut = {g: len(plan.channels.get(g, [])) for g in streams}
    if floor is None:  # the method's default: every stream that still crosses stages keeps its channels
        stage3_left = any(f"layer3.{i}" not in plan.blocks for i in range(3))
        assert cut["conv1"] == 0 and (cut["layer2.0.conv2"] == 0 or not stage3_left)
    else:  # W-Gates' own floor: the streams take part of a deep cut, at most half
        assert any(cut.values()) and cut["conv1"] <= 8 and cut["layer2.0.conv2"] <= 16


def test_a_measured_budget_calibrates_the_prediction_against_the_read_off(
    resnet20: gp.PrunableGraph, tmp_path: Path
) -> None:
    """A predictor that says half the true cost: calibrated, the gates close toward the measured budget;
    uncalibrated, they stay open (the predictor sees no excess) and the repair alone makes the cut."""
    from graphprune.efficiency import DifferentiableFlops
    from graphprune.methods.wgates.cost import CostModel
    from graphprune.methods.wgates.method import gate_channels
    from graphprune.methods.wgates.repair import FlopsCost

    pg = resnet20
    groups = [g.id for g in pg.prunable_groups]
    diff, exact = DifferentiableFlops(pg, groups), FlopsCost(FlopsModel(pg))
    off = {}
    for every in (4, 0):
        cost = CostModel(
            "ms", 0.5 * pg.flops / 1e6, lambda keep: 0.5 * diff(keep) / 1e6, lambda p: exact(p) / 1e6,
            pg.flops / 1e6,
        )  # fmt: skip
        ctx = MethodContext(
            model=pg.gm, example_inputs=pg.example_inputs, pg=pg, budget=Budget(target_latency_ratio=0.5),
            data=tiny_data(n=128),
            train_cfg=TrainConfig(
                epochs=5, max_steps=40, batch_size=16, verbose=False, eval_every_epoch=False, device="cpu"
            ),
            run_dir=tmp_path / str(every), options={"calibrate_every": every},
        )  # fmt: skip
        _, _, report, _ = gate_channels(ctx, pg, cost)
        assert report["measured_cost"] <= cost.target  # the repair meets the budget either way
        off[every] = abs(report["measured_cost_before_repair"] / cost.target - 1)
        history = json.loads((tmp_path / str(every) / "wgates.json").read_text())["open_ratio_history"]
        calibrated = [h["correction"] for h in history if "correction" in h]
        assert len(calibrated) == (10 if every else 0)
        if every:
            assert calibrated[0] == pytest.approx(2.0, rel=0.05)  # all open: measured / predicted
    assert off[0] == pytest.approx(1.0)  # uncalibrated: the predictor saw no excess, every gate stayed open
    assert off[4] < 0.75  # calibrated: gates closed toward the measured budget


def test_a_resumed_wgates_run_reuses_its_decision(
    resnet20: gp.PrunableGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A measured repair can decide differently on a second try; resumed, the finished gate stage's plan
    (which the later stages' checkpoints were trained on) is reused, until the stage is trained again or
    the run is continued with another budget."""
    import graphprune.methods.wgates.method as wmethod
    from graphprune.train.state import mark_done, read_done

    model = get_model("cifar_resnet20").eval()
    model.load_state_dict(resnet20.gm.state_dict(), strict=False)

    def run(target: float = 0.5) -> gp.PruningPlan:
        ctx = MethodContext(
            model=model, example_inputs=resnet20.example_inputs, pg=resnet20,
            budget=Budget(target_flops=target), data=tiny_data(), run_dir=tmp_path, resume=True,
            train_cfg=TrainConfig(epochs=1, max_steps=2, batch_size=16, verbose=False,
                                  eval_every_epoch=False, device="cpu"),
        )  # fmt: skip
        return get_method("wgates")(ctx).plan

    first = run()
    assert (tmp_path / "wgates_decision.json").is_file()
    calls = []
    real_repair = wmethod.repair

    def other_repair(pg, plan, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        out, done = real_repair(pg, plan, *args, **kwargs)
        return out.remove_channels("conv1", [0, 1]), done  # a different decision

    monkeypatch.setattr(wmethod, "repair", other_repair)
    again = run()
    assert not calls and again.channels == first.channels and again.blocks == first.blocks
    mark_done(tmp_path, "wgates", {**(read_done(tmp_path, "wgates") or {}), "trained_again": True})
    decided = run()
    assert calls and decided.channels != first.channels  # the stage changed: decided afresh
    assert run().channels == decided.channels and len(calls) == 1  # saved again, reused again
    run(0.4)
    assert len(calls) == 2  # another budget: decided afresh


def test_repair_by_is_checked_and_passes_the_cost_models_estimate(
    resnet20: gp.PrunableGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphprune.methods.wgates.method as wmethod
    from graphprune.methods import MethodError
    from graphprune.methods.wgates.cost import flops_cost

    model = get_model("cifar_resnet20").eval()
    model.load_state_dict(resnet20.gm.state_dict(), strict=False)
    seen = []
    real_repair = wmethod.repair

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("estimate"))
        return real_repair(*args, **kwargs)

    monkeypatch.setattr(wmethod, "repair", spy)
    groups = [g.id for g in resnet20.prunable_groups]
    cost = flops_cost(resnet20, 0.5, groups)
    cost.estimate = cost.measure  # stands in for the latency predictor
    for by, passed in (("flops", None), ("predictor", cost.measure)):
        ctx = MethodContext(
            model=model, example_inputs=resnet20.example_inputs, pg=resnet20, budget=Budget(target_flops=0.5),
            data=tiny_data(), options={"epochs": [0], "repair_by": by},
        )  # fmt: skip
        wmethod.gate_channels(ctx, resnet20, cost)
        assert seen[-1] is passed
    with pytest.raises(MethodError, match="repair_by must be"):
        ctx.options["repair_by"] = "latency"
        wmethod.gate_channels(ctx, resnet20, cost)


def test_a_calibrated_repair_scales_the_estimate_by_the_median_measured_ratio(
    resnet20: gp.PrunableGraph,
) -> None:
    from graphprune.methods.wgates.cost import CostModel, repair_costs

    noise = iter([1.3, 0.7, 1.1, 5.0])  # measurements of the read-off (the last one is never asked for)
    cost = CostModel(
        "ms", 1.0, lambda keep: torch.zeros(()), lambda plan: next(noise), 2.0, estimate=lambda plan: 0.5
    )  # fmt: skip
    plan = gp.PruningPlan.for_graph(resnet20)
    judge, order, calibration = repair_costs(cost, plan, "calibrated")
    assert calibration == (pytest.approx(2.2), 1.1)  # median 1.1 over the estimate 0.5
    assert judge is order and judge(plan) == judge(plan) == pytest.approx(1.1)  # deterministic now
    assert repair_costs(cost, plan, "flops")[1:] == (None, None)
    assert repair_costs(cost, plan, "predictor")[1] is cost.estimate


def test_repair_from_is_checked(resnet20: gp.PrunableGraph) -> None:
    from graphprune.methods import MethodError
    from graphprune.methods.wgates.cost import flops_cost
    from graphprune.methods.wgates.method import gate_channels

    ctx = MethodContext(
        model=get_model("cifar_resnet20").eval(), example_inputs=resnet20.example_inputs, pg=resnet20,
        budget=Budget(target_flops=0.5), data=tiny_data(), options={"epochs": [0], "repair_from": "scratch"},
    )  # fmt: skip
    with pytest.raises(MethodError, match="repair_from must be 'readoff' or 'floor'"):
        gate_channels(ctx, resnet20, flops_cost(resnet20, 0.5, [g.id for g in resnet20.prunable_groups]))


def test_a_calibrated_repair_honours_the_budget_where_the_read_offs_scale_misleads(
    resnet20: gp.PrunableGraph,
) -> None:
    """A predictor whose error grows away from the read-off (here it says cost² where cost is the truth):
    calibrated at the read-off, the repair's plan measures over the target; calibrated again at that plan,
    then trimmed by measurement, it measures within it."""
    from graphprune.methods.wgates.cost import flops_cost
    from graphprune.methods.wgates.method import RECALIBRATIONS, gate_channels

    model = get_model("cifar_resnet20").eval()
    cost = flops_cost(resnet20, 0.5, [g.id for g in resnet20.prunable_groups])
    cost.estimate = lambda plan: cost.measure(plan) ** 2 / cost.original
    ctx = MethodContext(
        model=model, example_inputs=resnet20.example_inputs, pg=resnet20, budget=Budget(target_flops=0.5),
        data=tiny_data(), options={"epochs": [0], "repair_by": "calibrated"},
    )  # fmt: skip
    plan, _, report, _ = gate_channels(ctx, resnet20, cost)
    assert report["measured_cost_before_repair"] == cost.original  # untrained gates: every channel open
    assert len(report["repair_recalibrated"].split(", ")) == RECALIBRATIONS
    assert cost.measure(plan) <= cost.target == report["budget_target"]
    assert report["measured_cost"] == cost.measure(plan) >= 0.95 * cost.target  # not far under either


def test_a_calibrated_repair_that_stops_far_under_the_budget_is_filled_by_measurement(
    resnet20: gp.PrunableGraph,
) -> None:
    """A predictor that overrates small plans (here sqrt(cost x original), exact at the read-off): the
    calibrated repair stops at a quarter of the model for a target of half; measured, it is filled."""
    from graphprune.methods.wgates.cost import flops_cost
    from graphprune.methods.wgates.method import UNDER, gate_channels

    cost = flops_cost(resnet20, 0.5, [g.id for g in resnet20.prunable_groups])
    cost.estimate = lambda plan: (cost.measure(plan) * cost.original) ** 0.5
    ctx = MethodContext(
        model=get_model("cifar_resnet20").eval(), example_inputs=resnet20.example_inputs, pg=resnet20,
        budget=Budget(target_flops=0.5), data=tiny_data(), options={"epochs": [0], "repair_by": "calibrated"},
    )  # fmt: skip
    plan, _, report, _ = gate_channels(ctx, resnet20, cost)
    assert "repair_recalibrated" not in report  # the calibrated plan measured within the target ...
    assert report["repair_moves_by_measurement"] < 0  # ... far under it: channels came back
    assert (1 - UNDER) * cost.target <= cost.measure(plan) == report["measured_cost"] <= cost.target
