"""The ABP schedule on the training layer: stage 1 soft-gated training, stage 2 progressive pruning.

Stage 1 trains backbone and gates (KD from the original + the gate regulariser). Stage 2 is `prune_steps`
pruning steps, each followed by recovery training (KD from stage 1's net) for its share of stage 2's
steps, whatever the number of epochs: a step ranks the blocks still in, switches off its share of those
the budget needs, and re-estimates the BatchNorm statistics (the structure changed). Stage 3 (gates
removed, architecture fixed) is the pipeline's fine-tune.

Every training part is a `fit(stage=...)`, so it checkpoints atomically and `resume` continues where it
stopped; which blocks are pruned lives in the gates' `pruned` buffers, i.e. in the checkpoints.
"""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from graphprune.errors import PlanError
from graphprune.fileio import write_text
from graphprune.graph import PrunableGraph
from graphprune.methods.abp.budget import (
    BlockBudget,
    block_shares,
    blocks_this_step,
    keep_target,
    meets_budget,
    removal_for_budget,
)
from graphprune.methods.abp.regulariser import GateRegulariser
from graphprune.methods.abp.voting import Vote, calibrate, vote
from graphprune.methods.base import seeded
from graphprune.passes.block_gates import InsertBlockGates, branch_scales, forget_marks, gates_of
from graphprune.train import TrainConfig, fit, recalibrate_bn
from graphprune.train.data import DataBundle
from graphprune.train.state import stage_dir

STAGE_GATES = "abp-1-gates"
STAGE_PRUNE = "abp-2-prune"


@dataclass(frozen=True)
class AbpConfig:
    """ABP's knobs; the defaults are the choices documented in docs/methods.md."""

    epochs: tuple[int, int] = (2, 2)  # stage 1, stage 2 (stage 3 is the pipeline's fine-tune)
    stage_steps: tuple[int | None, int | None] = (None, None)  # caps on each stage's optimiser steps
    prune_steps: int = 3  # pruning steps in stage 2, each followed by its share of recovery training
    rank_by: str = "measured"  # "measured": removal cost (output KL) per FLOPs saved; "vote": the paper's;
    # "vote+veto": the vote, but a block whose measured cost per FLOPs saved exceeds `veto` x the median
    # candidate's goes last
    veto: float = 3.0
    measure_images: int = 1024  # validation images the removal cost of a candidate is measured on
    recal_images: int = 1024  # training images BatchNorm statistics are re-estimated on after a change
    kd_stage1: bool = True  # distil from the original in stage 1 too
    gate_hidden: int = 16
    gate_norm: bool = False  # BatchNorm on the gate hidden layer (ConvNet-AIG): marks that follow the input
    init_mark: float = 0.9
    gate_lr_scale: float = 10.0  # gate learning rate = backbone learning rate x this
    reg_weight: float = 2.0
    polar: float = 0.5
    calib_batches: int = 8
    calib_batch_size: int = 128
    calib_seed: int = 1
    fold_mean_mark: bool = True  # fold a kept block's mean mark into its branch (else mark 1)
    freeze_branch_scale: bool = True  # freeze the γ ending each gated branch in stages 1-2 (m·γ is flat)


@dataclass
class AbpOutcome:
    """The gated network after stage 2, what was voted at each pruning step, and the removal."""

    gated: fx.GraphModule
    votes: list[dict[str, Any]] = field(default_factory=list)  # one per pruning step
    final_vote: Vote | None = None
    marks: torch.Tensor | None = None  # final calibration marks (samples, blocks)
    removed: tuple[str, ...] = ()
    predicted_flops: int = 0
    predicted_latency_ms: float | None = None


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def calibration_batches(model: nn.Module, data: DataBundle, cfg: AbpConfig) -> Iterator[torch.Tensor]:
    """The first `calib_batches` un-augmented training batches (a fixed shuffle), on the model's device."""
    loader = data.loader(
        "train", cfg.calib_batch_size, shuffle=True, seed=cfg.calib_seed, augment=False, drop_last=False
    )
    device = _device_of(model)
    for i, (x, _) in enumerate(loader):
        if i >= cfg.calib_batches:
            break
        yield x.to(device)


def _pruned(model: nn.Module) -> list[str]:
    return [name for name, g in gates_of(model).items() if bool(g.pruned)]


@torch.no_grad()
def removal_losses(
    model: nn.Module, data: DataBundle, candidates: list[str], cfg: AbpConfig
) -> dict[str, float]:
    """Each candidate block's removal cost: how far the network's predictions move when its gate is
    switched off (on a copy, BatchNorm statistics re-estimated), as the mean KL divergence from the
    current network's softmax on a fixed stratified sample of the validation split (the training
    split when none is held out; never the test split).

    Measured, not predicted: a downsampling block that is cheap to remove by its FLOPs but costly to
    lose scores what it costs. The divergence needs no labels, so it is not noise on an untrained net."""
    split = "val" if data.val is not None else "train"
    sample = data.sampled(split, cfg.measure_images, seed=cfg.calib_seed)
    batches = [x for x, _ in sample.loader(split, 256, shuffle=False, augment=False, drop_last=False)]

    def log_probs(blocks: list[str]) -> list[torch.Tensor]:
        probe = copy.deepcopy(model)
        gates = gates_of(probe)
        for b in blocks:
            gates[b].pruned.fill_(True)
        recalibrate_bn(probe, data, images=cfg.recal_images, seed=cfg.calib_seed)
        probe.eval()
        device = next(probe.parameters()).device
        return [F.log_softmax(probe(x.to(device)).float(), dim=1) for x in batches]

    reference = log_probs([])
    costs = {}
    for b in candidates:
        moved = log_probs([b])
        pairs = zip(reference, moved, strict=True)
        kl = sum(F.kl_div(q, p, log_target=True, reduction="sum") for p, q in pairs)
        costs[b] = float(kl) / max(1, sum(len(p) for p in reference))
    return costs


def vetoed_blocks(cost: dict[str, float], veto: float) -> set[str]:
    """The blocks whose measured removal cost (per FLOPs share) exceeds `veto` x the candidates' median:
    the vote may not put them first, however low their marks."""
    if not cost:
        return set()
    median = statistics.median(cost.values())
    return {b for b, c in cost.items() if c > veto * median}


def prune_step(
    model: nn.Module,
    pg: PrunableGraph,
    data: DataBundle,
    budget: BlockBudget,
    cfg: AbpConfig,
    steps_left: int,
) -> dict[str, Any]:
    """Rank the blocks still in and switch off this step's share of the blocks the budget still needs.

    The vote on the calibration set is always taken and recorded; with `rank_by="measured"` the ranking
    is by measured removal cost per share of the block FLOPs saved (lowest first), else by the vote."""
    forget_marks(model)
    pruned = _pruned(model)
    names, marks = calibrate(model, calibration_batches(model, data, cfg))
    needed_now = len(removal_for_budget(pg, pruned + [n for n in names if n not in pruned], budget).blocks)
    v = vote(names, marks, k=max(1, needed_now - len(pruned)), exclude=pruned)
    record: dict[str, Any] = {"pruned_before": pruned, "vote": v.to_dict()}
    ranking = list(v.ranking)
    if cfg.rank_by in ("measured", "vote+veto"):
        losses = removal_losses(model, data, ranking, cfg)
        shares = block_shares(pg)
        cost = {b: losses[b] / max(shares[b], 1e-12) for b in ranking}
        record["removal_kl"] = {b: round(losses[b], 6) for b in ranking}
        if cfg.rank_by == "measured":
            ranking = sorted(ranking, key=lambda b: (cost[b], ranking.index(b)))
        else:
            vetoed = vetoed_blocks(cost, cfg.veto)
            ranking = [b for b in ranking if b not in vetoed] + [b for b in ranking if b in vetoed]
            record["vetoed"] = sorted(vetoed, key=ranking.index)
    elif cfg.rank_by != "vote":
        raise PlanError(f"abp: rank_by must be 'measured', 'vote' or 'vote+veto', got {cfg.rank_by!r}")
    removal = removal_for_budget(pg, pruned + ranking, budget)
    new = [b for b in removal.blocks if b not in pruned]
    take = new[: blocks_this_step(len(pruned), len(removal.blocks), steps_left)]
    gates = gates_of(model)
    for b in take:
        gates[b].pruned.fill_(True)
    return {**record, "ranking": ranking, "pruned_now": take}


def _save_votes(run_dir: Path | None, votes: list[dict[str, Any]]) -> None:
    if run_dir is not None:
        write_text(stage_dir(run_dir, STAGE_PRUNE) / "votes.json", json.dumps(votes, indent=1) + "\n")


def _load_votes(run_dir: Path | None) -> list[dict[str, Any]]:
    if run_dir is None:
        return []
    path = stage_dir(run_dir, STAGE_PRUNE) / "votes.json"
    return list(json.loads(path.read_text())) if path.is_file() else []


def _split_steps(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` near-equal shares (the first ones one longer), none empty."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_abp(
    pg: PrunableGraph,
    data: DataBundle,
    train_cfg: TrainConfig,
    budget: BlockBudget,
    cfg: AbpConfig,
    *,
    teacher: nn.Module | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
) -> AbpOutcome:
    """Stages 1 and 2 on a gated copy of `pg.gm`; returns the pruned gated network (gates still in).
    `teacher` (the original) is distilled from in stage 1 when `cfg.kd_stage1`."""
    with seeded(train_cfg.seed):
        gated = InsertBlockGates(pg.blocks, cfg.gate_hidden, cfg.init_mark, cfg.gate_norm)(pg.gm).graph_module
    reg = GateRegulariser(block_shares(pg), keep_target(pg, budget), cfg.reg_weight, cfg.polar)

    def gate_group(model: nn.Module) -> list[dict[str, Any]]:
        params = [p for g in gates_of(model).values() for p in g.parameters()]
        return [{"params": params, "lr": train_cfg.lr * cfg.gate_lr_scale, "weight_decay": 0.0}]

    # frozen while the marks train, then as they were (the gated net is a private copy either way)
    frozen = [(p, p.requires_grad) for p in branch_scales(gated).values()] if cfg.freeze_branch_scale else []
    for p, _ in frozen:
        p.requires_grad_(False)

    e1, e2 = cfg.epochs
    s1, s2 = (s if s is not None else train_cfg.max_steps for s in cfg.stage_steps)
    # stage 1: backbone and gates together, KD (or CE) + regulariser
    if e1 > 0:
        fit(
            gated, data, replace(train_cfg, epochs=e1, max_steps=s1), extra_loss=reg,
            teacher=teacher if cfg.kd_stage1 else None, extra_params=gate_group(gated), run_dir=run_dir,
            stage=STAGE_GATES, resume=resume,
        )  # fmt: skip

    # stage 2: prune_steps x (prune a share by rank, re-estimate BN, recover with KD from stage 1's net)
    forget_marks(gated)
    stage1 = copy.deepcopy(gated).eval()
    per_epoch = max(1, len(data.train) // train_cfg.batch_size)
    total = min(e2 * per_epoch, s2) if s2 is not None else e2 * per_epoch
    parts = _split_steps(total, cfg.prune_steps) if e2 > 0 and total > 0 else [0]
    votes = _load_votes(run_dir) if resume else []
    for k, steps in enumerate(parts):
        done = next((v for v in votes if v.get("step") == k), None)
        if done is None:
            votes = [v for v in votes if v.get("step", -1) < k]
            votes.append({"step": k, **prune_step(gated, pg, data, budget, cfg, steps_left=len(parts) - k)})
            _save_votes(run_dir, votes)
        else:  # recorded before a kill: the same blocks (a checkpoint of the part overrides anyway)
            for b in done["pruned_now"]:
                gates_of(gated)[b].pruned.fill_(True)
        recalibrate_bn(gated, data, images=cfg.recal_images, seed=cfg.calib_seed)
        if steps > 0:
            part = replace(train_cfg, epochs=-(-steps // per_epoch), max_steps=steps)
            fit(
                gated, data, part, teacher=stage1, extra_loss=reg, extra_params=gate_group(gated),
                run_dir=run_dir, stage=f"{STAGE_PRUNE}/step{k}", resume=resume,
            )  # fmt: skip
    # a short run may stop before every step has pruned: the final model meets the budget anyway
    if not meets_budget(pg, _pruned(gated), budget):
        votes.append({"step": len(parts), **prune_step(gated, pg, data, budget, cfg, steps_left=1)})
        _save_votes(run_dir, votes)
        recalibrate_bn(gated, data, images=cfg.recal_images, seed=cfg.calib_seed)

    for p, was in frozen:
        p.requires_grad_(was)
    names, marks = calibrate(gated, calibration_batches(gated, data, cfg))
    forget_marks(gated)
    pruned = _pruned(gated)
    final = vote(names, marks, k=max(1, len(pruned)))
    removal = removal_for_budget(pg, pruned, BlockBudget(num_blocks=len(pruned)))
    ms = (
        budget.latency.predict_counts({g.id: g.size for g in pg.prunable_groups}, pruned)
        if budget.latency
        else None
    )
    return AbpOutcome(gated, votes, final, marks, removal.blocks, removal.predicted_flops, ms)
