"""The prune pipeline: decide -> apply -> fine-tune (KD from the original) -> export -> evaluate -> report.

Each step writes its output into the run directory atomically; a killed run continues with
`resume=True` (the fine-tune stage from its checkpoint, finished stages from their results).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphprune.checkpoint import ModelRef, RunInfo, save_pruned
from graphprune.errors import GraphpruneError
from graphprune.fileio import write_text
from graphprune.graph import PrunableGraph, not_lossless_note, trace
from graphprune.methods.base import Budget, MethodContext, MethodResult, get_method
from graphprune.plan import PruningPlan
from graphprune.rewrite import apply
from graphprune.train import distributed
from graphprune.train.bn_recal import recalibrate_bn
from graphprune.train.config import TrainConfig
from graphprune.train.data import DataBundle, load_data
from graphprune.train.evaluate import EvalResult, evaluate
from graphprune.train.loop import fit
from graphprune.train.report import (
    CHANNELS_PNG,
    CURVES_PNG,
    plot_kept_channels,
    plot_training_curves,
    write_report_md,
)

Step = Callable[[str], Any]  # a context manager factory that shows a step (the CLI's spinner)


@dataclass
class PipelineRequest:
    """One run: MODEL, how to decide the plan (a method name or a given plan), data, training, output."""

    model: str
    out_dir: Path
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    method: str | None = None
    plan: PruningPlan | None = None
    budget: Budget = field(default_factory=Budget)
    data: str | None = None
    image_size: int | None = None
    finetune: TrainConfig | None = None
    method_train: TrainConfig | None = None
    kd: bool = True
    teacher: str | None = None
    teacher_weights: str | None = None
    resume: bool = False
    export: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    leaf_modules: tuple[str, ...] = ()
    data_limit: int | None = None
    prune_layernorm: bool = False  # LayerNorms over channels prunable (not lossless); model.json records it
    pruned_weights: str | None = None  # MODEL pruned by `plan` (a run continued): loaded after apply
    val_split: float | None = None  # hold out this fraction of train as the validation split
    data_options: dict[str, Any] = field(default_factory=dict)  # load_data's stream, memory_budget, cache_dir


def _null_step(message: str) -> Any:
    import contextlib

    return contextlib.nullcontext()


def num_outputs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    with torch.no_grad():
        out = model.eval()(*example_inputs)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise GraphpruneError(
            f"training needs a classifier with (N, classes) logits, got {type(out).__name__}"
        )
    return int(out.shape[1])


def kept_channels(pg: PrunableGraph, plan: PruningPlan) -> list[tuple[str, int, int, bool]]:
    """(layer name, channels, kept, removed) for every prunable group; `removed` when every layer of the
    group sits in a block the plan removes (then none is kept)."""
    blocks = tuple(plan.blocks)
    rows = []
    for g in pg.prunable_groups:
        modules = [m for m in g.modules if m]
        removed = (
            bool(blocks)
            and bool(modules)
            and all(any(m == b or m.startswith(b + ".") for b in blocks) for m in modules)
        )
        kept = 0 if removed else g.size - len(plan.channels.get(g.id, ()))
        rows.append((modules[0] if modules else g.id, g.size, kept, removed))
    return rows


def _latencies(path: Path, input_shape: tuple[int, ...]) -> dict[str, float]:
    from graphprune.latency import ort_latency

    out: dict[str, float] = {}
    for batch, runs in ((1, 50), (32, 10)):
        t = ort_latency(path, (batch, *input_shape[1:]), warmup=3, runs=runs)
        out[f"latency_b{batch}_p50_ms"] = float(t["median_ms"])
        out[f"latency_b{batch}_p90_ms"] = float(t["p90_ms"])
    return out


def _eval_dict(result: EvalResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    return {"top1": result.top1, "top5": result.top5, "loss": result.loss, "n": result.n}


def run(req: PipelineRequest, step: Step = _null_step) -> dict[str, Any]:
    """Run the whole pipeline into `req.out_dir`; returns the report (also written as report.json)."""
    from graphprune.costs import count_flops, count_params
    from graphprune.export import export_onnx
    from graphprune.modelspec import resolve_model

    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)
    with step(f"Building {req.model}"):
        rm = resolve_model(req.model, weights=req.weights, input_shape=req.input_shape)
    data: DataBundle | None = None
    if req.data is not None:
        with step(f"Loading {req.data}"):
            data = load_data(
                req.data,
                image_size=req.image_size,
                limit=req.data_limit,
                val_split=req.val_split,
                channels=rm.input_shape[1] if len(rm.input_shape) == 4 else None,
                **req.data_options,
            )
        data.check_num_classes(num_outputs(rm.model, rm.example_inputs), rm.name)
        if tuple(rm.input_shape[1:]) != data.input_shape:
            raise GraphpruneError(
                f"{data.name} has images of shape {data.input_shape} "
                f"but {rm.name} takes {tuple(rm.input_shape[1:])}"
            )
    with step(f"Tracing {rm.name}"):
        pg = trace(
            rm.model, rm.example_inputs, leaf_modules=req.leaf_modules, prune_layernorm=req.prune_layernorm
        )
    original = rm.model

    # 1. decide
    method_name = req.method or ("plan" if req.plan is not None else "none")
    if req.plan is not None:
        decided = MethodResult(plan=req.plan, model=original)
    elif req.method is None:
        decided = MethodResult(plan=PruningPlan.for_graph(pg), model=original)
    else:
        method = get_method(req.method)
        ctx = MethodContext(
            model=original, example_inputs=rm.example_inputs, pg=pg, budget=req.budget, data=data,
            train_cfg=req.method_train, teacher=original, run_dir=out, resume=req.resume, options=req.options,
        )  # fmt: skip
        with step(f"Deciding the plan: method {req.method}"):
            decided = method(ctx)
    plan = decided.plan
    plan.meta.setdefault("method", method_name)
    num_classes = data.num_classes if data else None
    weights_ref = ModelRef.of(rm.name, req.weights) if req.weights is not None else None
    teacher_ref = weights_ref or ModelRef(rm.name)  # the original, unless --kd-from
    if req.teacher is not None:
        teacher_ref = ModelRef.of(req.teacher, req.teacher_weights)
    info = RunInfo(rm.name, rm.input_shape, req.data, method_name, num_classes, req.prune_layernorm)
    main = distributed.is_main_process()  # under torchrun, rank 0 alone writes, exports and times
    if main:
        replace(info, weights=weights_ref, teacher=teacher_ref if req.kd else None).save(out)

    # 2. apply
    with step("Applying the plan"):
        source_pg = (
            pg
            if decided.model is original
            else trace(decided.model, rm.example_inputs, prune_layernorm=req.prune_layernorm)
        )
        slim: nn.Module = apply(source_pg, plan)
    if req.pruned_weights is not None:
        from graphprune.weights import load_weights

        load_weights(slim, req.pruned_weights)
    if main:
        save_pruned(out, slim, plan, pg)

    # 3. fine-tune with KD from the original
    fit_result = None
    if req.finetune is not None and data is not None:
        teacher: nn.Module | None = None
        if req.kd:
            if req.teacher is not None:
                teacher = resolve_model(
                    req.teacher, weights=req.teacher_weights, input_shape=rm.input_shape
                ).model
            else:
                teacher = copy.deepcopy(original)
        start = time.perf_counter()
        if (plan.blocks or plan.channels) and req.pruned_weights is None:
            # the structure changed: BatchNorm statistics re-estimated before fine-tuning starts
            recalibrate_bn(slim, data, seed=req.finetune.seed)
        fit_result = fit(
            slim, data, req.finetune, teacher=teacher, run_dir=out, stage="finetune", resume=req.resume
        )
        finetune_seconds = time.perf_counter() - start
        slim.cpu()  # fit trained it on its device; export, evaluation and timing run on the CPU
        if main:
            save_pruned(out, slim, plan, pg)

    # 4. export, 5. evaluate and time
    slim.eval()
    report: dict[str, Any] = {
        "model": rm.name, "input_shape": list(rm.input_shape), "method": method_name, "data": req.data,
        "budget": {k: v for k, v in vars(req.budget).items() if v is not None}, "plan_meta": plan.meta,
        "method_report": decided.report,
    }  # fmt: skip
    lossy = pg.not_lossless_groups(plan)
    report.update(lossless=not lossy, not_lossless_groups=lossy, lossless_note=not_lossless_note(lossy))
    orig_row: dict[str, Any] = {"flops": int(pg.flops), "params": int(pg.params)}
    pruned_row: dict[str, Any] = {
        "flops": int(count_flops(slim, rm.example_inputs)),
        "params": int(count_params(slim)),
    }
    workers = req.finetune.workers if req.finetune is not None else 0
    if data is not None:
        with step("Evaluating the original model"):
            orig_row.update(_eval_dict(evaluate(original, data, workers=workers)))
        with step("Evaluating the pruned model"):
            final = (
                fit_result.test
                if fit_result is not None and fit_result.test is not None and data.eval_split == "test"
                else evaluate(slim, data, workers=workers)  # the test split, never the validation split
            )
            pruned_row.update(_eval_dict(final))
    if req.export and main:
        with tempfile.TemporaryDirectory(prefix="graphprune-") as tmp:
            original_onnx = Path(tmp) / "original.onnx"
            with step("Exporting the original model to ONNX (for comparison)"):
                export_onnx(original, rm.example_inputs, original_onnx)
            with step(f"Exporting the pruned model to {out / 'model.onnx'}"):
                exported = export_onnx(slim, rm.example_inputs, out / "model.onnx")
            report["export"] = exported.to_dict()
            with step("Timing both ONNX files with onnxruntime (batch 1 and 32)"):
                orig_row.update(
                    onnx_bytes=original_onnx.stat().st_size, **_latencies(original_onnx, rm.input_shape)
                )
                pruned_row.update(
                    onnx_bytes=(out / "model.onnx").stat().st_size,
                    **_latencies(out / "model.onnx", rm.input_shape),
                )
    report["original"], report["pruned"] = orig_row, pruned_row
    if fit_result is not None and req.finetune is not None:
        report["finetune"] = {
            "config": req.finetune.to_dict(),
            "steps": fit_result.steps,
            "history": fit_result.history,
        }
        if fit_result.resumed_at is None or fit_result.history:
            report["finetune"]["seconds"] = finetune_seconds
        kd = f"KD from {req.teacher or 'the original'}" if req.kd else "no KD"
        report["finetune_summary"] = (
            f"{req.finetune.epochs} epoch(s), {fit_result.steps} steps, lr {req.finetune.lr}, "
            f"batch {req.finetune.batch_size}, {req.finetune.schedule}, {kd}"
        )

    # 6. report
    if not main:
        distributed.barrier()  # returns once rank 0 has written the run directory
        return report
    plots = list(decided.plots)
    history = _history(out)
    curves = plot_training_curves(history, out / CURVES_PNG)
    channels = plot_kept_channels(kept_channels(pg, plan), out / CHANNELS_PNG)
    plots += [p for p in (curves, channels) if p is not None]
    report["files"] = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_report_md(out, report, plots)
    distributed.barrier()
    return report


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged record of every stage from `metrics.jsonl`, steps and epochs (the last per stage,
    kind and step: a step logged again after a resume replaces the earlier one)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") in ("step", "epoch"):
            latest[(record["stage"], record["kind"], record["step"])] = record
    return list(latest.values())
