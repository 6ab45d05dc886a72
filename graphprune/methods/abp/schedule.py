"""The ABP schedule on the training layer: stage 1 soft-gated training, stage 2 progressive pruning by vote.

Stage 3 (gates removed, architecture fixed, CE + KD from the original) is the pipeline's "finetune" stage.
Every stage is a `fit(stage=...)`, so it checkpoints atomically and `resume` continues where it stopped;
which blocks are pruned lives in the gates' `pruned` buffers, i.e. in the model checkpoint itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

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
from graphprune.passes.block_gates import InsertBlockGates, forget_marks, gates_of
from graphprune.train import TrainConfig, fit
from graphprune.train.data import DataBundle
from graphprune.train.state import stage_dir

STAGE_GATES = "abp-1-gates"
STAGE_PRUNE = "abp-2-prune"


@dataclass(frozen=True)
class AbpConfig:
    """ABP's knobs; the defaults are the choices documented in docs/methods.md."""

    epochs: tuple[int, int] = (2, 2)  # stage 1, stage 2 (stage 3 is the pipeline's fine-tune)
    stage_steps: tuple[int | None, int | None] = (None, None)  # caps on each stage's optimiser steps
    gate_hidden: int = 16
    init_mark: float = 0.9
    gate_lr_scale: float = 10.0  # gate learning rate = backbone learning rate x this
    reg_weight: float = 2.0
    polar: float = 0.5
    calib_batches: int = 8
    calib_batch_size: int = 128
    calib_seed: int = 1
    fold_mean_mark: bool = True  # fold a kept block's mean mark into its branch (else mark 1)


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


def prune_step(
    model: nn.Module,
    pg: PrunableGraph,
    data: DataBundle,
    budget: BlockBudget,
    cfg: AbpConfig,
    steps_left: int,
) -> dict[str, Any]:
    """Vote on the calibration set and switch off this step's share of the blocks the budget still needs."""
    pruned = _pruned(model)
    names, marks = calibrate(model, calibration_batches(model, data, cfg))
    needed_now = len(removal_for_budget(pg, pruned + [n for n in names if n not in pruned], budget).blocks)
    v = vote(names, marks, k=max(1, needed_now - len(pruned)), exclude=pruned)
    removal = removal_for_budget(pg, pruned + list(v.ranking), budget)
    new = [b for b in removal.blocks if b not in pruned]
    take = new[: blocks_this_step(len(pruned), len(removal.blocks), steps_left)]
    gates = gates_of(model)
    for b in take:
        gates[b].pruned.fill_(True)
    return {"pruned_before": pruned, "pruned_now": take, "vote": v.to_dict()}


def _save_votes(run_dir: Path | None, votes: list[dict[str, Any]]) -> None:
    if run_dir is not None:
        write_text(stage_dir(run_dir, STAGE_PRUNE) / "votes.json", json.dumps(votes, indent=1) + "\n")


def _load_votes(run_dir: Path | None) -> list[dict[str, Any]]:
    if run_dir is None:
        return []
    path = stage_dir(run_dir, STAGE_PRUNE) / "votes.json"
    return list(json.loads(path.read_text())) if path.is_file() else []


def run_abp(
    pg: PrunableGraph,
    data: DataBundle,
    train_cfg: TrainConfig,
    budget: BlockBudget,
    cfg: AbpConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
) -> AbpOutcome:
    """Stages 1 and 2 on a gated copy of `pg.gm`; returns the pruned gated network (gates still in)."""
    with seeded(train_cfg.seed):
        gated = InsertBlockGates(pg.blocks, cfg.gate_hidden, cfg.init_mark)(pg.gm).graph_module
    reg = GateRegulariser(block_shares(pg), keep_target(pg, budget), cfg.reg_weight, cfg.polar)

    def gate_group(model: nn.Module) -> list[dict[str, Any]]:
        params = [p for g in gates_of(model).values() for p in g.parameters()]
        return [{"params": params, "lr": train_cfg.lr * cfg.gate_lr_scale, "weight_decay": 0.0}]

    e1, e2 = cfg.epochs
    s1, s2 = cfg.stage_steps
    # stage 1: backbone and gates together, CE + regulariser
    if e1 > 0:
        fit(
            gated, data, replace(train_cfg, epochs=e1, max_steps=s1), extra_loss=reg,
            extra_params=gate_group(gated), run_dir=run_dir, stage=STAGE_GATES, resume=resume,
        )  # fmt: skip

    # stage 2: prune by vote a share of the blocks at the start of every epoch, KD + CE from stage 1's net
    forget_marks(gated)
    teacher = copy.deepcopy(gated).eval()
    votes = _load_votes(run_dir) if resume else []
    first = next((v for v in votes if v["epoch"] == 0), None)
    if first is None:
        votes = [{"epoch": 0, **prune_step(gated, pg, data, budget, cfg, steps_left=max(1, e2))}]
        _save_votes(run_dir, votes)
    else:  # killed before stage 2's first checkpoint: redo the first step as voted (a checkpoint overrides)
        for b in first["pruned_now"]:
            gates_of(gated)[b].pruned.fill_(True)

    def revote(model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch < e2:
            step = {"epoch": epoch, **prune_step(model, pg, data, budget, cfg, steps_left=e2 - epoch)}
            votes[:] = [v for v in votes if v["epoch"] < epoch] + [step]  # a redone epoch votes again
            _save_votes(run_dir, votes)

    if e2 > 0:
        stage2 = replace(train_cfg, epochs=e2, max_steps=s2)  # KD temperature and weight: the config's
        fit(
            gated, data, stage2, teacher=teacher, extra_loss=reg, extra_params=gate_group(gated),
            run_dir=run_dir, stage=STAGE_PRUNE, resume=resume, on_epoch_end=revote,
        )  # fmt: skip
    # a short run (max_steps) may stop before every step has pruned: the final model meets the budget anyway
    if not meets_budget(pg, _pruned(gated), budget):
        votes.append({"epoch": e2, **prune_step(gated, pg, data, budget, cfg, steps_left=1)})
        _save_votes(run_dir, votes)

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
