"""The `wgates` method: train W-Gates jointly with the weights under a budget, read them off, repair.

Schedule (one `fit` stage, "wgates"): gates are inserted into a copy of the model with every gate open;
the task loss (KD from the teacher when there is one) trains weights and gates together (gates with their
own learning rate, no weight decay) while the budget raises one threshold shared by every gate's score
(`budget_form="threshold"`: dual ascent on the predicted cost's relative excess), so that the task
loss, i.e. importance, decides which gates fall under it. At the end the gates are read off into a plan,
and the repair step moves channels until the *measured* cost is within the target. The pipeline then
applies the plan and fine-tunes. The decision is saved (`<stage>_decision.json`): a resumed run reuses it
rather than measuring its repair again.

Options (`ctx.options`): gate_hidden (16), gate_lr (0.01), budget_form ("threshold"; "hinge" or
"squared" put `budget_weight` x the excess on every gate in proportion to its cost, the earlier form),
threshold_range (4.0: how far the threshold may move over the stage, in score units), calibrate_every
(a measured budget: measure the current read-off every this many steps, default an eighth of the
stage, and scale the prediction by measured / predicted; 0: never), budget_weight
(2.0), max_ratio (0.9), span_floor (0.5: the share a group spanning several resolutions keeps),
repair_by ("flops": the repair orders its moves by exact FLOPs; "predictor": by the cost model's
estimate where it has one, the latency predictor of a latency budget; "calibrated": orders and judges
them by that estimate scaled to the read-off's measured cost; see `repair_costs`), repair_from
("readoff": the repair moves channels from the read-off's plan; "floor": from every group at its floor,
so the whole budget is allocated by score per cost),
epochs / stage_steps (the --epochs list; wgates' gate stage is its first entry, abp+wgates' its third;
0 epochs reads the gates off untrained).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphprune.efficiency.loss import budget_loss
from graphprune.fileio import write_text
from graphprune.graph import PrunableGraph
from graphprune.methods.base import MethodContext, MethodError, MethodResult, seeded
from graphprune.methods.wgates.cost import CostModel, flops_cost, repair_costs
from graphprune.methods.wgates.decision import save_decision, saved_decision
from graphprune.methods.wgates.gates import WeightGate, build_gates, spans_resolutions
from graphprune.methods.wgates.readoff import gate_scores, read_off
from graphprune.methods.wgates.repair import repair
from graphprune.passes.channel_gates import InsertChannelGates, RemoveChannelGates, gate_slots
from graphprune.plan import PruningPlan
from graphprune.train import TrainConfig, fit

RECALIBRATIONS = 2
"""How often a calibrated repair whose plan measures over the target calibrates again, at that plan (then
a repair judged by measurement trims what is still over)."""
UNDER = 0.05
"""A calibrated repair whose plan measures more than this share under the target is filled by a repair
judged by measurement (a predictor that overrates small plans stops the repair far short of the budget)."""


def stage_config(ctx: MethodContext, index: int = 0) -> TrainConfig | None:
    """The training config of the method's `index`-th stage: `options["epochs"][index]` (the --epochs
    list) overrides its epochs and `options["stage_steps"][index]` caps its steps; None when the epochs
    are 0 (the gates are read off untrained)."""
    cfg = ctx.train_cfg or TrainConfig()
    epochs = ctx.options.get("epochs")
    if epochs and index < len(epochs):
        if int(epochs[index]) == 0:
            return None
        cfg = dataclasses.replace(cfg, epochs=int(epochs[index]))
    steps = ctx.options.get("stage_steps")
    if steps and index < len(steps) and steps[index] is not None:
        cfg = dataclasses.replace(cfg, max_steps=int(steps[index]))
    return cfg


def trained_copy(model: nn.Module, trained: nn.Module) -> nn.Module:
    """A copy of the user's `model` holding the trained parameters (the user's model is not touched)."""
    out = copy.deepcopy(model)
    result = out.load_state_dict(trained.state_dict(), strict=False)
    if result.unexpected_keys:
        raise MethodError(f"trained weights do not fit the model: unexpected {result.unexpected_keys[0]}")
    return out


def gate_channels(
    ctx: MethodContext,
    pg: PrunableGraph,
    cost: CostModel,
    *,
    stage: str = "wgates",
    stage_index: int = 0,
    fixed_blocks: list[str] | None = None,
) -> tuple[PruningPlan, nn.Module, dict[str, Any], list[Path]]:
    """Train gates on `pg`'s model toward `cost.target`, read off and repair. `fixed_blocks` are already
    removed from `pg`'s model (abp+wgates) and are only recorded in the plan."""
    opts = ctx.options
    groups = [g for g in pg.prunable_groups]
    with seeded((ctx.train_cfg or TrainConfig()).seed):
        gates = build_gates(
            pg.gm,
            groups,
            hidden=int(opts.get("gate_hidden", 16)),
            init_score=float(opts.get("gate_init", 0.5)),
            prior_weight=float(opts.get("gate_prior", 1.0)),
            min_open=1.0 - float(opts.get("max_ratio", 0.9)),
            span_floor=float(opts.get("span_floor", 0.5)),  # the same floor the repair keeps
        )
    if not gates:
        raise MethodError("wgates: the model has no prunable channel group with a conv / linear producer")
    gm = InsertChannelGates(groups, gates)(pg.gm).graph_module
    slots = gate_slots(gm)
    weight = float(opts.get("budget_weight", 2.0))
    form = opts.get("budget_form", "threshold")
    history: list[dict[str, float]] = []
    cfg = stage_config(ctx, stage_index)
    if ctx.data is None:
        raise MethodError("wgates trains its gates: it needs --data")
    stage_steps = _stage_steps(cfg, ctx.data) if cfg is not None else 1
    # the threshold moves by at most about `threshold_range` score units over the stage
    rate = float(opts.get("threshold_range", 4.0)) / max(1, stage_steps)

    # a measured budget (latency): every `calibrate_every` steps the current read-off is measured, and
    # the prediction is scaled by measured / predicted from then on
    measured_budget = cost.unit != "MACs" and form == "threshold"
    every = int(opts.get("calibrate_every", max(1, stage_steps // 8))) if measured_budget else 0
    round_to = int(opts.get("round_to") or 1)
    max_ratio = float(opts.get("max_ratio", 0.9))
    correction = [1.0]

    def extra_loss(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        keep = _last_gates(slots)
        total = sum(v.numel() for v in keep.values())
        opened = sum(float(v.detach().sum()) for v in keep.values()) / max(1, total)
        entry: dict[str, float] = {}
        if form == "threshold":
            # the budget acts on one threshold shared by every gate (dual ascent on the relative excess):
            # the task loss alone trains the scores, so importance, not cost, decides which gates close
            with torch.no_grad():
                predicted = cost.predict({k: v.detach() for k, v in keep.items()})
                if every and len(history) % every == 0:
                    measured = cost.measure(read_off(pg, gate_scores(model), max_ratio, round_to))
                    correction[0] = measured / max(float(predicted), 1e-12)
                    entry.update(measured=measured, correction=correction[0])
                predicted = predicted * correction[0]
                step = rate * (float(predicted) / cost.target - 1.0)
                for slot in slots.values():
                    slot.gate.threshold.add_(step)  # type: ignore[union-attr, operator]
            loss = torch.zeros((), device=logits.device, dtype=logits.dtype)
        else:
            predicted = cost.predict(keep)
            loss = budget_loss(predicted, cost.target, weight, form).to(logits.device, logits.dtype)
        history.append(
            {"step": len(history), "open_ratio": opened, "predicted": float(predicted.detach()), **entry}
        )
        return loss

    gate_params = [p for s in slots.values() for p in s.gate.parameters()]
    if cfg is not None:
        fit(
            gm,
            ctx.data,
            cfg,
            teacher=ctx.teacher,
            extra_loss=extra_loss,
            extra_params=[
                {
                    "params": gate_params,
                    "lr": float(opts.get("gate_lr", 0.01)),
                    "weight_decay": 0.0,
                    # no momentum: the hinge stops pushing once the budget is met, momentum would not
                    "momentum": float(opts.get("gate_momentum", 0.0)),
                    "nesterov": False,
                }
            ],
            run_dir=ctx.run_dir,
            stage=stage,
            resume=ctx.resume,
        )
    gm.cpu().eval()
    trained = RemoveChannelGates()(gm).graph_module
    deciding = ("round_to", "max_ratio", "span_floor", "repair_by", "repair_from")
    inputs = {
        "budget": dataclasses.asdict(ctx.budget), "unit": cost.unit,
        "target": cost.target if cost.unit == "MACs" else None,  # a measured target moves run to run
        "fixed_blocks": sorted(fixed_blocks or ()), "options": {k: opts.get(k) for k in deciding},
    }  # fmt: skip
    if ctx.resume and (decided := saved_decision(ctx.run_dir, stage, pg, inputs)) is not None:
        return decided[0], trained, decided[1], [p for p in decided[2] if p.is_file()]
    scores = gate_scores(gm)
    keep = {gid: torch.from_numpy((s > 0).astype(np.float64)) for gid, s in scores.items()}
    predicted = float(cost.predict(keep))
    plan = read_off(pg, scores, max_ratio, round_to)
    for b in fixed_blocks or ():
        plan.remove_block(b)
    span_floor = float(opts.get("span_floor", 0.5))
    floors = {g.id: span_floor for g in groups if g.id in scores and spans_resolutions(pg.gm, g)}
    repair_from = str(opts.get("repair_from", "readoff"))
    if repair_from not in ("readoff", "floor"):
        raise MethodError(f"wgates: repair_from must be 'readoff' or 'floor', got {repair_from!r}")
    readoff = plan
    judge, estimate, calibration = repair_costs(cost, readoff, str(opts.get("repair_by", "flops")))
    recalibrated: list[float] = []
    while True:
        plan, done = repair(
            pg, readoff, scores, judge, cost.target, max_ratio=max_ratio, round_to=round_to,
            keep_at_least=floors, estimate=estimate, max_evals=12 if judge is cost.measure else 64,
            from_floor=repair_from == "floor",
        )  # fmt: skip
        if calibration is None:
            break
        # judged by the calibrated predictor: what the plan measures; over the target, the scale was
        # set too far from the plan (at the read-off), so calibrate again at the plan and repair again
        after = cost.measure(plan)
        done.update(cost_before_repair=calibration[1], cost_after_repair=after)
        if after <= cost.target or len(recalibrated) == RECALIBRATIONS:
            break
        judge, estimate, again = repair_costs(cost, plan, "calibrated")
        assert again is not None
        recalibrated.append(again[0])
    by_measurement: int | None = None
    if calibration is not None and not (1 - UNDER) * cost.target <= done["cost_after_repair"] <= cost.target:
        # still over (trim) or far under (fill): a repair judged by measurement, from this plan
        plan, fix = repair(
            pg, plan, scores, cost.measure, cost.target, max_ratio=max_ratio, round_to=round_to,
            keep_at_least=floors, estimate=estimate, max_evals=12,
        )  # fmt: skip
        by_measurement = int(fix["repair_moves"])
        done.update(cost_after_repair=fix["cost_after_repair"])
    kept = {gid: (pg.group(gid).size - len(plan.channels.get(gid, ())), pg.group(gid).size) for gid in scores}
    opened = [h["open_ratio"] for h in history]
    report: dict[str, Any] = {
        "budget": f"{cost.target:.6g} {cost.unit} ({cost.target / cost.original:.3f} of {cost.original:.6g})",
        "budget_target": cost.target,
        "predicted_cost_at_readoff": predicted,
        "measured_cost_before_repair": done["cost_before_repair"],
        "measured_cost": done["cost_after_repair"],
        "repair_moves": done["repair_moves"],
        **({"repair_calibration": calibration[0]} if calibration is not None else {}),
        **({"repair_recalibrated": ", ".join(f"{k:.4g}" for k in recalibrated)} if recalibrated else {}),
        # where it ran, channels the measured repair removed (> 0: trimmed) or restored (< 0: filled)
        **({"repair_moves_by_measurement": by_measurement} if by_measurement is not None else {}),
        "repair_removed": done["repair_removed"],
        "repair_restored": done["repair_restored"],
        "kept_channels": ", ".join(f"{gid} {k}/{n}" for gid, (k, n) in kept.items()),
        "gate_open_ratio": (
            f"{opened[0]:.3f} -> {opened[-1]:.3f} over {len(opened)} steps" if opened else "untrained"
        ),
    }
    plots = []
    if ctx.run_dir is not None:
        details = {
            "unit": cost.unit,
            "target": cost.target,
            "original": cost.original,
            "kept_channels": {gid: list(v) for gid, v in kept.items()},
            "open_ratio_history": _thin(history, 500),
            **{k: v for k, v in report.items() if isinstance(v, (int, float))},
        }
        write_text(Path(ctx.run_dir) / f"{stage}.json", json.dumps(details, indent=1) + "\n")
        if history:
            plots.append(_plot_open_ratio(history, Path(ctx.run_dir) / f"{stage}_open_ratio.png"))
        save_decision(ctx.run_dir, stage, plan, report, plots, inputs)
    return plan, trained, report, plots


def _stage_steps(cfg: TrainConfig, data: Any) -> int:
    """The optimiser steps a stage with `cfg` takes on `data`."""
    total = cfg.epochs * max(1, len(data.train) // cfg.batch_size)
    return min(total, cfg.max_steps) if cfg.max_steps is not None else total


def _last_gates(slots: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The gate vectors of the last forward, on the CPU (where the cost models live)."""
    out: dict[str, torch.Tensor] = {}
    for gid, slot in slots.items():
        gate = getattr(slot.gate, "last_gate", None)
        if isinstance(gate, torch.Tensor):
            out[gid] = gate.cpu()
    return out


def _thin(history: list[dict[str, float]], n: int) -> list[dict[str, float]]:
    """At most about `n` evenly spaced entries, always with the last."""
    if len(history) <= n:
        return history
    step = len(history) / n
    picked = [history[int(i * step)] for i in range(n)]
    return picked + [history[-1]]


def _plot_open_ratio(history: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphprune.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["open_ratio"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("open gates")
    ax.set_ylim(0, 1.05)
    ax.set_title("W-Gates: share of open gates")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def decide(ctx: MethodContext) -> MethodResult:
    """`--method wgates`: channels only, under a FLOPs (or latency) budget."""
    cost = budget_cost(ctx, ctx.pg)
    plan, trained, report, plots = gate_channels(ctx, ctx.pg, cost)
    plan.meta.update(method="wgates", target=cost.target, unit=cost.unit)
    return MethodResult(plan=plan, model=trained_copy(ctx.model, trained), report=report, plots=plots)


def budget_cost(ctx: MethodContext, pg: PrunableGraph, scale: float = 1.0) -> CostModel:
    """The cost model of `ctx.budget`; `scale` multiplies the target (for a share of a joint budget)."""
    groups = [g.id for g in pg.prunable_groups]
    b = ctx.budget
    if b.target_flops is not None:
        return flops_cost(pg, b.target_flops * scale, groups)
    if b.target_latency_ms is not None or b.target_latency_ratio is not None:
        from graphprune.methods.wgates.latency_budget import latency_cost

        return latency_cost(ctx, pg, groups, scale)
    raise MethodError("wgates needs a budget: --target-flops or --target-latency")


__all__ = ["CostModel", "WeightGate", "budget_cost", "decide", "flops_cost", "gate_channels"]
