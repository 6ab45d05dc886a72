"""ABP (arXiv 2205.03602): block-wise pruning with auxiliary gates, voting and staged distillation.

`abp(ctx)` runs stages 1 and 2 (see `schedule`), then drops the gates, folding each kept block's mean
calibration mark into its branch, and returns a plan that removes the voted blocks. The pipeline's
fine-tune (CE + KD from the original) is stage 3.
"""

from __future__ import annotations

import copy
import importlib
import json
from dataclasses import fields
from typing import Any

from graphprune.fileio import write_text
from graphprune.methods.abp.budget import BlockBudget, LatencyOracle
from graphprune.methods.abp.report import plot_marks
from graphprune.methods.abp.schedule import AbpConfig, AbpOutcome, run_abp
from graphprune.methods.base import MethodContext, MethodError, MethodResult, register_method
from graphprune.passes.block_gates import RemoveBlockGates
from graphprune.plan import PruningPlan

__all__ = ["AbpConfig", "AbpOutcome", "abp", "abp_config", "block_budget"]


def latency_predictor(ctx: MethodContext) -> LatencyOracle:
    """The Efficiency Module's latency predictor for `ctx.pg` (measured sub-networks, cached in the run)."""
    efficiency = importlib.import_module("graphprune.efficiency")
    build = getattr(efficiency, "build_latency_model", None)
    if build is None:
        raise MethodError(
            "abp: latency targets need the Efficiency Module's latency predictor, not in this build"
        )
    cache = ctx.run_dir / "latency_samples" if ctx.run_dir is not None else None
    predictor: LatencyOracle = build(ctx.pg, cache_dir=cache)
    return predictor


def block_budget(ctx: MethodContext) -> BlockBudget:
    """The budget from the context: FLOPs, latency, a number of blocks, or options['block_fraction']."""
    b = ctx.budget
    fraction = ctx.options.get("block_fraction")
    given = (b.target_flops, b.num_blocks, fraction, b.target_latency_ms, b.target_latency_ratio)
    if sum(v is not None for v in given) != 1:
        raise MethodError("abp needs one budget: FLOPs, latency, a number of blocks or a block fraction")
    latency = ctx.options.get("latency_predictor")
    if latency is None and (b.target_latency_ms is not None or b.target_latency_ratio is not None):
        latency = latency_predictor(ctx)
    return BlockBudget(
        target_flops=b.target_flops,
        num_blocks=b.num_blocks,
        block_fraction=fraction,
        target_latency_ms=b.target_latency_ms,
        target_latency_ratio=b.target_latency_ratio,
        latency=latency,
    )


def abp_config(options: dict[str, Any]) -> AbpConfig:
    """AbpConfig from method options (`epochs` and `stage_steps` as lists: the first two entries are
    stages 1 and 2; None or absent means the default)."""
    known = {f.name for f in fields(AbpConfig)}
    kw = {k: v for k, v in options.items() if k in known and v is not None}
    if "stage_steps" in kw:
        steps = [None if s is None else int(s) for s in kw["stage_steps"]]
        if len(steps) < 2 or any(s is not None and s < 1 for s in steps):
            raise MethodError(f"abp: stage_steps needs >= 1 steps for stages 1 and 2, got {steps}")
        kw["stage_steps"] = (steps[0], steps[1])
    if "epochs" in kw:
        epochs = [int(e) for e in kw["epochs"]]
        if len(epochs) < 2 or any(e < 0 for e in epochs):
            raise MethodError(
                f"abp: --epochs needs >= 0 epochs for stages 1 and 2 (e.g. 2,2,3), got {epochs}"
            )
        kw["epochs"] = (epochs[0], epochs[1])
    return AbpConfig(**kw)


def abp(ctx: MethodContext) -> MethodResult:
    if ctx.data is None or ctx.train_cfg is None:
        raise MethodError("abp trains gates: it needs a dataset (--data) and a training config")
    budget = block_budget(ctx)
    cfg = abp_config(ctx.options)
    out = run_abp(
        ctx.pg, ctx.data, ctx.train_cfg, budget, cfg, teacher=ctx.teacher, run_dir=ctx.run_dir,
        resume=ctx.resume,
    )  # fmt: skip
    vote = out.final_vote
    assert vote is not None
    removed = set(out.removed)
    mean = dict(zip(vote.blocks, vote.mean_mark, strict=True))
    kept_marks = {b: mean[b] for b in vote.blocks if b not in removed} if cfg.fold_mean_mark else {}
    restored = RemoveBlockGates(kept_marks)(out.gated.cpu()).graph_module
    model = copy.deepcopy(ctx.model).cpu()
    result = model.load_state_dict(restored.state_dict(), strict=False)
    if result.unexpected_keys:
        raise MethodError(f"abp: trained weights do not fit the model ({result.unexpected_keys[0]})")

    plan = PruningPlan.for_graph(ctx.pg)
    for b in ctx.pg.blocks:  # graph order
        if b.name in removed:
            plan.remove_block(b.name)
    plan.meta.update({"method": "abp", "epochs": list(cfg.epochs)})
    ranked = ", ".join(
        f"{b} {vote.votes[vote.blocks.index(b)]} ({mean[b]:.2f} ± {vote.std_mark[vote.blocks.index(b)]:.2f})"
        for b in vote.ranking
    )
    steps = "; ".join(f"step {s['step']}: {', '.join(s['pruned_now']) or '-'}" for s in out.votes)
    report: dict[str, Any] = {
        "removed_blocks": plan.blocks,
        "predicted_flops": out.predicted_flops,
        "predicted_flops_ratio": round(out.predicted_flops / ctx.pg.flops, 4),
        "pruning_steps": steps,
        f"votes over {vote.samples} calibration samples (votes, mean mark ± std)": ranked,
        "settings": ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)),
    }
    if out.predicted_latency_ms is not None:
        report["predicted_latency_ms"] = round(out.predicted_latency_ms, 4)
    if ctx.run_dir is not None:
        detail = {
            "removed": plan.blocks,
            "predicted_flops": out.predicted_flops,
            "final_vote": vote.to_dict(),
            "pruning_steps": out.votes,
        }
        write_text(ctx.run_dir / "abp.json", json.dumps(detail, indent=1) + "\n")
    plots = []
    if ctx.run_dir is not None:
        first = out.votes[0]["vote"] if out.votes else vote.to_dict()  # stage 1's marks, before pruning
        plots.append(plot_marks(first, removed, ctx.run_dir / "abp_marks.png"))
    return MethodResult(plan=plan, model=model, report=report, plots=plots)


register_method("abp", abp)
