"""The `l1` and `bn` methods: one-shot channel ranking by weight magnitude or BN scale (no training)."""

from __future__ import annotations

from graphprune.criteria import plan_by_criterion
from graphprune.methods.base import MethodContext, MethodError, MethodResult, register_method


def _criterion_method(criterion: str) -> object:
    def decide(ctx: MethodContext) -> MethodResult:
        if ctx.budget.target_flops is None:
            raise MethodError(f"method {criterion} needs a FLOPs target (--target-flops)")
        plan = plan_by_criterion(
            ctx.pg,
            criterion,  # type: ignore[arg-type]
            target_flops=ctx.budget.target_flops,
            scope=ctx.options.get("scope", "global"),
            max_ratio=ctx.options.get("max_ratio", 0.9),
            round_to=ctx.options.get("round_to", 1),
        )
        return MethodResult(plan=plan, model=ctx.model, report={"criterion": criterion})

    register_method(criterion, decide)
    return decide


l1 = _criterion_method("l1")
bn = _criterion_method("bn")
