from __future__ import annotations

import pytest
import torch

import graphprune as gp
from graphprune.methods import Budget, MethodContext, MethodError, MethodResult, get_method, register_method
from graphprune.models import get_model


def test_l1_and_bn_are_registered_and_meet_the_budget() -> None:
    model = get_model("cifar_resnet20").eval()
    x = (torch.randn(1, 3, 32, 32),)
    pg = gp.trace(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("l1", "bn"):
        result = get_method(name)(MethodContext(model, x, pg, Budget(target_flops=0.5)))
        assert result.model is model and result.report == {"criterion": name}
        assert gp.count_flops(gp.apply(pg, result.plan), x) <= 0.5 * pg.flops
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # never mutated


def test_unknown_method_and_bad_budgets_are_one_line_errors() -> None:
    with pytest.raises(MethodError, match="unknown pruning method 'nope' \\(choose from .*l1"):
        get_method("nope")
    with pytest.raises(MethodError, match="target FLOPs must be a fraction"):
        Budget(target_flops=1.5)
    with pytest.raises(MethodError, match="number of blocks"):
        Budget(num_blocks=-1)
    model = get_model("cifar_resnet20").eval()
    x = (torch.randn(1, 3, 32, 32),)
    with pytest.raises(MethodError, match="needs a FLOPs target"):
        get_method("l1")(MethodContext(model, x, gp.trace(model, x), Budget()))


def test_register_a_method(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphprune.methods import base

    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))  # leave the real registry as it was

    def keep_all(ctx: MethodContext) -> MethodResult:
        return MethodResult(plan=gp.PruningPlan.for_graph(ctx.pg), model=ctx.model, report={"kept": "all"})

    register_method("test-keep-all", keep_all)
    assert get_method("test-keep-all") is keep_all
