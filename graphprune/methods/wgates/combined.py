"""`abp+wgates`: blocks first (ABP), then channels in what remains (W-Gates), under one budget.

Budget split (FLOPs): ABP removes blocks down to `target ** block_share` of the original FLOPs
(`block_share`, default 0.5: with target 0.5, blocks go to 0.71 and channels take it from there); W-Gates
then gates the channels of the block-pruned network toward `target` of the *original* FLOPs, measured
after ABP, so whatever ABP left over or overshot is made up by the channel stage and the final plan meets
the one shared budget. For a latency budget the same split applies to milliseconds, and the latency
predictor of the block-pruned network (which knows the blocks ABP kept) drives the channel stage.

The residual streams that cross stages stay whole in the channel stage (`span_floor` 1.0, where W-Gates
alone keeps 0.5): after ABP has removed blocks, the stream is what the network has left, and keeping it
won on validation top-1 at -60% on ResNet-20 and ResNet-56. At -80% on ResNet-20, 0.5 won instead
(docs/methods.md); pass `span_floor` to choose.

Epochs: `--epochs a,b,c` runs ABP's stages 1 and 2 for a and b epochs and the gate stage for c; the
pipeline's fine-tune (--finetune-epochs) follows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import graphprune as gp
from graphprune.efficiency import FlopsModel
from graphprune.methods.base import Budget, MethodContext, MethodError, MethodResult
from graphprune.methods.wgates.cost import flops_cost
from graphprune.methods.wgates.method import budget_cost, gate_channels, trained_copy
from graphprune.train.bn_recal import recalibrate_bn

STREAM_FLOOR = 1.0
"""The channel stage's default `span_floor`: the streams that cross stages keep every channel."""


def decide(ctx: MethodContext) -> MethodResult:
    from graphprune.methods.abp import abp

    b = ctx.budget
    share = float(ctx.options.get("block_share", 0.5))
    if not 0.0 <= share <= 1.0:
        raise MethodError(f"abp+wgates: block_share must be in [0, 1], got {share}")
    if b.target_flops is not None:
        block_budget = Budget(target_flops=b.target_flops**share)
    elif b.target_latency_ms is not None or b.target_latency_ratio is not None:
        # ABP ranks blocks by FLOPs; its share of a latency budget is taken as the same share of FLOPs
        ratio = b.target_latency_ratio if b.target_latency_ratio is not None else None
        if ratio is None:
            raise MethodError("abp+wgates: give a latency target as a ratio (e.g. --target-latency 0.5)")
        block_budget = Budget(target_flops=ratio**share)
    else:
        raise MethodError("abp+wgates needs a budget: --target-flops or --target-latency")
    first = abp(dataclasses.replace(ctx, budget=block_budget))
    pg_blocks = gp.trace(first.model.eval(), ctx.example_inputs, prune_layernorm=ctx.pg.prune_layernorm)
    slim = gp.apply(pg_blocks, first.plan)
    if ctx.data is not None:  # the structure changed (blocks out, marks folded): re-estimate BN statistics
        recalibrate_bn(slim, ctx.data, seed=ctx.train_cfg.seed if ctx.train_cfg else 0)
    pg2 = gp.trace(slim.eval(), ctx.example_inputs, prune_layernorm=ctx.pg.prune_layernorm)
    options = {"span_floor": STREAM_FLOOR, **ctx.options}
    ctx2 = dataclasses.replace(ctx, model=slim, pg=pg2, options=options)
    if b.target_flops is not None:
        cost = flops_cost(pg2, b.target_flops * ctx.pg.flops / pg2.flops, [g.id for g in pg2.prunable_groups])
    else:
        cost = budget_cost(ctx2, pg2)
    plan2, trained, report, plots = gate_channels(ctx2, pg2, cost, stage="wgates", stage_index=2)

    plan = gp.PruningPlan.for_graph(ctx.pg)
    for name in first.plan.blocks:
        plan.remove_block(name)
    for gid, idx in plan2.channels.items():
        if gid not in {g.id for g in ctx.pg.groups} or ctx.pg.group(gid).size != pg2.group(gid).size:
            raise MethodError(f"abp+wgates: channel group '{gid}' of the block-pruned model has no twin")
        plan.remove_channels(gid, idx)
    plan.validate(ctx.pg)
    plan.meta.update(method="abp+wgates", block_share=share, target=cost.target, unit=cost.unit)
    model = trained_copy(first.model, trained)
    merged: dict[str, Any] = {f"abp_{k}": v for k, v in first.report.items()}
    merged.update(report)
    merged["removed_blocks"] = list(first.plan.blocks)
    if b.target_flops is not None:
        merged["flops_after_blocks"] = pg2.flops
        merged["measured_cost"] = FlopsModel(ctx.pg).flops(plan.channels, plan.blocks)
    return MethodResult(plan=plan, model=model, report=merged, plots=[*first.plots, *plots])
