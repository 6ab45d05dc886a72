"""Suite 1: top-1 against FLOPs on CIFAR-10 JPEG, graphprune's methods against L1 and Torch-Pruning.

    python benchmarks/accuracy_suite.py --smoke      # every arm, a few steps on a few images (CI)
    python benchmarks/accuracy_suite.py --quick      # ResNet-20 at -40/-50/-60/-80%, 1 seed, short budget
    python benchmarks/accuracy_suite.py --standard   # the evidence: ResNet-20 (2 seeds), ResNet-56, -60%;
                                                     # ResNet-20 at -80% (2 seeds)

The rules (see accuracy_verdicts for how they are judged):
- Every arm starts from the shared JPEG baseline and trains for exactly the mode's optimiser steps at
  the same batch size: a learned method's own stages, and DepGraph's sparse training, take their
  configured shares of that budget, and the distilled fine-tune (KD from the baseline) the rest. The
  unpruned control is fine-tuned for the whole budget. Each record carries its steps, counted from the
  stages' own `done.json`.
- 5,000 training images are held out (class-stratified, seeded) as the validation split; every decision
  (calibration, votes, evaluation during training, the best arm of a kind) uses it. The test split is
  evaluated once per arm, at the end.
- Right after pruning each arm gets the fast numbers: validation top-1 raw and after BatchNorm
  recalibration. The fine-tune then starts from the recalibrated model, for every arm alike.
- Each arm's record is written atomically as soon as it finishes, under OUT/accuracy_arms/<mode>/, and
  skipped on re-runs, so a killed run resumes per arm (and inside an arm from its stage checkpoints
  under --work-dir). accuracy.json/.md/.png are rebuilt from the records of every mode.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import accuracy_verdicts
import click
import run_meta
import torch
from torch import nn

import graphprune as gp
from graphprune import shared
from graphprune.fileio import write_text
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
CONTROL = "unpruned"
FAIL_ENV = "GRAPHPRUNE_ACCURACY_FAIL_ARM"
"""Names an arm that raises on purpose: the test that a failing arm fails the strict smoke run."""


@dataclass(frozen=True)
class Arm:
    """One way to prune. `stage_shares` are the shares of the step budget a learned method's own stages
    (or DepGraph's sparse training) take, in stage order; the fine-tune gets the rest."""

    name: str
    kind: str  # learned | l1 | torch_pruning | control | ablation (shown, never in a verdict)
    method: str | None = None
    stage_shares: tuple[float, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # method options over the suite's
    importance: str | None = None
    global_pruning: bool = True
    sparse: bool = False
    round_to: int = 1
    keep_streams: bool = False  # L1: the residual streams (`ChannelGroup.is_residual_stream`) stay whole


def _tp(importance: str, global_pruning: bool, round_to: int = 1) -> Arm:
    name = f"tp-{importance}-{'global' if global_pruning else 'layer'}" + (
        f"-r{round_to}" if round_to > 1 else ""
    )
    return Arm(name, "torch_pruning", importance=importance, global_pruning=global_pruning, round_to=round_to)


def _stream_pipeline(name: str, stage_shares: tuple[float, ...] = (0.1, 0.15, 0.2), **options: Any) -> Arm:
    """A learned abp+wgates arm whose channel stage keeps the streams across stages whole (span_floor 1.0),
    with these stage shares and method options."""
    return Arm(name, "learned", method="abp+wgates", stage_shares=stage_shares,
               options=(("span_floor", 1.0), *options.items()))  # fmt: skip


def short_name(model: str) -> str:
    """A model spec without its source, as in file names: `graphprune:cifar_resnet56` -> `cifar_resnet56`."""
    return model.split(":", 1)[-1]


ARMS = {
    a.name: a
    for a in (
        Arm(CONTROL, "control"),
        Arm("l1", "l1", method="l1"),
        Arm("l1-r8", "l1", method="l1", round_to=8),
        Arm("l1-stream", "l1", method="l1", keep_streams=True),
        Arm("abp", "learned", method="abp", stage_shares=(0.15, 0.25)),
        Arm("wgates", "learned", method="wgates", stage_shares=(0.25,)),
        # abp+wgates as first run: the channel stage with W-Gates' own span_floor 0.5 (the method's
        # default became 1.0, the stream arm below, once both models chose it on validation)
        Arm(
            "abp+wgates",
            "learned",
            method="abp+wgates",
            stage_shares=(0.1, 0.15, 0.2),
            options=(("span_floor", 0.5),),
        ),  # fmt: skip
        # ablations: ABP ranking by the paper's vote; W-Gates read off untrained (the filter-norm prior)
        Arm("abp-vote", "ablation", method="abp", stage_shares=(0.15, 0.25), options=(("rank_by", "vote"),)),
        Arm(
            "abp-vote-veto",
            "ablation",
            method="abp",
            stage_shares=(0.15, 0.25),
            options=(("rank_by", "vote+veto"),),
        ),  # fmt: skip
        Arm("wgates-prior", "ablation", method="wgates", options=(("epochs", [0]),)),
        # ablation: the residual stream across stages kept whole (as Torch-Pruning leaves it)
        Arm(
            "wgates-stream", "ablation", method="wgates", stage_shares=(0.25,), options=(("span_floor", 1.0),)
        ),
        # ablation: W-Gates with a gate stage of a tenth of the budget (a quarter in the wgates arm), so
        # that its distilled fine-tune is nearer L1's length
        Arm("wgates-short", "ablation", method="wgates", stage_shares=(0.1,)),
        # abp+wgates with every channel of the stream across stages kept (span_floor 1.0, a documented
        # option): a learned arm, so the verdict chooses between it and abp+wgates by validation
        _stream_pipeline("abp+wgates-stream"),
        # the same with its own stages at 0.25 of the budget (0.45 above), so that the distilled fine-tune
        # gets 0.75: wgates-short's lesson applied to the pipeline
        _stream_pipeline("abp+wgates-short", stage_shares=(0.05, 0.1, 0.1)),
        # the same with ABP's share of the cut halved (`block_share` 0.25: at -60% blocks go to 0.80 of the
        # FLOPs, not 0.63): fewer blocks of ResNet-20's nine go, more channels
        _stream_pipeline("abp+wgates-b25", block_share=0.25),
        *(_tp(imp, g) for imp in ("groupnorm", "bnscale", "taylor") for g in (True, False)),
        _tp("groupnorm", True, 8),
        Arm("tp-depgraph", "torch_pruning", importance="groupnorm", sparse=True, stage_shares=(0.25,)),
    )
}
TP_IMPORTANCE_ARMS = tuple(
    n for n, a in ARMS.items() if a.kind == "torch_pruning" and not a.sparse and a.round_to == 1
)
BEST_TWO = "tp-best-two"
"""Placeholder in a mode's arm list: the two Torch-Pruning importance arms with the best validation
top-1 in the quick mode's records (the standard mode defers them until those exist)."""


@dataclass(frozen=True)
class Block:
    """A model of a mode: its spec, the baseline weights, the FLOPs reductions and seeds it is run at."""

    model: str
    weights: str
    reductions: tuple[float, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Mode:
    """One way to run the suite: models, arms and the one training budget every arm gets."""

    name: str
    blocks: tuple[Block, ...]
    arms: tuple[str, ...]
    steps: int | None = None
    """Optimiser steps per arm; None: `epochs` of the training images."""
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.01
    extra_arms: dict[float, tuple[str, ...]] = field(default_factory=dict)
    """Arms run only at some targets (per-layer variants, rounding to 8)."""
    val_images: int = 5000
    recal_images: int = 1024
    calib_images: int = 512
    data_limit: int | None = None
    eval_batch_size: int = 512


R20 = ("graphprune:cifar_resnet20", "cifar10jpeg_resnet20.th")
R56 = ("graphprune:cifar_resnet56", "cifar10jpeg_resnet56.th")
LEARNED = ("abp", "wgates", "abp+wgates")
MODES = {
    "smoke": Mode(
        "smoke",
        (Block(*R20, (0.5,), (0,)),),
        ("l1", *LEARNED, *TP_IMPORTANCE_ARMS, "tp-depgraph", "l1-r8", "tp-groupnorm-global-r8", "l1-stream"),
        steps=4,
        batch_size=32,
        val_images=100,
        recal_images=64,
        calib_images=64,
        data_limit=300,
    ),
    "quick": Mode(
        "quick",
        (Block(*R20, (0.6, 0.5, 0.4, 0.8), (0,)),),  # the headline cut first, -80% last
        ("l1", *LEARNED, "tp-groupnorm-global", "tp-bnscale-global", "tp-taylor-global", "tp-depgraph"),
        steps=160,
        lr=0.01,
        extra_arms={
            0.6: (
                "abp-vote",
                "wgates-prior",
                "abp-vote-veto",
                "wgates-stream",
                "abp+wgates-stream",
                "l1-stream",
                "abp+wgates-b25",
            ),  # fmt: skip
            0.5: (
                "tp-groupnorm-layer",
                "tp-bnscale-layer",
                "tp-taylor-layer",
                "l1-r8",
                "tp-groupnorm-global-r8",
            ),
            0.8: ("wgates-stream", "abp+wgates-stream", "l1-stream"),
        },
    ),
    "standard": Mode(
        "standard",
        # -80% on ResNet-20 after -60% everywhere: "-60% and beyond" (the methods issue), where the quick
        # mode's learned arms led by 6.7 points
        (Block(*R20, (0.6,), (0, 1)), Block(*R56, (0.6,), (0,)), Block(*R20, (0.8,), (0, 1))),
        ("l1", "tp-depgraph", BEST_TWO, *LEARNED),
        epochs=6,
        lr=0.02,
        extra_arms={
            0.6: ("abp+wgates-stream", "l1-stream", "wgates-short", "abp+wgates-short", "abp+wgates-b25"),
            0.8: ("abp+wgates-stream",),
        },
    ),
}


class NotAvailable(LookupError):
    """An arm whose dependency is absent (a method not registered, torch-pruning not installed)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def arm_file(out: Path, mode: str, model: str, arm: str, reduction: float | None, seed: int) -> Path:
    short = short_name(model)
    target = f"@{reduction:g}" if reduction is not None else ""
    return out / "accuracy_arms" / mode / f"{short}-{arm.replace('+', '_')}{target}-seed{seed}.json"


def best_two(out: Path) -> list[str] | None:
    """The best arms of the two Torch-Pruning importances with the best mean validation top-1 in the quick
    mode (each importance at its better scope), over the targets every such arm has a record at (an arm
    over a budget counts 0 there); None before the quick mode has records of two of them."""
    quick = [json.loads(p.read_text()) for p in sorted((out / "accuracy_arms" / "quick").glob("*.json"))]
    by_arm: dict[str, dict[float, float]] = {}
    for a in quick:
        if a["arm"] in TP_IMPORTANCE_ARMS and a["status"] == "ok":
            met = a["flops_ratio"] <= 1 - a["reduction"] + accuracy_verdicts.BUDGET_SLACK
            by_arm.setdefault(a["arm"], {})[a["reduction"]] = a["val_top1"] if met else 0.0
    common = set.intersection(*(set(v) for v in by_arm.values())) if by_arm else set()
    if len(by_arm) < 2 or not common:
        return None
    ranked = sorted(by_arm, key=lambda k: (-sum(by_arm[k][t] for t in common) / len(common), k))
    best_of: dict[str | None, str] = {}  # the best scope of each importance, best importances first
    for arm in ranked:
        best_of.setdefault(ARMS[arm].importance, arm)
    return list(best_of.values())[:2]


def jobs(mode: Mode, out: Path) -> list[tuple[Block, str, float | None, int]]:
    """(block, arm, reduction, seed) in run order: per model the control, then per seed the arms."""
    arms = list(mode.arms)
    if BEST_TWO in arms:
        chosen = best_two(out)
        at = arms.index(BEST_TWO)
        arms[at : at + 1] = chosen or []
        if chosen is None:
            click.echo("Torch-Pruning's best two importances: deferred until the quick mode has records")
    order = []
    for b in mode.blocks:  # a model's control once, however many of its blocks the mode lists
        done = {(c.model, s) for c, arm, _, s in order if arm == CONTROL}
        order += [(b, CONTROL, None, s) for s in b.seeds if (b.model, s) not in done]
        for seed in b.seeds:
            for r in b.reductions:
                order += [(b, a, r, seed) for a in [*arms, *mode.extra_arms.get(r, ())]]
    return order


def steps_done(run_dir: Path) -> dict[str, int]:
    """Optimiser steps of every finished training stage under `run_dir`, by stage path."""
    return {
        str(p.parent.relative_to(run_dir)): int(json.loads(p.read_text())["steps"])
        for p in sorted(run_dir.rglob("done.json"))
    }


def logged_seconds(run_dir: Path) -> float:
    """Training seconds of every epoch logged under `run_dir`, by every process that worked on it: a
    resumed arm's own `seconds` cover only the process that finished it."""
    total = 0.0
    for path in sorted(run_dir.rglob("metrics.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("kind") == "epoch":
                total += float(entry.get("seconds", 0.0))
    return round(total, 1)


def arm_cpu_seconds(record: dict[str, Any]) -> float:
    """CPU seconds an arm cost: wall seconds (its last process, or every epoch's if more) x threads."""
    return max(record["seconds"], record.get("epoch_seconds", 0.0)) * record.get("threads", 1)


def calibration_batches(data: Any, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed class-stratified sample of `n` un-augmented training images, in batches of 128."""
    from graphprune.train.data import stratified_sample
    from graphprune.train.loader import BatchLoader

    sample = data.train.take(stratified_sample(data.train.labels, n, seed))
    return list(BatchLoader(sample.images, sample.labels, min(128, n), mean=data.mean, std=data.std))


def prune_tp(
    arm: Arm, model: nn.Module, x: tuple[torch.Tensor, ...], keep: float, data: Any, cfg: Any, run_dir: Path,
    stage_steps: list[int], calib: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """A Torch-Pruning arm: (DepGraph: sparse training first, then) a ratio search to the FLOPs cap."""
    try:
        import tp_arms
    except ImportError as exc:
        raise NotAvailable(f"torch-pruning is not installed ({exc})") from None
    from graphprune.train import fit

    assert arm.importance is not None
    notes: dict[str, Any] = {"importance": arm.importance, "global": arm.global_pruning}
    search = {"importance": arm.importance, "global_pruning": arm.global_pruning, "round_to": arm.round_to,
              "calibration": calib, "group_norm_pruner": arm.sparse}  # fmt: skip
    ignored: tuple[str, ...] = ()
    try:  # whether the coupling is broken does not depend on the importance
        tp_arms.tp_prune(
            model, x, importance="groupnorm", pruning_ratio=0.5, global_pruning=arm.global_pruning
        )
    except tp_arms.BrokenModelError as exc:
        # Torch-Pruning couples the zero-padded option-A shortcut wrongly: keep it off the residual stream
        ignored = tuple(tp_arms.coupled_convs(model, x))
        notes.update(first_attempt=str(exc), ignored_residual_convs=len(ignored))
    if arm.sparse:
        sparse = copy.deepcopy(model)
        steps = stage_steps[0]
        regularize = tp_arms.depgraph_regulariser(
            sparse, x, global_pruning=arm.global_pruning, ignored=ignored
        )
        fit(sparse, data, replace(cfg, epochs=_epochs(steps, data, cfg), max_steps=steps), teacher=model,
            after_backward=regularize, run_dir=run_dir, stage="depgraph-sparse", resume=True)  # fmt: skip
        model = sparse.cpu().eval()
        notes.update(reg=tp_arms.DEPGRAPH_REG)
    res = tp_arms.tp_prune_to_flops(model, x, keep, ignored=ignored, **search)
    notes.update(
        pruning_ratio=res.pruning_ratio, matched=res.matched, reachable=res.reachable, trials=res.trials
    )
    return res.model, notes


def l1_plan(pg: gp.PrunableGraph, arm: Arm, keep: float) -> tuple[gp.PruningPlan, list[str]]:
    """An L1 arm's plan (global scope, data-free) and the groups it left whole."""
    whole = [g.id for g in pg.prunable_groups if g.is_residual_stream] if arm.keep_streams else []
    plan = gp.criteria.plan_by_criterion(pg, "l1", keep, "global", round_to=arm.round_to, keep_whole=whole)
    return plan, whole


def run_folder(work: Path, model: str, arm: str, reduction: float | None, seed: int) -> Path:
    """Where an arm keeps its checkpoints and its final.onnx under the suite's --work-dir."""
    return work / model.split(":")[-1] / (f"{arm}@{reduction:g}" if reduction else arm) / f"seed{seed}"


def prune_gp(
    arm: Arm, model: nn.Module, x: tuple[torch.Tensor, ...], keep: float, data: Any, cfg: Any, run_dir: Path,
    stage_steps: list[int],
) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """A graphprune arm: the L1 criterion (data-free), or a learned method from the registry."""
    pg = gp.trace(model, x)
    if arm.method == "l1":
        plan, whole = l1_plan(pg, arm, keep)
        return gp.apply(pg, plan), {"criterion": "l1", "scope": "global", "kept_whole": whole}
    from graphprune.methods import Budget, MethodContext, get_method, method_names

    assert arm.method is not None
    if arm.method not in method_names():
        raise NotAvailable(f"method {arm.method!r} is not registered")
    options = {"epochs": [_epochs(s, data, cfg) for s in stage_steps], "stage_steps": stage_steps}
    options.update(dict(arm.options))
    ctx = MethodContext(
        model=model, example_inputs=x, pg=pg, budget=Budget(target_flops=keep), data=data, train_cfg=cfg,
        teacher=model, run_dir=run_dir / "method", resume=True, options=options,
    )  # fmt: skip
    result = get_method(arm.method)(ctx)
    slim = gp.apply(gp.trace(result.model, x), result.plan)
    report = {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}
    return slim, {"method_report": report, "method_options": options, "removed_blocks": result.plan.blocks}


FINAL_ONNX = "final.onnx"
"""The finished arm, exported and verified in its run folder, so that arm_latency.py can time it."""


def export_final(model: nn.Module, x: tuple[torch.Tensor, ...], run_dir: Path) -> dict[str, Any]:
    """Export the finished arm to `run_dir/final.onnx` (simplified, verified); the error if it fails."""
    from graphprune.export import export_onnx

    try:
        export_onnx(model, x, run_dir / FINAL_ONNX)
    except Exception as exc:  # the arm's accuracy stands; its latency cannot be timed
        return {"error": _one_line(exc)}
    return {"file": FINAL_ONNX}


def _epochs(steps: int, data: Any, cfg: Any) -> int:
    return max(1, math.ceil(steps / (len(data.train) // cfg.batch_size)))


def finish(
    slim: nn.Module, baseline: nn.Module, x: tuple[torch.Tensor, ...], data: Any, cfg: Any, run_dir: Path,
    budget: int, mode: Mode, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """A pruned arm's fast numbers (validation top-1 raw and after BN recalibration), its distilled
    fine-tune for the steps its own stages under `run_dir` left of `budget`, validation and test top-1
    once, and its final.onnx; raises if the steps do not add up to the budget."""
    from graphprune.train import evaluate, fit, recalibrate_bn

    out: dict[str, Any] = {}
    fast = time.perf_counter()
    out["val_top1_raw"] = evaluate(slim, data, "val").top1
    recalibrate_bn(slim, data, images=mode.recal_images, seed=seed)
    out["val_top1_bnrecal"] = evaluate(slim, data, "val").top1
    out["fast_seconds"] = round(time.perf_counter() - fast, 2)
    used = sum(steps_done(run_dir).values()) if run_dir.is_dir() else 0
    left = budget - used
    if left < 1:
        raise RuntimeError(f"the arm's own stages used {used} of the {budget} steps: none left to fine-tune")
    tune = replace(cfg, epochs=_epochs(left, data, cfg), max_steps=left)
    result = fit(slim, data, tune, teacher=baseline, run_dir=run_dir, stage="finetune", resume=True)
    slim = slim.cpu().eval()
    stages = steps_done(run_dir)
    out.update(stage_steps=stages, total_steps=sum(stages.values()))
    if out["total_steps"] != budget:
        raise RuntimeError(f"trained {out['total_steps']} steps ({stages}), the budget is {budget}")
    val = result.test if result.test is not None else evaluate(slim, data, "val")
    test = evaluate(slim, data, "test")
    out.update(val_top1=val.top1, test_top1=test.top1, test_top5=test.top5, test_images=test.n)
    out["onnx"] = export_final(slim, x, run_dir)
    return out


def train_config(mode: Mode, seed: int, threads: int, device: str, compile_: bool = False) -> Any:
    """The training settings every arm of `mode` shares (epochs are set per stage from its steps)."""
    from graphprune.train import TrainConfig

    return TrainConfig(
        epochs=1, batch_size=mode.batch_size, lr=mode.lr, seed=seed, threads=threads, device=device,
        eval_every_epoch=False, eval_batch_size=mode.eval_batch_size, verbose=False, compile=compile_,
    )  # fmt: skip


def run_arm(
    arm_name: str, block: Block, reduction: float | None, seed: int, mode: Mode, data: Any, work: Path,
    threads: int, device: str, code: str, compile_: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Prune, take the fast numbers, fine-tune to the budget, evaluate once on test; never raises."""
    arm = ARMS[arm_name]
    resolved = resolve_model(block.model)
    baseline = load_weights(resolved.model, shared.weights_file(block.weights)).eval()
    x = resolved.example_inputs
    per_epoch = len(data.train) // mode.batch_size
    budget = mode.steps or mode.epochs * per_epoch
    cfg = train_config(mode, seed, threads, device, compile_)
    stage_steps = [max(1, round(s * budget)) for s in arm.stage_shares]
    run_dir = run_folder(work, block.model, arm_name, reduction, seed)
    out: dict[str, Any] = {
        "mode": mode.name, "model": block.model, "weights": block.weights, "arm": arm_name, "kind": arm.kind,
        "reduction": reduction, "seed": seed, "round_to": arm.round_to, "threads": threads, "device": device,
        "compile": compile_, "code": code,
        "criteria_code": run_meta.code_version("graphprune/criteria.py"),  # the data-free criteria (L1)
        "commit": run_meta.versions()["git"], "command": run_meta.command_line(),
        "budget_steps": budget, "batch_size": mode.batch_size, "lr": mode.lr,
        "stage_shares": list(arm.stage_shares),
    }  # fmt: skip
    start = time.perf_counter()
    try:
        if os.environ.get(FAIL_ENV) == arm_name:
            raise RuntimeError(f"failure injected by {FAIL_ENV}")
        torch.manual_seed(seed)
        base_flops = gp.count_flops(baseline, x)
        if arm.kind == "control":
            slim, notes = copy.deepcopy(baseline), {}
        else:
            assert reduction is not None
            keep = 1.0 - reduction
            if arm.kind == "torch_pruning":
                calib = calibration_batches(data, mode.calib_images, seed)
                slim, notes = prune_tp(arm, baseline, x, keep, data, cfg, run_dir, stage_steps, calib)
            else:
                slim, notes = prune_gp(arm, baseline, x, keep, data, cfg, run_dir, stage_steps)
        slim = slim.cpu().eval()
        out.update(notes=notes, flops=gp.count_flops(slim, x), params=gp.count_params(slim))
        out["flops_ratio"] = out["flops"] / base_flops
        out.update(finish(slim, baseline, x, data, cfg, run_dir, budget, mode, seed))
        out["status"] = "ok"
    except NotAvailable as exc:
        out.update(status="not available", error=str(exc))
    except Exception as exc:  # recorded as this arm's failure, shown on the page, fails --strict
        out.update(status="failed", error=_one_line(exc), traceback=traceback.format_exc(limit=6))
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["epoch_seconds"] = logged_seconds(run_dir) if run_dir.is_dir() else 0.0
    return out


def load_records(out: Path, mode: str = "*") -> list[dict[str, Any]]:
    """The per-arm records of `mode` (every mode by default), in file order, each with the suite's
    current kind for its arm (a record keeps the kind it ran under)."""
    arms = [json.loads(p.read_text()) for p in sorted((out / "accuracy_arms").glob(f"{mode}/*.json"))]
    for a in arms:
        a["kind"] = ARMS[a["arm"]].kind if a["arm"] in ARMS else a["kind"]
    return arms


def summarise(out: Path) -> dict[str, Any]:
    """accuracy.json from the per-arm records of every mode run so far."""
    arms = load_records(out)
    table = accuracy_verdicts.rows(arms)
    notes = []
    broken = next((a["notes"]["first_attempt"] for a in arms if "first_attempt" in a.get("notes", {})), None)
    if broken:
        notes.append(
            "Torch-Pruning's first pruned model does not run on the option-A CIFAR ResNets (it couples the "
            f"zero-padded shortcut as if elementwise: {broken!r}), so its residual-stream convs are passed "
            "as `ignored_layers`, the peer's documented way round it: its arms prune only the convs inside "
            "the blocks. That is the peer's limitation, kept."
        )
    unreachable = sorted({f"{a['arm']} @ −{a['reduction']:.0%}" for a in arms
                          if a.get("notes", {}).get("reachable") is False})  # fmt: skip
    if unreachable:
        notes.append(
            f"Torch-Pruning could not reach the FLOPs cap at its largest ratio: {', '.join(unreachable)}."
        )
    chosen = best_two(out)
    notes.append(
        "Torch-Pruning's best two importances by the quick mode's validation top-1 (mean over the targets "
        "every importance arm was run at), "
        f"run in the standard mode: {', '.join(chosen)}."
        if chosen
        else "Torch-Pruning's best two importances: not chosen yet (the quick mode has no records)."
    )
    notes.append(
        "Channel counts are unrounded (round 1) in the main comparison for both tools; the `-r8` arms round "
        "to multiples of 8 on both sides, where the learned methods cannot yet take part."
    )
    cpu_hours = sum(arm_cpu_seconds(a) for a in arms) / 3600
    verdicts = accuracy_verdicts.verdicts(table)
    return {
        "meta": run_meta.describe_run("+".join(sorted({a["mode"] for a in arms})) or "none"),
        "modes": {
            name: {k: v for k, v in vars(m).items() if k != "blocks"}
            | {"blocks": [vars(b) for b in m.blocks]}
            for name, m in MODES.items()
        },
        "verdicts": verdicts,
        "targets": accuracy_verdicts.targets(verdicts, table),
        "fast_number": accuracy_verdicts.fast_number_correlation(arms),
        "cpu_hours": cpu_hours,
        "notes": notes,
        "rows": table,
        "arms": arms,
    }


def selected(
    mode: Mode,
    out: Path,
    only: tuple[str, ...] = (),
    seeds: tuple[int, ...] = (),
    models: tuple[str, ...] = (),
) -> list[tuple[Block, str, float | None, int]]:
    """The mode's jobs, kept to the arms in `only`, the seeds in `seeds` and the models in `models` (a spec
    or its short name, `cifar_resnet56`) where any is given."""
    return [
        (block, arm, reduction, seed)
        for block, arm, reduction, seed in jobs(mode, out)
        if (not only or arm in only)
        and (not seeds or seed in seeds)
        and (not models or {block.model, short_name(block.model)} & set(models))
    ]


def missing(
    mode: Mode,
    out: Path,
    only: tuple[str, ...] = (),
    seeds: tuple[int, ...] = (),
    models: tuple[str, ...] = (),
) -> list[str]:
    """The selected arms of the mode that have no record, or one that is not `ok`."""
    bad = []
    for block, arm, reduction, seed in selected(mode, out, only, seeds, models):
        path = arm_file(out, mode.name, block.model, arm, reduction, seed)
        status = json.loads(path.read_text())["status"] if path.is_file() else "missing"
        if status != "ok":
            bad.append(f"{path.stem}: {status}")
    return bad


def run_arms(
    mode: Mode, out: Path, work_dir: Path | None, only: tuple[str, ...], threads: int, device: str,
    seeds: tuple[int, ...] = (), compile_: bool = False, models: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """Run the selected arms of the mode that have no record yet, writing each record."""
    from graphprune.train import load_data

    torch.set_num_threads(threads)
    code = run_meta.code_version("graphprune/methods")  # the learned methods' code
    with tempfile.TemporaryDirectory() as tmp:
        work = work_dir or (Path(tmp) if mode.name == "smoke" else ROOT / "runs" / f"accuracy-{mode.name}")
        data = load_data("cifar10:", limit=mode.data_limit, val_split=mode.val_images, val_seed=0)
        for block, arm, reduction, seed in selected(mode, out, only, seeds, models):
            path = arm_file(out, mode.name, block.model, arm, reduction, seed)
            if path.exists():
                click.echo(f"{path.stem}: done earlier, skipped (delete {path} to re-run)")
                continue
            result = run_arm(arm, block, reduction, seed, mode, data, work, threads, device, code, compile_)
            write_text(path, json.dumps(result, indent=1) + "\n")
            ok = result["status"] == "ok"
            shown = f"test top-1 {result['test_top1']:.2f}" if ok else result.get("error", "")
            click.echo(f"{path.stem}: {result['status']} {shown} ({result['seconds']} s)", file=sys.stderr)


@click.command()
@click.option("--smoke", "mode_name", flag_value="smoke", help="Every arm, a few steps on a few images (CI).")
@click.option(
    "--quick", "mode_name", flag_value="quick", help="ResNet-20 at -40/-50/-60/-80%, one seed, short budget."
)
@click.option(
    "--standard", "mode_name", flag_value="standard", default=True,
    help="The evidence: ResNet-20 (2 seeds) and ResNet-56 at -60%, ResNet-20 (2 seeds) at -80%, 6 epochs "
    "per arm (default).",
)  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
@click.option(
    "--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Checkpoints of the runs (default: a temporary folder for --smoke, runs/accuracy-<mode>).",
)  # fmt: skip
@click.option("--arm", "only", multiple=True, help="Run only these arms (repeatable; 'unpruned' too).")
@click.option(
    "--seed", "seeds", type=int, multiple=True,
    help="Run only these seeds (repeatable): two processes on different seeds share one --work-dir.",
)  # fmt: skip
@click.option(
    "--model", "models", multiple=True,
    help="Run only this model's arms (repeatable; the spec or its short name, e.g. cifar_resnet56).",
)  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=max(1, (os.cpu_count() or 2) - 1),
              show_default=True,
              help="CPU threads of every arm (recorded; runs repeat exactly at the same count).")  # fmt: skip
@click.option(
    "--compile", "compile_", is_flag=True,
    help="torch.compile every arm's training (recorded; faster per CPU epoch, compilation included: "
    "docs/results/train_throughput.md). Off by default: the standard mode's arms so far ran eager.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="Training device (auto: CUDA if present).")
@click.option("--strict", is_flag=True, help="Exit 1 unless every arm of the mode has an ok record.")
@click.option("--no-summary", is_flag=True, help="Only run arms; do not rebuild accuracy.json/.md/.png.")
@click.option("--summary-only", is_flag=True, help="Only rebuild accuracy.json/.md/.png from the records.")
def main(
    mode_name: str, out: Path, work_dir: Path | None, only: tuple[str, ...], seeds: tuple[int, ...],
    models: tuple[str, ...], threads: int, compile_: bool, device: str, strict: bool, no_summary: bool,
    summary_only: bool,
) -> None:  # fmt: skip
    """Run (or resume) the accuracy suite, then rebuild accuracy.json, accuracy.md and accuracy.png."""
    mode = MODES[mode_name]
    unknown = sorted(set(only) - set(ARMS))
    if unknown:
        raise click.BadParameter(
            f"unknown arm {unknown[0]!r} (choose from {', '.join(ARMS)})", param_hint="--arm"
        )
    if not summary_only:
        known = {m for b in mode.blocks for m in (b.model, short_name(b.model))}
        if set(models) - known:
            raise click.BadParameter(
                f"{sorted(set(models) - known)[0]!r} is not a model of the {mode.name} mode "
                f"(choose from {', '.join(sorted(known))})", param_hint="--model",
            )  # fmt: skip
        run_arms(mode, out, work_dir, only, threads, device, seeds, compile_, models)
    if not no_summary:
        summary = summarise(out)
        write_text(out / "accuracy.json", json.dumps(summary, indent=1) + "\n")
        write_text(out / "accuracy.md", accuracy_verdicts.markdown(summary))
        accuracy_verdicts.plot(summary, out / "accuracy.png")
        click.echo(f"wrote {out / 'accuracy.json'}, accuracy.md, accuracy.png")
    if strict:
        bad = missing(mode, out, only, seeds, models)
        if bad:
            click.echo(f"error: {len(bad)} arm(s) not ok: {'; '.join(bad)}", err=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
